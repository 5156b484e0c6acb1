"""The embedded ``redis-server``: started by the demo and the tests when no Redis is
configured. Never used in production (set ``MESH_REDIS_URL`` there)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from mesh.errors import ConfigError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise ConfigError(
            "redis-server not found: install it (Debian: apt-get install redis-server) "
            "or set MESH_REDIS_URL"
        )
    return path


@dataclass
class EmbeddedRedis:
    """A ``redis-server`` child process on a free loopback port.

    ``stop()``/``start()`` (or ``restart()``) keep the port and data folder, so tests can
    kill Redis and bring it back; ``appendonly`` is on (fsync ``everysec``).
    """

    data_dir: Path
    port: int = 0
    password: str | None = None
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
            *self.extra_args,
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                             socket_connect_timeout=0.5, socket_timeout=0.5)
        while True:
            try:
                if client.ping():
                    # Loading an AOF answers -LOADING; ping succeeds only when ready.
                    break
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                pass
            if self.proc.poll() is not None:
                raise ConfigError(
                    f"redis-server exited with {self.proc.returncode}; see {self.data_dir}/redis.log"
                )
            if time.monotonic() > deadline:
                raise ConfigError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)
        client.close()
        return self

    def stop(self, sig: int | None = None, timeout_s: float = 10.0) -> None:
        """Stop the server: SIGTERM by default (clean), or the given signal."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig if sig is not None else 15)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def embedded(data_dir: str | os.PathLike[str]) -> EmbeddedRedis:
    return EmbeddedRedis(Path(data_dir))
