"""Unit tests of jobs.Scheduler and jobs.CronJob: validation, planning and misfires.

`FakeQueue` stands in for the four `RedisQueue` methods the scheduler uses, with the same
claim rule as cron_fire.lua (a fire time at or before ``last_fire`` is refused), so the
planning logic is driven here with explicit datetimes through ``run_once(now)``; the real
script is exercised by tests/integration/test_scheduler.py.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis
from dateutil.rrule import MINUTELY, rrule

import jobs
from jobs.schedule.scheduler import MAX_WAIT
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(30)


def utc(hour: int, minute: int = 0, second: int = 0, us: int = 0) -> datetime:
    return datetime(2024, 1, 15, hour, minute, second, us, tzinfo=UTC)


def ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


def bad(value: object) -> Any:
    """An invalid argument, hidden from mypy so the test can pass it."""
    return value


class FakeQueue:
    """In-memory `fire_cron`, `cron_state`, `announce_cron`, `server_time_ms`."""

    name = "fake"

    def __init__(self) -> None:
        self.config = SimpleNamespace(max_payload_bytes=1 << 20)
        self.state: dict[str, dict[str, str]] = {}
        self.jobs: dict[str, tuple[str, bytes]] = {}
        self.fail = False
        self.lock = threading.Lock()

    def _check(self) -> None:
        if self.fail:
            raise redis.ConnectionError("fake outage")

    def fire_cron(
        self,
        cron_id: str,
        fire_ms: int,
        next_ms: int | None,
        job: tuple[str, str, bytes, jobs.JobConfig],
        state_ttl: timedelta,
    ) -> tuple[bool, int]:
        self._check()
        with self.lock:
            state = self.state.setdefault(cron_id, {})
            last = int(state.get("last_fire", "-1"))
            fired = fire_ms > last
            if fired:
                job_id, job_type, payload, _config = job
                self.jobs.setdefault(job_id, (job_type, payload))
                state.update(last_fire=str(fire_ms), last_job_id=job_id)
                last = fire_ms
            if next_ms is not None:
                state["next_run"] = str(next_ms)
            return fired, last

    def cron_state(self, cron_id: str) -> dict[str, str]:
        self._check()
        with self.lock:
            return dict(self.state.get(cron_id, {}))

    def announce_cron(
        self, cron_id: str, fields: dict[str, str], next_ms: int | None, state_ttl: timedelta
    ) -> None:
        self._check()
        with self.lock:
            state = self.state.setdefault(cron_id, {})
            state.update(fields, next_run="" if next_ms is None else str(next_ms))

    def server_time_ms(self) -> int:
        self._check()
        return ms(datetime.now(UTC))

    def job_ids(self) -> list[str]:
        with self.lock:
            return sorted(self.jobs)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def scheduler(queue: FakeQueue, clock: Clock, **kwargs: Any) -> jobs.Scheduler:
    return jobs.Scheduler(cast("jobs.RedisQueue", queue), clock=clock, **kwargs)


def cron(id: str = "c", schedule: Any = None, **kwargs: Any) -> jobs.CronJob:
    return jobs.CronJob(id=id, schedule=schedule or jobs.Every(60), job_type="report", **kwargs)


def job_id(cron_id: str, instant: datetime) -> str:
    return f"cron:{cron_id}:{ms(instant)}"


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": 5}, "id"),
        ({"schedule": "*/5 * * * *"}, "schedule"),
        ({"job_type": ""}, "job_type"),
        ({"misfire": "always"}, "misfire"),
        ({"enabled": 1}, "enabled"),
        ({"config": {"max_retries": 1}}, "config"),
    ],
)
def test_cron_job_rejects_bad_fields_naming_them(kwargs: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"id": "c", "schedule": jobs.Every(60), "job_type": "report"}
    with pytest.raises(jobs.ConfigError, match=field):
        jobs.CronJob(**{**base, **kwargs})


def test_cron_job_defaults_and_keyword_only() -> None:
    job = jobs.CronJob(id="c", schedule=jobs.Daily(2, 0), job_type="t", payload={"a": [1]})
    assert (job.config, job.enabled, job.misfire) == (None, True, "skip")
    hash(job)  # a dict payload does not make it unhashable
    with pytest.raises(TypeError):
        bad(jobs.CronJob)("c", jobs.Every(1), "t")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tz": "Mars/Olympus_Mons"}, "tz"),
        ({"tz": 5}, "tz"),
        ({"misfire_grace": -1}, "misfire_grace"),
        ({"misfire_grace": timedelta(seconds=-1)}, "misfire_grace"),
        ({"misfire_grace": "10"}, "misfire_grace"),
        ({"misfire_grace": True}, "misfire_grace"),
        ({"misfire_grace": float("nan")}, "misfire_grace"),
        ({"logger": "jobs"}, "logger"),
        ({"clock": 5}, "clock"),
    ],
)
def test_scheduler_rejects_bad_arguments_naming_them(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(jobs.ConfigError, match=field):
        jobs.Scheduler(cast("jobs.RedisQueue", FakeQueue()), **kwargs)


def test_scheduler_rejects_something_that_is_no_client() -> None:
    with pytest.raises(jobs.ConfigError, match="client"):
        jobs.Scheduler(bad(object()))


def test_scheduler_accepts_grace_as_timedelta_and_tz_as_tzinfo() -> None:
    s = jobs.Scheduler(
        cast("jobs.RedisQueue", FakeQueue()), tz=UTC, misfire_grace=timedelta(seconds=3)
    )
    assert (s.tz, s.misfire_grace) == (UTC, timedelta(seconds=3))


def test_register_rejects_a_payload_that_is_not_json() -> None:
    queue = FakeQueue()
    s = scheduler(queue, Clock(utc(12)))
    with pytest.raises(jobs.PayloadError):
        s.register(cron(payload={1, 2}))
    queue.config.max_payload_bytes = 10
    with pytest.raises(jobs.PayloadError, match="max_payload_bytes"):
        s.register(cron(payload="x" * 20))
    assert s.list() == []
    assert queue.state == {}


def test_register_rejects_a_schedule_that_fails() -> None:
    class Broken:
        def next_after(self, dt: datetime, *, default_tz: Any = None) -> datetime:
            raise RuntimeError("boom")

    class Naive:
        def next_after(self, dt: datetime, *, default_tz: Any = None) -> datetime:
            return datetime(2030, 1, 1)

    s = scheduler(FakeQueue(), Clock(utc(12)))
    with pytest.raises(jobs.ConfigError, match=r"schedule.*boom"):
        s.register(cron(schedule=Broken()))
    with pytest.raises(jobs.ConfigError, match="aware"):
        s.register(cron(schedule=Naive()))
    with pytest.raises(jobs.ConfigError, match="cron_job"):
        s.register(bad("c"))


def test_run_once_rejects_a_naive_now() -> None:
    s = scheduler(FakeQueue(), Clock(utc(12)))
    with pytest.raises(jobs.ConfigError, match="aware"):
        s.run_once(datetime(2024, 1, 15, 12))


# -- firing --------------------------------------------------------------------------


def test_every_minute_fires_once_at_the_minute() -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    s = scheduler(queue, clock)
    s.register(cron(payload={"n": 1}))
    assert s.next_run("c") == utc(12)
    assert s.run_once(utc(12)) == 60.0
    assert s.run_once(utc(12)) == 60.0
    assert queue.job_ids() == [job_id("c", utc(12))]
    assert queue.jobs[job_id("c", utc(12))] == ("report", b'{"n":1}')
    assert s.next_run("c") == utc(12, 1)
    assert queue.state["c"]["next_run"] == str(ms(utc(12, 1)))
    assert s.run_once(utc(12, 0, 59, 500_000)) == pytest.approx(0.5)
    assert s.run_once(utc(12, 1, 0, 200_000)) == pytest.approx(59.8)
    assert queue.job_ids() == [job_id("c", utc(12)), job_id("c", utc(12, 1))]


def test_two_schedulers_fire_each_time_once() -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    a, b = scheduler(queue, clock), scheduler(queue, clock)
    for s in (a, b):
        s.register(cron())
    for minute in range(3):
        a.run_once(utc(12, minute))
        b.run_once(utc(12, minute, 0, 1000))
    # b was last for every fire, and learnt each time from the claim it was refused.
    assert queue.job_ids() == [job_id("c", utc(12, m)) for m in range(3)]
    assert a.next_run("c") == b.next_run("c") == utc(12, 3)


def test_a_peer_ahead_moves_the_plan_past_its_fires() -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    slow = scheduler(queue, clock)
    slow.register(cron())
    queue.state["c"]["last_fire"] = str(ms(utc(12, 3)))  # a peer fired up to 12:03
    slow.run_once(utc(12, 0, 5))
    assert queue.job_ids() == []
    assert slow.next_run("c") == utc(12, 4)


def test_misfire_skip_after_downtime_enqueues_nothing() -> None:
    queue, clock = FakeQueue(), Clock(utc(12, 0, 30))
    queue.state["c"] = {"last_fire": str(ms(utc(11)))}
    s = scheduler(queue, clock)
    s.register(cron())
    assert s.next_run("c") == utc(12, 1)
    s.run_once(clock.now)
    assert queue.job_ids() == []
    s.run_once(utc(12, 1))
    assert queue.job_ids() == [job_id("c", utc(12, 1))]


def test_misfire_run_once_enqueues_the_latest_missed_fire_only() -> None:
    queue, clock = FakeQueue(), Clock(utc(12, 0, 30))
    queue.state["c"] = {"last_fire": str(ms(utc(11)))}
    s = scheduler(queue, clock)
    s.register(cron(misfire="run_once"))
    assert s.next_run("c") == utc(12)  # the pending catch-up
    s.run_once(clock.now)
    s.run_once(clock.now)
    assert queue.job_ids() == [job_id("c", utc(12))]
    assert s.next_run("c") == utc(12, 1)


def test_misfire_run_once_after_many_missed_fires_finds_the_latest() -> None:
    # 3600+ missed fires: past the walk, the latest is found by bisection.
    queue, clock = FakeQueue(), Clock(utc(12, 0, 30, 500_000))
    queue.state["c"] = {"last_fire": str(ms(utc(11)))}
    s = scheduler(queue, clock)
    s.register(cron(schedule=jobs.Every(1), misfire="run_once"))
    s.run_once(clock.now)
    # The catch-up is the last fire more than grace (10 s) + wake slack (1 s) late; the
    # fires after it are late within the grace, so they fire as usual.
    expected = [job_id("c", utc(12, 0, second)) for second in range(19, 31)]
    assert queue.job_ids() == expected


def test_misfire_skip_with_many_missed_fires() -> None:
    queue, clock = FakeQueue(), Clock(utc(12, 0, 30, 500_000))
    queue.state["c"] = {"last_fire": str(ms(utc(10)))}
    s = scheduler(queue, clock, misfire_grace=0)
    s.register(cron(schedule=jobs.Every(0.5)))
    s.run_once(clock.now)
    # Grace 0, and the 1 s wake slack: fires at most 1 s late still count as on time.
    assert queue.job_ids() == [
        job_id("c", utc(12, 0, 29, 500_000)),
        job_id("c", utc(12, 0, 30)),
        job_id("c", utc(12, 0, 30, 500_000)),
    ]


@pytest.mark.parametrize("misfire", ["skip", "run_once"])
def test_a_fire_late_within_the_grace_fires_normally(misfire: str) -> None:
    queue, clock = FakeQueue(), Clock(utc(12, 0, 5))
    queue.state["c"] = {"last_fire": str(ms(utc(11, 59)))}
    s = scheduler(queue, clock)
    s.register(cron(misfire=misfire))
    s.run_once(clock.now)
    assert queue.job_ids() == [job_id("c", utc(12))]


def test_a_scheduler_stalled_past_the_grace_applies_the_misfire_policy() -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    skip, once = scheduler(queue, clock), scheduler(queue, clock)
    skip.register(cron("skip"))
    once.register(cron("once", misfire="run_once"))
    for s in (skip, once):
        s.run_once(utc(12))
        s.run_once(utc(12, 10, 30))  # woke ten minutes late
    assert queue.job_ids() == sorted(
        [job_id("skip", utc(12)), job_id("once", utc(12)), job_id("once", utc(12, 10))]
    )
    assert skip.next_run("skip") == once.next_run("once") == utc(12, 11)


def test_a_new_cron_job_fires_only_its_latest_fire_time_within_the_grace() -> None:
    queue, clock = FakeQueue(), Clock(utc(12, 0, 3))
    s = scheduler(queue, clock, misfire_grace=5)
    s.register(cron(schedule=jobs.Every(2)))
    s.run_once(clock.now)
    assert queue.job_ids() == [job_id("c", utc(12, 0, 2))]
    assert s.next_run("c") == utc(12, 0, 4)


def test_a_new_daily_cron_job_started_a_little_late_still_fires_today() -> None:
    queue, clock = FakeQueue(), Clock(utc(2, 0, 3))
    s = scheduler(queue, clock)
    s.register(cron(schedule=jobs.Daily(2, 0)))
    s.run_once(clock.now)
    assert queue.job_ids() == [job_id("c", utc(2))]


def test_the_payload_and_config_go_with_each_fire() -> None:
    seen: list[tuple[str, jobs.JobConfig]] = []

    class Recording(FakeQueue):
        def fire_cron(
            self,
            cron_id: str,
            fire_ms: int,
            next_ms: int | None,
            job: tuple[str, str, bytes, jobs.JobConfig],
            state_ttl: timedelta,
        ) -> tuple[bool, int]:
            seen.append((job[0], job[3]))
            assert state_ttl >= timedelta(days=30)
            return super().fire_cron(cron_id, fire_ms, next_ms, job, state_ttl)

    queue, clock = Recording(), Clock(utc(12))
    s = scheduler(queue, clock)
    config = jobs.JobConfig(priority=7)
    s.register(cron("a", config=config))
    s.register(cron("b"))
    s.run_once(utc(12))
    assert dict(seen) == {job_id("a", utc(12)): config, job_id("b", utc(12)): jobs.JobConfig()}


# -- registrations -------------------------------------------------------------------


def test_disable_and_enable() -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    s = scheduler(queue, clock)
    s.register(cron())
    assert s.disable("c") is True
    assert s.next_run("c") is None
    assert queue.state["c"]["enabled"] == "0"
    assert queue.state["c"]["next_run"] == ""
    assert s.run_once(utc(12)) == MAX_WAIT
    assert queue.job_ids() == []
    assert [j.enabled for j in s.list()] == [False]
    clock.now = utc(12, 0, 30)
    assert s.enable("c") is True
    assert s.enable("c") is True
    assert s.next_run("c") == utc(12, 1)  # 12:00 was missed while disabled (no state)
    assert queue.state["c"]["enabled"] == "1"
    s.run_once(utc(12, 1))
    assert queue.job_ids() == [job_id("c", utc(12, 1))]
    for method in (s.enable, s.disable, s.unregister):
        assert method("nope") is False


def test_register_disabled() -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    s = scheduler(queue, clock)
    s.register(cron(enabled=False))
    assert s.next_run("c") is None
    s.run_once(utc(12))
    assert queue.job_ids() == []
    assert queue.state["c"]["enabled"] == "0"


def test_unregister() -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    s = scheduler(queue, clock)
    s.register(cron())
    s.run_once(utc(12))
    assert s.unregister("c") is True
    assert s.unregister("c") is False
    assert s.list() == []
    assert s.next_run("c") is None
    s.run_once(utc(12, 1))
    assert queue.job_ids() == [job_id("c", utc(12))]
    assert queue.state["c"]["last_fire"] == str(ms(utc(12)))  # the claim stays


def test_register_replaces_and_replans() -> None:
    queue, clock = FakeQueue(), Clock(utc(12, 0, 30))
    s = scheduler(queue, clock)
    s.register(cron())
    assert s.next_run("c") == utc(12, 1)
    replacement = cron(schedule=jobs.Every(3600), payload="new")
    s.register(replacement)
    assert s.list() == [replacement]
    assert s.next_run("c") == utc(13)
    assert queue.state["c"]["next_run"] == str(ms(utc(13)))
    s.run_once(utc(12, 1))
    assert queue.job_ids() == []


def test_next_run_uses_the_scheduler_zone() -> None:
    s = scheduler(FakeQueue(), Clock(utc(12)), tz="America/New_York")
    s.register(cron(schedule=jobs.Daily(2, 0)))
    s.register(cron("berlin", schedule=jobs.Daily(2, 0, tz="Europe/Berlin")))
    assert s.next_run("c") == datetime(2024, 1, 16, 7, tzinfo=UTC)
    assert s.next_run("berlin") == datetime(2024, 1, 16, 1, tzinfo=UTC)
    next_run = s.next_run("c")
    assert next_run is not None and next_run.tzinfo is UTC


def test_a_schedule_that_ends() -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    rule = rrule(MINUTELY, count=2, dtstart=datetime(2024, 1, 15, 12))
    s = scheduler(queue, clock)
    s.register(cron(schedule=jobs.RRule(rule)))
    s.run_once(utc(12))
    s.run_once(utc(12, 1))
    assert len(queue.job_ids()) == 2
    assert s.next_run("c") is None
    assert s.run_once(utc(12, 2)) == MAX_WAIT
    assert queue.state["c"]["next_run"] == ""


def test_run_once_without_jobs_waits_the_longest() -> None:
    assert scheduler(FakeQueue(), Clock(utc(12))).run_once(utc(12)) == MAX_WAIT


def test_a_far_fire_time_waits_at_most_max_wait() -> None:
    s = scheduler(FakeQueue(), Clock(utc(12)))
    s.register(cron(schedule=jobs.Monthly(1, 0, 0)))
    assert s.run_once(utc(12)) == MAX_WAIT


def test_redis_errors_at_register_are_logged_and_replanned_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue, clock = FakeQueue(), Clock(utc(12, 0, 30))
    queue.state["c"] = {"last_fire": str(ms(utc(11)))}
    queue.fail = True
    s = scheduler(queue, clock, misfire_grace=60)
    with caplog.at_level("WARNING", logger="jobs.scheduler"):
        s.register(cron(misfire="run_once"))
    assert "cannot read its state" in caplog.text
    assert s.next_run("c") == utc(12)  # from the schedule alone: no state was read
    with pytest.raises(redis.ConnectionError):
        s.run_once(clock.now)
    queue.fail = False
    s.run_once(clock.now)  # planned from last_fire = 11:00 now: 11:59 is the catch-up
    assert queue.job_ids() == [job_id("c", utc(11, 59)), job_id("c", utc(12))]


def test_fires_are_logged_with_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    s = scheduler(queue, clock)
    s.register(cron())
    with caplog.at_level("DEBUG", logger="jobs.scheduler"):
        s.run_once(utc(12))
    (record,) = [r for r in caplog.records if "fired" in r.getMessage()]
    assert (record.__dict__["job_id"], record.__dict__["job_type"]) == (
        job_id("c", utc(12)),
        "report",
    )
    assert record.__dict__["queue"] == "fake"


# -- the thread ----------------------------------------------------------------------


def scheduler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "jobs-scheduler"]


def test_thread_wakes_on_register_and_stops_at_once() -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    s = scheduler(queue, clock)
    with s:
        s.start()  # a no-op
        assert len(scheduler_threads()) == 1
        # The thread sleeps MAX_WAIT with nothing registered; register wakes it.
        s.register(cron())
        wait_until(lambda: queue.job_ids() == [job_id("c", utc(12))], timeout=5)
    assert scheduler_threads() == []
    s.stop()  # a no-op


def test_thread_restarts_after_stop() -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    s = scheduler(queue, clock)
    s.register(cron())
    s.start()
    wait_until(lambda: len(queue.job_ids()) == 1, timeout=5)
    s.stop()
    clock.now = utc(12, 1)
    with s:
        wait_until(lambda: len(queue.job_ids()) == 2, timeout=5)
    assert scheduler_threads() == []


def test_a_clock_returning_naive_datetimes_is_rejected() -> None:
    s = jobs.Scheduler(cast("jobs.RedisQueue", FakeQueue()), clock=lambda: datetime(2024, 1, 1))
    with pytest.raises(jobs.ConfigError, match="clock"):
        s.run_once()


# -- the clock -----------------------------------------------------------------------


class HostTime:
    """Stands for the ``time`` module in the scheduler: a wall clock that can be stepped."""

    def __init__(self, wall: float) -> None:
        self.wall = wall
        self.mono = 1000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class RedisTime(FakeQueue):
    def __init__(self, now: datetime) -> None:
        super().__init__()
        self.now = now
        self.time_calls = 0

    def server_time_ms(self) -> int:
        self.time_calls += 1
        return ms(self.now)


@pytest.mark.parametrize("step", [-25.0, -3600.0, 3600.0])
def test_a_host_clock_step_changes_nothing(
    step: float, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An NTP step or a VM resume moves time.time(): the scheduler plans on Redis time
    # carried forward by the monotonic clock, so it neither goes quiet for the step (and
    # then skips the fires as missed) nor fires early.
    host = HostTime(utc(12, 0, 0, 500_000).timestamp())
    monkeypatch.setattr("jobs.schedule._clock.time", host)
    queue = RedisTime(utc(12, 0, 0, 500_000))
    s = jobs.Scheduler(cast("jobs.RedisQueue", queue))
    s.register(cron(schedule=jobs.Every(1)))
    assert s.run_once() == pytest.approx(0.5)
    host.wall += step
    for _ in range(3):
        host.advance(1.0)
        queue.now += timedelta(seconds=1)
        with caplog.at_level("INFO", logger="jobs.scheduler"):
            assert s.run_once() == pytest.approx(0.5)
    assert queue.job_ids() == [job_id("c", utc(12, 0, second)) for second in range(4)]
    assert "missed" not in caplog.text
    assert s.next_run("c") == utc(12, 0, 4)


def test_a_suspended_host_is_noticed_without_a_fire_being_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The monotonic clock stops while a host sleeps; the wall clock does not: when they
    # disagree, the scheduler asks Redis for the time again before planning.
    host = HostTime(utc(12).timestamp())
    monkeypatch.setattr("jobs.schedule._clock.time", host)
    queue = RedisTime(utc(12))
    s = jobs.Scheduler(cast("jobs.RedisQueue", queue))
    s.register(cron(schedule=jobs.Every(3600)))
    s.run_once()
    calls = queue.time_calls
    host.advance(10.0)
    queue.now += timedelta(seconds=10)
    assert s.run_once() == MAX_WAIT
    assert queue.time_calls == calls  # nothing due, clocks agree: no round trip
    host.wall += 3600.0  # suspended for an hour: the monotonic clock stood still
    queue.now += timedelta(seconds=3600)
    s.run_once()
    assert queue.time_calls == calls + 1
    assert queue.job_ids() == [job_id("c", utc(12)), job_id("c", utc(13))]


# -- one cron job's failure ----------------------------------------------------------------


class Flaky:
    """A custom schedule (any object with next_after will do) that can be made to fail."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    def next_after(self, dt: datetime, *, default_tz: Any = None) -> datetime | None:
        if self.error is not None:
            raise self.error
        return jobs.Every(60).next_after(dt)


