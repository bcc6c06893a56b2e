"""Loading the Lua scripts in ``jobs/lua`` once, and running them by SHA.

Each script is ``_lib.lua`` followed by the script's own file, sent as one EVALSHA. We
do not use redis-py's ``Script`` objects in pipelines: their pipeline support sends a
``SCRIPT EXISTS`` round trip before every execute, which would double the cost of our
hottest calls. Instead a script that the server does not know (a restart, a failover, a
``SCRIPT FLUSH``) is loaded on the ``NOSCRIPT`` error and run again: a NOSCRIPT reply
means the script did not run at all, so running it again is safe.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import weakref
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

import redis
import redis.cluster
from redis.exceptions import NoScriptError

from jobs.queue._cluster import node_client, run_on_node
from jobs.queue._packed import UNSENT, PackedCalls, command, pack_args

if TYPE_CHECKING:
    from collections.abc import Sequence

RedisClient = redis.Redis | redis.cluster.RedisCluster
Arg = str | int | float | bytes


@functools.cache
def _source(name: str) -> str:
    lua = resources.files("jobs.queue") / "lua"
    own = (lua / f"{name}.lua").read_text("utf-8")
    return needed_lib((lua / "_lib.lua").read_text("utf-8"), own) + "\n" + own


#: A top-level statement of _lib.lua starts at column 0 (``local ...``, or ``name =`` for
#: a function declared ahead); everything else there is indented, a comment, or ``end``.
_STATEMENT = re.compile(r"^(?:local\s+function\s+|local\s+)?([A-Za-z_]\w*)", re.MULTILINE)
_COMMENT = re.compile(r"--.*$", re.MULTILINE)
_NAME = re.compile(r"[A-Za-z_]\w*")


def needed_lib(lib: str, script: str) -> str:
    """The statements of ``lib`` that ``script`` needs, in their order.

    Redis runs a script's whole text at every call, so each function of the library it
    carries costs a closure per call even if never called (about 2 us for the whole
    library, the price of a small command). A statement is kept when a name it defines
    appears in the script or in a kept statement: a name that only looks used (in a
    string, say) keeps too much, never too little.
    """
    starts = [m for m in _STATEMENT.finditer(lib) if m.group(1) not in ("end", "function")]
    if not starts:
        return lib
    statements = [
        (m.group(1), lib[m.start() : nxt.start() if nxt else len(lib)])
        for m, nxt in zip(starts, [*starts[1:], None], strict=True)
    ]
    by_name: dict[str, list[int]] = {}
    for index, (defined, _) in enumerate(statements):
        by_name.setdefault(defined, []).append(index)
    kept: set[int] = set()
    todo = [script]
    while todo:
        for name in set(_NAME.findall(_COMMENT.sub("", todo.pop()))) & by_name.keys():
            for index in by_name[name]:
                if index not in kept:
                    kept.add(index)
                    todo.append(statements[index][1])
    # The header (the key schema) stays: it documents the loaded script too.
    return lib[: starts[0].start()] + "".join(
        text for index, (_, text) in enumerate(statements) if index in kept
    )


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
        if isinstance(client, redis.cluster.RedisCluster):
            return run_on_node(client, keys[0], lambda node: self.run(node, keys, args))
        return self.run(client, keys, args)

    def run(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run the script on one server; load it first if the server has lost it."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            scripts().load_all(client, keys[0])
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Add a call to a (single-server) pipeline; run the pipeline with `execute`."""
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


def packed_call(script: Script, keys: Sequence[str], args: Sequence[Arg]) -> bytes:
    """One script call as a whole EVALSHA command, packed by hand (`PackedCalls`)."""
    return command(
        3 + len(keys) + len(args), pack_args(("EVALSHA", script.sha, len(keys), *keys, *args))
    )


def execute(
    client: RedisClient,
    calls: Sequence[tuple[Script, Sequence[str], Sequence[Arg]]],
    packed: PackedCalls | None = None,
) -> list[Any]:
    """Run several script calls in one round trip (a non-transactional pipeline).

    Every call must be on one queue (one cluster slot: the first call's first key).
    Returns each call's reply in order. A call that failed with NOSCRIPT is loaded and
    run again on its own; any other error is raised after the calls before it ran.

    ``packed``: the client's `PackedCalls`, to pack the calls by hand and skip
    redis-py's command path (the worker's hot path). They go the generic way if they
    could not be sent that way, so only calls that may run twice may use it (as
    redis-py's own retries assume too).
    """
    if isinstance(client, redis.cluster.RedisCluster):
        if packed is None:
            return run_on_node(client, calls[0][1][0], lambda node: _execute(node, calls))
        # Packed on the node's own connections (see `node_packed`); a stale slot map
        # answers MOVED and the like, raised here for run_on_node to refresh and retry.
        return run_on_node(
            client, calls[0][1][0], lambda node: _execute_packed(node, calls, node_packed(node))
        )
    if packed is not None and packed.usable:
        return _execute_packed(client, calls, packed)
    return _execute(client, calls)


