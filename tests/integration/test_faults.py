"""Fault tests with real processes: SIGKILL, SIGSTOP, SIGTERM, Redis stops, kills and cut
connections. Nothing acknowledged may be lost, and a stalled worker may never overwrite
a job that moved on.

Workers run in subprocesses (worker_process.py, via `_processes`); this process only
enqueues, signals and looks at Redis. Handlers leave one entry per execution in the
list ``t:ran`` (``t:cancelled`` for cancellations), which is how duplicates are counted.
Measured figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

import jobs
from tests.helpers import wait_until
from tests.integration._processes import Worker, WorkerProcs, stop_worker, worker_procs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import redis

    from jobs._embedded import RedisServer

__all__ = ["worker_procs"]  # the fixture, used by name

LEASE = 1.0
RAN = "t:ran"
CANCELLED = "t:cancelled"


@pytest.fixture
def queue_name() -> str:
    return f"faults-{uuid.uuid4().hex[:10]}"


@contextmanager
def producer(url: str, queue: str) -> Iterator[jobs.Client]:
    """A client without workers: the test enqueues, reads and cancels from its own process."""
    q = jobs.RedisQueue.from_url(url, name=queue)
    try:
        yield jobs.Client(jobs.ClientConfig(queue=q))
    finally:
        q.close()


@contextmanager
def server_client(server: RedisServer) -> Iterator[redis.Redis]:
    client = server.client()
    try:
        yield client
    finally:
        client.close()


def entries(r: redis.Redis, key: str = RAN) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in r.lrange(key, 0, -1)]


def status_is(client: jobs.Client, job_id: str, status: jobs.JobStatus) -> Callable[[], bool]:
    def check() -> bool:
        return client.get(job_id).status is status

    check.__name__ = f"job status is {status}"
    return check


def drained(client: jobs.Client, total: int) -> Callable[[], bool]:
    """Every job finished completed, and nothing is left pending, scheduled or leased."""

    def check() -> bool:
        s = client.stats()
        return (
            s.completed_jobs == total
            and s.pending_jobs == 0
            and s.scheduled_jobs == 0
            and s.processing_jobs == 0
        )

    check.__name__ = f"all {total} jobs completed"
    return check


def completed_at_least(client: jobs.Client, n: int) -> Callable[[], bool]:
    def check() -> bool:
        return client.stats().completed_jobs >= n

    check.__name__ = f"at least {n} jobs completed"
    return check


def length_is(r: redis.Redis, key: str, n: int) -> Callable[[], bool]:
    def check() -> bool:
        return int(r.llen(key)) == n

    check.__name__ = f"{key} holds {n} entries"
    return check


def redis_now(r: redis.Redis) -> float:
    seconds, micros = r.time()
    return seconds + micros / 1e6


def executions(r: redis.Redis, ids: list[str]) -> tuple[Counter[str], int]:
    """How often each job ran (from t:ran), and how many runs were duplicates."""
    counts = Counter(entry["id"] for entry in entries(r))
    missing = [job_id for job_id in ids if counts[job_id] == 0]
    assert not missing, f"{len(missing)} jobs never ran, e.g. {missing[:3]}"
    assert set(counts) <= set(ids), "t:ran holds ids that were never enqueued"
    return counts, sum(counts.values()) - len(ids)


def assert_records_completed(client: jobs.Client, ids: list[str]) -> None:
    statuses = Counter(str(client.get(job_id).status) for job_id in ids)
    assert statuses == {"completed": len(ids)}, statuses


def test_sigkill_mid_job_is_redelivered_without_consuming_a_retry(
    redis_url: str, redis_client: redis.Redis, queue_name: str, worker_procs: WorkerProcs
) -> None:
    with producer(redis_url, queue_name) as client:
        a = worker_procs.spawn(redis_url, queue_name, workers=1, lease=LEASE)
        job_id = client.enqueue("sleep", {"seconds": 2}, jobs.JobConfig(max_retries=0))
        wait_until(status_is(client, job_id, jobs.JobStatus.PROCESSING), timeout=5)
        # B is up before A dies, so the figure below measures the library, not how long
        # an interpreter takes to start.
        b = worker_procs.spawn(redis_url, queue_name, workers=1, lease=LEASE)
        assert client.get(job_id).attempts == 1

        assert stop_worker(a, signal.SIGKILL) == -signal.SIGKILL
        # A is gone: the lease deadline in the processing set is its last heartbeat's.
        deadline = redis_client.zscore(client.queue.keys.processing, job_id)
        assert deadline is not None, "the job left processing before its lease ran out"
        last_beat = deadline / 1000 - LEASE

        def redelivered() -> jobs.Job | None:
            job = client.get(job_id)
            return job if job.attempts == 2 and job.started_at is not None else None

        second = wait_until(redelivered, timeout=5 * LEASE)
        assert second is not None and second.started_at is not None
        latency = second.started_at.timestamp() - last_beat
        print(f"\nre-delivery {latency:.3f} s after the last heartbeat (lease {LEASE} s)")
        # The contract says "about 1.5 x lease"; the slack absorbs a loaded CI machine.
        assert latency <= 1.5 * LEASE + 0.5

        wait_until(status_is(client, job_id, jobs.JobStatus.COMPLETED), timeout=5)
        job = client.get(job_id)
        assert job.attempts == 2
        assert job.lost_leases == 1
        assert job.error is None
        assert job.result == {"pid": b.pid}
        stats = client.stats()
        assert stats.lost_leases == 1
        assert stats.completed_jobs == 1
        assert stats.failed_jobs == 0
        assert stats.retried_attempts == 0
        # A died inside ctx.sleep, before its side effect: B's run is the only one.
        assert entries(redis_client) == [{"id": job_id, "attempt": 2, "pid": b.pid}]
        assert stop_worker(b) == 0


def test_poison_pill_fails_after_max_lost_leases(
    redis_url: str, queue_name: str, worker_procs: WorkerProcs
) -> None:
    max_lost = 2
    with producer(redis_url, queue_name) as client:
        job_id = client.enqueue("crash", {}, jobs.JobConfig(max_retries=5))
        deaths = 0
        worker = worker_procs.spawn(redis_url, queue_name, 1, LEASE, max_lost_leases=max_lost)

        def worker_died_or_job_final() -> bool:
            return worker.poll() is not None or client.get(job_id).status.is_final

        while True:
            wait_until(worker_died_or_job_final, timeout=10 * LEASE)
            if worker.poll() is None:
                break
            assert worker.returncode == 1, worker_procs.log_tail(worker)
            deaths += 1
            assert deaths <= max_lost, "the poison pill keeps being delivered"
            worker = worker_procs.spawn(redis_url, queue_name, 1, LEASE, max_lost_leases=max_lost)

        job = client.get(job_id)
        assert deaths == max_lost
        assert job.status is jobs.JobStatus.FAILED
        assert job.error == "lease expired (worker lost)"
        assert job.lost_leases == max_lost
        assert job.attempts == max_lost
        stats = client.stats()
        assert stats.failed_jobs == 1
        assert stats.lost_leases == max_lost
        assert stats.retried_attempts == 0
        assert worker.poll() is None, "the last worker must survive: it never ran the job"
        assert stop_worker(worker) == 0


def test_stalled_worker_cannot_overwrite_a_redelivered_job(
    redis_url: str,
    redis_client: redis.Redis,
    redis_factory: Callable[..., RedisServer],
    queue_name: str,
    worker_procs: WorkerProcs,
) -> None:
    # The queue lives on its own server, which the test pauses at the end; handler
    # traces go to the shared one, which stays readable meanwhile.
    server = redis_factory()
    url = server.url
    with producer(url, queue_name) as client:
        a = worker_procs.spawn(url, queue_name, 1, LEASE, record_url=redis_url)
        job_id = client.enqueue("sleep", {"seconds": 3}, jobs.JobConfig(max_retries=0))
        wait_until(status_is(client, job_id, jobs.JobStatus.PROCESSING), timeout=5)
        a.send_signal(signal.SIGSTOP)

        b = worker_procs.spawn(url, queue_name, 1, LEASE, record_url=redis_url)
        wait_until(status_is(client, job_id, jobs.JobStatus.COMPLETED), timeout=10)
        assert entries(redis_client) == [{"id": job_id, "attempt": 2, "pid": b.pid}]
        before = client.get(job_id)
        assert before.result == {"pid": b.pid}
        assert before.attempts == 2
        assert before.lost_leases == 1
        rejected_before = client.stats().rejected_writes
        assert stop_worker(b) == 0

        # When A wakes up, its handler (whose sleep is long over) and its heartbeat (which
        # would find the lease lost and drop the attempt unwritten) race. Pausing the
        # queue's Redis holds the heartbeat's answer back until A's handler has returned,
        # which it announces on the other server: so A really sends its stale completion,
        # and the fence in complete.lua is what must refuse it.
        server.pause()
        try:
            a.send_signal(signal.SIGCONT)
            wait_until(length_is(redis_client, RAN, 2), timeout=10)
        finally:
            server.resume()
        assert entries(redis_client)[1] == {"id": job_id, "attempt": 1, "pid": a.pid}

        wait_until(
            lambda: client.stats().rejected_writes >= rejected_before + 1,
            timeout=10,
            message="A's late completion was never sent, or not counted as rejected",
        )
        assert client.get(job_id) == before
        stats = client.stats()
        assert stats.completed_jobs == 1
        assert stats.failed_jobs == 0
        assert stats.lost_leases == 1
        log = worker_procs.log_path(a)
        assert log is not None
        wait_until(
            lambda: "outcome rejected" in log.read_text("utf-8", "replace"),
            timeout=5,
            message="A logged no warning about its rejected outcome",
        )
        assert a.poll() is None, worker_procs.log_tail(a)
        assert stop_worker(a) == 0
        assert client.get(job_id) == before


def test_cancel_from_another_process_reaches_the_running_handler(
    redis_url: str, redis_client: redis.Redis, queue_name: str, worker_procs: WorkerProcs
) -> None:
    with producer(redis_url, queue_name) as client:
        worker = worker_procs.spawn(redis_url, queue_name, 1, LEASE)
        job_id = client.enqueue("block", {}, jobs.JobConfig(max_retries=3))
        wait_until(status_is(client, job_id, jobs.JobStatus.PROCESSING), timeout=5)

        started = time.monotonic()
        assert client.cancel(job_id) is True
        job = client.get(job_id)
        assert job.status is jobs.JobStatus.CANCELLED
        assert job.completed_at is not None

        seen = wait_until(lambda: entries(redis_client, CANCELLED), timeout=3)
        print(f"\ncancel reached the handler in {time.monotonic() - started:.3f} s")
        assert seen == [{"id": job_id, "reason": "cancelled", "pid": worker.pid}]

        # A job enqueued after it runs after it (FIFO): once that one is done, the
        # cancelled job has had every chance to come back, and has not.
        barrier = client.enqueue("record", {})
        wait_until(status_is(client, barrier, jobs.JobStatus.COMPLETED), timeout=5)
        job = client.get(job_id)
        assert job.status is jobs.JobStatus.CANCELLED
        assert job.attempts == 1
        assert client.cancel(job_id) is False
        assert [e["id"] for e in entries(redis_client)] == [barrier]
        assert len(entries(redis_client, CANCELLED)) == 1
        stats = client.stats()
        assert stats.cancelled_jobs == 1
        assert stats.completed_jobs == 1
        assert stats.retried_attempts == 0
        assert stats.pending_jobs == stats.scheduled_jobs == stats.processing_jobs == 0
        assert stop_worker(worker) == 0


def test_cancelling_running_jobs_does_not_use_up_the_pool(
    redis_url: str, redis_client: redis.Redis, queue_name: str, worker_procs: WorkerProcs
) -> None:
    # Each cancel abandons a running attempt; its handler returns right after, so the
    # pool must get every slot back. One worker thread, three cancels in a row (before
    # 615eef8, the second one left a one-thread pool that never fetched again).
    with producer(redis_url, queue_name) as client:
        worker = worker_procs.spawn(redis_url, queue_name, 1, LEASE)
        for n in range(1, 4):
            job_id = client.enqueue("block", {})
            wait_until(
                status_is(client, job_id, jobs.JobStatus.PROCESSING),
                timeout=5,
                message=f"block job #{n} never started",
            )
            assert client.cancel(job_id) is True
            wait_until(length_is(redis_client, CANCELLED, n), timeout=3)
        barrier = client.enqueue("record", {})
        wait_until(status_is(client, barrier, jobs.JobStatus.COMPLETED), timeout=5)
        stats = client.stats()
        assert stats.cancelled_jobs == 3
        # "A late result is discarded": the handlers' returns are dropped, not sent.
        assert stats.rejected_writes == 0
        assert stop_worker(worker) == 0, worker_procs.log_tail(worker)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_redis_restart_mid_drain_loses_nothing(
    how: str,
    redis_factory: Callable[..., RedisServer],
    queue_name: str,
    worker_procs: WorkerProcs,
) -> None:
    total = 300
    server = redis_factory(appendonly=True, appendfsync="always")
    url = server.url
    workers = [worker_procs.spawn(url, queue_name, 2, LEASE) for _ in range(2)]
    with producer(url, queue_name) as client, server_client(server) as r:
        ids = client.enqueue_many("record", [{"i": i, "delay": 0.01} for i in range(total)])
        wait_until(completed_at_least(client, total // 5), timeout=10)
        done_before = client.stats().completed_jobs
        assert done_before < total, "the drain finished before Redis went away"

        if how == "stop":
            server.stop()
        else:
            server.kill()
        time.sleep(1.0)  # the outage itself
        restarted = time.monotonic()
        server.restart()

        wait_until(drained(client, total), timeout=30)
        print(
            f"\nredis {how}: {done_before}/{total} done before the outage, all done "
            f"{time.monotonic() - restarted:.2f} s after the restart"
        )
        for worker in workers:
            assert worker.poll() is None, worker_procs.log_tail(worker)
        _, duplicates = executions(r, ids)
        stats = client.stats()
        print(f"redis {how}: {duplicates} duplicate executions, {stats.lost_leases} lost leases")
        assert stats.total_jobs == total
        assert stats.failed_jobs == 0
        assert_records_completed(client, ids)
        for worker in workers:
            assert stop_worker(worker) == 0, worker_procs.log_tail(worker)


def test_sigterm_lets_a_short_job_finish(
    redis_url: str, redis_client: redis.Redis, queue_name: str, worker_procs: WorkerProcs
) -> None:
    with producer(redis_url, queue_name) as client:
        worker = worker_procs.spawn(redis_url, queue_name, 1, LEASE, shutdown_timeout=5)
        # Long enough that the job is surely still running when the signal lands.
        job_id = client.enqueue("sleep", {"seconds": 1.0})
        wait_until(status_is(client, job_id, jobs.JobStatus.PROCESSING), timeout=5)
        signalled = redis_now(redis_client)
        assert stop_worker(worker, signal.SIGTERM) == 0, worker_procs.log_tail(worker)

        job = client.get(job_id)
        assert job.status is jobs.JobStatus.COMPLETED
        assert job.completed_at is not None
        assert job.completed_at.timestamp() > signalled, "the job ended before SIGTERM"
        assert job.attempts == 1
        assert job.result == {"pid": worker.pid}
        assert entries(redis_client) == [{"id": job_id, "attempt": 1, "pid": worker.pid}]


def test_sigterm_hands_back_a_job_that_ignores_its_token(
    redis_url: str, redis_client: redis.Redis, queue_name: str, worker_procs: WorkerProcs
) -> None:
    with producer(redis_url, queue_name) as client:
        worker = worker_procs.spawn(redis_url, queue_name, 1, LEASE, shutdown_timeout=0.3)
        job_id = client.enqueue("hang", {"seconds": 60})
        wait_until(status_is(client, job_id, jobs.JobStatus.PROCESSING), timeout=5)
        started = time.monotonic()
        # Far below the handler's 60 s: the process does not wait for the hung thread.
        assert stop_worker(worker, signal.SIGTERM, timeout=15) == 0, worker_procs.log_tail(worker)
        print(f"\nstop with a hung handler took {time.monotonic() - started:.2f} s")

        job = client.get(job_id)
        assert job.status is jobs.JobStatus.PENDING
        assert job.attempts == 0
        assert job.lost_leases == 0
        assert job.error is None
        stats = client.stats()
        assert stats.pending_jobs == 1
        assert stats.processing_jobs == 0
        assert stats.retried_attempts == 0
        assert entries(redis_client) == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_drain_survives_repeated_worker_kills(
    redis_url: str, redis_client: redis.Redis, queue_name: str, worker_procs: WorkerProcs
) -> None:
    total, kills = 2000, 5

    def spawn() -> Worker:
        # max_lost_leases above the number of kills: a job loses at most one lease per
        # kill, so none can fail for it, however unlucky.
        return worker_procs.spawn(redis_url, queue_name, 4, LEASE, max_lost_leases=kills + 1)

    rng = random.Random(20261128)
    live = [spawn() for _ in range(3)]
    with producer(redis_url, queue_name) as client:
        started = time.monotonic()
        ids = client.enqueue_many("record", [{"i": i, "delay": 0.02} for i in range(total)])
        kill_times: list[float] = []
        for k in range(kills):
            # Kill at fixed points of progress rather than of time, so every kill lands
            # mid-drain however fast or slow the machine is.
            wait_until(completed_at_least(client, (k + 1) * total // (kills + 2)), timeout=30)
            victim = live.pop(rng.randrange(len(live)))
            assert stop_worker(victim, signal.SIGKILL) == -signal.SIGKILL
            kill_times.append(time.monotonic() - started)
            assert client.stats().completed_jobs < total, f"kill #{k + 1} came after the drain"
            live.append(spawn())

        wait_until(drained(client, total), timeout=60)
        elapsed = time.monotonic() - started
        counts, duplicates = executions(redis_client, ids)
        stats = client.stats()
        print(
            f"\n{total} jobs, {kills} SIGKILLs at "
            f"{', '.join(f'{t:.1f}' for t in kill_times)} s: drained in {elapsed:.1f} s, "
            f"{duplicates} duplicate executions "
            f"(max {max(counts.values())} runs of one job), {stats.lost_leases} lost leases"
        )
        assert stats.total_jobs == total
        assert stats.completed_jobs == total
        assert stats.failed_jobs == 0
        assert stats.lost_leases >= 1, "no kill caught a job in flight"
        assert_records_completed(client, ids)
        for worker in live:
            assert stop_worker(worker) == 0, worker_procs.log_tail(worker)


def test_worker_survives_cut_connections(
    redis_url: str, redis_client: redis.Redis, queue_name: str, worker_procs: WorkerProcs
) -> None:
    batch = 150
    worker = worker_procs.spawn(redis_url, queue_name, 2, LEASE)

    def cut() -> int:
        # Every normal connection but this one: the worker's fetcher, heartbeat and
        # writer, its handlers' recorder, and the producer's.
        return int(redis_client.client_kill_filter(_type="normal", skipme=True))

    def blocked_fetchers() -> set[str]:
        return {
            c["id"]
            for c in redis_client.client_list()
            if c.get("cmd") == "blpop" and "b" in c.get("flags", "")
        }

    with producer(redis_url, queue_name) as client:
        payloads = [{"i": i, "delay": 0.01} for i in range(batch)]
        ids = client.enqueue_many("record", payloads)
        wait_until(completed_at_least(client, batch // 4), timeout=10)
        killed_busy = cut()
        assert client.stats().completed_jobs < batch, "the drain finished before the cut"
        wait_until(drained(client, batch), timeout=30)

        # Idle now: the fetcher sits in BLPOP, the call a pool is likeliest to never
        # come back from once its connection dies under it.
        blocked = wait_until(blocked_fetchers, timeout=5)
        killed_idle = cut()
        assert not blocked & {c["id"] for c in redis_client.client_list()}
        cut_at = time.monotonic()
        ids += client.enqueue_many("record", payloads)
        wait_until(drained(client, 2 * batch), timeout=30)
        print(
            f"\nconnections cut: {killed_busy} busy, {killed_idle} idle; second batch "
            f"drained {time.monotonic() - cut_at:.2f} s after the idle cut; "
            f"{executions(redis_client, ids)[1]} duplicate executions"
        )
        assert killed_busy >= 2 and killed_idle >= 2, (killed_busy, killed_idle)
        assert worker.poll() is None, worker_procs.log_tail(worker)
        assert_records_completed(client, ids)
        assert stop_worker(worker) == 0, worker_procs.log_tail(worker)
