"""End to end with real processes: a Celery worker (and, for the full flow, a real
dispatcher) against a real redis-server.

1. The OpenAI-compatible provider behind a local HTTP server that answers 429 with
   Retry-After, then 500, then a completion: the task is retried after the hinted
   delay, then after a backoff, and the content is stored; the key never reaches a log.
2. content.requested (and churn.high_risk) -> content stored -> content.updated published -> re-embedding
   (started by the dispatcher) -> `mesh search` finds it; a request whose checks keep
   failing is dead-lettered once as quality_failed; content.deleted removes vectors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis

from tests.content.llm_server import Reply, llm_server
from tests.support.procs import ROOT, Proc, child_env, start, wait_for
from worker_mesh.chains.loader import load_workflows
from worker_mesh.chains.starter import CeleryStarter, StartRequest
from worker_mesh.events.base import Envelope
from worker_mesh.events.catalog import (
    ChurnHighRisk,
    ContentCreated,
    ContentDeleted,
    ContentRequested,
    ContentUpdated,
)
from worker_mesh.events.dlq import DeadLetters
from worker_mesh.events.publisher import Publisher
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.runs import RunLedger
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.app import create_app
from worker_mesh.workers.content.pipeline import prepare
from worker_mesh.workers.content.prompt import Brief
from worker_mesh.workers.content.providers import GenerationRequest, TemplateProvider
from worker_mesh.workers.content.store import ContentStore
from worker_mesh.workers.embedding.model import model_version
from worker_mesh.workers.embedding.vectors import VectorStore

KEY = "sk-e2e-NEVER-IN-LOGS-987"


def all_alive(procs: list[Proc]) -> bool:
    dead = [p.name for p in procs if not p.alive()]
    assert not dead, f"process(es) exited early: {dead}"
    return True


def test_provider_429_then_500_then_success_through_a_real_worker(
        settings: MeshSettings, r: redis.Redis, tmp_path: Path) -> None:
    request = ContentRequested(content_id="faq1", topic="Exporting your data",
                               keywords=["export", "CSV"])
    brief = Brief.from_dict(prepare(settings, "content.requested", request.model_dump()))
    good = TemplateProvider().generate(GenerationRequest(brief)).text
    script = [Reply(429, headers={"Retry-After": "1"}), Reply(500), Reply(200, good)]
    with llm_server(script) as srv:
        env = settings.to_env() | {"MESH_LLM_PROVIDER": "openai", "MESH_LLM_BASE_URL": srv.url,
                                   "MESH_LLM_API_KEY": KEY, "MESH_LLM_MODEL": "local-model"}
        s = MeshSettings.load(env)
        worker = start("worker", ["worker", "-Q", "cpu,io", "-c", "2", "-l", "DEBUG"], s,
                       tmp_path / "logs")
        try:
            app = create_app(s)
            registry = load_workflows(s)
            starter = CeleryStarter(app, registry)
            envl = Envelope.wrap(request)
            starter.start(StartRequest("content", envl, starter.run_id("content", envl)))
            store = ContentStore(r, Keys(s.redis.key_prefix))
            stored = wait_for(lambda: store.get("faq1"), timeout_s=90, what="stored content")
        finally:
            worker.stop()
    assert [x.body["model"] for x in srv.seen] == ["local-model"] * 3
    gap_after_429 = srv.seen[1].at - srv.seen[0].at
    gap_after_500 = srv.seen[2].at - srv.seen[1].at
    assert gap_after_429 >= 0.95, gap_after_429  # Retry-After: 1
    assert gap_after_500 >= 0.45, gap_after_500  # API-call backoff: at least backoff_s / 2
    assert stored["model_version"] == "openai:local-test" and stored["attempts"] == 1
    assert stored["body"] == good and stored["event_id"] == envl.event_id
    log = worker.output()
    assert "Retry" in log and KEY not in log


def test_requested_content_is_generated_published_embedded_and_searchable(
        settings: MeshSettings, r: redis.Redis, tmp_path: Path) -> None:
    s = settings
    logs = tmp_path / "logs"
    procs = [start("dispatcher", ["dispatcher"], s, logs),
             start("worker", ["worker", "-Q", "cpu,io,gpu", "--pool", "threads", "-c", "4"], s, logs)]
    try:
        keys = Keys(s.redis.key_prefix)
        pub = Publisher(r, s.streams, keys)
        pub.publish(ContentRequested(
            content_id="gpu-guide", topic="Scheduling GPU work at night for lower cost",
            keywords=["GPU", "night", "cost"]))
        pub.publish(ChurnHighRisk(customer_id="c7", score=0.93, model_version="m1", plan="pro"))
        pub.publish(ContentRequested(content_id="spam", topic="Great deals",
                                     keywords=["click here"]))  # banned: can never pass
        vectors = VectorStore(r, keys)
        version = model_version()
        doc = wait_for(lambda: all_alive(procs) and vectors.get(version, "gpu-guide"), timeout_s=120,
                       what="vectors of the generated content")
        stored = ContentStore(r, keys).get("gpu-guide")
        assert stored is not None and stored["version"] == doc.content_version == 1
        assert doc.meta["workflow"] == "reembed" and doc.meta["event_id"]

        out = subprocess.run(
            [sys.executable, "-m", "worker_mesh.workers.cli", "search", "when should GPU jobs run to save money",
             "--k", "3", "--json"], cwd=ROOT, env=child_env(s), capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        found = json.loads(out.stdout)
        assert found["model_version"] == version
        assert found["hits"][0]["content_id"] == "gpu-guide"
        assert found["hits"][0]["score"] > 0.3

        dlq = DeadLetters(r, keys, s.streams)
        dead = wait_for(lambda: [d for d in dlq.list() if d.reason_code == "quality_failed"],
                        timeout_s=60, what="the failing request dead-lettered")
        assert len(dead) == 1 and "click here" in dead[0].reason
        assert json.loads(dead[0].fields["payload"])["content_id"] == "spam"
        wait_for(lambda: RunLedger(r, keys).workflow_stats("content").failures == 1, timeout_s=30,
                 what="the failed run counted")
        assert ContentStore(r, keys).get("spam") is None
        assert len(dlq.list()) == 1  # not dead-lettered a second time as workflow_failed

        retention = wait_for(lambda: vectors.get(version, "retention-c7"), timeout_s=60,
                             what="the retention message for the high-risk customer embedded")
        assert "pro plan" in " ".join(retention.texts)

        # An edit of one paragraph of a long document: only its chunks are re-embedded.
        paras = [f"Part {i} of the admin handbook covers {topic}. " + " ".join(
            f"Step {j} about {topic} keeps the workspace tidy and safe." for j in range(9))
            for i, topic in enumerate(["billing", "roles", "exports", "alerts", "backups",
                                       "audit logs", "single sign-on", "API keys"])]
        pub.publish(ContentCreated(content_id="handbook", title="Admin handbook",
                                   body="\n\n".join(paras)))
        wait_for(lambda: vectors.get(version, "handbook"), timeout_s=60, what="handbook embedded")
        paras[3] = paras[3].replace("Part 3", "Part 3 (revised in November)")
        edit = Envelope.wrap(ContentUpdated(content_id="handbook", title="Admin handbook",
                                            body="\n\n".join(paras), version=2))
        pub.publish(edit)
        app = create_app(s)
        run_id = load_workflows(s).get("reembed").run_id(edit)
        handle = app.AsyncResult(f"{run_id}:embed")  # polled: .get() may be barred here
        wait_for(handle.successful, timeout_s=60, interval_s=0.1, what="the edit re-embedded")
        res = handle.result
        assert res["content_version"] == 2 and res["chunks"] >= 8
        assert 1 <= res["embedded"] <= 2 and res["skipped"] == res["chunks"] - res["embedded"]
        assert res["event_id"] == edit.event_id and res["workflow_version"] == "1"

        pub.publish(ContentDeleted(content_id="gpu-guide"))
        wait_for(lambda: vectors.get(version, "gpu-guide") is None, timeout_s=60,
                 what="vectors deleted")
    except AssertionError:
        for p in procs:  # the processes' own story, for whoever reads the failure
            print(f"--- {p.name} ---\n{p.output()[-6000:]}")
        raise
    finally:
        for p in procs:
            p.stop()
