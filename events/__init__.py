"""Events: typed models, the wire format, publishing, and the dispatcher.

Public surface::

    from worker_mesh.events import publish, publish_many, CustomerUpdated
    publish(CustomerUpdated(customer_id="42", plan="pro"))

``events`` knows nothing of Celery tasks: the dispatcher starts workflows through the
registry that ``chains`` fills.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from worker_mesh.events.base import Envelope, Event
from worker_mesh.events.catalog import (
    CATALOG,
    ChurnHighRisk,
    ContentCreated,
    ContentDeleted,
    ContentRequested,
    ContentUpdated,
    CustomerActivity,
    CustomerCreated,
    CustomerUpdated,
    EventCatalog,
    ModelRetrainRequested,
)
from worker_mesh.events.publisher import Publishable, Publisher

__all__ = [
    "CATALOG",
    "ChurnHighRisk",
    "ContentCreated",
    "ContentDeleted",
    "ContentRequested",
    "ContentUpdated",
    "CustomerActivity",
    "CustomerCreated",
    "CustomerUpdated",
    "Envelope",
    "Event",
    "EventCatalog",
    "ModelRetrainRequested",
    "Publisher",
    "configure",
    "publish",
    "publish_many",
]

_default: Publisher | None = None
_lock = threading.Lock()


def configure(publisher: Publisher | None) -> None:
    """Set (or clear, with None) the publisher used by ``publish``/``publish_many``."""
    global _default
    with _lock:
        _default = publisher


def default_publisher() -> Publisher:
    global _default
    with _lock:
        if _default is None:
            from worker_mesh.mesh.keys import Keys
            from worker_mesh.mesh.redis_conn import make_client
            from worker_mesh.mesh.settings import MeshSettings

            s = MeshSettings.load()
            _default = Publisher(make_client(s.redis), s.streams, Keys(s.redis.key_prefix))
        return _default


def publish(event: Publishable) -> str:
    """Publish one event (typed event or envelope); returns its event id."""
    return default_publisher().publish(event)


def publish_many(items: Iterable[Publishable]) -> list[str]:
    """Publish many events, pipelined; returns their event ids."""
    return default_publisher().publish_many(items)
