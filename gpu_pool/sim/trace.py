"""The GPU workload trace: JSON lines, one submission (or a run of them) per line.

```
{"time": "2026-03-02T09:00:00+00:00", "task_type": "embed", "items": 12, "urgent": true}
{"time": "2026-03-02T22:00:00Z", "task_type": "embed", "items": 600000, "urgent": false,
 "deadline": "2026-03-03T08:00:00Z", "span_s": 0}
```

Fields:

- ``time``: when the items were submitted (ISO 8601 with a zone; the off-peak windows
  are wall-clock spans, so instants must be absolute);
- ``task_type``: the batcher's task type (``embed``, ``churn_rescore``...), which picks
  the node's throughput curve and the batch limits (``gpu.limits(task_type)``);
- ``items``: how many GPU items (task messages) were submitted, >= 1;
- ``urgent``: true for the ``gpu`` queue (never held), false for bulk (``gpu-batch``,
  may be held for the off-peak window);
- ``deadline`` (optional, bulk): the instant by which every item must be done;
- ``span_s`` (optional, default 0): the items arrive evenly over ``[time, time +
  span_s)`` instead of all at ``time`` (a recorder or generator aggregating a minute
  of traffic into one line says so here; 0 is a burst).

A first line ``{"meta": {...}}`` may describe the trace (generator, seed); it is kept
but never read by the simulator. Why JSON lines: any language can write it, ``grep``
and ``jq`` can cut it, and a recorder can append to it as it goes. A bad line is
reported with its line number and field, and nothing after it is silently skipped.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from worker_mesh.mesh.errors import ConfigError


class TraceError(ConfigError):
    """A trace that cannot be read; the message names the line and the field."""


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time: AwareDatetime
    task_type: str = Field(min_length=1, max_length=64)
    items: int = Field(ge=1)
    urgent: bool
    deadline: AwareDatetime | None = None
    span_s: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _deadline_after_time(self) -> _Line:
        if self.deadline is not None and self.deadline <= self.time:
            raise ValueError("deadline must be after time")
        return self


@dataclass(frozen=True)
class Record:
    """One trace line, times as epoch seconds (what the simulator computes with)."""

    t: float
    task_type: str
    items: int
    urgent: bool
    deadline: float | None = None
    span_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        from datetime import UTC

        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(self.t, UTC).isoformat(),
            "task_type": self.task_type, "items": self.items, "urgent": self.urgent}
        if self.deadline is not None:
            out["deadline"] = datetime.fromtimestamp(self.deadline, UTC).isoformat()
        if self.span_s:
            out["span_s"] = round(self.span_s, 3)
        return out


@dataclass(frozen=True)
class Trace:
    records: tuple[Record, ...]
    meta: dict[str, Any]

    @cached_property
    def start(self) -> float:
        return self.records[0].t if self.records else 0.0

    @cached_property
    def end(self) -> float:
        return max((r.t + r.span_s for r in self.records), default=0.0)

    def items(self, *, urgent: bool | None = None) -> int:
        return sum(r.items for r in self.records if urgent is None or r.urgent is urgent)


def parse_line(text: str, lineno: int = 1) -> Record:
    """One JSON line as a ``Record``; ``TraceError`` names the line and the field."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"trace line {lineno}: not JSON ({exc.msg})") from exc
    try:
        line = _Line.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "line"
        raise TraceError(f"trace line {lineno}: field {where!r}: {err['msg']}") from exc
    return Record(line.time.timestamp(), line.task_type, line.items, line.urgent,
                  line.deadline.timestamp() if line.deadline else None, line.span_s)


def read(source: str | Path | IO[str]) -> Trace:
    """Read a trace (``.jsonl`` or ``.jsonl.gz``), sorted by time (stable)."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise TraceError(f"trace {str(path)!r}: no such file")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            return _read(fh)
    return _read(source)


def _read(fh: IO[str]) -> Trace:
    meta: dict[str, Any] = {}
    records: list[Record] = []
    for lineno, text in enumerate(fh, 1):
        if not text.strip():
            continue
        if lineno == 1 and text.lstrip().startswith('{"meta"'):
            meta = dict(json.loads(text)["meta"])
            continue
        records.append(parse_line(text, lineno))
    if not records:
        raise TraceError("trace has no records")
    records.sort(key=lambda r: r.t)
    return Trace(tuple(records), meta)


def dump_lines(records: Iterable[Record], meta: dict[str, Any] | None = None) -> Iterator[str]:
    if meta is not None:
        yield json.dumps({"meta": meta}, sort_keys=True)
    for r in records:
        yield json.dumps(r.as_json())


def write(path: str | Path, records: Iterable[Record], meta: dict[str, Any] | None = None) -> None:
    """Write a trace; gzip when the name ends in ``.gz`` (reproducible bytes: mtime 0)."""
    path = Path(path)
    text = "".join(line + "\n" for line in dump_lines(records, meta))
    if path.suffix == ".gz":
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
            gz.write(text.encode())
        path.write_bytes(buf.getvalue())
    else:
        path.write_text(text, encoding="utf-8")
