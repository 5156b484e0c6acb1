"""Fields marked sensitive on event models, and masking them where events are shown.

A field is marked on its model::

    mrr: float = Field(ge=0, json_schema_extra={"sensitive": True})

The mark is in the published JSON Schema (``"sensitive": true``), so producers see it
too. Operator views that print events (``mesh dlq list``, ``mesh runs show``) print
``***`` instead of such a field's value; the stored event is untouched (a replay sends
it as it was).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from worker_mesh.events.base import Event
from worker_mesh.events.catalog import CATALOG, EventCatalog
from worker_mesh.mesh.errors import MeshError, UnknownEventType

MASK = "***"


@functools.cache
def sensitive_fields(cls: type[Event]) -> frozenset[str]:
    """Names of the payload fields of ``cls`` marked ``{"sensitive": True}``."""
    out = set()
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("sensitive") is True:
            out.add(name)
    return frozenset(out)


def mask_payload(cls: type[Event], payload: Mapping[str, Any]) -> dict[str, Any]:
    hidden = sensitive_fields(cls)
    return {k: (MASK if k in hidden else v) for k, v in payload.items()}


def mask_wire(fields: Mapping[str, str], catalog: EventCatalog = CATALOG) -> dict[str, str]:
    """The wire fields of an event with its sensitive payload fields masked. An event of
    a type no model describes is shown as it came (nothing marks its fields); a payload
    of a type with sensitive fields that cannot be read (not JSON, unknown version) is
    masked whole."""
    out = dict(fields)
    raw = fields.get("payload")
    if raw is None:
        return out
    try:
        cls = catalog.get(fields.get("type", ""), int(fields.get("v", "1") or 1))
    except UnknownEventType:
        return out  # no model, so no field of it is marked: shown as it came
    except (MeshError, ValueError):  # a known type, an unknown version: cannot tell
        return out | {"payload": MASK}
    if not sensitive_fields(cls):
        return out
    try:
        payload = json.loads(raw)
    except ValueError:
        return out | {"payload": MASK}
    if not isinstance(payload, dict):
        return out | {"payload": MASK}
    out["payload"] = json.dumps(mask_payload(cls, payload), ensure_ascii=False,
                                separators=(",", ":"))
    return out
