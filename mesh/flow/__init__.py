"""Flow control for AI calls: cluster-wide rate limits (requests and tokens, reconciled
with the real usage), concurrency keys, priorities and weighted fair share, in Redis.

The public surface (docs/flow-control.md)::

    from worker_mesh.mesh.flow import Flow, Limit, Concurrency, Priority    # what a step declares
    from worker_mesh.mesh.flow import FlowControl, report_usage              # what runs it
"""

from worker_mesh.mesh.flow.concurrency import ConcurrencyLimiter, Lease
from worker_mesh.mesh.flow.declare import Concurrency, Flow, Limit, Priority
from worker_mesh.mesh.flow.gate import Admission, FlowControl, NullObserver, Observer, report_usage
from worker_mesh.mesh.flow.limits import Permit, RateLimiter, Wait

__all__ = [
    "Admission",
    "Concurrency",
    "ConcurrencyLimiter",
    "Flow",
    "FlowControl",
    "Lease",
    "Limit",
    "NullObserver",
    "Observer",
    "Permit",
    "Priority",
    "RateLimiter",
    "Wait",
    "report_usage",
]
