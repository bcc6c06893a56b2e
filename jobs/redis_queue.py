"""`RedisQueue`: one queue in Redis, with one typed method per Lua script.

This is the only module that talks to Redis. It knows the key schema (`jobs._keys`) and
the scripts' argument layouts (documented at the top of each ``jobs/lua/*.lua``); the
client and the worker pool speak in Python values.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import redis
import redis.cluster
import redis.sentinel

from . import _codec, _urls
from ._cluster import run_on_node
from ._keys import QueueKeys
from ._loops import backoff_delay
from ._scripts import Arg, RedisClient, Script, execute, execute_and_wait, scripts
from ._waiter import RECHECK, FinishedListener
from ._wire import (
    Failure,
    Fetched,
    HeldJob,
    Leased,
    Outcome,
    address,
    job_args,
    socket_timeout,
)
from .config import JobConfig, RedisQueueConfig
from .errors import (
    ConfigError,
    JobNotFound,
    RedisUnavailable,
    ReplicationError,
    UnknownJobType,
    WaitTimeout,
)
from .job import Job, JobStatus, MinuteCounts, QueueHistory, QueueStats, WorkerInfo

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from datetime import timedelta

#: Due jobs promoted from the scheduled set per fetch; the rest follow on the next fetch.
PROMOTE_BATCH = 1000
#: Expired leases handled per reap call.
REAP_BATCH = 500
#: Jobs per enqueue script call in `RedisQueue.enqueue`; chunks share one round trip.
ENQUEUE_CHUNK = 1000
#: enqueue.lua's letter for each declarable `JobConfig` setting.
_LETTERS = {"priority": "p", "max_retries": "r", "timeout": "t", "retry_backoff": "b"}
#: Completed records over `max_completed_jobs` deleted per reap (every heartbeat): a
#: busy queue's excess goes at up to this many per beat, each beat a short script.
COMPLETED_TRIM = 500
#: About what one finished job's record costs Redis (measured: 680 bytes, small payload).
RECORD_BYTES = 700
#: Records read per round trip by `RedisQueue.get_many` (and so by waits on many jobs).
GET_BATCH = 500
#: Failed jobs retried per round trip by `RedisQueue.retry_failed`.
RETRY_BATCH = 500
#: How much longer than its leases a fetch's record lives (ms): a copy of the fetch that
#: arrives just as they run out still finds it.
FETCH_RECORD_MARGIN_MS = 1000
#: How long cancel and retry remember their answer (ms): far longer than redis-py takes
#: to send a command again (10 tries, each at most a socket timeout plus 1 s of backoff).
ANSWER_TTL_MS = 600_000


def new_request_id() -> str:
    """A fresh request id (64 random bits): the key to a request's idempotency record."""
    return secrets.token_hex(8)


#: Encoded payload bytes per enqueue script call (a single larger payload goes alone).
#: A script blocks every other client of the server while it runs and holds all its
#: arguments in memory twice (the command, Lua's ARGV): 1,000 payloads of 256 KiB in one
#: call blocked Redis for 1.2 s and doubled its peak memory.
ENQUEUE_CHUNK_BYTES = 1 << 20


