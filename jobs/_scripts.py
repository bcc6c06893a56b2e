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
from importlib import resources
from typing import TYPE_CHECKING, Any

import redis
import redis.cluster
from redis.exceptions import NoScriptError

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
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Add a call to a pipeline; run the pipeline with `execute`."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)


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
    for i, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):
            script, keys, args = calls[i]
            replies[i] = script(client, keys, args)
        elif isinstance(reply, Exception):
            raise reply
    return replies


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


@functools.cache
def scripts() -> Scripts:
    """The process-wide set of scripts (sources are immutable, so one set serves every client)."""
    return Scripts()