#: Each cluster node client's `PackedCalls`, kept as long as the node client is (the
#: cluster drops it from its map when the node goes): `PackedCalls.shared` only keeps
#: those that a queue holds.
_NODE_PACKED: weakref.WeakKeyDictionary[redis.Redis, PackedCalls] = weakref.WeakKeyDictionary()
_NODE_PACKED_LOCK = threading.Lock()


def node_packed(node: redis.Redis) -> PackedCalls:
    """The `PackedCalls` of a cluster node's client, made once per node client."""
    packed = _NODE_PACKED.get(node)
    if packed is None:
        with _NODE_PACKED_LOCK:
            packed = _NODE_PACKED.get(node)
            if packed is None:
                packed = _NODE_PACKED[node] = PackedCalls.shared(node)
    return packed


def _execute_packed(
    client: redis.Redis,
    calls: Sequence[tuple[Script, Sequence[str], Sequence[Arg]]],
    packed: PackedCalls,
) -> list[Any]:
    if packed.usable:
        replies = packed.call([packed_call(*call) for call in calls])
        if replies is not UNSENT:
            return cast("list[Any]", replies)
        return execute_after_loss(client, calls)
    return _execute(client, calls)


def execute_after_loss(
    client: RedisClient, calls: Sequence[tuple[Script, Sequence[str], Sequence[Arg]]]
) -> list[Any]:
    """`execute` the generic way, for calls whose packed sending came back `UNSENT`.

    What closed that connection (a restart, ``CLIENT KILL``, a proxy) may be closing the
    client's pooled ones at this very moment, one after the other: one that redis-py
    took from its pool before its close was seen fails too, and a client made with
    `redis.Redis.from_url` does not retry. So a connection error here gets one more try,
    on a fresh connection (redis-py dropped the failed one); a server that is down
    fails it as well. The calls may run twice, as any call sent packed must.
    """
    if isinstance(client, redis.cluster.RedisCluster):
        return execute(client, calls)  # run_on_node tries a lost node again itself
    try:
        return _execute(client, calls)
    except redis.ConnectionError:
        return _execute(client, calls)


def _execute(
    client: redis.Redis, calls: Sequence[tuple[Script, Sequence[str], Sequence[Arg]]]
) -> list[Any]:
    if len(calls) == 1:
        script, keys, args = calls[0]
        return [script.run(client, keys, args)]
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
            replies[i] = script.run(client, keys, args)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def execute_and_wait(
    client: RedisClient,
    calls: Sequence[tuple[Script, Sequence[str], Sequence[Arg]]],
    replicas: int,
    timeout_ms: int,
) -> tuple[list[Any], int]:
    """Like `execute`, then ``WAIT replicas timeout_ms`` in the same round trip.

    WAIT counts the replicas that acknowledged every write made *on its connection*, so
    it must follow the scripts on the same connection: on a cluster that is the
    connection to the node serving the calls' slot, which `run_on_node` gives.

    Returns:
        Each call's reply, and how many replicas acknowledged them.
    """
    if isinstance(client, redis.cluster.RedisCluster):
        return run_on_node(
            client, calls[0][1][0], lambda node: _run_and_wait(node, calls, replicas, timeout_ms)
        )
    return _run_and_wait(client, calls, replicas, timeout_ms)


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
        self.enqueue_plain = Script("enqueue_plain")
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
        self.advance = Script("advance")  # jobs.testing only
        self.flow = Script("flow")
        self.limits = Script("limits")

    def all(self) -> list[Script]:
        """Every script."""
        return [value for value in vars(self).values() if isinstance(value, Script)]

    def load_all(self, client: RedisClient, key: str) -> None:
        """Load every script, in one round trip, on the server (or cluster node) serving ``key``.

        Only the node serving the queue's slot needs them; loading on every primary
        (redis-py's default) would fail while a dead primary is still in the map.
        """
        if isinstance(client, redis.cluster.RedisCluster):
            client = node_client(client, key)
        pipe = client.pipeline(transaction=False)
        for script in self.all():
            pipe.script_load(script.source)
        pipe.execute()


@functools.cache
def scripts() -> Scripts:
    """The process-wide set of scripts (sources are immutable, so one set serves every client)."""
    return Scripts()
