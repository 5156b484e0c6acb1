"""Workers: the Celery app and its settings, task kinds with their retry policies,
the AI task implementations, result and artifact stores, and the ``mesh`` CLI."""
