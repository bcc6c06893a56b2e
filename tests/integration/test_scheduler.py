"""The cron scheduler against a real Redis: the Lua claim, threads, processes, workers.

Tests that need exact instants inject a clock and drive ``run_once(now)``; the ones that
run the real thread on the real (Redis-corrected) clock use ``Every(1)`` and check what
was enqueued, never how long it took.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

import jobs
from jobs._embedded.process import parent_death_signal
from tests.helpers import wait_until
from tests.integration._clients import make_client, unique_name
from tests.integration._processes import _reap, _tail, _wait_ready, stop_worker
from tests.integration.scheduler_process import CountingQueue

if TYPE_CHECKING:
    from collections.abc import Iterator

    from jobs.schedule.cron_job import Misfire

pytestmark = pytest.mark.timeout(60)

SCRIPT = Path(__file__).resolve().parent / "scheduler_process.py"


def ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Clock:
    """A fixed instant, moved by hand, or ``running=True`` to advance it in real time."""

    def __init__(self, now: datetime, *, running: bool = False) -> None:
        self.now = now
        self._started = time.monotonic() if running else None

    def __call__(self) -> datetime:
        if self._started is None:
            return self.now
        return self.now + timedelta(seconds=time.monotonic() - self._started)


@contextmanager
def producer(redis_url: str) -> Iterator[jobs.Client]:
    with make_client(redis_url) as client:
        yield client


def cron_ids(client: jobs.Client, cron_id: str = "tick") -> list[str]:
    """The ids of the cron job's jobs in the queue, by fire time."""
    found = [j.id for j in client.list_jobs("pending", limit=10_000)]
    return sorted((i for i in found if i.startswith(f"cron:{cron_id}:")), key=fire_ms)


def fire_ms(job_id: str) -> int:
    return int(job_id.rsplit(":", 1)[1])


def assert_each_second_once(ids: list[str]) -> list[int]:
    times = [fire_ms(i) for i in ids]
    assert all(t % 1000 == 0 for t in times), times
    assert times == list(range(times[0], times[-1] + 1000, 1000)), times  # no gap, no repeat
    return times


# -- run_once against the real script --------------------------------------------------


def test_run_once_fires_each_fire_time_once(redis_url: str) -> None:
    with producer(redis_url) as client:
        clock = Clock(at("2024-01-15T12:00:00"))
        a = jobs.Scheduler(client, clock=clock)
        b = jobs.Scheduler(client.queue, clock=clock)
        for s in (a, b):
            s.register(
                jobs.CronJob(
                    id="tick",
                    schedule=jobs.Every(60),
                    job_type="report",
                    payload={"kind": "minutely"},
                    config=jobs.JobConfig(priority=5, max_retries=1),
                )
            )
        a.run_once(clock.now)
        a.run_once(clock.now)
        b.run_once(clock.now)
        job_id = f"cron:tick:{ms(clock.now)}"
        assert cron_ids(client) == [job_id]
        job = client.get(job_id)
        assert (job.type, job.payload, job.priority, job.max_retries) == (
            "report",
            {"kind": "minutely"},
            5,
            1,
        )
        assert client.stats().total_jobs == 1
        state = client.queue.cron_state("tick")
        assert state["last_fire"] == str(ms(clock.now))
        assert state["last_job_id"] == job_id
        assert state["next_run"] == str(ms(at("2024-01-15T12:01:00")))
        assert state["job_type"] == "report"
        assert state["enabled"] == "1"
        (listed,) = client.queue.crons()
        assert listed["id"] == "tick"
        assert listed["next_run"] == state["next_run"]


@pytest.mark.parametrize("misfire", ["skip", "run_once"])
def test_misfire_after_an_hour_of_downtime(redis_url: str, misfire: Misfire) -> None:
    with producer(redis_url) as client:
        cron = jobs.CronJob(id="tick", schedule=jobs.Every(60), job_type="t", misfire=misfire)
        before = jobs.Scheduler(client, clock=Clock(at("2024-01-15T11:00:00")))
        before.register(cron)
        before.run_once()
        assert cron_ids(client) == [f"cron:tick:{ms(at('2024-01-15T11:00:00'))}"]
        # No scheduler ran from 11:00 to 12:00:30.
        after = jobs.Scheduler(client, clock=Clock(at("2024-01-15T12:00:30")))
        after.register(cron)
        after.run_once()
        after.run_once()
        caught_up = [f"cron:tick:{ms(at('2024-01-15T12:00:00'))}"] if misfire == "run_once" else []
        assert cron_ids(client) == [f"cron:tick:{ms(at('2024-01-15T11:00:00'))}", *caught_up]
        assert after.next_run("tick") == at("2024-01-15T12:01:00")


