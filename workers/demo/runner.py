"""Runs the demo: Redis (embedded unless configured), a dispatcher, workers per queue
class, the scenario's events, a progress bar, and the summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr

from worker_mesh.gpu_pool.routing import ALL_QUEUES
from worker_mesh.mesh.embedded import EmbeddedRedis
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client
from worker_mesh.mesh.settings import MeshSettings
from worker_mesh.workers.procs import Proc, start


@dataclass
class Mesh:
    """The processes of a one-machine mesh."""

    settings: MeshSettings
    log_dir: Path
    redis_server: EmbeddedRedis | None = None
    procs: list[Proc] = field(default_factory=list)

    @classmethod
    def up(cls, settings: MeshSettings, workdir: Path, *, fresh: bool = True) -> Mesh:
        server = None
        if settings.redis.url is None:
            server = EmbeddedRedis(Path(settings.redis.embedded_dir)).start()
            redis_settings = settings.redis.model_copy(update={"url": SecretStr(server.url)})
            settings = settings.model_copy(update={"redis": redis_settings})
            if fresh:
                make_client(settings.redis).flushdb()  # our own server: start clean
        elif fresh:
            # Someone else's Redis: never touch their keys, use a prefix of our own.
            redis_settings = settings.redis.model_copy(
                update={"key_prefix": f"{settings.redis.key_prefix}-demo{int(time.time())}"})
            settings = settings.model_copy(update={"redis": redis_settings})
        return cls(settings, workdir / "logs", server)

    def start_processes(self, cpu_concurrency: int = 2) -> None:
        s, logs = self.settings, self.log_dir
        self.procs.append(start("dispatcher", ["dispatcher"], s, logs))
        self.procs.append(start("worker-cpu-io", ["worker", "-Q", "cpu,io", "-c", str(cpu_concurrency),
                                                  "-n", "cpu-io@%h"], s, logs))
        # One GPU worker process owns the model; threads feed its micro-batcher.
        gpu_threads = str(2 * s.gpu.max_batch)
        self.procs.append(start("worker-gpu", ["worker", "-Q", "gpu,gpu-batch", "-P", "threads",
                                               "-c", gpu_threads, "-n", "gpu@%h"], s, logs))

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.alive():
                tail = p.output()[-2000:]
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}; log tail:\n{tail}")

    def down(self) -> None:
        for p in self.procs:
            p.stop()
        self.procs.clear()
        if self.redis_server is not None:
            self.redis_server.stop()


def progress(client: redis.Redis, settings: MeshSettings) -> dict[str, Any]:
    """Published vs accounted entries, and work still queued, from Redis alone."""
    keys = Keys(settings.redis.key_prefix)
    published = accounted = 0
    for p in range(settings.streams.partitions):
        try:
            info: dict[Any, Any] = client.xinfo_stream(keys.stream(p))  # type: ignore[assignment]
            published += int(info.get("entries-added", info.get(b"entries-added", 0)) or 0)
        except redis.ResponseError:
            pass
        for k, v in client.hgetall(keys.outcomes(p)).items():
            if b"|" not in k:
                accounted += int(v)
    cp = keys.celery_prefix()
    queued = sum(client.llen(f"{cp}{q}") for q in ALL_QUEUES)
    unacked = client.hlen(f"{cp}unacked")
    coalescing = sum(client.zcard(keys.coalesce_due(p)) for p in range(settings.streams.partitions))
    return {"published": published, "accounted": accounted, "queued": queued,
            "unacked": unacked, "coalescing": coalescing}


def quiet(p: dict[str, Any]) -> bool:
    return (p["published"] > 0 and p["published"] == p["accounted"] and p["queued"] == 0
            and p["unacked"] == 0 and p["coalescing"] == 0)
