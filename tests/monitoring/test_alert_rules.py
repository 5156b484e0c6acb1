"""The alert rules: valid for Prometheus (`promtool check rules`), each with a severity,
a summary and a description saying what to do, and each shown both firing and not
firing by the promtool unit tests (`promtool test rules`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "prometheus" / "alerts.yml"
TESTS = sorted((ROOT / "monitoring" / "prometheus" / "tests").glob("*.yml"))


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: run scripts/system-deps.sh --test (Debian package prometheus)"
    return path


def _rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules_passes() -> None:
    out = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in out.stdout


def test_promtool_unit_tests_pass() -> None:
    assert TESTS, "no promtool unit tests found"
    out = subprocess.run([_promtool(), "test", "rules", *map(str, TESTS)], capture_output=True,
                         text=True, timeout=120, cwd=TESTS[0].parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_rule_has_severity_summary_and_runbook(rule: dict) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["annotations"]["summary"].strip()
    description = rule["annotations"]["description"]
    assert len(description) > 80, "the description must say what to do"


def test_every_rule_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in _rules()}
    assert names - firing == set(), f"never shown firing: {sorted(names - firing)}"
    assert names - silent == set(), f"never shown silent: {sorted(names - silent)}"


def test_every_rule_links_its_runbook_section_and_every_group_states_its_interval() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    sections = {line[3:].strip().lower() for line in runbook.splitlines() if line.startswith("## ")}
    for rule in _rules():
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/runbook.md#{rule['alert'].lower()}", rule["alert"]
        assert rule["alert"].lower() in sections, f"docs/runbook.md lacks ## {rule['alert']}"
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert {g["interval"] for g in groups} == {"15s"}, "the evaluation interval the tests use"
    for path in TESTS:
        assert yaml.safe_load(path.read_text())["evaluation_interval"] == "15s"


def test_every_fast_failure_class_fires_within_five_minutes_of_its_cause() -> None:
    # The promtool cases start each failure at t=2m; a "firing" check at or before
    # t=2m + 5m - the budget of scrape (15 s), heartbeat expiry (30 s) and Alertmanager
    # group_wait (10 s) shows the rule itself leaves room in the 5-minute promise.
    fast = {"MeshNoDispatcher", "MeshNoWorkerForQueue", "MeshQueueUnserved", "MeshWorkflowStale",
            "MeshWorkflowNeverSucceeded", "MeshWorkflowFailing", "MeshRunsStuck",
            "MeshDeadLetterGrowing", "MeshGpuUrgentBacklogNotDraining",
            "MeshGpuBulkBacklogNotDraining"}
    first_firing: dict[str, float] = {}
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    t = _seconds(str(check["eval_time"]))
                    name = check["alertname"]
                    first_firing[name] = min(first_firing.get(name, t), t)
    budget_s = 120 + 300 - 15 - 30 - 10
    late = {n: first_firing.get(n) for n in fast if first_firing.get(n, 1e9) > budget_s}
    assert late == {}, f"fires too late for the 5-minute promise: {late}"


def _seconds(text: str) -> float:
    import re

    total = 0.0
    for n, unit in re.findall(r"(\d+)([dhms])", text):
        total += int(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
    return total
