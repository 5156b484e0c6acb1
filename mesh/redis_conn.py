"""Building Redis clients from settings, checking them at start-up, and translating
redis-py errors (one-line reasons, never the URL or password).

The connection is always passed in to the code that uses it, never global.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterator
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import NoPermissionError
from redis.retry import Retry

from worker_mesh.mesh.acl import acl_rule, producer_acl_rule
from worker_mesh.mesh.errors import AccessDenied, BrokerUnavailable, ConfigError
from worker_mesh.mesh.settings import RedisSettings

__all__ = ["acl_rule", "producer_acl_rule"]  # re-exported: they used to live here


def redis_url(settings: RedisSettings) -> str:
    if settings.url is None:
        raise ConfigError("redis.url is not set (MESH_REDIS_URL) and no embedded Redis runs")
    return settings.url.get_secret_value()


def client_kwargs(settings: RedisSettings) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_connect_timeout_s,
        "health_check_interval": settings.health_check_interval_s,
        "retry": Retry(ExponentialBackoff(cap=settings.retry_max_backoff_s, base=0.05), 3),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }
    kw.update(tls_kwargs(settings))
    return kw


def uses_tls(settings: RedisSettings) -> bool:
    return settings.url is not None and settings.url.get_secret_value().startswith("rediss://")


def tls_kwargs(settings: RedisSettings) -> dict[str, Any]:
    """redis-py TLS options for a ``rediss://`` URL: the server certificate is always
    verified (against ``tls_ca_file``, or the system store when it is None)."""
    if not uses_tls(settings):
        return {}
    kw: dict[str, Any] = {"ssl_cert_reqs": "required"}
    if settings.tls_ca_file:
        kw["ssl_ca_certs"] = settings.tls_ca_file
    return kw


def celery_ssl_options(settings: RedisSettings) -> dict[str, Any] | None:
    """``broker_use_ssl`` / ``redis_backend_use_ssl`` for Celery (None without TLS).

    Celery refuses a ``rediss://`` URL that does not say how to check the certificate;
    giving it here keeps the URL (a secret) free of options and verification on.
    """
    if not uses_tls(settings):
        return None
    opts: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.tls_ca_file:
        opts["ssl_ca_certs"] = settings.tls_ca_file
    return opts


def check_connection(settings: RedisSettings, what: str = "redis") -> None:
    """Connect once and authenticate, failing fast with a clear message.

    Raises AccessDenied (a ConfigError) for refused credentials or a missing permission (retrying cannot
    help: a worker or dispatcher should exit, not loop) and BrokerUnavailable when Redis
    does not answer. Neither message contains the URL or the password.
    """
    client = make_client(settings)
    try:
        with translate_errors(what):
            client.ping()
    finally:
        client.close()


def make_client(settings: RedisSettings, *, decode_responses: bool = False) -> redis.Redis:
    """A client with timeouts and reconnect backoff; raises ConfigError on a bad URL."""
    url = redis_url(settings)
    try:
        return redis.Redis.from_url(url, decode_responses=decode_responses, **client_kwargs(settings))
    except ValueError as exc:
        # redis-py's message may contain the URL (and so the password): keep it out.
        raise ConfigError("MESH_REDIS_URL is not a valid redis:// or rediss:// URL") from exc


def describe_error(exc: BaseException) -> str:
    """A readable one-line reason without the URL or password."""
    first = str(exc).split("\n")[0][:200]
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in str(exc):
        return "Redis refused the credentials (wrong password or user)"
    if isinstance(exc, NoPermissionError) or (
            isinstance(exc, redis.ResponseError) and "NOPERM" in str(exc)):
        return "the Redis user lacks a permission: " + first
    if _is_untrusted_certificate(exc):
        return ("Redis's TLS certificate is not trusted (" + _ssl_reason(exc) + "); check "
                "MESH_REDIS_TLS_CA_FILE")
    if "WRONG_VERSION_NUMBER" in str(exc) or "record layer failure" in str(exc):
        return "TLS handshake with Redis failed (rediss:// to a port without TLS?)"
    if isinstance(exc, redis.TimeoutError):
        return "Redis did not answer in time"
    if isinstance(exc, redis.exceptions.InvalidResponse):
        return "the server at MESH_REDIS_URL's address does not speak the Redis protocol"
    if isinstance(exc, redis.ConnectionError):
        return "cannot connect to Redis: " + first
    return f"{type(exc).__name__}: {first}"


def _is_untrusted_certificate(exc: BaseException) -> bool:
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    return ("CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text
            or isinstance(cause, ssl.SSLCertVerificationError))


def _ssl_reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
        return f"certificate verify failed: {cause.verify_message}"
    return "certificate verify failed"


def is_refusal(exc: BaseException) -> bool:
    """Whether Redis refused us for a reason that retrying cannot fix (credentials, a
    permission, an untrusted certificate)."""
    return (isinstance(exc, (redis.AuthenticationError, NoPermissionError))
            or (isinstance(exc, redis.ResponseError)
                and any(m in str(exc) for m in ("NOPERM", "NOAUTH", "WRONGPASS")))
            or _is_untrusted_certificate(exc))


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn redis-py errors into ``BrokerUnavailable`` / ``AccessDenied`` at the boundary.

    An untrusted certificate stays ``BrokerUnavailable`` here (a running process keeps
    retrying: the CA may be mid-rotation); at start-up ``check_at_start`` makes it final.
    """
    try:
        yield
    except redis.AuthenticationError as exc:
        raise AccessDenied(f"{what}: {describe_error(exc)}") from exc
    except redis.ResponseError as exc:
        if isinstance(exc, NoPermissionError) or "NOPERM" in str(exc) or "NOAUTH" in str(exc):
            raise AccessDenied(f"{what}: {describe_error(exc)}") from exc
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BrokerUnavailable(f"{what}: {describe_error(exc)}") from exc


