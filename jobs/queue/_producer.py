"""The producer side of `RedisQueue`: enqueue jobs and flows, publish job types."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import redis
import redis.cluster
import redis.sentinel

from jobs import _codec
from jobs.backoff import BUILTIN_BACKOFFS
from jobs.errors import (
    ConfigError,
    JobNotFound,
    UnknownJobType,
)
from jobs.queue._packed import UNSENT, command, pack_args
from jobs.queue._scripts import execute_after_loss
from jobs.queue._wire import (
    declared_queue,
    job_args,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from jobs.config import JobConfig
    from jobs.queue._scripts import Arg, Script
from jobs.queue._base import _LETTERS, QueueBase, enqueue_chunks

#: Packed enqueue commands a producer keeps (`Producer._enqueue_packed`).
PACKED_HEADS = 256

#: A packed enqueue call of at most this many jobs polls for its reply (see
#: `jobs.queue._reply_poll`): Redis answers it in tens of microseconds.
POLLED_JOBS = 4

#: enqueue.lua's ARGV[13..16] when the jobs depend on nothing.
_NO_DEPENDENCIES: tuple[Arg, ...] = ("", "0", 0, 0)


def _packed_job(job_id: str, payload: bytes) -> bytes:
    """A job's two enqueue arguments, packed as `pack_args` packs them."""
    data = str.__str__(job_id).encode()
    return b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(data), data, len(payload), payload)


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
    """Enqueue jobs and flows; publish and read job types' declarations."""

    def enqueue(
        self,
        job_type: str,
        ids: Sequence[str],
        payloads: Sequence[bytes],
        config: JobConfig,
        *,
        declared: bool = True,
        strict: bool = False,
        fresh: bool = False,
    ) -> list[str]:
        """Write new jobs (payloads already encoded); the id each payload's job has.

        That is its own id, unless ``config.unique_key`` is held by a live job (or was,
        within ``unique_for``): then that job's id, and nothing is written for it.

        ``declared``: the settings ``config`` left at the library default take the job
        type's declared ones, as worker pools published them (`declare_types`); pass
        False when they were applied already. ``strict``: refuse a type that no pool
        declared.

        ``config.depends_on``: the jobs wait for these (see enqueue.lua).

        ``fresh``: the caller drew ``ids`` at random just now, so none exists unless this
        very call ran before (its reply lost): enqueue_plain.lua then checks the first
        and the last id once, not every id (one command a job less in Redis).

        Raises:
            UnknownJobType: ``strict``, and no worker pool declared ``job_type``.
            JobNotFound: a job of ``config.depends_on`` does not exist in this queue
                (nothing is written).
            RedisUnavailable: Redis cannot be reached.
            ReplicationError: with ``wait_for_replicas``, too few replicas acknowledged
                (the jobs are written on the master all the same).
        """
        if len(ids) != len(payloads):
            raise ValueError(f"{len(ids)} ids for {len(payloads)} payloads")
        # One job is one chunk, whatever its size.
        chunks = [range(1)] if len(payloads) == 1 else enqueue_chunks(list(map(len, payloads)))
        replies: list[Any] | None = None
        packed = self._packed_calls.usable and not self.config.wait_for_replicas
        if packed:
            replies = self._enqueue_packed(
                job_type, ids, payloads, chunks, config, declared, strict, fresh
            )
        if replies is None:
            script, head = self._enqueue_head(job_type, config, declared, strict, fresh)
            calls: list[tuple[Script, Sequence[str], Sequence[Arg]]] = []
            for chunk in chunks:
                args = head.copy()
                for index in chunk:
                    args += (ids[index], payloads[index])
                calls.append((script, self._enqueue_keys, args))
            with self._unavailable_as_error():
                try:
                    if packed:  # sent packed, and the connection was lost (or a script)
                        replies = execute_after_loss(self.client, calls)
                    else:
                        replies = self._execute_durably(calls, ids)
                except redis.ResponseError as exc:
                    raise self._refusal(exc) from None
        if not replies or isinstance(replies[0], int):
            return list(ids)  # enqueue_plain.lua: no unique key, each job has its own id
        flags = [flag for reply in replies for flag in reply[1:]]
        return [
            job_id if isinstance(flag, int) else _codec.text(flag)
            for job_id, flag in zip(ids, flags, strict=True)
        ]

    def _enqueue_head(
        self, job_type: str, config: JobConfig, declared: bool, strict: bool, fresh: bool
    ) -> tuple[Script, list[Arg]]:
        """The enqueue script for ``config``, and its ARGV before the ids and payloads.

        enqueue_plain.lua unless the jobs have a unique key or dependencies: it carries
        none of their code, which Redis would otherwise run through at every call.
        """
        k = self.keys
        letters = "".join(_LETTERS[name] for name in sorted(config.defaulted())) if declared else ""
        strict_flag = "1" if strict else "0"
        if config.unique_key is None and not config.depends_on:
            fresh_flag = "1" if fresh else "0"
            head = [k.job_prefix, job_type, *job_args(config), letters, strict_flag, fresh_flag]
            return self._scripts.enqueue_plain, head
        return self._scripts.enqueue, [
            k.job_prefix,
            job_type,
            *job_args(config),
            "" if config.unique_key is None else k.unique(config.unique_key),
            0 if config.unique_for is None else _codec.to_ms(config.unique_for),
            letters,
            strict_flag,
            *self._dependency_args(config),
        ]

    @functools.cached_property
    def _enqueue_keys(self) -> tuple[str, ...]:
        k = self.keys
        return (k.pending, k.scheduled, k.seq, k.stats, k.wake, k.types)

    def _enqueue_packed(
        self,
        job_type: str,
        ids: Sequence[str],
        payloads: Sequence[bytes],
        chunks: list[range],
        config: JobConfig,
        declared: bool,
        strict: bool,
        fresh: bool,
    ) -> list[Any] | None:
        """The enqueue.lua calls packed by hand (`jobs.queue._packed`); None if not sent.

        The command up to the first id is packed once per job type and config object: a
        producer mostly repeats a handful (the default config, a type's declared one).
        A custom backoff is packed afresh each time, since it may be random. Sending
        the calls again the generic way after a lost reply is safe: an id that exists
        already is left alone (with ``fresh`` ids, a call that ran writes nothing again).
        """
        key = (job_type, id(config), declared, strict, fresh)
        known = self._packed_heads.get(key)
        if known is not None and known[0] is config:
            count, head = known[1], known[2]
        else:
            keys = self._enqueue_keys
            script, head_args = self._enqueue_head(job_type, config, declared, strict, fresh)
            args = ["EVALSHA", script.sha, len(keys), *keys, *head_args]
            count, head = len(args), pack_args(args)
            if isinstance(config.retry_backoff, BUILTIN_BACKOFFS):
                if len(self._packed_heads) >= PACKED_HEADS:
                    self._packed_heads.clear()
                # The config stays in its entry, so that its id is not reused meanwhile.
                self._packed_heads[key] = (config, count, head)
        commands = [
            command(
                count + 2 * len(chunk),
                head + b"".join([_packed_job(ids[i], payloads[i]) for i in chunk]),
            )
            for chunk in chunks
        ]
        with self._unavailable_as_error():
            try:
                replies = self._packed_calls.call(commands, poll=len(ids) <= POLLED_JOBS)
            except redis.ResponseError as exc:
                raise self._refusal(exc) from None
        return None if replies is UNSENT else cast("list[Any]", replies)

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
