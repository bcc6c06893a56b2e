"""Operator actions on `RedisQueue`: cancel, retry, purge, list jobs by status."""

from __future__ import annotations

from typing import cast

from jobs import _codec, _record
from jobs.errors import (
    ConfigError,
    JobNotFound,
)
from jobs.job import Job, JobStatus
from jobs.queue._base import (
    ANSWER_TTL_MS,
    RETRY_BATCH,
    RETRY_CALLS,
    QueueBase,
    _wrong_type,
    new_request_id,
)
from jobs.queue._scripts import execute

#: Jobs deleted per purge script call.
PURGE_BATCH = 1000


class Admin(QueueBase):
    """Cancel, retry, purge and list jobs; each request is idempotent when re-sent."""

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
            if job_status is JobStatus.PENDING:
                ids = self._pending_ids(offset, limit)
            else:
                ids = cast("list[str | bytes]", read(index, offset, offset + limit - 1))
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self.keys.job(_codec.text(job_id)))
            records = pipe.execute(raise_on_error=False) if ids else []
        for fields in records:
            if isinstance(fields, Exception) and not _wrong_type(fields):
                raise fields
        return [
            _record.read_back(fields, self.name)
            for fields in records
            # Empty: the record expired between the two reads. An error: the key is not a
            # record at all, and the next fetch or reap sets it aside.
            if fields and not isinstance(fields, Exception)
        ]

    def _pending_ids(self, offset: int, limit: int) -> list[str | bytes]:
        """Pending ids in run order, those held back by their type's limits included."""
        k = self.keys
        end = offset + limit - 1
        # One round trip, and one O(1) check more than the plain index read, while no
        # type has jobs held back (the common case).
        pipe = self.client.pipeline(transaction=False)
        pipe.zrange(k.pending, offset, end)
        pipe.exists(k.parked)
        ids, any_held = pipe.execute()
        if not any_held:
            return cast("list[str | bytes]", ids)
        held = cast("list[str | bytes]", self.client.zrange(k.parked, 0, -1))
        pipe = self.client.pipeline(transaction=False)
        for key in (k.pending, *(k.held(_codec.text(t)) for t in held)):
            pipe.zrange(key, 0, end, withscores=True)
        merged = sorted(
            (pair for page in pipe.execute() for pair in page), key=lambda pair: pair[1]
        )
        return [job_id for job_id, _ in merged[offset : end + 1]]

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

        Walks the failed index oldest first, `RETRY_BATCH` ids per page and one small
        script call per job, `RETRY_CALLS` per round trip, so that Redis serves other
        clients every few dozen calls however many jobs there are.

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
                codes = [
                    code
                    for first in range(0, len(calls), RETRY_CALLS)
                    for code in execute(self.client, calls[first : first + RETRY_CALLS])
                ]
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

        Jobs that wait for a deleted one are cancelled, naming it (see purge.lua).

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
            settle = (self._failed_ttl_ms, self.config.max_failed_jobs)
            calls: list[tuple[tuple[str, ...], tuple[str | int, ...]]] = [
                ((index,), (self.keys.job_prefix, PURGE_BATCH, *settle))
            ]
            if job_status is JobStatus.PENDING:
                # Pending jobs held back by their type's limits sit in one list per type.
                held = cast("list[str | bytes]", self.client.zrange(self.keys.parked, 0, -1))
                for raw in held:
                    name = _codec.text(raw)
                    calls.append(
                        (
                            (self.keys.held(name), self.keys.parked),
                            (self.keys.job_prefix, PURGE_BATCH, *settle, name),
                        )
                    )
            for keys, args in calls:
                while True:
                    batch = int(self._scripts.purge(self.client, keys, args))
                    deleted += batch
                    # A short batch emptied the index as it was. Stop there: jobs that
                    # the purge itself released into it (dependents that run whatever
                    # the outcome) are not what was asked to be deleted.
                    if batch < PURGE_BATCH:
                        break
        return deleted
