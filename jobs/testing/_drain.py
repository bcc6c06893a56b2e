"""`drain` and `advance`: run a client's jobs in the test's thread, move its clock.

See `jobs.testing` for what `drain` does and does not do.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, cast

from jobs import _codec
from jobs._validators import to_seconds
from jobs.errors import ConfigError, JobNotFound, JobsError
from jobs.queue._scripts import scripts
from jobs.testing._memory import MemoryQueue
from jobs.worker import _attempt
from jobs.worker._attempt import Attempt
from jobs.worker._protocol import Completed, Failed

if TYPE_CHECKING:
    from jobs._queue_protocol import JobQueue
    from jobs.client import Client
    from jobs.job import Job
    from jobs.queue.redis_queue import RedisQueue
    from jobs.registry import Registry
    from jobs.worker._protocol import Leased, Outcome

#: The lease `drain` takes each job with: far longer than any test, so that nothing in
#: Redis takes the job back while its handler runs in the test's thread.
DRAIN_LEASE = timedelta(hours=1)

#: Jobs `drain` runs before it gives up (`DrainError`), unless told otherwise.
DEFAULT_MAX_JOBS = 1000


class DrainError(JobsError, AssertionError):
    """`drain` ran ``max_jobs`` jobs and the queue was still not empty.

    Jobs that keep enqueueing jobs (or a job that keeps failing with retries left)
    would loop for ever; the test fails instead. ``ran`` holds what ran.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, ran: list[Job]) -> None:
        super().__init__(message)
        #: The jobs that ran, in order, as recorded after each attempt.
        self.ran = ran


def _registry(client: Client) -> Registry:
    registry = client.config.registry
    if registry is None:
        raise ConfigError("drain needs a client with a registry (the handlers to run)")
    return registry


def _queues(client: Client) -> list[JobQueue]:
    """The client's queue, and those its registry's job types are declared on.

    The queues a worker pool of ``client`` would serve by default, and where its
    enqueues of those types go (`Registry.register`'s ``queue``).
    """
    queue = client.config.queue
    registry = client.config.registry
    names = [] if registry is None else registry.queues(besides=queue.name)
    return [queue, *(cast("JobQueue", queue.sibling(name)) for name in names)]


def advance(client: Client, seconds: float | timedelta) -> int:
    """Move the queue's clock ahead: every scheduled job becomes due ``seconds`` earlier.

    Delayed jobs and retries waiting out their backoff are moved, and rate limits'
    clocks with them; nothing runs (call `drain` for that). Job timestamps other than
    ``run_at`` are left as they were. The queues the client's job types are declared on
    move too.

    Returns:
        How many scheduled jobs moved.

    Raises:
        ConfigError: a negative duration (the clock never goes back).
    """
    ms = _codec.to_ms(timedelta(seconds=to_seconds(seconds)))
    if ms < 0:
        raise ConfigError(f"advance needs a duration >= 0, got {seconds!r}")
    return sum(_advance(queue, ms) for queue in _queues(client))


def _advance(queue: JobQueue, ms: int) -> int:
    if isinstance(queue, MemoryQueue):
        return queue.advance_scheduled(timedelta(milliseconds=ms))
    redis_queue = cast("RedisQueue", queue)
    keys = redis_queue.keys
    return int(scripts().advance(redis_queue.client, (keys.scheduled,), (keys.job_prefix, ms)))