def test_restarted_scheduler_does_not_fire_again(redis_url: str) -> None:
    with producer(redis_url) as client:
        cron = jobs.CronJob(id="tick", schedule=jobs.Every(60), job_type="t")
        first = jobs.Scheduler(client, clock=Clock(at("2024-01-15T12:00:00.100")))
        first.register(cron)
        first.run_once()
        # Restarted 0.4 s later: 12:00 is within the grace, but it was fired.
        second = jobs.Scheduler(client, clock=Clock(at("2024-01-15T12:00:00.500")))
        second.register(cron)
        second.run_once()
        assert second.next_run("tick") == at("2024-01-15T12:01:00")
        assert len(cron_ids(client)) == 1
        assert client.stats().total_jobs == 1


def test_next_run_matches_the_state_in_redis(redis_url: str) -> None:
    with producer(redis_url) as client:
        clock = Clock(at("2024-01-15T12:00:30"))
        s = jobs.Scheduler(client, clock=clock)
        s.register(jobs.CronJob(id="daily", schedule=jobs.Daily(2, 0), job_type="t"))
        s.register(jobs.CronJob(id="tick", schedule=jobs.Every(60), job_type="t"))

        def check() -> None:
            for cron_id in ("daily", "tick"):
                next_run = s.next_run(cron_id)
                assert next_run is not None
                assert next_run.tzinfo is UTC
                assert client.queue.cron_state(cron_id)["next_run"] == str(ms(next_run))

        check()
        assert s.next_run("daily") == at("2024-01-16T02:00:00")
        assert s.next_run("tick") == at("2024-01-15T12:01:00")
        clock.now = at("2024-01-15T12:01:00")
        s.run_once()
        check()
        assert s.next_run("tick") == at("2024-01-15T12:02:00")
        assert [c["id"] for c in client.queue.crons()] == ["tick", "daily"]
        s.disable("tick")
        assert s.next_run("tick") is None
        assert [c["id"] for c in client.queue.crons()] == ["daily"]


def test_a_cron_job_one_scheduler_disabled_is_listed_enabled_while_another_fires_it(
    redis_url: str,
) -> None:
    with producer(redis_url) as client:
        clock = Clock(at("2026-03-01T12:00:00.100"))
        a, b = jobs.Scheduler(client, clock=clock), jobs.Scheduler(client, clock=clock)
        for s in (a, b):
            s.register(jobs.CronJob(id="tick", schedule=jobs.Every(60), job_type="t"))
            s.run_once()
        a.disable("tick")
        clock.now = at("2026-03-01T12:01:00.100")
        b.run_once()
        (listed,) = client.queue.crons()
        assert (listed["id"], listed["enabled"]) == ("tick", "1")
        assert listed["last_job_id"] == f"cron:tick:{ms(at('2026-03-01T12:01:00'))}"
        assert listed["next_run"] == str(ms(at("2026-03-01T12:02:00")))


def test_scheduler_zone_applies_to_daily_schedules(redis_url: str) -> None:
    with producer(redis_url) as client:
        clock = Clock(at("2024-07-01T12:00:00"))
        s = jobs.Scheduler(client, tz="America/New_York", clock=clock)
        s.register(jobs.CronJob(id="daily", schedule=jobs.Daily(2, 0), job_type="t"))
        assert s.next_run("daily") == at("2024-07-02T06:00:00")  # 02:00 EDT
        state = client.queue.cron_state("daily")
        assert state["next_run"] == str(ms(at("2024-07-02T06:00:00")))
        assert state["tz"] == "America/New_York"
        clock.now = at("2024-12-01T12:00:00")
        s.register(jobs.CronJob(id="daily", schedule=jobs.Daily(2, 0), job_type="t"))
        assert s.next_run("daily") == at("2024-12-02T07:00:00")  # 02:00 EST


