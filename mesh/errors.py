"""The one exception tree of Worker Mesh, split by what the caller should do next.

::

    MeshError
    ├── PermanentError              do not retry; dead-letter / fail the run
    │   ├── InvalidEvent            a stream entry or event that fails validation
    │   │   ├── UnknownEventType
    │   │   └── PayloadTooLarge
    │   ├── NotFound                an entity, model version or artifact is missing
    │   ├── ConfigError             settings that cannot work (bad URL, unknown key)
    │   │   └── AccessDenied        Redis refused us: credentials, a permission, its TLS
    │   │                           certificate (fix the settings; never retried)
    │   └── QualityCheckFailed      generated content failed its checks for good
    └── TransientError(delay_s)     retry later; ``delay_s`` is a hint (None: policy decides)
        ├── BrokerUnavailable       Redis / broker unreachable or timed out
        ├── RateLimited             a provider answered 429 (``delay_s`` = Retry-After)
        ├── Throttled               a shared budget is spent: run again in ``delay_s``
                                    (waiting, not failing: no retry is counted)
        └── ProviderError           a provider answered 5xx or timed out

Third-party errors (redis-py, Celery, boto3, kubernetes, httpx) are translated into
this tree at the adapter that calls them (``raise BrokerUnavailable(...) from exc``),
so the rest of the code and the retry policies only ever look at these types.
"""

from __future__ import annotations


class MeshError(Exception):
    """Root of every error Worker Mesh raises on purpose."""


class PermanentError(MeshError):
    """Retrying cannot help: the input or the state is wrong."""


class InvalidEvent(PermanentError):
    """An event or stream entry failed validation; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownEventType(InvalidEvent):
    """The entry's ``type`` is not in the event catalog."""


class PayloadTooLarge(InvalidEvent):
    """The encoded event is larger than ``streams.max_payload_bytes``."""


class NotFound(PermanentError):
    """A referenced entity, model version or artifact does not exist."""


class ConfigError(PermanentError):
    """The settings cannot work as given."""


class AccessDenied(ConfigError):
    """Redis refused this process: wrong password or user, a missing ACL permission, or
    a server certificate this process does not trust. The CLI exits 3 on it (like an
    unreachable Redis), not 2 (a setting that is malformed)."""


class QualityCheckFailed(PermanentError):
    """Generated content kept failing its quality checks."""


class TransientError(MeshError):
    """Retrying later may succeed. ``delay_s`` is the suggested wait, if known."""

    def __init__(self, message: str, *, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class BrokerUnavailable(TransientError):
    """Redis (stream, broker or result backend) is unreachable or timed out."""


class RateLimited(TransientError):
    """A provider asked us to slow down (HTTP 429)."""


class ProviderError(TransientError):
    """A provider failed in a way that may pass (HTTP 5xx, timeout)."""


class Throttled(TransientError):
    """A shared budget (rate limit, concurrency key, paused resource) is spent for now:
    run the step again in ``delay_s``. Waiting, not failing: a task wrapper reschedules
    the step without counting a retry (``workers.flowctl.reschedule``)."""

    def __init__(self, message: str, *, delay_s: float, what: str = "") -> None:
        super().__init__(message, delay_s=delay_s)
        self.what = what
