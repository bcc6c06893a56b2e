"""Checking, once at start, that the Redis user may run every command the library sends.

A worker whose ACL user lacks one command would otherwise meet NOPERM only when that
command's moment came (a fetch, a retry, a cron fire) and retry it for ever, looking
alive. `missing_permissions` sends each command once, in one round trip, against a probe key
of the queue's own key space that nothing else uses: Redis checks the ACL before it runs
or type-checks a command, so a reply other than NOPERM (WRONGTYPE, NOSCRIPT) means
allowed. The key is written, given an expiry and deleted within the same round trip.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import redis
import redis.cluster
import redis.exceptions

from jobs.queue._cluster import run_on_node

if TYPE_CHECKING:
    from jobs.queue.redis_queue import RedisQueue

#: A script only to check ``SCRIPT LOAD`` and ``EVALSHA`` (the library runs its own
#: scripts by EVALSHA and loads them with SCRIPT LOAD).
_PROBE_SCRIPT = "return 1"
_PROBE_SHA = hashlib.sha1(_PROBE_SCRIPT.encode()).hexdigest()


#: In the documented ACL rule (docs/operations/security.rst) but not required: without
#: them a feature degrades, nothing fails. PUBLISH/SUBSCRIBE wake `Client.wait` (which
#: otherwise re-reads every 10 s); GET/SET serve `JobConfig.unique_key` (whose enqueue
#: then fails with NOPERM, saying so).
OPTIONAL = frozenset({"+publish", "+subscribe", "+get", "+set"})


def _calls(key: str, *, wait: bool) -> list[tuple[str, tuple[Any, ...]]]:
    """``(ACL name, command)`` for everything the library sends or its scripts call.

    The documented least-privilege rule (``docs/operations/security.rst``;
    ``tests/integration/test_security.py`` checks it against ``INFO commandstats``)
    lists the same commands.
    """
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("ping", ("PING",)),
        ("time", ("TIME",)),
        ("script|load", ("SCRIPT", "LOAD", _PROBE_SCRIPT)),
        ("evalsha", ("EVALSHA", _PROBE_SHA, 1, key)),
        ("exists", ("EXISTS", key)),
        ("llen", ("LLEN", key)),
        ("rpush", ("RPUSH", key, "x")),
        ("blpop", ("BLPOP", key, "0.01")),  # pops the "x" at once when RPUSH is allowed
        ("hset", ("HSET", key, "f", "1")),
        ("persist", ("PERSIST", key)),
        ("pexpire", ("PEXPIRE", key, 60_000)),  # in case DEL is what is denied
        ("hsetnx", ("HSETNX", key, "f", "1")),
        ("hget", ("HGET", key, "f")),
        ("hmget", ("HMGET", key, "f")),
        ("hgetall", ("HGETALL", key)),
        ("hincrby", ("HINCRBY", key, "f", 1)),
        ("incr", ("INCR", key)),
        ("incrby", ("INCRBY", key, 1)),
        ("zadd", ("ZADD", key, 1, "m")),
        ("zrem", ("ZREM", key, "m")),
        ("zcard", ("ZCARD", key)),
        ("zrange", ("ZRANGE", key, 0, -1)),
        ("zrevrange", ("ZREVRANGE", key, 0, -1)),
        ("zrangebyscore", ("ZRANGEBYSCORE", key, 0, 1)),
        ("zremrangebyscore", ("ZREMRANGEBYSCORE", key, 0, 1)),
        ("zremrangebyrank", ("ZREMRANGEBYRANK", key, 0, 0)),
        ("zpopmin", ("ZPOPMIN", key)),
        ("hdel", ("HDEL", key, "f")),
        ("del", ("DEL", key)),
    ]
    if wait:
        calls.append(("wait", ("WAIT", 0, 0)))
    return calls


def _missing(name: str, reply: object, keys: str) -> str | None:
    """What the ACL rule lacks for ``reply`` (``+command`` or the key pattern), or None."""
    text = str(reply)
    # redis-py drops the NOPERM code when it picks the exception class for it.
    if not isinstance(reply, redis.exceptions.NoPermissionError):
        return None
    # "... no permissions to run the 'zpopmin' command" versus "... to access a key"
    # (the wording differs between Redis versions; "command" is in every one of the first).
    return f"+{name}" if "command" in text else keys


def missing_permissions(queue: RedisQueue) -> list[str]:
    """What the queue's Redis user lacks, in ACL syntax: ``+command`` or ``~keys``; [] if none.

    Raises:
        redis.RedisError: Redis failed otherwise (unreachable, refused credentials).
    """
    key = f"{queue.keys.base}acl-probe"
    keys = f"~{queue.keys.base}*"
    calls = _calls(key, wait=queue.config.wait_for_replicas > 0)

    def probe(client: redis.Redis) -> list[str]:
        pipe: Any = client.pipeline(transaction=False)
        for _, command in calls:
            pipe.execute_command(*command)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        found = (_missing(name, r, keys) for (name, _), r in zip(calls, replies, strict=True))
        return list(dict.fromkeys(m for m in found if m is not None))

    client = queue.client
    if isinstance(client, redis.cluster.RedisCluster):
        return run_on_node(client, key, probe)
    return probe(client)
