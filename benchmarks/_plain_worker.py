"""``celery -A benchmarks._plain_worker worker``: the plain Celery chain baseline's
worker (``benchmarks._plain_chain``)."""

from benchmarks._plain_chain import worker_app

app = worker_app()
