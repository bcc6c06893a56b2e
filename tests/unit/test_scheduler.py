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
from jobs.scheduler import MAX_WAIT
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
