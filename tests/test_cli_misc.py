"""CLI: `mesh workflows` lists every workflow with its triggers; `mesh --help` helps."""

from __future__ import annotations

import json

from click.testing import CliRunner

from worker_mesh.workers.cli import cli


def test_workflows_lists_triggers_and_cross_workflow_links() -> None:
    res = CliRunner().invoke(cli, ["workflows", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["workflow"]: r for r in json.loads(res.output)}
    assert {"churn", "content", "reembed", "retrain", "churn-rescore"} <= set(rows)
    assert "churn.high_risk" in rows["content"]["triggers"]
    assert "content.updated" in rows["reembed"]["triggers"]
    assert rows["reembed"]["coalesce"]["window_s"] > 0


def test_every_command_has_help() -> None:
    runner = CliRunner()
    top = runner.invoke(cli, ["--help"])
    assert top.exit_code == 0
    for name, cmd in cli.commands.items():
        res = runner.invoke(cli, [name, "--help"])
        assert res.exit_code == 0, (name, res.output)
        assert (cmd.help or "").strip(), f"mesh {name} has no help text"
