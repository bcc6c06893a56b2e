"""Loading the Lua scripts in ``jobs/lua`` once, and running them by SHA.

Each script is ``_lib.lua`` followed by the script's own file, sent as one EVALSHA. We
do not use redis-py's ``Script`` objects in pipelines: their pipeline support sends a
``SCRIPT EXISTS`` round trip before every execute, which would double the cost of our
hottest calls. Instead a script that the server does not know (a restart, a failover, a
``SCRIPT FLUSH``) is loaded on the ``NOSCRIPT`` error and run again: a NOSCRIPT reply
means the script did not run at all, so running it again is safe.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

import redis
import redis.cluster
from redis.exceptions import AskError, ClusterDownError, MovedError, NoScriptError, TryAgainError

if TYPE_CHECKING:
    from collections.abc import Sequence

RedisClient = redis.Redis | redis.cluster.RedisCluster
Arg = str | int | float | bytes


@functools.cache
def _source(name: str) -> str:
    lua = resources.files("jobs") / "lua"
    return (lua / "_lib.lua").read_text("utf-8") + "\n" + (lua / f"{name}.lua").read_text("utf-8")


class Script:
    """One Lua script of ``jobs/lua``, loaded from the package once per process."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _source(name)
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"Script({self.name!r})"

    def __call__(self, client: RedisClient, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run the script now; load it first if the server has lost it."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            scripts().load_all(client, keys[0])
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def load(self, client: RedisClient, key: str) -> None:
        """Load the script where ``key`` lives."""
        if isinstance(client, redis.cluster.RedisCluster):
            # Only the node serving the queue's slot needs it; loading on every primary
            # (redis-py's default) would fail while a dead primary is still in the map.
            cluster: Any = client  # redis-py's cluster methods are untyped
            node = cluster.get_node_from_key(key)
            cluster.execute_command("SCRIPT LOAD", self.source, target_nodes=node)
        else:
            client.script_load(self.source)

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Add a call to a pipeline; run the pipeline with `execute`."""
        # Not pipe.evalsha: redis-py's ClusterPipeline blocks that method by name, while
        # it routes a raw EVALSHA by its keys like any keyed command. On a cluster, name
        # the node too: otherwise redis-py asks a node for the keys (COMMAND GETKEYS) on
        # every call. A MOVED reply is retried without it, on the fresh slot map.
        if isinstance(pipe, redis.cluster.ClusterPipeline):
            cluster: Any = pipe  # redis-py's cluster methods are untyped
            node = cluster.get_node_from_key(keys[0])
            cluster.execute_command("EVALSHA", self.sha, len(keys), *keys, *args, target_nodes=node)
        else:
            pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


def execute(
    client: RedisClient, calls: Sequence[tuple[Script, Sequence[str], Sequence[Arg]]]
) -> list[Any]:
    """Run several script calls in one round trip (a non-transactional pipeline).

    Returns each call's reply in order. A call that failed with NOSCRIPT is loaded and
    run again on its own; any other error is raised after the calls before it ran.
    """
    if len(calls) == 1:
        script, keys, args = calls[0]
        return [script(client, keys, args)]
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        script.queue(pipe, keys, args)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        # A restarted or flushed server: load every script at once, so that it does not
        # stay half-loaded, then run the calls that did not run. The calls of one
        # pipeline touch different jobs, so their order does not matter.
        scripts().load_all(client, calls[0][1][0])
        for i in missing:
            script, keys, args = calls[i]
            replies[i] = script(client, keys, args)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


#: Errors after which a cluster's slot map is stale: refresh it and try again. Not a
#: timeout: a hung node would make each try wait a whole socket timeout.
_TOPOLOGY_ERRORS = (
    redis.ConnectionError,
    MovedError,
    AskError,
    TryAgainError,
    ClusterDownError,
)
#: Tries of `execute_and_wait` on a cluster (the map is refreshed between them).
WAIT_TRIES = 4


def execute_and_wait(
    client: RedisClient,
    calls: Sequence[tuple[Script, Sequence[str], Sequence[Arg]]],
    replicas: int,
    timeout_ms: int,
) -> tuple[list[Any], int]:
    """Like `execute`, then ``WAIT replicas timeout_ms`` in the same round trip.

    WAIT counts the replicas that acknowledged every write made *on its connection*, so
    it must follow the scripts on the same connection: on a cluster that is the
    connection to the node serving the calls' slot (the first key's), not a cluster
    pipeline, which may re-send a redirected call on another connection.

    Returns:
        Each call's reply, and how many replicas acknowledged them.
    """
    if not isinstance(client, redis.cluster.RedisCluster):
        return _run_and_wait(client, calls, replicas, timeout_ms)
    cluster: Any = client  # redis-py's cluster methods are untyped
    tries = 0
    while True:
        tries += 1
        node = cluster.get_redis_connection(cluster.get_node_from_key(calls[0][1][0]))
        try:
            return _run_and_wait(node, calls, replicas, timeout_ms)
        except _TOPOLOGY_ERRORS:
            # A failover in progress: the slot moved, or its node died. The scripts
            # either did not run (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) or ran once and their
            # writes are idempotent by id (enqueue, cron claims), so trying again is safe.
            if tries >= WAIT_TRIES:
                raise
            with contextlib.suppress(redis.RedisError):
                cluster.nodes_manager.initialize()
            time.sleep(0.25 * tries)


def _run_and_wait(
    client: redis.Redis,
    calls: Sequence[tuple[Script, Sequence[str], Sequence[Arg]]],
    replicas: int,
    timeout_ms: int,
) -> tuple[list[Any], int]:
    pipe: Any = client.pipeline(transaction=False)
    for script, keys, args in calls:
        script.queue(pipe, keys, args)
    pipe.execute_command("WAIT", replicas, timeout_ms)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    acked = replies.pop()
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        # Those calls did not run: load every script (as `execute` does), then run them
        # and wait again, on this one connection.
        scripts().load_all(client, calls[0][1][0])
        pipe = client.pipeline(transaction=False)
        for i in missing:
            script, keys, args = calls[i]
            script.queue(pipe, keys, args)
        pipe.execute_command("WAIT", replicas, timeout_ms)
        again: list[Any] = pipe.execute(raise_on_error=False)
        acked = again.pop()
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    for reply in (*replies, acked):
        if isinstance(reply, Exception):
            raise reply
    return replies, int(acked)


class Scripts:
    """Every script, each loaded once (the registry `RedisQueue` calls through)."""

    def __init__(self) -> None:
        self.enqueue = Script("enqueue")
        self.fetch = Script("fetch")
        self.heartbeat = Script("heartbeat")
        self.reap = Script("reap")
        self.complete = Script("complete")
        self.fail = Script("fail")
        self.requeue = Script("requeue")
        self.cancel = Script("cancel")
        self.stats = Script("stats")
        self.workers = Script("workers")
        self.retry = Script("retry")
        self.purge = Script("purge")
        self.cron_fire = Script("cron_fire")

    def all(self) -> list[Script]:
        """Every script."""
        return [value for value in vars(self).values() if isinstance(value, Script)]

    def load_all(self, client: RedisClient, key: str) -> None:
        """Load every script on the node serving ``key`` (one round trip off a cluster)."""
        if isinstance(client, redis.cluster.RedisCluster):
            for script in self.all():
                script.load(client, key)
            return
        pipe = client.pipeline(transaction=False)
        for script in self.all():
            pipe.script_load(script.source)
        pipe.execute()


@functools.cache
def scripts() -> Scripts:
    """The process-wide set of scripts (sources are immutable, so one set serves every client)."""
    return Scripts()
