"""Rewrite imports of the project's packages to the ``worker_mesh`` namespace.

``python scripts/namespace_imports.py [PATH ...]`` rewrites, in place, every ``.py`` and
``.md`` file under the given paths (default: the repository): ``from events.x import``
-> ``from worker_mesh.events.x import``, ``import events.x`` ->
``import worker_mesh.events.x``, and the module paths written as strings
(``"-m", "workers.cli"``, ``"monitoring.celery_hooks"``...). Idempotent. Used once to
move the code base, and on branches written before the move.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PACKAGES = ("mesh", "events", "chains", "workers", "gpu_pool", "monitoring")
ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".git", ".mesh", "node_modules", "__pycache__"}

_P = "|".join(PACKAGES)
FROM = re.compile(rf"^(\s*)from ({_P})(\.[\w.]+)? import ", re.M)
IMPORT = re.compile(rf"^(\s*)import ({_P})(\.[\w.]+)?( as \w+)?(\s+#.*)?\s*$", re.M)
MODULE_STRINGS = re.compile(rf"(?<!getLogger\()([\"'])({_P})((?:\.[A-Za-z_]\w*)+)\1")


def _string(m: re.Match[str]) -> str:
    quote, pkg, rest = m.group(1), m.group(2), m.group(3)
    dotted = f"{pkg}{rest}"
    if not _is_module(dotted):
        return m.group(0)
    return f"{quote}worker_mesh.{dotted}{quote}"


def _is_module(dotted: str) -> bool:
    """A dotted name whose first two parts are a module or package of this repository
    (``workers.cli``, ``events.publisher.Publisher``), not a Celery task name
    (``mesh.churn.score``) or a logger name."""
    parts = dotted.split(".")
    if len(parts) < 2 or parts[0] not in PACKAGES:
        return False
    base = ROOT / parts[0] / parts[1]
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _import(m: re.Match[str]) -> str:
    indent, pkg, rest, alias = m.group(1), m.group(2), m.group(3) or "", m.group(4) or ""
    comment = m.group(5) or ""
    if not rest:  # import events  ->  from worker_mesh import events
        return f"{indent}from worker_mesh import {pkg}{alias}{comment}"
    if alias or comment:  # import events.wire as w  ->  import worker_mesh.events.wire as w
        return f"{indent}import worker_mesh.{pkg}{rest}{alias}{comment}"
    # import events.catalog (binds "events"): keep that name bound
    return f"{indent}import worker_mesh.{pkg}{rest}\n{indent}from worker_mesh import {pkg}"


def rewrite(text: str) -> str:
    text = FROM.sub(lambda m: f"{m.group(1)}from worker_mesh.{m.group(2)}{m.group(3) or ''} import ", text)
    text = IMPORT.sub(_import, text)
    return MODULE_STRINGS.sub(_string, text)


def files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_file():
            out.append(p)
            continue
        for f in p.rglob("*"):
            if f.suffix in (".py", ".md", ".toml", ".cfg", ".ini") and not (SKIP & set(f.parts)):
                out.append(f)
    return out


def main(argv: list[str]) -> int:
    targets = [Path(a) for a in argv] or [ROOT]
    changed = 0
    for f in files(targets):
        if f.name == "namespace_imports.py":
            continue
        old = f.read_text(encoding="utf-8")
        new = rewrite(old)
        if new != old:
            f.write_text(new, encoding="utf-8")
            changed += 1
    print(f"rewrote {changed} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