def enqueue_chunks(
    sizes: Sequence[int], max_jobs: int = ENQUEUE_CHUNK, max_bytes: int = ENQUEUE_CHUNK_BYTES
) -> list[range]:
    """Split jobs into consecutive index ranges, one per enqueue script call.

    Each range holds at most ``max_jobs`` jobs whose payloads (``sizes``, in bytes) add
    up to at most ``max_bytes``, except that every range holds at least one job.
    """
    chunks: list[range] = []
    start = total = 0
    for index, size in enumerate(sizes):
        if index > start and (index - start >= max_jobs or total + size > max_bytes):
            chunks.append(range(start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        chunks.append(range(start, len(sizes)))
    return chunks


def _wrong_type(exc: Exception) -> bool:
    """Whether Redis refused a command because the key holds another type (WRONGTYPE)."""
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("WRONGTYPE")


#: Minutes of per-minute history Redis keeps (HISTORY_MINUTES in _lib.lua, plus the
#: current minute).
HISTORY_MINUTES = 60
_HISTORY_FIELDS = ("enqueued", "completed", "failed", "cancelled")


def _row(reply: Any) -> list[Any]:
    return [None] * len(_HISTORY_FIELDS) if isinstance(reply, Exception) else list(reply)


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


class RedisQueue:
    """A job queue stored in Redis.

    Example::

        queue = jobs.RedisQueue(jobs.RedisQueueConfig(client=redis.Redis(), name="emails"))
        queue = jobs.RedisQueue.from_url("redis://localhost:6379/0", name="emails")

    One queue is a handful of keys under the hash tag ``{prefix:name}``; any number of
    producers and worker pools, in any number of processes and hosts, may share it.

    .. versionadded:: 0.1
    """

    def __init__(self, config: RedisQueueConfig) -> None:
        self.config = config
        self.client: RedisClient = config.client
        self.keys = QueueKeys.for_queue(config.prefix, config.name)
        self._scripts = scripts()
        self._owns_client = False
        self._connection: _urls.Connection | None = None
        self._completed_ttl_ms = _codec.to_ms(config.completed_ttl)
        self._failed_ttl_ms = _codec.to_ms(config.failed_ttl)
        self._wait_ms = _codec.to_ms(config.wait_timeout)
        self._listener: FinishedListener | None = None
        self._listener_lock = threading.Lock()
        if config.wait_for_replicas:
            limit = socket_timeout(self.client)
            if limit is not None and config.wait_timeout.total_seconds() >= limit:
                raise ConfigError(
                    f"wait_timeout must be below the client's socket timeout ({limit} s), "
                    f"got {config.wait_timeout.total_seconds()} s"
                )

    @classmethod
    def from_url(
        cls, url: str, name: str = "default", *, prefix: str = "jobs", **options: Any
    ) -> RedisQueue:
        """A queue on the Redis at ``url``.

        Schemes: ``redis://``, ``rediss://`` and ``unix://`` for one server;
        ``redis+sentinel://host:port,host:port/service/db`` for the master of a
        Sentinel-monitored service (followed across failovers);
        ``redis+cluster://host:port,host:port`` for a Redis Cluster. ``rediss+...``
        uses TLS; see `jobs._urls` for the options.

        The queue owns the client it creates: `close` closes it. Other keyword arguments
        are `RedisQueueConfig` fields (``max_lost_leases``, ``completed_ttl`` ...).

        Raises:
            ConfigError: a malformed URL or an unknown URL option.
        """
        connection = _urls.connect(url)
        try:
            queue = cls(
                RedisQueueConfig(client=connection.client, name=name, prefix=prefix, **options)
            )
        except BaseException:
            connection.close()
            raise
        queue._owns_client = True
        queue._connection = connection
        return queue

    @property
    def name(self) -> str:
        """The queue's name."""
        return self.config.name

    @property
    def address(self) -> str:
        """Where the queue's Redis is (``host:port``), for messages."""
        return address(self.client)

    def close(self) -> None:
        """Stop the wait listener; close the Redis client if this queue created it (`from_url`)."""
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        if self._connection is not None:
            self._connection.close()
        elif self._owns_client:
            self.client.close()

    def __repr__(self) -> str:
        return f"<RedisQueue {self.name!r} prefix={self.config.prefix!r} at {self.address}>"

    @contextmanager
    def _unavailable_as_error(self) -> Iterator[None]:
        try:
            yield
        except redis.AuthenticationError as exc:
            raise self._refused_credentials(exc) from exc
        except redis.ResponseError as exc:
            # Older redis-py send no handshake, so a server that wants a password answers
            # the first command itself: NOAUTH, or for a long one a protocol error.
            text = str(exc)
            if not (text.startswith("NOAUTH") or "unauthenticated" in text):
                raise
            raise self._refused_credentials(exc) from redis.AuthenticationError(text)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(f"cannot reach Redis at {self.address}: {exc}") from exc

    def _refused_credentials(self, exc: Exception) -> RedisUnavailable:
        return RedisUnavailable(
            f"Redis at {self.address} refused the credentials (wrong or missing "
            f"password or user): {exc}"
        )

    # -- producers -------------------------------------------------------------------

    def enqueue(
        self,
        job_type: str,
        ids: Sequence[str],
        payloads: Sequence[bytes],
        config: JobConfig,
        *,
        declared: bool = True,
        strict: bool = False,
    ) -> list[str]:
        """Write new jobs (payloads already encoded); the id each payload's job has.

        That is its own id, unless ``config.unique_key`` is held by a live job (or was,
        within ``unique_for``): then that job's id, and nothing is written for it.

        ``declared``: the settings ``config`` left at the library default take the job
        type's declared ones, as worker pools published them (`declare_types`); pass
        False when they were applied already. ``strict``: refuse a type that no pool
        declared.

        Raises:
            UnknownJobType: ``strict``, and no worker pool declared ``job_type``.

        Raises:
            RedisUnavailable: Redis cannot be reached.
            ReplicationError: with ``wait_for_replicas``, too few replicas acknowledged
                (the jobs are written on the master all the same).
        """
        k = self.keys
        head: list[Arg] = [
            k.job_prefix,
            job_type,
            *job_args(config),
            "" if config.unique_key is None else k.unique(config.unique_key),
            0 if config.unique_for is None else _codec.to_ms(config.unique_for),
            "".join(_LETTERS[name] for name in sorted(config.defaulted())) if declared else "",
            "1" if strict else "0",
        ]
        keys = (k.pending, k.scheduled, k.seq, k.stats, k.wake, k.types)
        if len(ids) != len(payloads):
            raise ValueError(f"{len(ids)} ids for {len(payloads)} payloads")
        calls: list[tuple[Script, Sequence[str], Sequence[Arg]]] = []
        for chunk in enqueue_chunks([len(p) for p in payloads]):
            args = head.copy()
            for index in chunk:
                args += (ids[index], payloads[index])
            calls.append((self._scripts.enqueue, keys, args))
        with self._unavailable_as_error():
            try:
                replies = self._execute_durably(calls, ids)
            except redis.ResponseError as exc:
                if str(exc).startswith("UNKNOWN_TYPE"):
                    raise UnknownJobType(
                        f"no worker pool declared job type {job_type!r} on queue {self.name!r} "
                        f"(a strict client refuses it: a typo, or no worker started yet)"
                    ) from None
                raise
        flags = [flag for reply in replies for flag in reply[1:]]
        return [
            job_id if isinstance(flag, int) else _codec.text(flag)
            for job_id, flag in zip(ids, flags, strict=True)
        ]

    def _execute_durably(
        self,
        calls: Sequence[tuple[Script, Sequence[str], Sequence[Arg]]],
        ids: Sequence[str],
        wrote: Callable[[list[Any]], bool] | None = None,
    ) -> list[Any]:
        """Run producer writes; with ``wait_for_replicas``, WAIT for them in the same trip.

        ``wrote(replies)`` tells whether the calls wrote anything (default: yes); a call
        that wrote nothing has nothing to lose.

        Raises:
            ReplicationError: fewer replicas acknowledged than required (but the writes
                are done on the master).
        """
        wanted = self.config.wait_for_replicas
        if not wanted:
            return execute(self.client, calls)
        replies, acked = execute_and_wait(self.client, calls, wanted, self._wait_ms)
        if acked < wanted and (wrote is None or wrote(replies)):
            first = f"job {ids[0]}" if len(ids) == 1 else f"{len(ids)} jobs (first {ids[0]})"
            raise ReplicationError(
                f"{first} written on the master at {self._master_address()}, but only {acked} of "
                f"{wanted} replicas acknowledged within {self._wait_ms} ms: a failover "
                f"now could lose the write",
                acknowledged=acked,
                required=wanted,
                job_ids=tuple(ids),
            )
        return replies

    def _master_address(self) -> str:
        if isinstance(self.client, redis.cluster.RedisCluster):
            cluster: Any = self.client  # untyped in some redis-py releases, typed in others
            node = cluster.get_node_from_key(self.keys.pending)
            return f"{node.host}:{node.port}"
        return self.address

    def get(self, job_id: str) -> Job:
        """The job's current record.

        Raises:
            JobNotFound: no such job (or its record expired).
            CorruptRecord: the record has no id, type or status (other damaged fields
                are shown as their raw text; the worker fails such a job by name), or
                the job's key holds something else than a record (see
                `QueueStats.damaged_records`).
        """
        with self._unavailable_as_error():
            try:
                fields = self.client.hgetall(self.keys.job(job_id))
            except redis.ResponseError as exc:
                if not _wrong_type(exc):
                    raise
                raise _codec.CorruptRecord(
                    f"the key of job {job_id!r} holds another type of value, not a job record"
                ) from None
        if not fields:
            raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
        return _codec.decode_job(
            {_codec.text(k): v for k, v in fields.items()}, self.name, lenient=True
        )

    def declare_types(self, declarations: Mapping[str, str]) -> None:
        """Publish job types' declared settings (`Registry.declarations`) for producers."""
        if declarations:
            with self._unavailable_as_error():
                hset: Any = self.client.hset  # its mapping type differs between releases
                hset(self.keys.types, mapping=dict(declarations))

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """The records of ``job_ids`` (None for a missing one), `GET_BATCH` per round trip."""
        found: list[Job | None] = []
        for start in range(0, len(job_ids), GET_BATCH):
            chunk = job_ids[start : start + GET_BATCH]

            def read(client: Any, chunk: Sequence[str] = chunk) -> list[Any]:
                pipe = client.pipeline(transaction=False)
                for job_id in chunk:
                    pipe.hgetall(self.keys.job(job_id))
                return cast("list[Any]", pipe.execute())

            with self._unavailable_as_error():
                if isinstance(self.client, redis.cluster.RedisCluster):
                    records = run_on_node(self.client, self.keys.pending, read)
                else:
                    records = read(self.client)
            found += [
                _codec.decode_job(
                    {_codec.text(k): v for k, v in fields.items()}, self.name, lenient=True
                )
                if fields
                else None
                for fields in records
            ]
        return found

    def as_finished(self, job_ids: Sequence[str], timeout: float | None) -> Iterator[Job]:
        """Yield each job of ``job_ids`` once it is final (completed, failed, cancelled).

        Woken by the scripts' ``finished`` announcements, not by polling; one pub/sub
        connection per queue object serves every waiter. A Redis outage is waited out
        (until ``timeout``): the subscription and the reads resume when it is back.

        Raises:
            JobNotFound: a job's record does not exist (or expired, or was purged).
            WaitTimeout: ``timeout`` seconds passed first (jobs yielded so far stand).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        listener = self._finished_listener()
        waiting = set(job_ids)
        watch = listener.watch(waiting)
        failures = 0
        try:
            while waiting:
                left = RECHECK if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(
                        f"{len(waiting)} of {len(job_ids)} jobs not finished within "
                        f"{timeout} s (first: {sorted(waiting)[0]})",
                        job_ids=tuple(sorted(waiting)),
                    )
                # A status read before the subscription is live could miss the finish,
                # so wait for it first (a millisecond, normally); one that does not come
                # (Redis away, or an ACL without SUBSCRIBE) leaves us re-reading every
                # RECHECK seconds.
                listener.wait_subscribed(min(left, RECHECK))
                due = list(watch.take_due() & waiting)
                try:
                    jobs = self.get_many(due)
                except RedisUnavailable:
                    failures += 1
                    watch.mark(due)
                    watch.event.wait(min(backoff_delay(failures), left))
                    continue
                failures = 0
                for job_id, job in zip(due, jobs, strict=True):
                    if job is None:
                        raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
                    if job.status.is_final:
                        waiting.discard(job_id)
                        yield job
                if waiting and not watch.event.wait(min(left, RECHECK)):
                    watch.mark(waiting)  # nothing announced for a while: read anyway
        finally:
            listener.unwatch(watch)

    def _finished_listener(self) -> FinishedListener:
        with self._listener_lock:
            if self._listener is None:
                self._listener = FinishedListener(self.client, self.keys.finished)
            return self._listener

    def cancel(self, job_id: str, *, request: str | None = None) -> bool:
        """Cancel a job; True if it was cancelled now, False if it had already finished.

        ``request``: the request id (default: a fresh one). A cancel sent again with the
        same id, as redis-py does when a reply is lost, gives the first one's answer.

        Raises:
            JobNotFound: no such job.
        """
        k = self.keys
        request = request or new_request_id()
        with self._unavailable_as_error():
            code = self._scripts.cancel(
                self.client,
                (k.pending, k.scheduled, k.processing, k.cancelled, k.stats, k.request(request)),
                (
                    k.job_prefix,
                    job_id,
                    self._failed_ttl_ms,
                    self.config.max_failed_jobs,
                    ANSWER_TTL_MS,
                ),
            )
        if code == -1:
            raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
        return bool(code > 0)

    def stats(self) -> QueueStats:
        """The queue's counts, in one O(1) call."""
        k = self.keys
        with self._unavailable_as_error():
            pending, scheduled, processing, flat = self._scripts.stats(
                self.client, (k.pending, k.scheduled, k.processing, k.stats), ()
            )
        counters = _codec.pairs(flat)

        def count(name: str) -> int:
            try:
                return int(counters.get(name, 0))
            except ValueError:  # a counter damaged by hand: the scripts restart it too
                return 0

        try:
            last_processed = _codec.from_ms(counters.get("last_processed"))
        except (ValueError, OverflowError, OSError):
            last_processed = None
        return QueueStats(
            total_jobs=count("total"),
            pending_jobs=int(pending),
            scheduled_jobs=int(scheduled),
            processing_jobs=int(processing),
            completed_jobs=count("completed"),
            failed_jobs=count("failed"),
            cancelled_jobs=count("cancelled"),
            last_processed=last_processed,
            retried_attempts=count("retried"),
            lost_leases=count("lost_leases"),
            rejected_writes=count("rejected"),
            damaged_records=count("damaged"),
        )

    def history(self, minutes: int = HISTORY_MINUTES) -> QueueHistory:
        """Per-minute counts over the last ``minutes`` minutes, the current one last.

        One round trip of ``minutes`` HMGETs, whatever the number of jobs.
        """
        if not 1 <= minutes <= HISTORY_MINUTES:
            raise ConfigError(f"minutes must be in 1..{HISTORY_MINUTES}, got {minutes!r}")
        with self._unavailable_as_error():
            current = self.server_time_ms() // 60_000
            first = current - minutes + 1
            pipe = self.client.pipeline(transaction=False)
            for minute in range(first, current + 1):
                pipe.hmget(self.keys.history(minute), _HISTORY_FIELDS)
            # A minute's key damaged by hand reads as zeros, not as a failed call.
            rows = pipe.execute(raise_on_error=False)
        return QueueHistory(
            minutes=tuple(
                MinuteCounts(
                    minute=cast("Any", _codec.from_ms(minute * 60_000)),
                    **{f: _count(v) for f, v in zip(_HISTORY_FIELDS, _row(row), strict=True)},
                )
                for minute, row in zip(range(first, current + 1), rows, strict=True)
            )
        )

    def workers(self) -> list[WorkerInfo]:
        """The live worker pools of this queue (records of dead pools are dropped)."""
        with self._unavailable_as_error():
            reply = self._scripts.workers(
                self.client, (self.keys.workers,), (self.keys.worker_prefix,)
            )
        found = []
        for pool_id, flat in reply[1:]:
            record = _codec.pairs(flat)
            try:
                info = json.loads(record["info"])
                found.append(
                    WorkerInfo(
                        id=_codec.text(pool_id),
                        hostname=str(info["hostname"]),
                        pid=int(info["pid"]),
                        num_workers=int(info["num_workers"]),
                        in_flight=int(info["in_flight"]),
                        started_at=cast("Any", _codec.from_ms(record["started_at"])),
                        last_seen=cast("Any", _codec.from_ms(record["last_seen"])),
                    )
                )
            except (KeyError, ValueError, TypeError):
                continue  # a record half-written by a foreign tool: not a pool of ours
        return sorted(found, key=lambda w: w.started_at)

    def _index(self, status: JobStatus | str) -> tuple[JobStatus, str]:
        try:
            job_status = JobStatus(status)
        except ValueError:
            names = ", ".join(s.value for s in JobStatus)
            raise ConfigError(f"status must be one of {names}, got {status!r}") from None
        return job_status, getattr(self.keys, job_status.value)

    def list_jobs(self, status: JobStatus | str, *, limit: int = 100, offset: int = 0) -> list[Job]:
        """Jobs in one status, in the order `Client.list_jobs` documents.

        Raises:
            ConfigError: an unknown status, or a negative limit or offset.
        """
        job_status, index = self._index(status)
        if limit < 0 or offset < 0:
            raise ConfigError(f"limit and offset must be >= 0, got {limit} and {offset}")
        if limit == 0:
            return []
        with self._unavailable_as_error():
            read = self.client.zrevrange if job_status.is_final else self.client.zrange
            ids = cast("list[str | bytes]", read(index, offset, offset + limit - 1))
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self.keys.job(_codec.text(job_id)))
            records = pipe.execute(raise_on_error=False) if ids else []
        for fields in records:
            if isinstance(fields, Exception) and not _wrong_type(fields):
                raise fields
        return [
            _codec.decode_job(
                {_codec.text(k): v for k, v in fields.items()}, self.name, lenient=True
            )
            for fields in records
            # Empty: the record expired between the two reads. An error: the key is not a
            # record at all, and the next fetch or reap sets it aside.
            if fields and not isinstance(fields, Exception)
        ]

    def retry(self, job_id: str, *, request: str | None = None) -> bool:
        """Put a failed or cancelled job back in the queue; False if it is in another state.

        ``request``: the request id (default: a fresh one). A retry sent again with the
        same id, as redis-py does when a reply is lost, gives the first one's answer.

        Raises:
            JobNotFound: no such job.
        """
        k = self.keys
        request = request or new_request_id()
        with self._unavailable_as_error():
            code = self._scripts.retry(
                self.client,
                (
                    k.pending,
                    k.failed,
                    k.cancelled,
                    k.seq,
                    k.wake,
                    k.stats,
                    k.request(request),
                    k.scheduled,
                ),
                (k.job_prefix, job_id, ANSWER_TTL_MS),
            )
        if code == -1:
            raise JobNotFound(f"no job {job_id!r} in queue {self.name!r}")
        return bool(code)

    def retry_failed(self, job_type: str | None = None, since_ms: int | None = None) -> int:
        """Put every failed job (of ``job_type``, failed at or after ``since_ms``) back.

        Walks the failed index oldest first, `RETRY_BATCH` ids per round trip and one
        small script call per job, so Redis serves other clients between every call
        however many jobs there are.

        Returns:
            How many jobs are pending again.
        """
        k = self.keys
        low: float | str = "-inf" if since_ms is None else since_ms
        skip = 0  # ids left in place at score `low` (other types): skip them next time
        retried = 0
        bulk = k.request("retry-failed")  # never written: see retry.lua's ARGV[3]
        with self._unavailable_as_error():
            while True:
                page = cast(
                    "list[tuple[str | bytes, float]]",
                    self.client.zrangebyscore(
                        k.failed, low, "+inf", start=skip, num=RETRY_BATCH, withscores=True
                    ),
                )
                if not page:
                    return retried
                ids = [_codec.text(raw) for raw, _ in page]
                if job_type is not None:
                    pipe = self.client.pipeline(transaction=False)
                    for job_id in ids:
                        pipe.hget(k.job(job_id), "type")
                    types = [None if t is None else _codec.text(t) for t in pipe.execute()]
                    chosen = [i for i, t in zip(ids, types, strict=True) if t == job_type]
                else:
                    chosen = ids
                # No answer records (TTL 0): a call sent again after a lost reply finds
                # its job pending and answers 0, which only makes the count low.
                calls = [
                    (
                        self._scripts.retry,
                        (
                            k.pending,
                            k.failed,
                            k.cancelled,
                            k.seq,
                            k.wake,
                            k.stats,
                            bulk,
                            k.scheduled,
                        ),
                        (k.job_prefix, job_id, 0),
                    )
                    for job_id in chosen
                ]
                codes = execute(self.client, calls) if calls else []
                back = {job_id for job_id, code in zip(chosen, codes, strict=True) if code == 1}
                retried += len(back)
                last = page[-1][1]
                stayed = sum(
                    1
                    for (_, score), i in zip(page, ids, strict=True)
                    if score == last and i not in back
                )
                if last == low:
                    skip += stayed
                else:
                    low, skip = last, stayed

    def purge(self, status: JobStatus | str) -> int:
        """Delete every job in ``status`` (not ``processing``: those are held by workers).

        Returns:
            How many jobs were deleted.

        Raises:
            ConfigError: an unknown status, or ``processing``.
        """
        job_status, index = self._index(status)
        if job_status is JobStatus.PROCESSING:
            raise ConfigError("status must not be processing: running jobs cannot be purged")
        deleted = 0
        with self._unavailable_as_error():
            while batch := int(
                self._scripts.purge(self.client, (index,), (self.keys.job_prefix, 1000))
            ):
                deleted += batch
        return deleted

    # -- cron ------------------------------------------------------------------------

    def fire_cron(
        self,
        cron_id: str,
        fire_ms: int,
        next_ms: int | None,
        job: tuple[str, str, bytes, JobConfig],
        state_ttl: timedelta,
    ) -> tuple[bool, int]:
        """Claim one fire time of a cron job and enqueue its job, atomically (cron_fire.lua).

        ``job`` is (job id, job type, encoded payload, config).

        Returns:
            Whether this call fired, and the cron job's last fire time now stored (ms).

        Raises:
            ReplicationError: with ``wait_for_replicas``, too few replicas acknowledged
                (this call did fire: the claim and the job are written on the master).
        """
        k = self.keys
        job_id, job_type, payload, config = job
        call = (
            self._scripts.cron_fire,
            (k.pending, k.scheduled, k.seq, k.stats, k.wake, k.cron(cron_id), k.crons),
            (
                k.job_prefix,
                cron_id,
                fire_ms,
                "" if next_ms is None else next_ms,
                _codec.to_ms(state_ttl),
                job_id,
                job_type,
                payload,
                *job_args(config),
            ),
        )
        (reply,) = self._execute_durably(
            [call], [job_id], wrote=lambda replies: int(replies[0][0]) == 1
        )
        return bool(int(reply[0])), int(reply[1])

    def cron_state(self, cron_id: str) -> dict[str, str]:
        """A cron job's shared state (last_fire, last_job_id, next_run, ...), {} if none."""
        raw = self.client.hgetall(self.keys.cron(cron_id))
        return {_codec.text(key): _codec.text(value) for key, value in raw.items()}

    def announce_cron(
        self, cron_id: str, fields: dict[str, str], next_ms: int | None, state_ttl: timedelta
    ) -> None:
        """Publish a cron job's registration (schedule, job type, enabled, next run).

        Also drops the listing's entries of cron jobs whose state expired: no scheduler
        announced or fired them for a whole state TTL (`jobs.scheduler.STATE_TTL` at
        least), so none runs them any more. (Should one be announced again in between,
        its next fire or announce lists it again.)
        """
        key = self.keys.cron(cron_id)
        pipe = self.client.pipeline(transaction=False)
        mapping = {**fields, "next_run": "" if next_ms is None else str(next_ms)}
        pipe.hset(key, mapping=cast("Any", mapping))
        pipe.pexpire(key, _codec.to_ms(state_ttl))
        if next_ms is None:
            pipe.zrem(self.keys.crons, cron_id)
        else:
            pipe.zadd(self.keys.crons, {cron_id: next_ms})
        pipe.zrange(self.keys.crons, 0, -1)
        listed = [_codec.text(i) for i in pipe.execute()[-1]]
        if listed:
            pipe = self.client.pipeline(transaction=False)
            for other in listed:
                pipe.exists(self.keys.cron(other))
            gone = [i for i, alive in zip(listed, pipe.execute(), strict=True) if not alive]
            if gone:
                self.client.zrem(self.keys.crons, *gone)

    def crons(self) -> list[dict[str, str]]:
        """Every cron job announced on this queue, with its shared state, by next run."""
        with self._unavailable_as_error():
            raw_ids = cast("list[str | bytes]", self.client.zrange(self.keys.crons, 0, -1))
            ids = [_codec.text(i) for i in raw_ids]
            pipe = self.client.pipeline(transaction=False)
            for cron_id in ids:
                pipe.hgetall(self.keys.cron(cron_id))
            states = pipe.execute() if ids else []
        return [
            {"id": cron_id, **{_codec.text(k): _codec.text(v) for k, v in state.items()}}
            for cron_id, state in zip(ids, states, strict=True)
            if state
        ]

    def memory_policy(self) -> tuple[int, str]:
        """The server's ``maxmemory`` (bytes, 0 = no limit) and ``maxmemory-policy``.

        Raises:
            redis.RedisError: CONFIG GET refused (an ACL without ``+config|get``, or a
                managed Redis that renamed CONFIG).
        """
        if isinstance(self.client, redis.cluster.RedisCluster):
            cluster: Any = self.client  # untyped in some redis-py releases, typed in others
            node = cluster.get_node_from_key(self.keys.pending)
            raw = cluster.config_get("maxmemory*", target_nodes=node)
        else:
            raw = self.client.config_get("maxmemory*")
        found = {_codec.text(k): _codec.text(v) for k, v in cast("dict[Any, Any]", raw).items()}
        return int(found.get("maxmemory", "0")), found.get("maxmemory-policy", "noeviction")

    def warn_if_evicting(self, logger: logging.Logger) -> None:
        """Log when the server may evict this queue's keys to stay under ``maxmemory``.

        Only ``noeviction`` (or no ``maxmemory`` at all) keeps every key: an ``allkeys-*``
        policy may drop pending and running jobs, and the queue's indexes (WARNING). A
        ``volatile-*`` policy evicts only keys that have a TTL: finished job records before
        their ``completed_ttl`` / ``failed_ttl``, cron claims and pool records (INFO). A
        server that refuses CONFIG GET is not checked (DEBUG).
        """
        extra = {"queue": self.name}
        try:
            maxmemory, policy = self.memory_policy()
        except (redis.RedisError, ValueError):
            logger.debug("cannot read maxmemory-policy at %s", self.address, exc_info=True)
            return
        if maxmemory:
            # Finished records at their count bounds, at about RECORD_BYTES each: what the
            # retention settings alone may hold at a sustained rate.
            kept = self.config.max_completed_jobs + 2 * self.config.max_failed_jobs
            if not self.config.max_completed_jobs or kept * RECORD_BYTES > maxmemory:
                logger.warning(
                    "Redis at %s has maxmemory %d MB, and this queue's retention may keep "
                    "%s finished records (about %d bytes each) under a sustained load: lower "
                    "max_completed_jobs / completed_ttl, or raise maxmemory",
                    self.address,
                    maxmemory >> 20,
                    f"{kept:,}" if self.config.max_completed_jobs else "unbounded",
                    RECORD_BYTES,
                    extra=extra,
                )
        if maxmemory == 0 or policy == "noeviction":
            return
        if policy.startswith("volatile-"):
            logger.info(
                "Redis at %s evicts keys with a TTL when full (maxmemory-policy %s): finished "
                "job records may vanish before their completed_ttl/failed_ttl",
                self.address,
                policy,
                extra=extra,
            )
        else:
            logger.warning(
                "Redis at %s may evict any key when full (maxmemory-policy %s): pending and "
                "running jobs can be lost; set maxmemory-policy noeviction",
                self.address,
                policy,
                extra=extra,
            )

    def server_time_ms(self) -> int:
        """The clock of the Redis server holding this queue (TIME), in ms since the epoch."""
        if isinstance(self.client, redis.cluster.RedisCluster):
            # The node owning the queue's slot: the clock its scripts read.
            cluster: Any = self.client  # untyped in some redis-py releases, typed in others
            node = cluster.get_node_from_key(self.keys.crons)
            seconds, micros = cluster.time(target_nodes=node)
        else:
            seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # -- worker pools ----------------------------------------------------------------

    def fetch(self, count: int, lease: timedelta, *, request: str | None = None) -> Fetched:
        """Promote due jobs, then lease up to ``count`` ready jobs (best first).

        ``request``: the fetch's request id (default: a fresh one). A fetch sent again
        with the id of one that ran leases nothing new: it returns the jobs the first
        leased, still held with their tokens (fetch.lua), whatever ``count``.
        """
        fetched = self.exchange((), (), count, lease, request=request)[2]
        assert fetched is not None
        return fetched

    def wait_for_work(self, pool_id: str, timeout: float, also: Sequence[RedisQueue] = ()) -> bool:
        """Block until a wake-up marker arrives or ``timeout`` seconds pass.

        True if woken, or if a job is ready all the same: a marker can be lost (the
        reply to the BLPOP that took it lost and redis-py re-sending the BLPOP, or a
        pool that took it and died before fetching), and then one command more per
        timeout finds the job, instead of the next reap.

        ``also``: other queues the pool serves, in this queue's cluster slot.
        ``timeout`` must stay below the client's socket timeout; `socket_timeout` tells it.
        """
        queues = [self, *also]
        keys = [self.keys.pool_wake(pool_id), *(q.keys.wake for q in queues)]
        if self.client.blpop(keys, timeout) is not None:
            return True
        # One EXISTS for all: a zset key exists while it has members.
        return bool(self.client.exists(*(q.keys.pending for q in queues)))

    def wake_pool(self, pool_id: str) -> None:
        """Wake one pool blocked in `wait_for_work` (so that stopping it is immediate)."""
        key = self.keys.pool_wake(pool_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, "stop")
        pipe.pexpire(key, 60_000)
        pipe.execute()

    def forget_pool(self, pool_id: str) -> None:
        """Remove a stopped pool's registry record and private wake-up list."""
        pipe = self.client.pipeline(transaction=False)
        # One key per DEL: redis-py's cluster pipeline refuses a multi-key delete.
        pipe.delete(self.keys.pool_wake(pool_id))
        pipe.delete(self.keys.worker(pool_id))
        pipe.zrem(self.keys.workers, pool_id)
        pipe.execute()

    def heartbeat(
        self,
        pool_id: str,
        info: dict[str, Any],
        record_ttl: timedelta,
        held: Sequence[HeldJob],
        lease: timedelta,
        *,
        reap: bool = True,
        first: bool = False,
        trim: bool = False,
        progress: Sequence[str] = (),
    ) -> tuple[int, list[int], int | None]:
        """Refresh the pool's record, extend its leases and (optionally) reap, in one round trip.

        ``first``: the pool's first beat (it also prunes the records of dead pools).
        ``trim``: the reap also drops index entries of expired finished records.
        ``progress``: per held job, its new progress (JSON) to store, or '' for none.

        Returns the Redis time (ms), each held job's code (1 extended, 2 cancelled, 0 lease
        lost) and the earliest lease deadline left in the queue after reaping (Redis ms), or
        None.
        """
        k = self.keys
        args: list[Arg] = [
            k.job_prefix,
            _codec.to_ms(lease),
            _codec.to_ms(record_ttl),
            pool_id,
            json.dumps(info),
            "1" if first else "0",
        ]
        for index, job in enumerate(held):
            args += (job.job_id, job.token, progress[index] if progress else "")
        calls: list[tuple[Script, Sequence[str], Sequence[Arg]]] = [
            (self._scripts.heartbeat, (k.processing, k.workers, k.worker(pool_id)), args)
        ]
        if reap:
            calls.append(self._reap_call(trim))
        replies = execute(self.client, calls)
        now, codes = int(replies[0][0]), [int(c) for c in replies[0][1:]]
        if not reap:
            return now, codes, None
        next_expiry = int(replies[1][3])
        return now, codes, None if next_expiry < 0 else next_expiry

    def _reap_call(self, trim: bool = False) -> tuple[Script, Sequence[str], Sequence[Arg]]:
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
        reply = script(self.client, keys, args)
        return int(reply[1]), int(reply[2])

    def finish(
        self, completions: Sequence[tuple[HeldJob, bytes]], failures: Sequence[Failure]
    ) -> tuple[list[Outcome], list[Outcome]]:
        """Record finished attempts, all fenced by their lease tokens, in one round trip.

        Returns one `Outcome` per completion and per failure, in order.
        """
        done, failed, _ = self.exchange(completions, failures, 0, None)
        return done, failed

    def exchange(
        self,
        completions: Sequence[tuple[HeldJob, bytes]],
        failures: Sequence[Failure],
        count: int,
        lease: timedelta | None,
        *,
        request: str | None = None,
    ) -> tuple[list[Outcome], list[Outcome], Fetched | None]:
        """`finish` these outcomes and `fetch` up to ``count`` jobs, in one round trip.

        The worker pool's hot path: what a busy pool writes and what it takes next share
        a pipeline. Either part may be empty (``count`` 0 and no ``request``: no fetch).
        ``request`` is the fetch's request id (see `fetch`); passing the id of a fetch
        whose reply never came fetches even with ``count`` 0, to collect its jobs.
        """
        k = self.keys
        calls: list[tuple[Script, Sequence[str], Sequence[Arg]]] = []
        if completions:
            args: list[Arg] = [k.job_prefix, self._completed_ttl_ms]
            for held, result in completions:
                args += (held.job_id, held.token, result)
            calls.append((self._scripts.complete, (k.processing, k.completed, k.stats), args))
        if failures:
            args = [k.job_prefix, self._failed_ttl_ms, self.config.max_failed_jobs]
            for f in failures:
                delay = -1 if f.permanent else max(f.delay_ms, 0)
                args += (f.job_id, f.token, f.error, f.traceback, delay)
            calls.append(
                (
                    self._scripts.fail,
                    (k.processing, k.pending, k.scheduled, k.failed, k.stats, k.seq, k.wake),
                    args,
                )
            )
        fetching = count > 0 or request is not None
        if fetching:
            assert lease is not None
            lease_ms = _codec.to_ms(lease)
            request = request or new_request_id()
            calls.append(
                (
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
            )
        if not calls:
            return [], [], None
        replies = iter(execute(self.client, calls))
        done: list[Outcome] = []
        failed: list[Outcome] = []
        fetched: Fetched | None = None
        if completions:
            reply = next(replies)
            now = int(reply[0])
            done = [Outcome(bool(int(c)), "completed", now, 0) for c in reply[1:]]
        if failures:
            reply = next(replies)
            now = int(reply[0])
            failed = [
                Outcome(bool(int(reply[i])), _codec.text(reply[i + 1]), now, int(reply[i + 2]))
                for i in range(1, len(reply), 3)
            ]
        if fetching:
            reply = next(replies)
            leased = []
            names = _codec.FETCHED_FIELDS
            for values in reply[2:]:
                fields = {n: v for n, v in zip(names, values, strict=True) if v is not None}
                leased.append(
                    Leased(_codec.text(fields["id"]), _codec.text(fields["lease"]), fields)
                )
            next_due = int(reply[1])
            fetched = Fetched(int(reply[0]), None if next_due < 0 else next_due, leased)
        return done, failed, fetched

    def requeue(self, held: Sequence[HeldJob]) -> int:
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
        reply = self._scripts.requeue(self.client, (k.processing, k.pending, k.seq, k.wake), args)
        return sum(int(c) for c in reply[1:])
