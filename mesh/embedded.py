"""The embedded ``redis-server``: started by the demo and the tests when no Redis is
configured. Never used in production (set ``MESH_REDIS_URL`` there).

It can run the way a production Redis should: with a password (``requirepass``), ACL
users (``acl_users``: one ``user ...`` rule each) and TLS only (``tls_*`` files: the
plain port is closed). Its configuration, secrets included, goes into a ``0600`` file in
the data folder rather than onto the command line, so ``ps`` never shows a password.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis

from worker_mesh.mesh.errors import ConfigError


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
    """``requirepass``: the password of the ``default`` user."""
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    acl_users: list[str] = field(default_factory=list, repr=False)
    """ACL rules, one per user, as in redis.conf without the leading ``user``:
    ``"mesh on >secret ~mesh:* &mesh:* +@all"``. Not in the repr: they hold passwords."""
    tls_cert_file: str | None = None
    """Server certificate (PEM). With ``tls_key_file`` set, the server speaks TLS only."""
    tls_key_file: str | None = None
    tls_ca_file: str | None = None
    """The CA that signed ``tls_cert_file``: the admin client verifies the server with it
    (and redis-server wants one to check client certificates, which it does not ask for)."""

    def __repr__(self) -> str:  # never the password
        return (f"EmbeddedRedis(port={self.port}, tls={self.tls}, "
                f"password={'set' if self.password else None}, users={len(self.acl_users)})")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file and self.tls_key_file)

    @property
    def url(self) -> str:
        """URL of the ``default`` user (with ``password`` when set)."""
        return self.url_for(None, self.password)

    def url_for(self, user: str | None, password: str | None, db: int = 0) -> str:
        """``redis://`` (or ``rediss://`` with TLS) URL for one user."""
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if password is not None:
            auth = f"{quote(user or '', safe='')}:{quote(password, safe='')}@"
        elif user:
            auth = f"{quote(user, safe='')}@"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{db}"

    def _config_lines(self) -> list[str]:
        lines = [
            "bind 127.0.0.1",
            f'dir "{self.data_dir.resolve()}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "daemonize no",
            f'logfile "{(self.data_dir / "redis.log").resolve()}"',
        ]
        if self.tls:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f'tls-cert-file "{self.tls_cert_file}"',
                f'tls-key-file "{self.tls_key_file}"',
                "tls-auth-clients no",
            ]
            if self.tls_ca_file:
                lines.append(f'tls-ca-cert-file "{self.tls_ca_file}"')
        else:
            lines.append(f"port {self.port}")
        if self.password:
            lines.append(f"requirepass {self.password}")
        lines += [f"user {rule}" for rule in self.acl_users]
        return lines

    def admin_client(self, **kw: object) -> redis.Redis:
        """A client of the ``default`` user (tests use it to look behind the mesh)."""
        ssl_kw: dict[str, object] = {}
        if self.tls:
            ssl_kw = {"ssl": True, "ssl_ca_certs": self.tls_ca_file, "ssl_cert_reqs": "required"}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           **ssl_kw, **kw)  # type: ignore[arg-type]

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        if self.proc is not None and self.proc.poll() is None:
            return self
        if self.tls and not self.tls_ca_file:
            raise ConfigError("EmbeddedRedis with TLS needs tls_ca_file (the CA of its certificate)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        conf = self.data_dir / "redis.conf"
        conf.touch(mode=0o600)
        conf.chmod(0o600)
        conf.write_text("\n".join(self._config_lines()) + "\n")
        self.proc = subprocess.Popen(
            [redis_server_binary(), str(conf.resolve()), *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        client = self.admin_client(socket_connect_timeout=0.5, socket_timeout=0.5)
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

    def signal(self, sig: int) -> None:
        """Send a signal without waiting (SIGSTOP / SIGCONT freeze and resume it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def embedded(data_dir: str | os.PathLike[str]) -> EmbeddedRedis:
    return EmbeddedRedis(Path(data_dir))
