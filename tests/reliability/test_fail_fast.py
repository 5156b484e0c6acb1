"""Fail fast on every bad credential: every long-running process and every command that
uses Redis, started with a wrong password, an untrusted CA, a malformed URL or an
unreachable Redis, exits within 10 s with the documented code and ONE line naming the
problem, and no secret in its output (raw, URL-encoded or base64).

Given the TLS-only, ACL-protected Redis of ``secure_redis`` (tests/reliability/conftest.py)
and a unique secret per credential, when each target starts with one broken setting,
then: exit code 3 (Redis unusable: refused, untrusted, unreachable) or 2 (bad
configuration: the URL), within 10 s, one line, no secret. The processes run four at a
time (2 cores: more would make the timing measure the machine, not the check).
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from tests.reliability.conftest import SecureRedis
from tests.support.procs import ROOT, child_env
from tests.support.tls import make_ca_and_server_cert
from worker_mesh.mesh.embedded import free_port
from worker_mesh.mesh.settings import MeshSettings

pytestmark = pytest.mark.e2e

PROCESSES = [["dispatcher"], ["worker", "-Q", "cpu", "-c", "1"], ["beat"], ["flower"], ["exporter"],
             ["gpu", "releaser"], ["gpu", "autoscale"]]
COMMANDS = [["status"], ["audit"], ["dlq", "list"], ["dlq", "replay", "--all"], ["gpu", "status"],
            ["gpu", "release"], ["gpu", "cost", "--peak-price", "1", "--offpeak-price", "0.5"],
            ["models", "list"], ["train"], ["search", "hello"], ["reembed-all"]]
TARGETS = PROCESSES + COMMANDS
MAX_EXIT_S = 10.0


@dataclass(frozen=True)
class Case:
    code: int
    reason: str


CASES = {
    "wrong password": Case(3, "Redis refused the credentials (wrong password or user)"),
    "untrusted CA": Case(3, "Redis's TLS certificate is not trusted (certificate verify failed"),
    "bad URL": Case(2, "MESH_REDIS_URL is not a valid redis:// or rediss:// URL"),
    "unreachable": Case(3, "cannot connect to Redis"),
}


@dataclass(frozen=True)
class Run:
    args: list[str]
    code: int
    seconds: float
    output: str


def leaks(text: str, secret: str, user: str = "") -> list[str]:
    """The spellings of ``secret`` found in ``text``: raw, URL-encoded, base64 (alone and
    as HTTP basic ``user:secret``)."""
    forms = {"raw": secret, "url": quote(secret, safe=""), "url+": quote_plus(secret),
             "b64": base64.b64encode(secret.encode()).decode().rstrip("="),
             "b64 basic": base64.b64encode(f"{user}:{secret}".encode()).decode().rstrip("=")}
    return [name for name, form in forms.items() if form in text]


def _settings(secure_redis: SecureRedis, tmp_path: Path, case: str,
              wrong: str, flower_pw: str) -> MeshSettings:
    t = secure_redis.tenants[0]
    extra = {"MESH_MONITORING_FLOWER_BASIC_AUTH": f"ops:{flower_pw}",
             "MESH_REDIS_STARTUP_TIMEOUT_S": "2", "MESH_MONITORING_METRICS_PORT": "0"}
    if case == "wrong password":
        return secure_redis.settings(t, tmp_path, password=wrong, **extra)
    good = secure_redis.settings(t, tmp_path, **extra)
    env = good.to_env()
    if case == "untrusted CA":
        env["MESH_REDIS_TLS_CA_FILE"] = str(make_ca_and_server_cert(tmp_path / "other-ca").ca_cert)
    elif case == "bad URL":
        env["MESH_REDIS_URL"] = f"rediss://{t.user}:{quote(t.password, safe='')}@127.0.0.1:notaport/0"
    else:
        env["MESH_REDIS_URL"] = f"rediss://{t.user}:{quote(t.password, safe='')}@127.0.0.1:{free_port()}/0"
    return MeshSettings.load(env)


def _command(args: list[str]) -> str:
    """The command words (``gpu cost``), without options and arguments."""
    words = []
    for a in args:
        if a.startswith("-") or a == "hello":
            break
        words.append(a)
    return " ".join(words)


def _run(args: list[str], env: dict[str, str]) -> Run:
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    return Run(args, res.returncode, time.monotonic() - t0, res.stdout + res.stderr)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_process_and_command_exits_fast_with_one_line_and_no_secret(
        secure_redis: SecureRedis, tmp_path: Path, case: str) -> None:
    t = secure_redis.tenants[0]
    wrong = "wr0ng+/pw=" + secrets.token_hex(8)  # URL-encodes differently from its raw form
    flower_pw = "fl+/" + secrets.token_hex(8)
    env = child_env(_settings(secure_redis, tmp_path, case, wrong, flower_pw))
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda a: _run(a, env), TARGETS))
    expected = CASES[case]
    problems = []
    for r in runs:
        name = "mesh " + " ".join(r.args)
        lines = [line for line in r.output.splitlines() if line.strip()]
        if r.code != expected.code:
            problems.append(f"{name}: exit {r.code}, expected {expected.code}: {r.output[-500:]}")
        if r.seconds > MAX_EXIT_S:
            problems.append(f"{name}: took {r.seconds:.1f}s")
        if len(lines) != 1 or expected.reason not in lines[0]:
            problems.append(f"{name}: not one line with the reason: {r.output[-500:]!r}")
        elif not lines[0].startswith(f"error: mesh {_command(r.args)}: "):
            problems.append(f"{name}: the line does not name the command: {lines[0]!r}")
        for secret, user in ((t.password, t.user), (wrong, t.user),
                             (secure_redis.admin_password, "default"), (flower_pw, "ops")):
            if found := leaks(r.output, secret, user):
                problems.append(f"{name}: secret {secret[:4]}... in its output as {found}")
    assert problems == [], "\n".join(problems)
    slowest = max(runs, key=lambda r: r.seconds)
    print(f"{case}: {len(runs)} targets, slowest {slowest.args} {slowest.seconds:.2f}s")
