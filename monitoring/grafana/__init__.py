"""Grafana dashboards (JSON, built by ``dashboards.py``) and provisioning files."""