def test_redis_corrects_a_skewed_local_clock(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This host's clock is an hour fast; the scheduler must plan on the Redis server's.
    real = time.time
    monkeypatch.setattr(
        "jobs.schedule._clock.time",
        SimpleNamespace(time=lambda: real() + 3600, monotonic=time.monotonic),
    )
    with producer(redis_url) as client:
        s = jobs.Scheduler(client, misfire_grace=0)
        s.register(jobs.CronJob(id="tick", schedule=jobs.Every(60), job_type="t"))
        s.run_once()  # measures the offset first
        s.register(jobs.CronJob(id="tick", schedule=jobs.Every(60), job_type="t"))
        next_run = s.next_run("tick")
        assert next_run is not None
        server_now = datetime.fromtimestamp(client.queue.server_time_ms() / 1000, UTC)
        assert server_now < next_run <= server_now + timedelta(seconds=61)


# -- the thread ------------------------------------------------------------------------


def test_every_second_fires_once_a_second(redis_url: str) -> None:
    with producer(redis_url) as client:
        started = client.queue.server_time_ms()
        s = jobs.Scheduler(client, misfire_grace=0)
        s.register(jobs.CronJob(id="tick", schedule=jobs.Every(1), job_type="t"))
        with s:
            wait_until(lambda: len(cron_ids(client)) >= 3, timeout=15)
        ids = cron_ids(client)
        times = assert_each_second_once(ids)
        assert times[0] >= started  # a new cron job with no grace fires no past time
        for job_id in ids:
            job = client.get(job_id)
            assert job.created_at is not None
            # Never early: enqueued at or after its fire time, on the Redis clock.
            assert ms(job.created_at) >= fire_ms(job_id) - 5
        assert client.stats().total_jobs == len(ids)


def test_the_thread_keeps_firing_through_a_host_clock_stepped_back(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NTP or a resumed VM steps time.time() back 25 s: the thread must neither go quiet
    # for 25 s nor skip those fires as missed afterwards.
    step = [0.0]
    real = time.time
    monkeypatch.setattr(
        "jobs.schedule._clock.time",
        SimpleNamespace(time=lambda: real() - step[0], monotonic=time.monotonic),
    )
    with producer(redis_url) as client:
        s = jobs.Scheduler(client, misfire_grace=0)
        s.register(jobs.CronJob(id="tick", schedule=jobs.Every(1), job_type="t"))
        with s:
            wait_until(lambda: len(cron_ids(client)) >= 1, timeout=5)
            step[0] = 25.0
            before = len(cron_ids(client))
            wait_until(lambda: len(cron_ids(client)) >= before + 3, timeout=8)
        assert_each_second_once(cron_ids(client))


def test_restart_right_after_a_fire_does_not_fire_it_again(redis_url: str) -> None:
    with make_client(redis_url) as base:
        queue = CountingQueue.connect(redis_url, base.queue.name)
        try:
            cron = jobs.CronJob(id="tick", schedule=jobs.Every(1), job_type="t")
            for _ in range(2):
                # Started again right after its last fire, which is well within the grace.
                s = jobs.Scheduler(queue, misfire_grace=5)
                s.register(cron)
                wanted = len(queue.fired) + 2
                with s:
                    wait_until(partial(lambda n: len(queue.fired) >= n, wanted), timeout=15)
            ids = cron_ids(base)
            assert_each_second_once(ids)
            assert sorted(queue.fired) == [fire_ms(i) for i in ids]
            # The restarted scheduler planned from the claim: it never even tried a fired time.
            assert queue.refused == []
        finally:
            queue.close()


def test_run_once_catch_up_on_start_after_downtime(redis_url: str) -> None:
    with producer(redis_url) as client:
        cron = jobs.CronJob(
            id="nightly", schedule=jobs.Every(3600), job_type="t", misfire="run_once"
        )
        before = jobs.Scheduler(client, clock=Clock(at("2023-12-31T00:00:00")))
        before.register(cron)
        before.run_once()
        s = jobs.Scheduler(client, clock=Clock(at("2024-01-01T00:30:00"), running=True))
        s.register(cron)
        with s:
            wait_until(lambda: len(cron_ids(client, "nightly")) == 2, timeout=10)
        assert cron_ids(client, "nightly") == [
            f"cron:nightly:{ms(at('2023-12-31T00:00:00'))}",
            f"cron:nightly:{ms(at('2024-01-01T00:00:00'))}",
        ]
        assert s.next_run("nightly") == at("2024-01-01T01:00:00")


def test_the_cron_job_runs_on_a_worker(redis_url: str) -> None:
    ran = threading.Event()
    seen: list[tuple[str, Any]] = []
    registry = jobs.Registry()

    @registry.job("tick")
    def tick(ctx: jobs.JobContext, payload: Any) -> None:
        seen.append((ctx.job.id, payload))
        ran.set()

    with make_client(redis_url, registry) as client:
        s = jobs.Scheduler(client, misfire_grace=0)
        s.register(
            jobs.CronJob(id="tick", schedule=jobs.Every(1), job_type="tick", payload={"n": 1})
        )
        with s:
            assert ran.wait(15)
        job_id, payload = seen[0]
        assert job_id.startswith("cron:tick:")
        assert payload == {"n": 1}
        wait_until(lambda: client.get(job_id).status == jobs.JobStatus.COMPLETED, timeout=10)


# -- several processes -----------------------------------------------------------------


def spawn(redis_url: str, queue: str, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, str(SCRIPT),
        "--redis-url", redis_url, "--queue", queue, "--cron-id", "tick",
        "--interval", "1", "--grace", "2",
    ]  # fmt: skip
    with log.open("ab") as stderr:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=parent_death_signal(),
        )
    try:
        _wait_ready(proc, 20)
    except BaseException:
        _reap(proc)
        raise RuntimeError(f"scheduler process failed to start; its log:\n{_tail(log)}") from None
    return proc


def finish(proc: subprocess.Popen[bytes]) -> list[int]:
    """SIGTERM it; the fire times it reported winning."""
    proc.terminate()
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    for line in out.splitlines():
        if line.startswith(b"FIRED"):
            return [int(x) for x in line[len(b"FIRED") :].strip().split(b",") if x]
    raise AssertionError(f"no FIRED line in {out!r}")


def test_three_processes_fire_each_time_exactly_once(redis_url: str, tmp_path: Path) -> None:
    name = unique_name()
    procs: list[subprocess.Popen[bytes]] = []
    with make_client(redis_url, name=name) as client:
        try:
            for n in range(3):
                # One by one, so that a failed spawn still leaves the others to clean up.
                procs.append(spawn(redis_url, name, tmp_path / f"scheduler-{n}.log"))  # noqa: PERF401
            wait_until(lambda: len(cron_ids(client)) >= 6, timeout=20)
            won = [finish(p) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    stop_worker(p)
                _reap(p)
        ids = cron_ids(client)
        times = assert_each_second_once(ids)
        assert sorted(t for w in won for t in w) == times  # each fire claimed by one process
        assert client.stats().total_jobs == len(ids)


def test_many_threads_in_one_process_fire_each_time_once(redis_url: str) -> None:
    with make_client(redis_url) as base:
        queue = CountingQueue.connect(redis_url, base.queue.name)
        schedulers = [jobs.Scheduler(queue, misfire_grace=0) for _ in range(4)]
        try:
            for s in schedulers:
                s.register(jobs.CronJob(id="tick", schedule=jobs.Every(0.2), job_type="t"))
                s.start()
            wait_until(lambda: len(queue.fired) >= 10, timeout=15)
        finally:
            for s in schedulers:
                s.stop()
            queue.close()
        times = sorted(queue.fired)
        assert times == sorted({fire_ms(i) for i in cron_ids(base)})
        assert times == list(range(times[0], times[-1] + 200, 200))


@pytest.mark.parametrize("damage", ["last_fire", "state type"])
def test_a_damaged_claim_does_not_stop_the_cron_job(redis_url: str, damage: str) -> None:
    # cron_fire.lua compared the fire time with tonumber("garbage") = nil: a Lua error on
    # every fire, for ever (each announce refreshes the state's TTL).
    with producer(redis_url) as client:
        clock = Clock(at("2024-01-15T12:00:00"))
        s = jobs.Scheduler(client, clock=clock, misfire_grace=0)
        s.register(jobs.CronJob(id="tick", schedule=jobs.Every(60), job_type="t"))
        r = client.queue.client
        if damage == "last_fire":
            r.hset(client.queue.keys.cron("tick"), "last_fire", "garbage")
        else:
            r.delete(client.queue.keys.cron("tick"))
            r.set(client.queue.keys.cron("tick"), "not a hash")
        for minute in (1, 2, 3):
            clock.now = at(f"2024-01-15T12:0{minute}:00")
            s.run_once()
        assert [fire_ms(i) for i in cron_ids(client)] == [
            ms(at(f"2024-01-15T12:0{m}:00")) for m in (1, 2, 3)
        ]
        assert client.queue.cron_state("tick")["last_fire"] == str(ms(clock.now))


def test_cron_jobs_nobody_announces_any_more_leave_the_listing(redis_url: str) -> None:
    # An entry of the crons index outlived its cron job's state for ever: a cron job
    # removed from the code stayed listed (with a next run long past) by every reader.
    with producer(redis_url) as client:
        clock = Clock(at("2024-01-15T12:00:00"))
        old = jobs.Scheduler(client, clock=clock)
        old.register(jobs.CronJob(id="retired", schedule=jobs.Every(60), job_type="t"))
        old.run_once()
        r = client.queue.client
        assert r.zrange(client.queue.keys.crons, 0, -1) == [b"retired"]
        # STATE_TTL (30 days) without an announce or a fire: its state expires.
        r.delete(client.queue.keys.cron("retired"))
        new = jobs.Scheduler(client, clock=clock)
        new.register(jobs.CronJob(id="tick", schedule=jobs.Every(60), job_type="t"))
        new.run_once()
        assert r.zrange(client.queue.keys.crons, 0, -1) == [b"tick"]
        assert [c["id"] for c in client.queue.crons()] == ["tick"]
