"""SEO / quality analysis: each check can fail, and its feedback says how to fix it."""

from __future__ import annotations

from worker_mesh.workers.content.seo import analyze, flesch_reading_ease, syllables

EASY = ("The cat sat on the mat. It was a warm day. We went to the park. "
        "The dog ran fast. We had fun. ") * 6
HARD = ("Notwithstanding considerable organisational heterogeneity, interdepartmental "
        "institutionalisation of computational infrastructure necessitates comprehensive "
        "administrative reconsideration of multidimensional operational responsibilities. ") * 3
KW = {"min_words": 20, "banned_phrases": ["click here"], "min_readability": 30.0,
      "max_chars": 5000}


def test_syllables_and_flesch_order_easy_above_hard_text() -> None:
    assert syllables("cat") == 1 and syllables("institutionalisation") >= 7
    assert flesch_reading_ease(EASY) > 90 > 0 > flesch_reading_ease(HARD)


def test_good_text_passes_every_check() -> None:
    report = analyze(EASY + " The park is near.", keywords=["park", "warm day"], **KW)
    assert report.passed, report.feedback
    assert report.keyword_coverage == 1.0 and report.words > 20


def test_each_failing_check_becomes_feedback() -> None:
    report = analyze(HARD[:200] + " Click here.", keywords=["pricing", "park"], **KW)
    failed = {c.name for c in report.failed}
    assert failed == {"length", "readability", "keywords", "banned_phrases"}
    text = " | ".join(report.feedback)
    assert "at least 20 words" in text and "'pricing'" in text and "'click here'" in text
    assert "shorter sentences" in text
    assert report.keyword_coverage == 0.0


def test_keywords_match_whole_words_case_insensitively() -> None:
    text = EASY + " GPU Scheduling works. Scheduled items wait."
    report = analyze(text, keywords=["gpu scheduling", "cost"], **KW)
    assert [c.data["missing"] for c in report.checks if c.name == "keywords"] == [["cost"]]
    assert report.keyword_coverage == 0.5


def test_too_long_text_fails_the_length_check() -> None:
    report = analyze(EASY * 40, keywords=[], **KW)
    assert [c.name for c in report.failed] == ["length"]