def drain(
    client: Client,
    *,
    max_jobs: int = DEFAULT_MAX_JOBS,
    advance_clock: bool = True,
    reraise: bool = False,
) -> list[Job]:
    """Run every due job of the client's queue in this thread until none is left.

    Each job is leased, run (handler inside the registry's middleware, with a
    `JobContext` whose `JobContext.enqueue` enqueues with ``client``) and its outcome
    written, exactly as a worker pool would; the pool's ``success_handler`` and
    ``error_handler`` (``client``'s `WorkerPoolConfig`) are called here, in order (an
    exception they raise comes out of ``drain``, where a pool would log it). A job
    that a handler enqueues runs in the same drain. When nothing is due but jobs are
    scheduled (a delay, a retry backoff) or held back by a rate limit, the clock moves
    ahead to the earliest one (`advance`) and the drain goes on. The registry's rate
    limits and concurrency caps are published first, as a worker pool does. The queues
    the registry's job types are declared on are drained too, after the client's own
    in each round, as a pool would serve them.

    Args:
        client: a client with a registry, on the queue to drain (no worker pool may be
            running on that queue meanwhile).
        max_jobs: raise `DrainError` rather than run more jobs than this.
        advance_clock: False runs only the jobs due now; scheduled ones stay.
        reraise: raise a handler's (or middleware's) exception out of ``drain`` once
            its failure is recorded, instead of going on: the test shows its traceback.

    Returns:
        One `Job` per attempt that ran, in order, as recorded right after it (a job that
        was retried appears once per attempt).

    Raises:
        DrainError: ``max_jobs`` jobs ran and more were due.
        ConfigError: the client has no registry.
    """
    registry = _registry(client)
    queues = _queues(client)
    for queue in queues:
        # As a pool starting on the queue would: its types' rate limits and caps apply.
        queue.publish_limits(registry.limits())
    ran: list[Job] = []
    while True:
        leased, due_in = _next(queues)
        if leased is None:
            if due_in is None or not advance_clock:
                return ran
            advance(client, timedelta(milliseconds=max(due_in, 1)))
            continue
        queue, job = leased
        if len(ran) >= max_jobs:
            queue.requeue([job])
            kinds = sorted({job.type for job in ran[-20:]})
            raise DrainError(
                f"drain ran {max_jobs} jobs (max_jobs) and the queue is still not empty: "
                f"jobs keep enqueueing jobs, or keep failing and retrying (last types: "
                f"{', '.join(kinds)})",
                ran,
            )
        attempt = Attempt.from_leased(job, queue, math.inf)
        outcome = _attempt.run(attempt, registry, client)
        done = _write(queue, attempt, outcome)
        ran.append(done)
        _call_hook(client, done, outcome)
        if reraise and isinstance(outcome, Failed) and outcome.exc is not None:
            raise outcome.exc


def _next(queues: list[JobQueue]) -> tuple[tuple[JobQueue, Leased] | None, int | None]:
    """The first queue's next due job; else none, and in how many ms one is due (if any)."""
    due_in: int | None = None
    for queue in queues:
        fetched = queue.fetch(1, DRAIN_LEASE)
        if fetched.jobs:
            return (queue, fetched.jobs[0]), None
        if fetched.next_due_ms is not None:
            wait = fetched.next_due_ms - fetched.now_ms
            due_in = wait if due_in is None else min(due_in, wait)
    return None, due_in


def _write(queue: JobQueue, attempt: Attempt, outcome: Outcome) -> Job:
    """Record the outcome as the pool's writer would; the job as it now stands."""
    try:
        queue.write([outcome])
    except JobsError:
        raise
    except Exception as exc:  # an outcome that does not encode: recorded as the pool does
        queue.write([_attempt.unwritable(attempt, outcome, exc)])
    try:
        return queue.get(attempt.leased.job_id)
    except JobNotFound:  # purged by its own handler, say: what was written is all we know
        now = queue.server_time_ms()
        status = "completed" if isinstance(outcome, Completed) else "failed"
        if attempt.job is None:
            raise
        return _attempt.recorded_job(attempt, outcome, status, now, 0)


def _call_hook(client: Client, job: Job, outcome: Outcome) -> None:
    pool = client.config.worker_pool_config
    if isinstance(outcome, Completed):
        if pool.success_handler is not None:
            pool.success_handler(job)
    elif pool.error_handler is not None and outcome.exc is not None:
        pool.error_handler(job, outcome.exc)
