"""Artifact stores: the local directory and S3 through boto3 against a moto server."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest

from worker_mesh.mesh.embedded import free_port
from worker_mesh.mesh.errors import ConfigError, NotFound, ProviderError
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.stores.artifacts import ArtifactStore, LocalArtifactStore, make_store
from worker_mesh.workers.stores.s3 import S3ArtifactStore

KEY_ID, SECRET = "AKIAMESHTEST", "mesh-test-secret-do-not-log"


def s3_settings(endpoint: str, bucket: str) -> MeshSettings:
    return MeshSettings.load({
        "MESH_ARTIFACTS_BACKEND": "s3", "MESH_ARTIFACTS_S3_BUCKET": bucket,
        "MESH_ARTIFACTS_S3_PREFIX": "team-a/", "MESH_ARTIFACTS_S3_ENDPOINT_URL": endpoint,
        "MESH_ARTIFACTS_S3_ACCESS_KEY_ID": KEY_ID, "MESH_ARTIFACTS_S3_SECRET_ACCESS_KEY": SECRET,
        "MESH_ARTIFACTS_S3_MAX_ATTEMPTS": "1", "MESH_ARTIFACTS_S3_CONNECT_TIMEOUT_S": "1",
    })


@pytest.fixture
def bucket(moto_url: str) -> str:
    name = "mesh-" + uuid.uuid4().hex[:10]
    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id=KEY_ID,
                 aws_secret_access_key=SECRET).create_bucket(Bucket=name)
    return name


def exercise(store: ArtifactStore) -> None:
    """The protocol's contract, the same for every backend."""
    assert not store.exists("models/churn/a.json")
    with pytest.raises(NotFound):
        store.get("models/churn/a.json")
    store.put("models/churn/a.json", b'{"a":1}')
    store.put("models/churn/b.json", b"second")
    store.put("other/c.json", b"x")
    assert store.get("models/churn/a.json") == b'{"a":1}'
    assert store.exists("models/churn/a.json")
    store.put("models/churn/a.json", b"replaced")
    assert store.get("models/churn/a.json") == b"replaced"
    assert store.list("models/") == ["models/churn/a.json", "models/churn/b.json"]
    assert "other/c.json" in store.list()
    for bad in ("../escape", "/abs", "a/../../b", ""):
        with pytest.raises(ConfigError):
            store.put(bad, b"x")


def test_local_store(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    exercise(store)
    assert (tmp_path / "artifacts" / "models" / "churn" / "a.json").read_bytes() == b"replaced"
    assert not [p for p in (tmp_path / "artifacts").rglob(".tmp-*")]


def test_s3_store_over_http(moto_url: str, bucket: str) -> None:
    store = make_store(s3_settings(moto_url, bucket).artifacts)
    assert isinstance(store, S3ArtifactStore)
    exercise(store)
    # Objects really are in the bucket, under the prefix.
    raw = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                       aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    body = raw.get_object(Bucket=bucket, Key="team-a/models/churn/a.json")["Body"].read()
    assert body == b"replaced"
    assert store.uri("models/churn/a.json") == f"s3://{bucket}/team-a/models/churn/a.json"
    assert SECRET not in repr(store) and SECRET not in repr(s3_settings(moto_url, bucket))


def test_s3_missing_bucket_is_a_config_error(moto_url: str) -> None:
    store = make_store(s3_settings(moto_url, "no-such-bucket-" + uuid.uuid4().hex[:6]).artifacts)
    with pytest.raises(ConfigError, match="NoSuchBucket"):
        store.put("k.json", b"x")


def test_s3_unreachable_is_transient() -> None:
    store = make_store(s3_settings(f"http://127.0.0.1:{free_port()}", "b").artifacts)
    with pytest.raises(ProviderError) as info:
        store.get("k.json")
    assert SECRET not in str(info.value)


def test_s3_backend_without_bucket_is_refused() -> None:
    with pytest.raises(ConfigError, match="s3_bucket"):
        make_store(MeshSettings.load({"MESH_ARTIFACTS_BACKEND": "s3"}).artifacts)


def test_model_registry_on_s3(moto_url: str, bucket: str, settings: MeshSettings) -> None:
    """A trained model stored in S3, promoted, loaded back by the scorer: same scores."""
    from worker_mesh.workers.churn import features as F
    from worker_mesh.workers.churn import synth
    from worker_mesh.workers.churn.scoring import services
    from worker_mesh.workers.churn.training import train_and_maybe_promote
    from worker_mesh.workers.runtime import Runtime

    s3 = s3_settings(moto_url, bucket)
    rt = Runtime(MeshSettings.load({**settings.to_env(), **s3.to_env()}))
    svc = services(rt)
    out = train_and_maybe_promote(svc.registry, samples=800, seed=3)
    assert out.promoted
    assert svc.registry.get(out.candidate_version)["artifact"] == (
        f"s3://{bucket}/team-a/models/churn/{out.candidate_version}.json")
    ptr, served = svc.model.get()
    assert ptr.version == out.candidate_version == served.version
    x = F.matrix(synth.customers(20, seed=4))
    assert (served.predict(x) == svc.registry.load(out.candidate_version).predict(x)).all()
