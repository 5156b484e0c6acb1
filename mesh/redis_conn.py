"""Building Redis clients from settings, and translating redis-py errors.

The connection is always passed in to the code that uses it, never global.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from mesh.errors import BrokerUnavailable, ConfigError
from mesh.settings import RedisSettings


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
    if settings.url is not None and settings.url.get_secret_value().startswith("rediss://"):
        if settings.tls_ca_file:
            kw["ssl_ca_certs"] = settings.tls_ca_file
    return kw


def make_client(settings: RedisSettings, *, decode_responses: bool = False) -> redis.Redis:
    """A client with timeouts and reconnect backoff; raises ConfigError on a bad URL."""
    url = redis_url(settings)
    try:
        return redis.Redis.from_url(url, decode_responses=decode_responses, **client_kwargs(settings))
    except ValueError as exc:
        # redis-py's message may contain the URL (and so the password): keep it out.
        raise ConfigError("redis.url is not a valid redis:// or rediss:// URL") from exc


def describe_error(exc: BaseException) -> str:
    """A readable reason without the URL or password."""
    if isinstance(exc, redis.AuthenticationError):
        return "Redis refused the credentials (wrong password or user)"
    if isinstance(exc, redis.ResponseError) and "NOPERM" in str(exc):
        return "the Redis user lacks a permission: " + str(exc).split("\n")[0][:200]
    if isinstance(exc, redis.TimeoutError):
        return "Redis did not answer in time"
    if isinstance(exc, redis.ConnectionError):
        return "cannot connect to Redis: " + str(exc).split("\n")[0][:200]
    return f"{type(exc).__name__}: {str(exc)[:200]}"


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn redis-py errors into ``BrokerUnavailable`` / ``ConfigError`` at the boundary."""
    try:
        yield
    except redis.AuthenticationError as exc:
        raise ConfigError(f"{what}: {describe_error(exc)}") from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BrokerUnavailable(f"{what}: {describe_error(exc)}") from exc
