"""Optional dependencies, installed with the package's extras.

The core (event bus, dispatcher, run ledger, Celery runtime, metrics) needs none of
them; a built-in pack or an integration does. ``require(module, extra)`` is called where
a pack first needs its library, so that using it without the extra fails with one line
naming what to install, not a bare ``ModuleNotFoundError`` deep in a worker.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from worker_mesh.mesh.errors import ConfigError

EXTRAS = {
    "churn": "the churn prediction pack (scikit-learn)",
    "embeddings": "the re-embedding pack (torch, sentence-transformers, the MiniLM model)",
    "s3": "the S3 artifact store (boto3)",
    "k8s": "the Kubernetes GPU autoscaler (kubernetes)",
    "flower": "the Flower UI (flower)",
    "sentry": "Sentry reporting (sentry-sdk)",
    "gpu-sim": "the GPU cost simulator (simpy, matplotlib)",
}


class MissingExtra(ConfigError):
    """A pack or integration is used without its optional dependencies installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise MissingExtra naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or module.split(".")[0] != exc.name.split(".")[0]:
            raise  # the library is there; something it imports is not: a real error
        what = EXTRAS.get(extra, extra)
        raise MissingExtra(f"{module} is not installed: {what} needs "
                           f"pip install 'worker-mesh[{extra}]'") from None
