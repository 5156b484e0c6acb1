"""Every overlay renders through kustomize and every object validates offline: built-in
kinds against the Kubernetes API schemas (kubernetes-validate, strict), CRDs (KEDA,
prometheus-operator) against the schemas vendored in k8s/schemas."""

from __future__ import annotations

import copy

import pytest
import yaml
from click.testing import CliRunner

from worker_mesh.workers.cli import _k8s
from worker_mesh.workers.cli import cli as mesh_cli

from .conftest import find

OVERLAYS = ["dev", "prod", "prod-autoscaler"]


def test_the_expected_overlays_exist() -> None:
    assert _k8s.overlays() == OVERLAYS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_with_every_component(overlay: str, rendered: dict) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered[overlay]}
    for deployment in ("mesh-dispatcher", "mesh-worker-cpu", "mesh-worker-io", "mesh-worker-gpu",
                       "mesh-beat", "mesh-flower", "mesh-exporter"):
        assert ("Deployment", deployment) in kinds
    namespaces = {o["metadata"].get("namespace") for o in rendered[overlay] if o["kind"] != "Namespace"}
    assert namespaces == {"mesh-dev" if overlay == "dev" else "mesh"}


def test_prod_has_keda_and_prometheus_operator_objects(rendered: dict) -> None:
    kinds = [o["kind"] for o in rendered["prod"]]
    assert kinds.count("ScaledObject") == 3
    assert {"TriggerAuthentication", "ServiceMonitor", "PrometheusRule"} <= set(kinds)
    assert "HorizontalPodAutoscaler" not in kinds
    assert "Role" not in kinds, "with KEDA no mesh account needs Kubernetes API access"


def test_dev_needs_no_crds_and_runs_its_own_redis(rendered: dict) -> None:
    assert all(_k8s.is_builtin(o) for o in rendered["dev"])
    redis = find(rendered["dev"], "StatefulSet", "mesh-redis")
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert "--appendonly yes" in redis["spec"]["template"]["spec"]["containers"][0]["command"][-1]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_offline(overlay: str, rendered: dict) -> None:
    errors = _k8s.validate_objects(rendered[overlay])
    assert errors == []
    crds = [o for o in rendered[overlay] if not _k8s.is_builtin(o)]
    assert all(_k8s._schema_for(o) is not None for o in crds)


@pytest.mark.parametrize("version", ["1.27.0", "1.37.0"])
def test_builtins_validate_from_the_oldest_supported_to_the_newest_kubernetes(version: str,
                                                                              rendered: dict) -> None:
    """docs/deploy.md says Kubernetes >= 1.27; kubernetes-validate knows up to 1.37."""
    for overlay in OVERLAYS:
        builtins = [o for o in rendered[overlay] if _k8s.is_builtin(o)]
        assert _k8s.validate_objects(builtins, version) == [], overlay


def test_validation_rejects_a_misspelt_builtin_field(rendered: dict) -> None:
    dep = copy.deepcopy(find(rendered["prod"], "Deployment", "mesh-beat"))
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"exec": {"command": ["x"]}}
    errors = _k8s.validate_object(dep)
    assert errors and "readinesProbe" in errors[0]


def test_validation_rejects_a_wrong_type_in_a_builtin(rendered: dict) -> None:
    cm = copy.deepcopy(find(rendered["prod"], "ConfigMap", "mesh-settings"))
    cm["data"]["MESH_CELERY_TASK_TIME_LIMIT_S"] = 1800  # ConfigMap values are strings
    assert _k8s.validate_object(cm)


@pytest.mark.parametrize("breakage", [
    ("ScaledObject", "mesh-worker-gpu", lambda o: o["spec"].pop("triggers")),
    ("ScaledObject", "mesh-worker-gpu", lambda o: o["spec"].update(minReplicas=0)),
    ("ScaledObject", "mesh-worker-gpu",
     lambda o: o["spec"]["triggers"][0]["metadata"].update(listLength=128)),
    ("TriggerAuthentication", "mesh-redis", lambda o: o["spec"]["secretTargetRef"][0].pop("key")),
    ("ServiceMonitor", "mesh", lambda o: o["spec"]["endpoints"][0].update(interval="30 seconds")),
    ("PrometheusRule", "mesh-alerts", lambda o: o["spec"]["groups"].append({"rules": []})),
], ids=["no-triggers", "unknown-field", "int-metadata", "secret-without-key", "bad-duration",
        "group-without-name"])
def test_vendored_crd_schemas_reject_broken_objects(rendered: dict, breakage: tuple) -> None:
    kind, name, breaker = breakage
    obj = copy.deepcopy(find(rendered["prod"], kind, name))
    assert _k8s.validate_object(obj) == []
    breaker(obj)
    assert _k8s.validate_object(obj), f"{kind} schema accepted a broken object"


def test_generated_files_are_in_sync_with_their_sources() -> None:
    assert _k8s.stale_files() == [], "run `mesh k8s generate`"


def test_prometheus_rule_wraps_the_alert_rules_unchanged(rendered: dict) -> None:
    assert _k8s.ALERTS_FILE.is_file(), "monitoring/prometheus/alerts.yml is the source of the rules"
    source = yaml.safe_load(_k8s.ALERTS_FILE.read_text())["groups"]
    rule = find(rendered["prod"], "PrometheusRule", "mesh-alerts")
    assert rule["spec"]["groups"] == source
    assert sum(len(g["rules"]) for g in source) > 0


def test_render_command_prints_the_overlay() -> None:
    result = CliRunner().invoke(mesh_cli, ["k8s", "render", "--overlay", "prod"])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.output) if d]
    assert any(d["kind"] == "ScaledObject" for d in docs)


def test_render_command_rejects_an_unknown_overlay() -> None:
    result = CliRunner().invoke(mesh_cli, ["k8s", "render", "--overlay", "staging"])
    assert result.exit_code != 0
    assert "unknown overlay 'staging'" in result.output


def test_check_command_passes_on_the_committed_manifests() -> None:
    result = CliRunner().invoke(mesh_cli, ["k8s", "check", "--json"])
    assert result.exit_code == 0, result.output
    assert '"ok": true' in result.output


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_carry_the_package_version(overlay: str, rendered: dict) -> None:
    from importlib.metadata import version

    images = {c["image"] for o in rendered[overlay] if o["kind"] == "Deployment"
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images and all(i.endswith(":" + version("worker-mesh")) for i in images), images
