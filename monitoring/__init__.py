"""Monitoring: Prometheus metrics (through the small facade in ``monitoring.metrics``),
Grafana dashboards, alert rules, Sentry and Flower settings."""
