"""`JobQueue`: what a `Client` asks of its queue (the producer API and the worker side).

Two implementations: `jobs.RedisQueue` (the library's), and `jobs.testing.MemoryQueue`
(single-process, for tests). A `ClientConfig` takes either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from jobs.worker._protocol import WorkerQueue

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from jobs.config import JobConfig
    from jobs.job import Job, JobStatus, QueueHistory, QueueStats, WorkerInfo


@runtime_checkable
class JobQueue(WorkerQueue, Protocol):
    """A queue a `Client` can enqueue to, read, administer and run a worker pool on."""

    @property
    def max_payload_bytes(self) -> int:
        """The largest encoded payload `Client.enqueue` accepts."""
        ...

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
        """Write new jobs (payloads encoded); each job's id (a unique key's holder's).

        ``fresh``: the caller drew ``ids`` at random just now (`Client` does), so none can
        exist unless this very call was sent before: a queue may check that once per call.
        """
        ...

    def get(self, job_id: str) -> Job:
        """The job's current record (`jobs.JobNotFound` if there is none)."""
        ...

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """The records of ``job_ids`` (None for a missing one)."""
        ...

    def as_finished(self, job_ids: Sequence[str], timeout: float | None) -> Iterator[Job]:
        """Yield each job once it is final (`jobs.WaitTimeout` past ``timeout``)."""
        ...

    def cancel(self, job_id: str, *, request: str | None = None) -> bool:
        """Cancel a job; True if cancelled now, False if it had finished already."""
        ...

    def retry(self, job_id: str, *, request: str | None = None) -> bool:
        """Put a failed or cancelled job back in the queue; False in another state."""
        ...

    def retry_failed(self, job_type: str | None = None, since_ms: int | None = None) -> int:
        """Put every failed job (of ``job_type``, failed since ``since_ms``) back; how many."""
        ...

    def purge(self, status: JobStatus | str) -> int:
        """Delete every job in ``status`` (not processing); how many."""
        ...

    def list_jobs(self, status: JobStatus | str, *, limit: int = 100, offset: int = 0) -> list[Job]:
        """Jobs in one status, in the order `Client.list_jobs` documents."""
        ...

    def stats(self) -> QueueStats:
        """The queue's counts."""
        ...

    def history(self, minutes: int = 60) -> QueueHistory:
        """Per-minute counts over the last ``minutes`` minutes, the current one last."""
        ...

    def workers(self) -> list[WorkerInfo]:
        """The live worker pools of this queue."""
        ...

    def server_time_ms(self) -> int:
        """The queue's clock, in ms since the epoch."""
        ...

    def declared_queue(self, job_type: str) -> str | None:
        """The queue ``job_type``'s published declaration names (`Registry.register`)."""
        ...

    def close(self) -> None:
        """Release what the queue holds (connections, listener threads)."""
        ...
