"""Ingest: events/s of ``Publisher.publish_many`` and ``Publisher.publish``, each beside
raw redis-py XADD of the same encoded fields, measured in the same run.

Baselines: ``publish_many`` vs a redis-py pipeline (``transaction=False``) of XADDs in
chunks of 1000; ``publish`` vs one ``client.xadd`` call per event. Both baselines get
the fields already encoded (``events.wire.encode``), so they do strictly less work than
the publisher (no serialisation, no size check, no partitioning, no ids).

Run: ``.venv/bin/python -m benchmarks.ingest [--quick]``.
"""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks._common import bench_settings, embedded_redis, emit, goal, rate, realistic_events, summary
from worker_mesh.events.base import Envelope
from worker_mesh.events.publisher import Publisher
from worker_mesh.events.wire import encode
from worker_mesh.mesh.keys import Keys
from worker_mesh.mesh.redis_conn import make_client

GOAL_MANY = 50_000.0
GOAL_ONE = 8_000.0


def run(quick: bool = False) -> dict[str, Any]:
    n_many = 5_000 if quick else 20_000
    n_one = 1_000 if quick else 3_000
    repeats = 5
    with embedded_redis() as server:
        settings = bench_settings(server)
        client = make_client(settings.redis)
        pub = Publisher(client, settings.streams, Keys(settings.redis.key_prefix))
        events = realistic_events(n_many)
        maxlen = settings.streams.maxlen_approx
        fields = [encode(Envelope.wrap(e), settings.streams.max_payload_bytes) for e in events]
        raw_stream = Keys(settings.redis.key_prefix).ns("bench", "raw")

        def raw_many() -> None:
            for start in range(0, len(fields), 1000):
                pipe = client.pipeline(transaction=False)
                for f in fields[start:start + 1000]:
                    pipe.xadd(raw_stream, f, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
                pipe.execute()

        def raw_one() -> None:
            for f in fields[:n_one]:
                client.xadd(raw_stream, f, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]

        def pub_one() -> None:
            for e in events[:n_one]:
                pub.publish(e)

        # Warm up both paths (connections, caches), then interleave the repeats so that
        # load from other processes hits both sides alike.
        pub.publish_many(events[:2000])
        raw_many()
        samples: dict[str, list[float]] = {"many": [], "raw_many": [], "one": [], "raw_one": []}
        for _ in range(repeats):
            samples["many"].append(rate(n_many, lambda: pub.publish_many(events)))
            samples["raw_many"].append(rate(n_many, raw_many))
            samples["one"].append(rate(n_one, pub_one))
            samples["raw_one"].append(rate(n_one, raw_one))
        client.close()
    stats = {k: summary(v) for k, v in samples.items()}
    many, raw_m = stats["many"]["median"], stats["raw_many"]["median"]
    one, raw_o = stats["one"]["median"], stats["raw_one"]["median"]
    return {
        "unit": "events/s",
        "params": {"events_many": n_many, "events_one": n_one, "repeats": repeats,
                   "partitions": settings.streams.partitions, "chunk": 1000,
                   "mix": "45% customer.activity, 35% customer.updated, 15% content.updated "
                          "(1 KB body), 5% content.requested"},
        "publish_many": {"median": round(many), "baseline_raw_xadd_pipeline": round(raw_m),
                         "ratio": round(many / raw_m, 2), "goal": goal(many, GOAL_MANY),
                         "samples": stats["many"]["samples"],
                         "baseline_samples": stats["raw_many"]["samples"]},
        "publish": {"median": round(one), "baseline_raw_xadd_one_by_one": round(raw_o),
                    "ratio": round(one / raw_o, 2), "goal": goal(one, GOAL_ONE),
                    "samples": stats["one"]["samples"],
                    "baseline_samples": stats["raw_one"]["samples"]},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="fewer events (a smoke run)")
    args = ap.parse_args(argv)
    return emit("ingest", run(quick=args.quick))


if __name__ == "__main__":
    main()
