"""How an idle worker pool waits for work on `RedisQueue`: wake-up markers and BLPOP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis.cluster
from redis.exceptions import NoScriptError

from jobs.queue._base import QueueBase
from jobs.queue._packed import UNSENT, command, pack_args
from jobs.queue._scripts import execute, execute_after_loss, packed_call
from jobs.queue._wire import socket_timeout

if TYPE_CHECKING:
    from collections.abc import Sequence

    from jobs.queue._scripts import Arg, Script
    from jobs.worker._protocol import WorkerQueue

#: Blocking waits stay this far below the client's socket timeout (redis-py 8 defaults to
#: 5 s and would otherwise fail a long BLPOP with a TimeoutError).
SOCKET_TIMEOUT_MARGIN = 0.5


class IdleWaits(QueueBase):
    """Block an idle pool until there is work, and wake it."""

    def wait_for_work(self, pool_id: str, timeout: float, also: Sequence[WorkerQueue] = ()) -> bool:
        """Block until a wake-up marker arrives or ``timeout`` seconds pass.

        True if woken, or if a job is ready all the same: a marker can be lost (the
        reply to the BLPOP that took it lost and redis-py re-sending the BLPOP, or a
        pool that took it and died before fetching), and then one command more per
        timeout finds the job, instead of the next reap. True at once as well when some
        of ``also`` (other queues the pool serves) sit in another cluster slot: one
        BLPOP cannot watch them, so the pool polls them.

        The wait is cut to stay below the client's socket timeout.
        """
        queues: list[QueueBase] = [self]
        queues += (q for q in also if isinstance(q, QueueBase) and self._same_node(q))
        polled = len(queues) < len(also) + 1
        timeout = self._blocking_timeout(timeout)
        keys = [self.keys.pool_wake(pool_id), *(q.keys.wake for q in queues)]
        with self._any_error_as_unavailable():
            if self.client.blpop(keys, timeout) is not None:
                return True
            # One EXISTS for all: a zset key exists while it has members.
            return polled or bool(self.client.exists(*(q.keys.pending for q in queues)))

    def _same_node(self, other: QueueBase) -> bool:
        """Whether one BLPOP can watch both queues (all, off a cluster: one hash slot)."""
        if not isinstance(self.client, redis.cluster.RedisCluster):
            return True
        return other.keys.base == self.keys.base

    def wake_pool(self, pool_id: str) -> None:
        """Wake one pool blocked in `wait_for_work` (so that stopping it is immediate)."""
        key = self.keys.pool_wake(pool_id)
        with self._any_error_as_unavailable():
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(key, "stop")
            pipe.pexpire(key, 60_000)
            pipe.execute()

    def forget_pool(self, pool_id: str) -> None:
        """Remove a stopped pool's registry record and private wake-up list."""
        with self._any_error_as_unavailable():
            pipe = self.client.pipeline(transaction=False)
            # One key per DEL: redis-py's cluster pipeline refuses a multi-key delete.
            pipe.delete(self.keys.pool_wake(pool_id))
            pipe.delete(self.keys.worker(pool_id))
            pipe.zrem(self.keys.workers, pool_id)
            pipe.execute()

    def _wait_then(
        self, pool_id: str, timeout: float, call: tuple[Script, Sequence[str], Sequence[Arg]]
    ) -> tuple[bool, Any]:
        """Wait as `wait_for_work` does, then run ``call``: one pipeline, one round trip.

        Returns whether a wake-up marker ended the wait, and ``call``'s reply.

        ``call`` is a script call on this queue. Whatever ended the wait, it runs: it is
        for a fetch, which finds what is ready (a job whose marker was lost included).
        On a cluster, and when the server lost the script, the two go apart.
        """
        if isinstance(self.client, redis.cluster.RedisCluster):
            woken = self.wait_for_work(pool_id, timeout)
            with self._any_error_as_unavailable():
                return woken, execute(self.client, [call])[0]
        script, keys, args = call
        wake_keys = [self.keys.pool_wake(pool_id), self.keys.wake]
        timeout = self._blocking_timeout(timeout)
        if self._packed_calls.usable:
            # Packed by hand, as the pool's other calls: this is a job's way to an idle pool.
            commands = [
                command(2 + len(wake_keys), pack_args(("BLPOP", *wake_keys, timeout))),
                packed_call(script, keys, args),
            ]
            with self._any_error_as_unavailable():
                answers = self._packed_calls.call(commands)
                if answers is UNSENT:
                    # A lost connection or a lost script: the fetch alone, the generic way
                    # (it finds what is ready, whatever became of the wait's marker).
                    return True, execute_after_loss(self.client, [call])[0]
            return answers[0] is not None, answers[1]
        with self._any_error_as_unavailable():
            pipe: Any = self.client.pipeline(transaction=False)
            pipe.blpop(wake_keys, timeout)
            script.queue(pipe, keys, args)
            replies: list[Any] = pipe.execute(raise_on_error=False)
            reply = replies[1]
            if isinstance(reply, NoScriptError):
                reply = execute(self.client, [call])[0]  # loads the scripts first
            for error in (replies[0], reply):
                if isinstance(error, Exception):
                    raise error
        return replies[0] is not None, reply

    def _blocking_timeout(self, timeout: float) -> float:
        """``timeout``, cut to stay below the client's socket timeout."""
        cap = socket_timeout(self.client)
        return timeout if cap is None else min(timeout, max(cap - SOCKET_TIMEOUT_MARGIN, 0.05))
