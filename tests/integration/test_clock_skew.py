"""A worker whose wall clock is 10 minutes off behaves exactly like one on time.

The library stores every time it persists in Redis server time (TIME inside the scripts)
and times its local waits with `time.monotonic`, so a host clock that is wrong must not
move delays, leases, retry backoffs or reaping by a single second.

The skewed processes are the suite's usual worker (worker_process.py, through
`_processes`) and a small producer, started with a ``sitecustomize`` shim on PYTHONPATH
that shifts ``time.time``, ``time.time_ns`` and ``datetime.datetime.now/utcnow/today``
by `SKEW` seconds before anything else is imported (libfaketime would do the same for
C code, but is not available here). Each test first proves the shim is active, from the
timestamps of the worker's own log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

import jobs
from tests.helpers import wait_until
from tests.integration._clients import make_client
from tests.integration._processes import WorkerProcs, stop_worker, worker_procs

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.integration._processes import Worker

__all__ = ["worker_procs"]  # the fixture, used by name

#: Ten minutes ahead: far beyond any lease, delay or backoff used here.
SKEW = 600.0
LEASE = 1.0

SITECUSTOMIZE = '''\
"""Test-only: shift this process's wall clock by $JOBS_TEST_CLOCK_SKEW seconds."""
import datetime as _dt
import os as _os
import time as _time

_skew = float(_os.environ.get("JOBS_TEST_CLOCK_SKEW", "0"))
if _skew:
    _real_time, _real_time_ns = _time.time, _time.time_ns
    _time.time = lambda: _real_time() + _skew
    _time.time_ns = lambda: _real_time_ns() + int(_skew * 1e9)
    _base, _delta = _dt.datetime, _dt.timedelta(seconds=_skew)

    class datetime(_base):
        @classmethod
        def now(cls, tz=None):
            return _base.now(tz) + _delta

        @classmethod
        def utcnow(cls):
            return _base.utcnow() + _delta

        @classmethod
        def today(cls):
            return _base.today() + _delta

    _dt.datetime = datetime
