"""Workflow definitions: one module per workflow, each building a Celery canvas from an
event, registered in the event -> workflow registry (``chains.registry``)."""
