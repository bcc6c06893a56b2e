"""The producer side of `RedisQueue`: enqueue, read jobs, wait for their outcomes."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import redis
import redis.cluster
import redis.sentinel

from jobs import _codec
from jobs._loops import backoff_delay
from jobs.errors import (
    ConfigError,
    JobNotFound,
    RedisUnavailable,
    UnknownJobType,
    WaitTimeout,
)
from jobs.queue._cluster import run_on_node
from jobs.queue._waiter import RECHECK, FinishedListener
from jobs.queue._wire import (
    declared_queue,
    job_args,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from jobs.config import JobConfig
    from jobs.job import Job
    from jobs.queue._scripts import Arg, Script
from jobs.queue._base import _LETTERS, GET_BATCH, QueueBase, _wrong_type, enqueue_chunks

#: enqueue.lua's ARGV[13..16] when the jobs depend on nothing.
_NO_DEPENDENCIES: tuple[Arg, ...] = ("", "0", 0, 0)


class FlowProfile(NamedTuple):
    """Settings shared by some jobs of a flow (flow.lua's profiles)."""

    job_type: str
    config: JobConfig
    #: Fill the settings ``config`` left at the default from the type's declared ones.
    declared: bool
    #: Refuse the type if no worker pool declared it.
    strict: bool


class FlowJob(NamedTuple):
    """One job of a flow: its id, profile index, encoded payload and dependencies."""

    job_id: str
    profile: int
    payload: bytes
    depends_on: tuple[str, ...]


class Producer(QueueBase):
    """Enqueue jobs, read them, and wait for their outcomes."""

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

        ``config.depends_on``: the jobs wait for these (see enqueue.lua).

        Raises:
            UnknownJobType: ``strict``, and no worker pool declared ``job_type``.
            JobNotFound: a job of ``config.depends_on`` does not exist in this queue
                (nothing is written).
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
            *self._dependency_args(config),
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
                raise self._refusal(exc) from None
        flags = [flag for reply in replies for flag in reply[1:]]
        return [
            job_id if isinstance(flag, int) else _codec.text(flag)
            for job_id, flag in zip(ids, flags, strict=True)
        ]

    def _dependency_args(self, config: JobConfig) -> tuple[Arg, ...]:
        """enqueue.lua's ARGV[13..16]: the dependencies, and how cancelled jobs are kept."""
        if not config.depends_on:
            return _NO_DEPENDENCIES
        return (
            json.dumps([str.__str__(i) for i in config.depends_on]),
            "1" if config.depends_on_any_outcome else "0",
            self._failed_ttl_ms,
            self.config.max_failed_jobs,
        )

    def _refusal(self, exc: redis.ResponseError) -> Exception:
        """The error an enqueue or flow script's refusal (nothing written) stands for."""
        text = str(exc)
        if text.startswith("UNKNOWN_TYPE"):
            job_type = text.split("job type ", 1)[-1]
            return UnknownJobType(
                f"no worker pool declared job type {job_type!r} on queue {self.name!r} "
                f"(a strict client refuses it: a typo, or no worker started yet)"
            )
        if text.startswith("NO_DEPENDENCY"):
            job_id = text.split(" ", 1)[1]
            return JobNotFound(
                f"depends_on names job {job_id!r}, which does not exist in queue "
                f"{self.name!r} (finished and expired, purged, or on another queue: "
                f"dependencies across queues are not supported); nothing was enqueued"
            )
        if text.startswith("ID_TAKEN"):
            return ConfigError(f"job id {text.split(' ', 1)[1]!r} exists already")
        return exc

    def enqueue_flow(self, profiles: Sequence[FlowProfile], jobs: Sequence[FlowJob]) -> None:
        """Write a group or chain's jobs in one atomic call (flow.lua): all or nothing.

        ``jobs`` come in an order where each one follows every job it depends on.

        Raises:
            UnknownJobType: a strict producer, and no worker pool declared a type.
            JobNotFound: a dependency is neither in ``jobs`` nor an existing job.
            RedisUnavailable: Redis cannot be reached.
        """
        k = self.keys
        args: list[Arg] = [
            k.job_prefix,
            self._failed_ttl_ms,
            self.config.max_failed_jobs,
            "1" if any(p.strict for p in profiles) else "0",
            len(profiles),
        ]
        for p in profiles:
            args += (
                p.job_type,
                *job_args(p.config),
                "".join(_LETTERS[name] for name in sorted(p.config.defaulted()))
                if p.declared
                else "",
                "1" if p.config.depends_on_any_outcome else "0",
            )
        for job in jobs:
            args += (
                job.job_id,
                job.profile + 1,
                job.payload,
                json.dumps(list(job.depends_on)) if job.depends_on else "",
            )
        keys = (k.pending, k.scheduled, k.seq, k.stats, k.wake, k.types, k.waiting)
        with self._unavailable_as_error():
            try:
                self._execute_durably(
                    [(self._scripts.flow, keys, args)], [job.job_id for job in jobs]
                )
            except redis.ResponseError as exc:
                raise self._refusal(exc) from None

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
            with self._any_error_as_unavailable():
                hset: Any = self.client.hset  # its mapping type differs between releases
                hset(self.keys.types, mapping=dict(declarations))

    def declared_queue(self, job_type: str) -> str | None:
        """The queue ``job_type``'s published declaration names (`Registry.register`).

        Raises:
            RedisUnavailable: Redis cannot be reached.
        """
        with self._unavailable_as_error():
            raw: Any = self.client.hget(self.keys.types, job_type)  # typed per release
        return declared_queue(raw)

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
                if due and not listener.readers.acquire(timeout=min(left, RECHECK)):
                    watch.mark(due)  # other waiters held every reader slot: try again
                    continue
                jobs: list[Job | None] | None
                try:
                    jobs = self.get_many(due)
                except RedisUnavailable:
                    jobs = None
                finally:
                    if due:
                        listener.readers.release()
                if jobs is None:
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
