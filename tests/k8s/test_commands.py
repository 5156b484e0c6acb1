"""Every command the manifests run (container args, probes, preStop hooks) parses with the
real `mesh` CLI: a renamed command or option breaks this test, not a rollout."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from worker_mesh.workers.cli import cli as mesh_cli

OVERLAYS = ["dev", "prod", "prod-autoscaler"]


def mesh_commands(objs: list[dict]) -> Iterator[tuple[str, list[str]]]:
    for o in objs:
        if o["kind"] != "Deployment":
            continue
        for c in o["spec"]["template"]["spec"]["containers"]:
            if "worker-mesh" not in c["image"]:
                continue
            where = f"{o['metadata']['name']}[{c['name']}]"
            assert not c.get("command"), f"{where}: the image's ENTRYPOINT is `mesh`"
            yield f"{where} args", list(c["args"])
            hooks = [c.get(p, {}) for p in ("readinessProbe", "livenessProbe", "startupProbe")]
            hooks.append(c.get("lifecycle", {}).get("preStop", {}))
            for h in hooks:
                cmd = h.get("exec", {}).get("command")
                if cmd:
                    assert cmd[0] == "mesh", f"{where}: {cmd}"
                    yield f"{where} {cmd[1]}", cmd[1:]


def parse(argv: list[str]) -> click.Command:
    """Resolve and parse ``mesh <argv>`` without running it (raises on unknown options)."""
    cmd: click.Command = mesh_cli
    ctx = click.Context(mesh_cli, info_name="mesh")
    rest = list(argv)
    while isinstance(cmd, click.Group):
        sub = cmd.get_command(ctx, rest[0])
        assert sub is not None, f"no command {rest[0]!r} in {argv}"
        cmd, rest = sub, rest[1:]
    cmd.make_context(cmd.name or "", rest)
    return cmd


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_command_parses(overlay: str, rendered: dict) -> None:
    seen = 0
    for where, argv in mesh_commands(rendered[overlay]):
        try:
            parse(argv)
        except click.ClickException as exc:
            pytest.fail(f"{where}: `mesh {' '.join(argv)}`: {exc.format_message()}")
        seen += 1
    assert seen >= 20


def test_parse_rejects_an_unknown_option() -> None:
    with pytest.raises(click.ClickException):
        parse(["worker", "--queues", "cpu", "--prefetch", "4"])