def test_a_failing_schedule_is_logged_once_and_skipped_while_the_others_fire(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    flaky = Flaky()
    s = scheduler(queue, clock)
    s.register(cron("flaky", schedule=flaky))
    s.register(cron("tick"))
    s.run_once(utc(12))
    flaky.error = KeyError("no holiday calendar for 2027")
    with caplog.at_level("DEBUG", logger="jobs.scheduler"):
        for minute in (1, 2, 3):
            delay = s.run_once(utc(12, minute))
            assert 0 < delay <= MAX_WAIT  # no busy loop on the failing one
    assert queue.job_ids() == sorted(
        [job_id("flaky", utc(12))] + [job_id("tick", utc(12, m)) for m in range(4)]
    )
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "'flaky'" in errors[0].getMessage()
    assert "no holiday calendar for 2027" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    flaky.error = ValueError("another one")
    with caplog.at_level("ERROR", logger="jobs.scheduler"):
        s.run_once(utc(12, 4))
    assert "another one" in caplog.text  # a new error is logged again
    flaky.error = None
    s.run_once(utc(12, 5))
    s.run_once(utc(12, 6))
    # Back: the fire times missed while it failed are handled as misfires (skipped).
    assert [i for i in queue.job_ids() if i.startswith("cron:flaky:")] == [
        job_id("flaky", t) for t in (utc(12), utc(12, 5), utc(12, 6))
    ]


def test_an_error_reply_about_one_cron_job_does_not_stop_the_others() -> None:
    class DamagedState(FakeQueue):
        def cron_state(self, cron_id: str) -> dict[str, str]:
            if cron_id == "damaged":
                raise redis.ResponseError("WRONGTYPE Operation against a key of the wrong kind")
            return super().cron_state(cron_id)

    queue, clock = DamagedState(), Clock(utc(12))
    s = scheduler(queue, clock)
    s.register(cron("damaged"))
    s.register(cron("tick"))
    s.run_once(utc(12))
    s.run_once(utc(12, 1))
    assert queue.job_ids() == [job_id("tick", utc(12)), job_id("tick", utc(12, 1))]


def test_a_base_exception_in_the_thread_is_logged_loudly_and_next_run_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    exits = Flaky()
    s = scheduler(queue, clock)
    s.register(cron("exits", schedule=exits))
    s.register(cron("tick"))
    with caplog.at_level("INFO", logger="jobs.scheduler"):
        s.start()
        try:
            wait_until(lambda: len(queue.job_ids()) == 2, timeout=5)
            exits.error = SystemExit("a library called sys.exit()")
            clock.now = utc(12, 1)
            s.register(cron("other", enabled=False))  # wakes the thread
            wait_until(lambda: scheduler_threads() == [], timeout=5)
            (death,) = [r for r in caplog.records if r.levelname == "CRITICAL"]
            assert "SystemExit" in death.getMessage()
            assert "start()" in death.getMessage()
            with pytest.raises(jobs.JobsError, match="died"):
                s.next_run("tick")
            exits.error = None
            s.start()
            wait_until(lambda: job_id("tick", utc(12, 1)) in queue.job_ids(), timeout=5)
            assert s.next_run("tick") == utc(12, 2)
        finally:
            s.stop()


# -- misfires across restarts and pauses ---------------------------------------------------


@pytest.mark.parametrize("misfire", ["skip", "run_once"])
def test_the_first_fire_of_a_cron_job_that_never_fired_is_a_misfire_like_any(
    misfire: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Registered at 12:00 (announcing 14:30), the scheduler died at 13:00 and came back
    # at 15:00: 14:30 was missed, though the cron job had never fired.
    queue = FakeQueue()
    first = scheduler(queue, Clock(utc(12)))
    first.register(cron(schedule=jobs.Daily(14, 30), misfire=misfire))
    first.run_once(utc(12))
    assert queue.state["c"]["next_run"] == str(ms(utc(14, 30)))
    restarted = scheduler(queue, Clock(utc(15)))
    with caplog.at_level("INFO", logger="jobs.scheduler"):
        restarted.register(cron(schedule=jobs.Daily(14, 30), misfire=misfire))
        restarted.run_once(utc(15))
    assert "14:30" in caplog.text
    assert queue.job_ids() == ([job_id("c", utc(14, 30))] if misfire == "run_once" else [])
    assert restarted.next_run("c") == datetime(2024, 1, 16, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize("redis_down", [False, True])
def test_enable_skips_the_fire_times_missed_while_disabled(
    redis_down: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Pausing a billing job and resuming it does not bill at once, even with run_once.
    queue, clock = FakeQueue(), Clock(utc(2, 0, 1))
    s = scheduler(queue, clock)
    s.register(cron(schedule=jobs.Daily(2, 0), misfire="run_once"))
    s.run_once(clock.now)
    clock.now = utc(9)
    s.disable("c")
    clock.now = datetime(2024, 1, 17, 9, tzinfo=UTC)
    queue.fail = redis_down
    with caplog.at_level("INFO", logger="jobs.scheduler"):
        s.enable("c")
        queue.fail = False
        s.run_once(clock.now)
        s.start()  # planning again from Redis keeps the pause
        s.stop()
        s.run_once(clock.now)
    assert queue.job_ids() == [job_id("c", utc(2))]
    assert s.next_run("c") == datetime(2024, 1, 18, 2, tzinfo=UTC)
    assert "disabled" in caplog.text
    clock.now = datetime(2024, 1, 18, 2, 0, 1, tzinfo=UTC)
    s.run_once(clock.now)
    assert queue.job_ids() == [job_id("c", utc(2)), f"cron:c:{ms(clock.now) - 1000}"]


# -- the lock ------------------------------------------------------------------------------


class Blocking:
    """A schedule whose next_after blocks, once armed, until released."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def next_after(self, dt: datetime, *, default_tz: Any = None) -> datetime | None:
        if self.armed:
            self.entered.set()
            assert self.release.wait(10)
        return jobs.Every(60).next_after(dt)


def test_registrations_are_answered_while_a_schedule_is_being_computed() -> None:
    queue, clock = FakeQueue(), Clock(utc(12))
    slow = Blocking()
    s = scheduler(queue, clock)
    s.register(cron("slow", schedule=slow))
    s.register(cron("tick"))
    slow.armed = True
    round_ = threading.Thread(target=s.run_once, args=(utc(12),))
    round_.start()
    try:
        assert slow.entered.wait(5)
        answers: list[object] = []
        other = threading.Thread(
            target=lambda: answers.extend([s.list(), s.next_run("tick"), s.disable("slow")])
        )
        other.start()
        other.join(5)
        assert not other.is_alive(), "list() waited for the schedule"
        assert answers[1:] == [utc(12), True]
    finally:
        slow.release.set()
        round_.join(5)
    # disable() returned while the schedule computed the fire's successor: it never fires.
    assert queue.job_ids() == [job_id("tick", utc(12))]


# -- the general guard: no failure stops the other cron jobs or ends the thread unseen -----


class Faulty(FakeQueue):
    """A FakeQueue whose calls about one cron job (or all, for ``"*"``) can be made to raise."""

    def __init__(self) -> None:
        super().__init__()
        self.faults: dict[tuple[str, str], BaseException] = {}
        self.raised = 0

    def _fault(self, method: str, cron_id: str) -> None:
        error = self.faults.get((method, cron_id)) or self.faults.get((method, "*"))
        if error is not None:
            self.raised += 1
            raise error

    def fire_cron(self, cron_id: str, *args: Any, **kwargs: Any) -> tuple[bool, int]:
        self._fault("fire_cron", cron_id)
        return super().fire_cron(cron_id, *args, **kwargs)

    def cron_state(self, cron_id: str) -> dict[str, str]:
        self._fault("cron_state", cron_id)
        return super().cron_state(cron_id)

    def announce_cron(self, cron_id: str, *args: Any, **kwargs: Any) -> None:
        self._fault("announce_cron", cron_id)
        super().announce_cron(cron_id, *args, **kwargs)


#: Where one cron job ("victim") fails: its schedule, or each call the scheduler makes to
#: the queue about it, with an error reply about its keys or with any other exception.
GUARD_STAGES: dict[str, tuple[str, BaseException]] = {
    "schedule": ("schedule", RuntimeError("holiday calendar has no entry for 2027")),
    "state-read-error-reply": ("cron_state", redis.ResponseError("WRONGTYPE damaged state")),
    "state-read-bug": ("cron_state", RuntimeError("injected")),
    "fire-error-reply": ("fire_cron", redis.ResponseError("WRONGTYPE damaged claim")),
    "fire-bug": ("fire_cron", RuntimeError("injected")),
    "announce-bug": ("announce_cron", RuntimeError("injected")),
}


@pytest.mark.parametrize("stage", list(GUARD_STAGES))
def test_a_failure_of_one_cron_job_at_any_stage_stops_no_other_and_no_thread(
    stage: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue, clock = Faulty(), Clock(utc(12))
    flaky = Flaky()
    where, error = GUARD_STAGES[stage]
    s = scheduler(queue, clock)
    if where != "schedule":
        queue.faults[(where, "victim")] = error  # from its first plan, at register
    s.register(cron("victim", schedule=flaky))
    s.register(cron("tick"))
    flaky.error = error if where == "schedule" else None
    with caplog.at_level("DEBUG", logger="jobs.scheduler"), s:
        for minute in range(4):
            clock.now = utc(12, minute)
            s.register(cron(f"wake-{minute}", enabled=False))  # wakes the thread
            wait_until(lambda: job_id("tick", clock.now) in queue.job_ids(), timeout=5)
        assert queue.raised or flaky.error is not None, f"nothing reached {stage}"
        assert not [i for i in queue.job_ids() if i.startswith("cron:victim:")]
        queue.faults.clear()
        flaky.error = None
        clock.now = utc(12, 5)  # past the victim's retry: it is planned again, and fires
        s.register(cron("wake-5", enabled=False))
        wait_until(lambda: job_id("victim", utc(12, 5)) in queue.job_ids(), timeout=5)
        assert len(scheduler_threads()) == 1
        assert s.next_run("tick") == utc(12, 6)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage().split(" (")[0] for r in errors] == ["cron job 'victim' failed"]
    assert errors[0].exc_info is not None
    assert "cron job 'victim' works again" in caplog.text


def test_a_redis_outage_fails_rounds_not_the_thread(caplog: pytest.LogCaptureFixture) -> None:
    # Not one cron job's error: the round fails, the thread backs off and tries again.
    queue, clock = Faulty(), Clock(utc(12))
    s = scheduler(queue, clock)
    s.register(cron("tick"))
    with caplog.at_level("INFO", logger="jobs.scheduler"), s:
        wait_until(lambda: queue.job_ids() == [job_id("tick", utc(12))], timeout=5)
        queue.faults[("fire_cron", "*")] = redis.ConnectionError("fake outage")
        clock.now = utc(12, 1)
        s.register(cron("wake", enabled=False))
        wait_until(lambda: queue.raised >= 3, timeout=5)  # retried, with a back-off
        assert "Redis error" in caplog.text
        queue.faults.clear()
        wait_until(lambda: job_id("tick", utc(12, 1)) in queue.job_ids(), timeout=5)
        assert len(scheduler_threads()) == 1
    assert "recovered after" in caplog.text
