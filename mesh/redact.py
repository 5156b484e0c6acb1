"""The one redaction point: everything that leaves a mesh process goes through here.

What is masked (replaced by ``***``), wherever it appears in a string:

* known secrets: every ``SecretStr`` of every settings tree this process loaded
  (``MeshSettings.load`` calls ``remember_settings``): the Redis password, the LLM API
  key, the Sentry key, S3 keys, Flower's credentials. Each in raw, URL-encoded
  (``quote``/``quote_plus``) and base64 form. For a secret that is a URL only its
  password (or a key-like user name, as in a Sentry DSN) is a secret, not the host;
  values shorter than ``MIN_SECRET_CHARS`` are not treated as secrets (masking them
  would mangle ordinary words) - use real passwords;
* credentials in any URL (``scheme://user:password@host`` -> ``scheme://user:***@host``);
* ``Authorization`` / ``Proxy-Authorization`` header values (``Basic``, ``Bearer``...),
  ``api-key`` style headers and ``password=`` / ``token=`` style pairs, in header, JSON
  or query-string spelling;
* bearer tokens and OpenAI-style ``sk-...`` keys on their own.

Where it is applied (each exit calls ``text`` or ``value``):

* log records of every logger (``install_logging``: a log-record factory, so it holds
  for handlers Celery, Flower or tornado install later), exception text included;
* dead-letter entries (``events.dlq``: reason and error), Sentry events
  (``monitoring.sentry.before_send``), provider error messages
  (``workers.content.providers``), CLI output and error lines (``workers.cli``).

The registry is process-wide on purpose: a logging hook has no other way to know the
secrets, and a secret once loaded must stay masked for the life of the process.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

MASK = "***"
MIN_SECRET_CHARS = 6
"""Shorter values are not registered as known secrets (the patterns still apply)."""

_HEADER_NAMES = (r"(?:proxy-)?authorization|x-api-key|api[-_]?key|x-auth-token|"
                 r"access[-_]token|refresh[-_]token|client[-_]secret|secret[-_]access[-_]key|"
                 r"password|passwd|token|secret")
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^:/?#@\s\"']*:)[^@/\s\"']+(?=@)"),
     r"\g<head>" + MASK),
    # Authorization: Bearer xyz / "authorization": "Basic xyz" / api_key=xyz / password: xyz
    (re.compile(r"(?i)(?P<head>(?<![A-Za-z0-9_-])(?:" + _HEADER_NAMES + r")[\"']?\s*[:=]\s*[\"']?"
                r"(?:(?:basic|bearer|token|digest)\s+)?)(?![0-9]+\b)[^\s\"',;&}]+"),
     r"\g<head>" + MASK),
    # Bearer tokens and OpenAI-style keys on their own.
    (re.compile(r"(?i)(?P<head>\bbearer\s+)[A-Za-z0-9._~+/=-]{6,}"), r"\g<head>" + MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),
]

_lock = threading.Lock()
_secrets: set[str] = set()
_known: re.Pattern[str] | None = None


def _forms(secret: str) -> set[str]:
    """The spellings in which a secret may leave: raw, URL-encoded, base64."""
    raw = secret.encode()
    out = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret),
           base64.b64encode(raw).decode().rstrip("="),
           base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    return {f for f in out if len(f) >= MIN_SECRET_CHARS}


def secret_parts(value: str) -> list[str]:
    """The parts of one secret value that are secret: a URL's password (or key-like
    user name), else the whole value."""
    if "://" in value:
        try:
            parts = urlsplit(value)
            password, user = parts.password, parts.username
        except ValueError:
            return [value]
        if password:
            return [unquote(password), password]
        if user and len(user) >= 16:  # a key in the user part (Sentry DSN)
            return [unquote(user), user]
        return []
    return [value]


def remember(secrets: Iterable[str]) -> None:
    """Add known secrets (their URL passwords, see ``secret_parts``) to the registry."""
    global _known
    new: set[str] = set()
    for value in secrets:
        if value:
            for part in secret_parts(value):
                if len(part) >= MIN_SECRET_CHARS:
                    new |= _forms(part)
    with _lock:
        if new <= _secrets:
            return
        _secrets.update(new)
        ordered = sorted(_secrets, key=len, reverse=True)  # longest first: no partial masks
        _known = re.compile("|".join(re.escape(s) for s in ordered))


def remember_settings(settings: Any) -> None:
    """Register every ``SecretStr`` of a settings tree (any depth of pydantic models)."""
    remember(_secret_values(settings, 0))


def _secret_values(obj: Any, depth: int) -> list[str]:
    from pydantic import BaseModel, SecretStr

    if isinstance(obj, SecretStr):
        return [obj.get_secret_value()]
    if depth > 4 or not isinstance(obj, BaseModel):
        return []
    out: list[str] = []
    for name in type(obj).model_fields:
        out += _secret_values(getattr(obj, name), depth + 1)
    return out


def text(s: str) -> str:
    """``s`` with every known secret and credential-shaped substring masked."""
    if not s:
        return s
    known = _known
    if known is not None:
        s = known.sub(MASK, s)
    for pattern, repl in _PATTERNS:
        s = pattern.sub(repl, s)
    return s


def value(obj: Any, depth: int = 0) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, strings) with every string masked."""
    if isinstance(obj, str):
        return text(obj)
    if depth > 30:
        return obj
    if isinstance(obj, dict):
        return {k: value(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [value(v, depth + 1) for v in obj]
    return obj


# -- logging ---------------------------------------------------------------------------
_FORMATTER = logging.Formatter()


def _redacting_factory(base: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler's error path
            return record
        record.msg, record.args = text(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = text(_FORMATTER.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = text(record.stack_info)
        return record

    factory._mesh_redacting = True  # type: ignore[attr-defined]
    return factory


def install_logging() -> None:
    """Mask every log record of this process, whatever handler later formats it.

    A record factory rather than a handler filter: Celery and Flower replace the root
    handlers after start-up, and a filter on a logger does not see its children's
    records. Formatting happens once, here (records below the level never get here).
    Idempotent.
    """
    with _lock:
        current = logging.getLogRecordFactory()
        if not getattr(current, "_mesh_redacting", False):
            logging.setLogRecordFactory(_redacting_factory(current))
