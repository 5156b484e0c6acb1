"""The recommended Redis ACL users of a mesh: the mesh user (every mesh process) and a
producer user (application code that only publishes events).

Both are ``ACL SETUSER`` / ``users.acl`` lines, confined to one key prefix and one
database; docs/security.md explains each rule, tests/reliability/test_acl.py probes
them against a real redis-server (Redis 7).
"""

from __future__ import annotations

# Commands a mesh user never needs and that would reach beyond its prefix or database:
#   select / move / copy / swapdb   another database (SELECT only to its own one: below)
#   scan / randomkey / dbsize       names or counts of other applications' keys (SCAN's
#                                   MATCH is not enforced by ACLs, so SCAN goes entirely)
#   script|flush / script|kill      other applications' cached scripts / running script
#   function / fcall / fcall_ro     server-wide function libraries (FLUSH, DELETE, LOAD)
#   pubsub|channels / |shardchannels / |numpat   other applications' channel names
# EVAL / EVALSHA / SCRIPT LOAD|EXISTS stay: the mesh runs Lua scripts on its own keys
# (ACL key patterns are checked for the keys a script declares).
_DENIED = ("select", "move", "copy", "swapdb", "scan", "randomkey", "dbsize",
           "script|flush", "script|kill", "function", "fcall", "fcall_ro",
           "pubsub|channels", "pubsub|shardchannels", "pubsub|numpat")


def acl_rule(user: str, password: str, key_prefix: str, db: int = 0) -> str:
    """The least-privilege ACL rule of one mesh's processes.

    Keys: ``<prefix>:*`` (results, Celery's queues and results under ``<prefix>:celery:``,
    the dead-letter stream) and ``{<prefix>:*`` (hash-tagged partition keys: streams,
    dedupe, outcomes). Channels: ``<prefix>:*`` for PUBLISH/SUBSCRIBE (task events,
    result notifications) plus the literal patterns kombu PSUBSCRIBEs for remote control
    and Flower's event receiver (``celeryev/*``): Redis 7 matches a PSUBSCRIBE pattern
    literally against the allowed ones, so those are spelled out exactly. Commands:
    everything but ``@admin``, ``@dangerous`` (KEYS, CONFIG, FLUSHALL, DEBUG, INFO...) and
    ``_DENIED``; ``SELECT`` only of database ``db`` (redis-py selects it on connect when
    it is not 0). Found by running publisher, dispatcher, workers, Flower and the result
    backend under it and reading ``ACL LOG`` (docs/reliability.md).
    """
    celery = f"{key_prefix}:celery:"
    return " ".join([
        user, "on", f">{password}", "resetkeys", f"~{key_prefix}:*", f"~{{{key_prefix}:*",
        "resetchannels", f"&{key_prefix}:*", f"&{celery}/{db}.celery.pidbox",
        f"&{celery}/{db}.celeryev/*", "-@all", "+@all", "-@admin", "-@dangerous",
        *(f"-{c}" for c in _DENIED), f"+select|{db}",
    ])


def producer_acl_rule(user: str, password: str, key_prefix: str) -> str:
    """An application that only publishes events: ``XADD`` to the event streams
    (``{<prefix>:p<N>}:events``), write-only (``%W~``: it cannot read them back), and
    ``PING`` (redis-py's idle health check). Nothing else: no reads, no other keys, no
    channels, no scripts. Give it to producers in other languages too (README's
    ``redis-cli XADD`` example works with it)."""
    return " ".join([
        user, "on", f">{password}", "resetkeys", f"%W~{{{key_prefix}:p*}}:events",
        "resetchannels", "-@all", "+xadd", "+ping",
    ])
