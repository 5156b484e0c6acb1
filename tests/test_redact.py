"""Unit tests of the redaction point (mesh/redact.py) and of outage logging
(mesh/outage.py): what is masked, in which spelling, and through which exit."""

from __future__ import annotations

import base64
import io
import json
import logging
from urllib.parse import quote

import pytest
import redis

from worker_mesh.events.dlq import DeadLetters
from worker_mesh.mesh import redact
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.outage import OutageLog
from worker_mesh.mesh.settings import MeshSettings, StreamSettings
from worker_mesh.monitoring import sentry

SECRET = "s3cr+t/pw=unit-7f3a9"


@pytest.fixture(autouse=True, scope="module")
def _known() -> None:
    MeshSettings.load({"MESH_REDIS_URL": f"redis://mesh:{quote(SECRET, safe='')}@h:1/0",
                       "MESH_LLM_API_KEY": "plainkey-unit-42aa"})


@pytest.mark.parametrize("text", [
    f"raw {SECRET} here", f"encoded {quote(SECRET, safe='')}", f"plus {quote(SECRET)}",
    "b64 " + base64.b64encode(SECRET.encode()).decode(), "key plainkey-unit-42aa!"])
def test_known_secrets_are_masked_in_every_spelling(text: str) -> None:
    out = redact.text(text)
    assert "***" in out
    assert SECRET not in out and "plainkey-unit-42aa" not in out and quote(SECRET, safe="") not in out


@pytest.mark.parametrize(("text", "kept", "gone"), [
    ("connect rediss://app:hunter2x@db:6380/0 failed", "rediss://app:***@db:6380/0", "hunter2x"),
    ('{"authorization": "Bearer abc.def.ghi"}', '"authorization": "Bearer ***"', "abc.def"),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***", "dXNlcjpw"),
    ("x-api-key: k-123456789", "x-api-key: ***", "k-123456789"),
    ("GET /cb?access_token=tok999xyz&x=1", "access_token=***&x=1", "tok999xyz"),
    ("bearer eyJhbGciOi.abc", "bearer ***", "eyJhbGciOi"),
    ("got sk-abcdefghijklmnop1234 back", "got *** back", "sk-abcdef"),
])
def test_credential_shapes_are_masked(text: str, kept: str, gone: str) -> None:
    out = redact.text(text)
    assert kept in out and gone not in out


@pytest.mark.parametrize("text", [
    "redis://127.0.0.1:6379/0", "Redis refused the credentials (wrong password or user)",
    "check MESH_LLM_API_KEY", '"max_tokens": 1200', "tokens: 5 used", "mesh:p0 stream"])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact.text(text) == text


def test_short_values_are_not_registered_as_secrets() -> None:
    redact.remember(["abc"])
    assert redact.text("abc abcdef") == "abc abcdef"


def test_log_records_are_masked_whatever_handler_formats_them() -> None:
    before = logging.getLogRecordFactory()
    redact.install_logging()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # added after install: still masked
    log = logging.getLogger("test.redact")
    log.addHandler(handler)
    try:
        log.error("url %s", f"redis://u:{quote(SECRET, safe='')}@h/0")
        try:
            raise ValueError(f"boom {SECRET}")
        except ValueError:
            log.exception("failed with %s", "Authorization: Bearer tok-abcdefgh")
    finally:
        log.removeHandler(handler)
        logging.setLogRecordFactory(before)  # the rest of the session as it was
    out = stream.getvalue()
    assert SECRET not in out and quote(SECRET, safe="") not in out and "tok-abcdefgh" not in out
    assert "boom ***" in out and "Traceback" in out


def test_dead_letter_reason_and_error_are_masked_fields_kept(r: redis.Redis) -> None:
    fields = {"type": "x.y", "payload": json.dumps({"note": SECRET})}
    entry = DeadLetters(r, Keys("u"), StreamSettings()).entry(
        "workflow_failed", f"failed with {SECRET}", fields, source="t",
        error='HTTP 500 {"authorization": "Bearer abcdefgh123"}')
    assert SECRET not in entry["reason"] and "abcdefgh123" not in entry["error"]
    assert json.loads(entry["fields"]) == fields  # replay re-sends what was published


def test_sentry_events_are_masked_everywhere() -> None:
    event = {"message": f"m {SECRET}", "exception": {"values": [{"value": "Bearer abcdefgh1"}]},
             "breadcrumbs": {"values": [{"message": "x-api-key: zzz123456"}]}, "tags": {}}
    out = json.dumps(sentry.before_send(event, {}))
    assert SECRET not in out and "abcdefgh1" not in out and "zzz123456" not in out


def test_outage_is_logged_once_per_change_of_state(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    o = OutageLog(logging.getLogger("test.outage"), "Redis", clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, "test.outage")
    for _ in range(50):
        o.failed(redis.ConnectionError("Error 111 connecting to h:1. Connection refused."), 0.5)
    o.failed("another reason")
    now[0] = 12.0
    o.ok()
    o.ok()
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert loud == [
        "Redis unavailable: cannot connect to Redis: Error 111 connecting to h:1. Connection "
        "refused; retrying with backoff (next in 0.5s)",
        "Redis still unavailable, now: another reason",
        "Redis available again after 12.0s",
    ]
