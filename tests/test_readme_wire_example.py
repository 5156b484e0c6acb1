"""The README's redis-cli XADD example is a valid event: docs and code agree."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from worker_mesh.events.catalog import CustomerUpdated
from worker_mesh.events.wire import decode
from worker_mesh.mesh.embedded import EmbeddedRedis

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    cmd = next(b for b in blocks if "redis-cli XADD" in b)
    return cmd.replace("redis-cli XADD", "redis-cli -p \"$PORT\" XADD", 1)


@pytest.mark.integration
def test_readme_xadd_example_decodes(redis_server: EmbeddedRedis) -> None:
    import redis

    client = redis.Redis(port=redis_server.port)
    client.delete("{mesh:p0}:events")
    subprocess.run(["bash", "-c", _example()], check=True, capture_output=True,
                   env={"PORT": str(redis_server.port), "PATH": "/usr/bin:/bin"})
    [(_, fields)] = client.xrange("{mesh:p0}:events")
    env = decode(fields, max_bytes=65536)
    assert isinstance(env.payload, CustomerUpdated)
    assert env.entity_key == "customer:42" and env.idempotency_key == "customer-42-v3"
