"""SEO / quality analysis of generated text.

Checks (each failed one becomes a line of feedback for the next generation attempt):

==============  ===========================================================
check           passes when
==============  ===========================================================
length          at least ``min_words`` words and at most ``max_chars`` chars
readability     Flesch reading ease >= ``min_readability``
keywords        every keyword phrase occurs (case-insensitive, whole words)
banned_phrases  no banned phrase occurs (case-insensitive)
==============  ===========================================================

Flesch reading ease = 206.835 - 1.015 * words/sentence - 84.6 * syllables/word, with a
vowel-group syllable estimate (good to a syllable or so per word, which is what the
score needs).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)|\n\s*\n")
_VOWELS = re.compile(r"[aeiouy]+")


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SeoReport:
    checks: list[Check]
    words: int
    sentences: int
    flesch: float
    keyword_coverage: float

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def feedback(self) -> list[str]:
        """One instruction per failed check, written for the next attempt."""
        return [c.detail for c in self.failed]

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "words": self.words, "sentences": self.sentences,
                "flesch": round(self.flesch, 1), "keyword_coverage": self.keyword_coverage,
                "checks": [asdict(c) for c in self.checks]}


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def syllables(word: str) -> int:
    w = word.lower().strip("'’-")
    if not w:
        return 0
    if w.isdigit():
        return max(1, len(w) // 2)
    n = len(_VOWELS.findall(w))
    if w.endswith("e") and not w.endswith(("le", "ee", "ye")) and n > 1:
        n -= 1
    return max(1, n)


def flesch_reading_ease(text: str) -> float:
    ws = words(text)
    if not ws:
        return 0.0
    sentences = max(1, len([s for s in _SENTENCE_END.split(text) if words(s)]))
    syl = sum(syllables(w) for w in ws)
    return 206.835 - 1.015 * (len(ws) / sentences) - 84.6 * (syl / len(ws))


def contains_phrase(text: str, phrase: str) -> bool:
    pattern = r"(?<![A-Za-z0-9])" + r"\s+".join(map(re.escape, phrase.split())) + r"(?![A-Za-z0-9])"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def analyze(text: str, *, keywords: list[str], min_words: int, banned_phrases: list[str],
            min_readability: float, max_chars: int) -> SeoReport:
    """Run every check on ``text``; never raises."""
    ws = words(text)
    n_sent = max(1, len([s for s in _SENTENCE_END.split(text) if words(s)])) if ws else 0
    score = flesch_reading_ease(text)
    checks: list[Check] = []

    if len(ws) < min_words:
        checks.append(Check("length", False,
                            f"too short: {len(ws)} words, write at least {min_words} words",
                            {"words": len(ws), "min_words": min_words}))
    elif len(text) > max_chars:
        checks.append(Check("length", False,
                            f"too long: {len(text)} characters, stay under {max_chars}",
                            {"chars": len(text), "max_chars": max_chars}))
    else:
        checks.append(Check("length", True, f"{len(ws)} words", {"words": len(ws)}))

    checks.append(Check(
        "readability", score >= min_readability,
        f"Flesch reading ease {score:.0f}" if score >= min_readability else
        f"hard to read (Flesch reading ease {score:.0f}, need {min_readability:.0f}): "
        "use shorter sentences and simpler words",
        {"flesch": round(score, 1), "min": min_readability}))

    missing = [k for k in keywords if not contains_phrase(text, k)]
    coverage = 1.0 if not keywords else (len(keywords) - len(missing)) / len(keywords)
    checks.append(Check(
        "keywords", not missing,
        "all keywords present" if not missing else
        "missing keywords: " + ", ".join(repr(k) for k in missing) + " (use each literally)",
        {"missing": missing, "coverage": coverage}))

    found = [p for p in banned_phrases if contains_phrase(text, p)]
    checks.append(Check(
        "banned_phrases", not found,
        "no banned phrases" if not found else
        "remove banned phrases: " + ", ".join(repr(p) for p in found),
        {"found": found}))
    return SeoReport(checks, len(ws), n_sent, score, coverage)