'''

PRODUCER = """\
import json, sys, time
from datetime import datetime, timezone
import jobs
queue = jobs.RedisQueue.from_url(sys.argv[1], name=sys.argv[2])
client = jobs.Client(jobs.ClientConfig(queue=queue))
job_id = client.enqueue("record", {}, jobs.JobConfig(delay=1))
now = datetime.now(timezone.utc).timestamp()
print(json.dumps({"id": job_id, "time": time.time(), "now": now}))
queue.close()
"""


@pytest.fixture
def skewed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Make every Python process started from now on run SKEW seconds ahead."""
    shim = tmp_path / "skew"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE, "utf-8")
    monkeypatch.setenv("PYTHONPATH", str(shim))
    monkeypatch.setenv("JOBS_TEST_CLOCK_SKEW", str(SKEW))
    return dict(os.environ)


@pytest.fixture
def queue_name() -> str:
    return f"skew-{uuid.uuid4().hex[:8]}"


def reached(client: jobs.Client, job_id: str, status: jobs.JobStatus) -> Callable[[], bool]:
    def check() -> bool:
        return client.get(job_id).status is status

    check.__name__ = f"job {job_id} is {status}"
    return check


def assert_skewed_log(procs: WorkerProcs, proc: Worker) -> None:
    """The worker's log timestamps (time.time) are SKEW ahead of ours: the shim works."""
    path = procs.log_path(proc)
    assert path is not None
    first = path.read_text("utf-8").splitlines()[0]
    logged = datetime.strptime(first[:23], "%Y-%m-%d %H:%M:%S,%f")
    ahead = (logged - datetime.now()).total_seconds()
    assert SKEW - 30 < ahead <= SKEW + 1, f"worker clock {ahead:.0f} s ahead: {first}"


def assert_near_now(value: datetime | None, what: str) -> datetime:
    """A stored time is Redis (real) time: within seconds of this process's clock."""
    assert value is not None, what
    off = abs((value - datetime.now(UTC)).total_seconds())
    assert off < 10, f"{what} is {off:.0f} s away from now: not Redis time"
    return value


def test_skewed_worker_keeps_delays_backoffs_and_timestamps_in_redis_time(
    redis_url: str,
    queue_name: str,
    skewed: dict[str, str],
    worker_procs: WorkerProcs,
) -> None:
    with make_client(redis_url, name=queue_name) as producer:
        # Due in a minute: a worker that trusted its own clock would run it at once.
        far = producer.enqueue("record", {}, jobs.JobConfig(delay=60))
        worker = worker_procs.spawn(redis_url, queue_name, 2, LEASE)
        assert_skewed_log(worker_procs, worker)

        # A delay set by a producer on time, run by the skewed worker.
        soon = producer.enqueue("record", {}, jobs.JobConfig(delay=1))
        # A delay set by a skewed producer.
        out = subprocess.run(
            [sys.executable, "-c", PRODUCER, redis_url, queue_name],
            env=skewed,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        made = json.loads(out.stdout.splitlines()[-1])
        assert made["time"] - time.time() > SKEW - 30, "the producer's clock is not skewed"
        assert made["now"] - time.time() > SKEW - 30
        # A retry 0.5 s after a failure: "missing" has no handler in that worker.
        missing = producer.enqueue(
            "missing", {}, jobs.JobConfig(max_retries=1, retry_backoff=jobs.LinearBackoff(0.5))
        )

        for job_id in (soon, made["id"]):
            wait_until(
                reached(producer, job_id, jobs.JobStatus.COMPLETED),
                timeout=15,
                message="a 1 s delay did not run within 15 s",
            )
            job = producer.get(job_id)
            created = assert_near_now(job.created_at, "created_at")
            started = assert_near_now(job.started_at, "started_at")
            assert_near_now(job.completed_at, "completed_at")
            waited = (started - created).total_seconds()
            assert 1.0 <= waited < 5, f"a 1 s delay ran after {waited:.2f} s"

        wait_until(
            lambda: producer.get(missing).status is jobs.JobStatus.FAILED,
            timeout=15,
            message="the retried job did not fail for good",
        )
        job = producer.get(missing)
        assert job.attempts == 2
        assert job.error == "no handler registered for job type 'missing'"
        # run_at is the retry's due time (first failure + 0.5 s), started_at the retry.
        created, run_at = assert_near_now(job.created_at, "c"), assert_near_now(job.run_at, "r")
        started = assert_near_now(job.started_at, "started_at")
        assert (run_at - created).total_seconds() >= 0.5
        assert timedelta(0) <= started - run_at < timedelta(seconds=3)

        # The pool's registry record is in Redis time too.
        (info,) = producer.workers()
        assert_near_now(info.started_at, "worker started_at")
        assert_near_now(info.last_seen, "worker last_seen")

        far_job = producer.get(far)
        assert far_job.status is jobs.JobStatus.SCHEDULED
        assert far_job.attempts == 0
        assert stop_worker(worker) == 0, worker_procs.log_tail(worker)


def test_killed_skewed_workers_job_is_redelivered_after_about_a_lease(
    redis_url: str, queue_name: str, skewed: dict[str, str], worker_procs: WorkerProcs
) -> None:
    registry = jobs.Registry()
    registry.register_func("block", lambda ctx, payload: "on time")
    with make_client(redis_url, name=queue_name) as producer:
        worker = worker_procs.spawn(redis_url, queue_name, 1, LEASE)
        assert_skewed_log(worker_procs, worker)
        job_id = producer.enqueue("block", {})
        wait_until(
            lambda: producer.get(job_id).status is jobs.JobStatus.PROCESSING,
            timeout=10,
            message="the skewed worker did not take the job",
        )
        assert stop_worker(worker, signal.SIGKILL) == -signal.SIGKILL
        killed = time.monotonic()
        with make_client(redis_url, registry, name=queue_name, lease=LEASE):
            wait_until(
                lambda: producer.get(job_id).status is jobs.JobStatus.COMPLETED,
                timeout=10,
                message="the dead skewed worker's job was not re-delivered",
            )
        took = time.monotonic() - killed
        job = producer.get(job_id)
        assert job.result == "on time"
        assert (job.attempts, job.lost_leases) == (2, 1)
        # About a lease after its last heartbeat (API.md: within ~1.5 x lease); a skew
        # that leaked into lease deadlines would make this ten minutes.
        assert took < 1.5 * LEASE + 3, f"re-delivered {took:.1f} s after the kill"
        print(f"\nre-delivered {took:.2f} s after SIGKILL (lease {LEASE} s)")


def test_skewed_reaper_leaves_live_leases_alone(
    redis_url: str, queue_name: str, skewed: dict[str, str], worker_procs: WorkerProcs
) -> None:
    # The dangerous direction: a reaper whose clock is ahead would see every lease as
    # expired and hand running jobs to other workers.
    started, release = threading.Event(), threading.Event()

    def slow(ctx: jobs.JobContext, payload: Any) -> str:
        started.set()
        release.wait(30)
        return "done"

    registry = jobs.Registry()
    registry.register_func("slow", slow)
    with (
        make_client(redis_url, name=queue_name) as producer,
        make_client(redis_url, registry, name=queue_name, lease=LEASE),
    ):
        try:
            job_id = producer.enqueue("slow", {})
            assert started.wait(10)
            worker = worker_procs.spawn(redis_url, queue_name, 1, LEASE)
            assert_skewed_log(worker_procs, worker)
            # Several of the skewed pool's reaps (every lease/3) while the job runs; the
            # running pool extends its lease meanwhile, in Redis time.
            wait_until(
                lambda: any(w.pid == worker.pid for w in producer.workers()),
                timeout=10,
                message="the skewed pool never registered",
            )
            time.sleep(3 * LEASE)  # the observation window, not a wait for a condition
        finally:
            release.set()
        wait_until(
            lambda: producer.get(job_id).status is jobs.JobStatus.COMPLETED,
            timeout=10,
            message="the slow job did not complete",
        )
        job = producer.get(job_id)
        assert job.result == "done"
        assert (job.attempts, job.lost_leases) == (1, 0)
        assert producer.stats().lost_leases == 0
        assert stop_worker(worker) == 0, worker_procs.log_tail(worker)
