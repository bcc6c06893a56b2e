"""The worker side of `RedisQueue`: `jobs.worker.WorkerQueue` over the Lua scripts.

Reply codes become `LeaseState` and `Written` values here, and every Redis error
becomes `RedisUnavailable` (`QueueBase._any_error_as_unavailable`): the worker runtime
above never sees redis-py.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Self

import attrs
import redis.cluster

from jobs import _codec
from jobs.queue._base import (
    COMPLETED_TRIM,
    FETCH_RECORD_MARGIN_MS,
    PROMOTE_BATCH,
    REAP_BATCH,
    new_request_id,
)
from jobs.queue._cluster import TOPOLOGY_ERRORS, node_client
from jobs.queue._fetch_reply import Parts, decode_exchanged, decode_fetched
from jobs.queue._idle import IdleWaits
from jobs.queue._keys import priority_of_score
from jobs.queue._packed import UNSENT
from jobs.queue._scripts import execute, node_packed, packed_call
from jobs.queue._wire import socket_timeout
from jobs.worker._protocol import Beat, Completed, Fetched, Leased, LeaseState, Written

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from jobs.queue._scripts import Arg, Script
    from jobs.worker._protocol import Outcome

    _Call = tuple[Script, Sequence[str], Sequence[Arg]]

#: The least proto-max-bulk-len Redis allows: no shorter result needs the server's limit.
BULK_LIMIT_FLOOR = 1 << 20
#: Seconds before the server's proto-max-bulk-len is read again (a refusal is for good).
BULK_LIMIT_REFRESH = 60.0

#: heartbeat.lua's reply code per held job.
_LEASE_STATES = {1: LeaseState.HELD, 2: LeaseState.CANCELLED, 0: LeaseState.LOST}

_ZERO = timedelta(0)


class WorkerSide(IdleWaits):
    """What a worker pool asks of its queue (`jobs.worker.WorkerQueue`), for Redis."""

    @property
    def max_result_bytes(self) -> int:
        """The largest result (encoded) the queue accepts (`RedisQueueConfig`)."""
        return self.config.max_result_bytes

    def _check_result_sizes(self, outcomes: Sequence[Outcome]) -> None:
        """Refuse, before sending, a result longer than the server takes in one argument.

        Redis answers an argument over its ``proto-max-bulk-len`` with a protocol error
        and closes the connection, which looks like an outage: the batch holding it was
        sent again for ever, and the pool fetched nothing else. Refused here, it is
        written apart and its job fails for good (`jobs.worker` ``write_apart``). The
        limit is at least 1 MiB, so it is read (and every `BULK_LIMIT_REFRESH` again)
        only when a result is longer, which needs ``max_result_bytes`` raised.
        """
        longest = max(
            (len(o.result) for o in outcomes if isinstance(o, Completed)),
            default=0,
        )
        if longest <= BULK_LIMIT_FLOOR:
            return
        if time.monotonic() >= self._bulk_limit_due:
            self._bulk_limit_due = time.monotonic() + BULK_LIMIT_REFRESH
            try:
                value = self.config_get("proto-max-bulk-len").get("proto-max-bulk-len")
                self._bulk_limit = None if value is None else int(value)
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # the write will say Redis is unreachable; read it next time
            except (redis.RedisError, ValueError):  # CONFIG is not for this user
                self._bulk_limit, self._bulk_limit_due = None, math.inf
        limit = self._bulk_limit
        if limit is not None and longest > limit:
            # Not a JobsError, which the pool takes for the queue's own (a pause).
            raise ValueError(
                f"result is {longest} bytes, over what Redis at {self.address} takes in "
                f"one argument (proto-max-bulk-len {limit})"
            )

    @property
    def reply_timeout(self) -> float | None:
        """The client's socket timeout (s): a reply comes within it or never."""
        return socket_timeout(self.client)

    def sibling(self, name: str) -> Self:
        """The queue called ``name`` on the same Redis, with this queue's settings.

        It uses this queue's client, and `close` of this queue closes it too.
        """
        sibling = type(self)(attrs.evolve(self.config, name=name))
        with self._listener_lock:
            self._siblings.append(sibling)
        return sibling

    def fetch(self, count: int, lease: timedelta, *, request: str | None = None) -> Fetched:
        """Promote due jobs, then lease up to ``count`` ready jobs (best first).

        ``request``: the fetch's request id (default: a fresh one). A fetch sent again
        with the id of one that ran leases nothing new: it returns the jobs the first
        leased, still held with their tokens (fetch.lua), whatever ``count``.
        """
        fetched = self.exchange((), count, lease, request=request or new_request_id())[1]
        assert fetched is not None
        return fetched

    def best_ready_priority(self) -> int | None:
        """The priority of the best job ready to run now, or None if none is."""
        with self._any_error_as_unavailable():
            head: Any = self.client.zrange(self.keys.pending, 0, 0, withscores=True)
        return priority_of_score(float(head[0][1])) if head else None

    def wait_and_fetch(
        self, pool_id: str, timeout: float, count: int, lease: timedelta, request: str
    ) -> tuple[bool, Fetched]:
        """`wait_for_work`, then `fetch` at once, in one round trip.

        Redis runs the fetch right after the wait ends (a wake-up marker, or the
        timeout), so an idle pool's next job costs no round trip more than the wake-up.
        Returns whether a wake-up marker ended the wait, and what was fetched.
        """
        woken, reply = self._wait_then(pool_id, timeout, self._fetch_call(count, lease, request))
        return woken, decode_fetched(reply)

    def heartbeat(
        self,
        pool_id: str,
        info: Mapping[str, Any],
        record_ttl: timedelta,
        held: Sequence[Leased],
        lease: timedelta,
        *,
        reap: bool = True,
        first: bool = False,
        trim: bool = False,
        progress: Sequence[str] = (),
    ) -> Beat:
        """Refresh the pool's record, extend its leases and (optionally) reap, in one round trip.

        ``first``: the pool's first beat (it also prunes the records of dead pools).
        ``trim``: the reap also drops index entries of expired finished records.
        ``progress``: per held job, its new progress (JSON) to store, or '' for none.
        """
        k = self.keys
        args: list[Arg] = [
            k.job_prefix,
            _codec.to_ms(lease),
            _codec.to_ms(record_ttl),
            pool_id,
            json.dumps(dict(info)),
            "1" if first else "0",
        ]
        for index, job in enumerate(held):
            args += (job.job_id, job.token, progress[index] if progress else "")
        calls: list[_Call] = [
            (self._scripts.heartbeat, (k.processing, k.workers, k.worker(pool_id)), args)
        ]
        if reap:
            calls.append(self._reap_call(trim))
        with self._any_error_as_unavailable():
            replies = execute(self.client, calls)
        now = int(replies[0][0])
        states = [_LEASE_STATES[int(c)] for c in replies[0][1:]]
        if not reap:
            return Beat(now, states, None)
        next_expiry = int(replies[1][3])
        return Beat(now, states, None if next_expiry < 0 else next_expiry)

    def extend(self, pool_id: str, held: Sequence[Leased], lease: timedelta) -> list[LeaseState]:
        """Extend these leases only (no pool record, no reap): what each one found."""
        return self.heartbeat(pool_id, {}, _ZERO, held, lease, reap=False).leases

    def _reap_call(self, trim: bool = False) -> _Call:
        k = self.keys
        return (
            self._scripts.reap,
            (
                k.processing,
                k.pending,
                k.scheduled,
                k.failed,
                k.stats,
                k.seq,
                k.wake,
                k.completed,
                k.cancelled,
            ),
            (
                k.job_prefix,
                self.config.max_lost_leases,
                self._failed_ttl_ms,
                self.config.max_failed_jobs,
                REAP_BATCH,
                self._completed_ttl_ms if trim else "",
                self.config.max_completed_jobs,
                COMPLETED_TRIM,
            ),
        )

    def reap(self, *, trim: bool = False) -> tuple[int, int]:
        """Return expired leases to the queue now; (requeued, failed for too many losses).

        ``trim``: also drop the index entries of finished jobs whose records expired.
        """
        script, keys, args = self._reap_call(trim)
        with self._any_error_as_unavailable():
            reply = script(self.client, keys, args)
        return int(reply[1]), int(reply[2])

    def write(self, outcomes: Sequence[Outcome]) -> list[Written]:
        """Record finished attempts, all fenced by their lease tokens, in one round trip.

        Returns one `Written` per outcome, in order.
        """
        return self.exchange(outcomes, 0, None)[0]

    def exchange(
        self,
        outcomes: Sequence[Outcome],
        count: int,
        lease: timedelta | None,
        *,
        request: str | None = None,
    ) -> tuple[list[Written], Fetched | None]:
        """`write` these outcomes and `fetch` up to ``count`` jobs, in one round trip.

        The worker pool's hot path: what a busy pool writes and what it takes next share
        a pipeline. Either part may be empty (``count`` 0 and no ``request``: no fetch).
        ``request`` is the fetch's request id (see `fetch`); passing the id of a fetch
        whose reply never came fetches even with ``count`` 0, to collect its jobs.

        Raises:
            RedisUnavailable: Redis could not be reached, or refused the call for now.
            Exception: an outcome does not encode, or its result is longer than Redis
                takes (before anything was sent).
        """
        calls, parts = self._exchange_calls(outcomes, count, lease, request)
        if not calls:
            return [], None
        with self._any_error_as_unavailable():
            replies = execute(self.client, calls, self._packed_calls)
        return decode_exchanged(len(outcomes), parts, replies)

    def begin_exchange(
        self,
        outcomes: Sequence[Outcome],
        count: int,
        lease: timedelta | None,
        *,
        request: str | None = None,
    ) -> Callable[[], tuple[list[Written], Fetched | None]]:
        """`exchange`, sent now and answered by the function returned.

        Redis runs the calls while the caller goes on (a worker pool takes the jobs of
        the previous exchange meanwhile); the function reads the replies, and raises
        what `exchange` raises. On a cluster they go to the node serving the queue's
        slot. Where they cannot go packed (a client on one dedicated connection, a lost
        connection, a cluster mid-failover) they run here and the function only returns
        their answer. (With hiredis they go packed; redis-py's parser reads them.)
        """
        calls, parts = self._exchange_calls(outcomes, count, lease, request)
        sent = UNSENT
        client = self.client
        if calls:
            packed = self._packed_calls
            with self._any_error_as_unavailable():
                if isinstance(client, redis.cluster.RedisCluster):
                    # On the node that serves the queue's slot, as the map says now (none
                    # mid-failover: `exchange` below waits it out).
                    with contextlib.suppress(*TOPOLOGY_ERRORS):
                        packed = node_packed(node_client(client, calls[0][1][0]))
                if packed.usable:
                    sent = packed.send([packed_call(*call) for call in calls])
        if sent is UNSENT:
            answer = self.exchange(outcomes, count, lease, request=request)
            return lambda: answer

        def answer_sent() -> tuple[list[Written], Fetched | None]:
            with self._any_error_as_unavailable():
                try:
                    replies = sent.read()
                except TOPOLOGY_ERRORS:
                    if not isinstance(client, redis.cluster.RedisCluster):
                        raise
                    replies = UNSENT  # the slot moved, the node is a replica now ...
                if replies is UNSENT:  # as `execute` does: every call here may run twice
                    replies = execute(self.client, calls, self._packed_calls)
            return decode_exchanged(len(outcomes), parts, replies)

        return answer_sent

    def _exchange_calls(
        self,
        outcomes: Sequence[Outcome],
        count: int,
        lease: timedelta | None,
        request: str | None,
    ) -> tuple[list[_Call], Parts]:
        """The script calls of an `exchange`, and where each outcome's reply will be."""
        self._check_result_sizes(outcomes)
        k = self.keys
        calls: list[_Call] = []
        completed: list[int] = []  # the positions in ``outcomes`` of each reply
        failed: list[int] = []
        complete_args: list[Arg] = [
            k.job_prefix,
            self._completed_ttl_ms,
            self.config.max_completed_jobs,
        ]
        fail_args: list[Arg] = [k.job_prefix, self._failed_ttl_ms, self.config.max_failed_jobs]
        for index, outcome in enumerate(outcomes):
            held = outcome.leased
            if isinstance(outcome, Completed):
                complete_args += (held.job_id, held.token, outcome.result)
                completed.append(index)
            else:
                delay = -1 if outcome.permanent else max(outcome.delay_ms, 0)
                fail_args += (held.job_id, held.token, outcome.error, outcome.traceback, delay)
                failed.append(index)
        if completed:
            calls.append(
                (self._scripts.complete, (k.processing, k.completed, k.stats), complete_args)
            )
        if failed:
            calls.append(
                (
                    self._scripts.fail,
                    (k.processing, k.pending, k.scheduled, k.failed, k.stats, k.seq, k.wake),
                    fail_args,
                )
            )
        fetching = count > 0 or request is not None
        if fetching:
            assert lease is not None
            calls.append(self._fetch_call(count, lease, request or new_request_id()))
        return calls, (completed, failed, fetching)

    def _fetch_call(self, count: int, lease: timedelta, request: str) -> _Call:
        k = self.keys
        lease_ms = _codec.to_ms(lease)
        return (
            self._scripts.fetch,
            (
                k.pending,
                k.scheduled,
                k.processing,
                k.seq,
                k.lease_seq,
                k.wake,
                k.request(request),
                k.stats,
            ),
            (
                k.job_prefix,
                count,
                lease_ms,
                PROMOTE_BATCH,
                request,
                lease_ms + FETCH_RECORD_MARGIN_MS,
            ),
        )

    def requeue(self, held: Sequence[Leased]) -> int:
        """Hand held jobs back to the front of the queue, attempts not counted.

        Returns:
            How many went back (a job whose lease was already lost does not).
        """
        if not held:
            return 0
        k = self.keys
        args: list[Arg] = [k.job_prefix]
        for job in held:
            args += (job.job_id, job.token)
        with self._any_error_as_unavailable():
            reply = self._scripts.requeue(
                self.client, (k.processing, k.pending, k.seq, k.wake), args
            )
        return sum(int(c) for c in reply[1:])
