"""Replay by model version: documents embedded by an old model version are re-embedded,
exactly those, through the dispatcher (real redis-server, real workers, a real
dispatcher, the real embedding model).

Given 4 documents embedded by a worker of the previous release (old model version)
and 2 by the current one, when the operator runs ``mesh replay --workflow reembed
--where model_version=<old>``, then the dry run counts 4, the 4 documents get vectors
of the current version (as many chunks as the old version had), the 2 others are not
touched (same run), and ``mesh audit`` adds up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from tests.runs.flows import OLD_EMBEDDING_VERSION as OLD_VERSION
from tests.support.procs import ROOT, child_env, start, wait_for
from worker_mesh.events.catalog import ContentCreated
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.runs_history import RunHistory, RunQuery
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.embedding.model import model_version
from worker_mesh.workers.embedding.vectors import VectorStore

pytestmark = [pytest.mark.e2e]
BODY = ("Churn falls when onboarding is short and support answers fast. " * 30)


def test_replay_by_old_model_version_reembeds_exactly_its_documents(
        redis_server: EmbeddedRedis, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = MeshSettings.load({
        "MESH_REDIS_URL": redis_server.url, "MESH_REDIS_KEY_PREFIX": "rr" + uuid.uuid4().hex[:8],
        "MESH_DISPATCHER_BLOCK_MS": "50", "MESH_WORKFLOWS_DISABLED": '["content"]',
    })
    keys = Keys(s.redis.key_prefix)
    r = make_client(s.redis)
    pub, store = Publisher(r, s.streams, keys), VectorStore(r, keys)
    hist = RunHistory(r, keys, s.runs)
    new = model_version()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", *args], cwd=ROOT,
                             env=child_env(s), capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        return res

    def docs(n: int, first: int) -> list[str]:
        ids = [f"doc-{i}" for i in range(first, first + n)]
        for cid in ids:
            pub.publish(ContentCreated(content_id=cid, title=f"Title {cid}", body=BODY + cid))
        return ids

    dispatcher = start("dispatcher", ["dispatcher"], s, tmp_path)
    old_worker = start("worker-old", ["worker", "-Q", "cpu,gpu", "-c", "1"], s, tmp_path,
                       {"MESH_CELERY_EXTRA_MODULES": '["tests.runs.old_embedder"]'})
    try:
        old_docs = docs(4, 0)
        wait_for(lambda: len(store.content_ids(OLD_VERSION)) == 4, 180, interval_s=0.5,
                 what="4 documents embedded by the old version")
        old_worker.stop()
        worker = start("worker", ["worker", "-Q", "cpu,gpu", "-c", "1"], s, tmp_path)
        try:
            new_docs = docs(2, 10)
            wait_for(lambda: len(store.content_ids(new)) == 2, 180, interval_s=0.5,
                     what="2 documents embedded by the current version")
            before = {cid: store.get(new, cid).meta["run_id"] for cid in new_docs}  # type: ignore[union-attr]
            old_chunks = sum(len(store.get(OLD_VERSION, c).hashes) for c in old_docs)  # type: ignore[union-attr]
            assert hist.count(RunQuery(workflow="reembed", model_version=OLD_VERSION)) == 4

            dry = json.loads(cli("replay", "--workflow", "reembed", "--where",
                                 f"model_version={OLD_VERSION}", "--dry-run", "--json").stdout)
            assert (dry["events"], dry["sent"]) == (4, 0)
            sent = json.loads(cli("replay", "--workflow", "reembed", "--where",
                                  f"model_version={OLD_VERSION}", "--yes", "--json").stdout)
            assert sent["sent"] == 4
            wait_for(lambda: len(store.content_ids(new)) == 6, 180, interval_s=0.5,
                     what="the old version's documents re-embedded")
        finally:
            worker.stop()
        # exactly the old version's documents, chunk for chunk; the others untouched
        assert sorted(store.content_ids(new)) == sorted(old_docs + new_docs)
        assert sum(len(store.get(new, c).hashes) for c in old_docs) == old_chunks  # type: ignore[union-attr]
        assert {cid: store.get(new, cid).meta["run_id"] for cid in new_docs} == before  # type: ignore[union-attr]
        replays = hist.query(RunQuery(workflow="reembed", model_version=new), limit=100)
        redone = [x for x in replays if x.run_id not in before.values()]
        assert len(redone) == 4 and {x.entity for x in redone} == {f"content:{c}" for c in old_docs}
        embedded = sum(json.loads(cli("runs", "show", x.run_id, "--json").stdout)["steps"][1]
                       ["state"] == "succeeded" for x in redone)
        assert embedded == 4
        audit = subprocess.run([sys.executable, "-m", "worker_mesh.workers.cli", "audit", "--wait-s", "60"],
                               cwd=ROOT, env=child_env(s), capture_output=True, text=True, timeout=120)
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        old_worker.stop()
        dispatcher.stop()
        r.close()