def check_at_start(settings: RedisSettings, what: str = "redis") -> None:
    """The start-up check of every process and command: connect, authenticate (and
    verify TLS), ping, in bounded time, with one readable reason when it fails.

    Raises ``ConfigError`` for a URL that is not one (exit 2), ``AccessDenied`` at once
    for refused credentials, a missing permission or an untrusted certificate, and
    ``BrokerUnavailable`` when Redis stays unreachable for ``startup_timeout_s`` (both
    exit 3). No connection retries inside an attempt: each is bounded by the connect
    and socket timeouts, capped by what is left of ``startup_timeout_s``.
    """
    url = redis_url(settings)
    deadline = time.monotonic() + settings.startup_timeout_s
    while True:
        left = max(deadline - time.monotonic(), 0.2)
        try:
            client = redis.Redis.from_url(
                url, retry=Retry(NoBackoff(), 0), health_check_interval=0,
                socket_connect_timeout=min(settings.socket_connect_timeout_s, left),
                socket_timeout=min(settings.socket_timeout_s, left), **tls_kwargs(settings))
        except ValueError as exc:
            raise ConfigError(f"{what}: MESH_REDIS_URL is not a valid redis:// or rediss:// "
                              "URL") from exc
        try:
            client.ping()
            return
        except redis.RedisError as exc:
            if is_refusal(exc):
                raise AccessDenied(f"{what}: {describe_error(exc)}") from None
            if time.monotonic() + 0.25 >= deadline:
                raise BrokerUnavailable(f"{what}: {describe_error(exc)} (for "
                                        f"{settings.startup_timeout_s:g}s)") from None
        finally:
            client.close()
        time.sleep(0.25)


def patch_kombu_half_closed_channel() -> None:
    """Keep a Celery worker alive when Redis goes away while it holds unacked messages.

    Found by tests/reliability/test_fault_redis.py (celery 5.7 / kombu 5.7): on a lost
    broker connection the consumer first ``collect()``s the connection (which clears the
    transport's ``client``) and then ``close()``s it again; that second close re-enters
    the Redis channel's close, whose unacked-restore builds a connection pool from the
    cleared client and raises ``AttributeError: 'NoneType' object has no attribute
    'hostname'``. It is not a connection error, so nothing catches it and the worker dies
    with "Unrecoverable error" instead of reconnecting. Here it becomes a Redis
    ``ConnectionError`` (what it is: the connection is gone), which kombu ignores while
    closing; the unacked messages stay in Redis and are restored by the visibility
    timeout sweep, as after any lost connection. Idempotent.
    """
    from kombu.transport import redis as kombu_redis

    channel = kombu_redis.Channel
    if getattr(channel, "_mesh_half_closed_patch", False):
        return
    original = channel._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> dict[str, Any]:
        if getattr(self.connection, "client", None) is None:
            raise redis.ConnectionError("the broker connection is already closed")
        return original(self, asynchronous=asynchronous)  # type: ignore[no-any-return]

    setattr(channel, "_connparams", _connparams)  # noqa: B010 - a monkeypatch, said so
    setattr(channel, "_mesh_half_closed_patch", True)  # noqa: B010
