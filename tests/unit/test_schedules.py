"""Unit tests of jobs.schedule.schedules: each schedule, month ends, leap days, DST."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import dateutil.relativedelta
import dateutil.tz
import pytest
from dateutil.rrule import (
    DAILY,
    FR,
    HOURLY,
    MINUTELY,
    MO,
    MONTHLY,
    WEEKLY,
    YEARLY,
    rrule,
    rruleset,
)

from jobs.errors import ConfigError
from jobs.schedule.schedules import (
    FRIDAY,
    MONDAY,
    SUNDAY,
    WEDNESDAY,
    Cron,
    Daily,
    Every,
    Monthly,
    RRule,
    Schedule,
    Weekly,
)

pytestmark = pytest.mark.timeout(60)

NY = "America/New_York"
BERLIN = "Europe/Berlin"
LORD_HOWE = "Australia/Lord_Howe"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def bad(value: object) -> Any:
    """An invalid argument, hidden from mypy so the test can pass it."""
    return value


def fires(schedule: Schedule, start: datetime, count: int, **kw: tzinfo) -> list[datetime]:
    """The next ``count`` fire times after ``start``, checking they strictly increase."""
    out: list[datetime] = []
    t = start
    for _ in range(count):
        nxt = schedule.next_after(t, **kw)
        assert nxt is not None
        assert nxt > t
        assert nxt.tzinfo is UTC
        out.append(nxt)
        t = nxt
    return out


def fires_between(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    out: list[datetime] = []
    t = schedule.next_after(start)
    while t is not None and t < end:
        out.append(t)
        t = schedule.next_after(t)
    return out


# -- Every ---------------------------------------------------------------------------------


def test_every_aligns_to_the_epoch() -> None:
    assert Every(300).next_after(utc(2024, 5, 1, 12, 3, 10)) == utc(2024, 5, 1, 12, 5)


def test_every_is_strictly_after() -> None:
    assert Every(300).next_after(utc(2024, 5, 1, 12, 5)) == utc(2024, 5, 1, 12, 10)
    assert Every(300).next_after(utc(2024, 5, 1, 12, 4, 59, 999999)) == utc(2024, 5, 1, 12, 5)


def test_every_odd_interval_counts_from_the_epoch() -> None:
    epoch = utc(1970, 1, 1)
    assert Every(7).next_after(epoch) == epoch + timedelta(seconds=7)
    t = utc(2024, 1, 1)
    nxt = Every(7).next_after(t)
    assert nxt is not None
    assert (nxt - epoch) % timedelta(seconds=7) == timedelta(0)
    assert timedelta(0) < nxt - t <= timedelta(seconds=7)


def test_every_before_the_epoch() -> None:
    assert Every(3600).next_after(utc(1969, 12, 31, 22, 30)) == utc(1969, 12, 31, 23)


def test_every_accepts_timedelta_and_any_zone() -> None:
    every = Every(timedelta(minutes=5))
    assert every == Every(300)
    assert hash(every) == hash(Every(300.0))
    berlin = datetime(2024, 5, 1, 14, 3, tzinfo=ZoneInfo(BERLIN))
    assert every.next_after(berlin) == utc(2024, 5, 1, 12, 5)


def test_every_fractional_has_no_drift() -> None:
    every = Every(0.1)
    start = utc(2024, 5, 1, 12)
    times = fires(every, start, 1000)
    assert times[-1] == start + timedelta(seconds=100)
    assert all(b - a == timedelta(milliseconds=100) for a, b in itertools.pairwise(times))
    assert Every(1.5).next_after(utc(2024, 5, 1, 12, 0, 0, 1)) == utc(2024, 5, 1, 12, 0, 1, 500000)


def test_every_ignores_dst() -> None:
    hourly = fires(Every(3600), utc(2024, 11, 3, 4), 4, default_tz=ZoneInfo(NY))
    assert hourly == [utc(2024, 11, 3, h) for h in (5, 6, 7, 8)]


def test_every_past_the_end_of_time() -> None:
    assert Every(timedelta(days=365)).next_after(datetime(9999, 12, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    "interval", [0, -1, 0.0, 1e-7, timedelta(0), timedelta(seconds=-5), float("nan")]
)
def test_every_rejects_non_positive(interval: object) -> None:
    with pytest.raises(ConfigError, match="interval must be"):
        Every(interval)


@pytest.mark.parametrize(
    "interval", [0.0009, 0.0004, timedelta(microseconds=999), timedelta(microseconds=1)]
)
def test_every_rejects_intervals_below_a_millisecond(interval: object) -> None:
    # Fire times are claimed in whole milliseconds: two in one millisecond would be one.
    with pytest.raises(ConfigError, match=r"interval must be at least 1 ms"):
        Every(interval)


def test_every_accepts_a_millisecond_and_odd_fractions_of_one() -> None:
    assert Every(0.001).interval == timedelta(milliseconds=1)
    # 1.5 ms: fire times at 0, 1.5, 3, 4.5 ms claim 0, 1, 3, 4 ms (still all distinct).
    every = Every(0.0015)
    t = datetime(2024, 1, 1, tzinfo=UTC)
    fires = []
    for _ in range(4):
        found = every.next_after(t)
        assert found is not None
        fires.append(found)
        t = found
    claims = [(f - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1) for f in fires]
    assert len(set(claims)) == len(claims)


@pytest.mark.parametrize("interval", [True, "300", None, float("inf"), 1e20])
def test_every_rejects_non_numbers(interval: object) -> None:
    with pytest.raises(ConfigError, match="interval must be"):
        Every(interval)


# -- Daily ----------------------------------------------------------------------------------


def test_daily_utc() -> None:
    daily = Daily(2, 0)
    assert daily.next_after(utc(2024, 5, 1, 1)) == utc(2024, 5, 1, 2)
    assert daily.next_after(utc(2024, 5, 1, 2)) == utc(2024, 5, 2, 2)
    assert Daily(0, 0).next_after(utc(2024, 12, 31, 0, 1)) == utc(2025, 1, 1)


def test_daily_in_a_zone_follows_its_offset() -> None:
    daily = Daily(9, 0, tz=BERLIN)
    assert daily.next_after(utc(2024, 1, 10)) == utc(2024, 1, 10, 8)  # CET
    assert daily.next_after(utc(2024, 7, 10)) == utc(2024, 7, 10, 7)  # CEST


def test_default_tz_applies_only_without_tz() -> None:
    berlin, ny = ZoneInfo(BERLIN), ZoneInfo(NY)
    assert Daily(9, 0).next_after(utc(2024, 1, 10), default_tz=berlin) == utc(2024, 1, 10, 8)
    assert Daily(9, 0, tz=ny).next_after(utc(2024, 1, 10), default_tz=berlin) == utc(
        2024, 1, 10, 14
    )
    assert Daily(9, 0).next_after(utc(2024, 1, 10)) == utc(2024, 1, 10, 9)


@pytest.mark.parametrize(
    "zone",
    [ZoneInfo(NY), dateutil.tz.gettz(NY), NY],
    ids=["zoneinfo", "dateutil", "name"],
)
def test_any_kind_of_zone(zone: tzinfo | str) -> None:
    daily = Daily(2, 30, tz=zone)
    assert daily.next_after(utc(2024, 3, 9, 12)) == utc(2024, 3, 10, 7)
    assert daily.next_after(utc(2024, 11, 2, 12)) == utc(2024, 11, 3, 7, 30)
    assert Daily(1, 30, tz=zone).next_after(utc(2024, 11, 2, 12)) == utc(2024, 11, 3, 5, 30)


def test_fixed_offset_zone() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    assert Daily(9, 0, tz=india).next_after(utc(2024, 1, 1)) == utc(2024, 1, 1, 3, 30)


def test_result_is_utc_whatever_the_input_zone() -> None:
    start = datetime(2024, 5, 1, 8, tzinfo=ZoneInfo(NY))
    result = Daily(13, 0).next_after(start)
    assert result == utc(2024, 5, 1, 13)
    assert result is not None and result.tzinfo is UTC


# -- DST: fixed-hour schedules ---------------------------------------------------------------


def test_daily_in_the_spring_gap_fires_once_at_the_gap_end() -> None:
    # 2024-03-10 02:00 EST -> 03:00 EDT: 02:30 does not exist that day.
    times = fires(Daily(2, 30, tz=NY), utc(2024, 3, 8, 12), 4)
    assert times == [utc(2024, 3, 9, 7, 30), utc(2024, 3, 10, 7), utc(2024, 3, 11, 6, 30),
                     utc(2024, 3, 12, 6, 30)]  # fmt: skip


def test_daily_in_the_fall_fold_fires_once_at_the_first_occurrence() -> None:
    # 2024-11-03 02:00 EDT -> 01:00 EST: 01:30 happens at 05:30 and 06:30 UTC.
    times = fires(Daily(1, 30, tz=NY), utc(2024, 11, 1, 12), 4)
    assert times == [utc(2024, 11, 2, 5, 30), utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30),
                     utc(2024, 11, 5, 6, 30)]  # fmt: skip


def test_daily_asked_during_the_fold() -> None:
    daily = Daily(1, 30, tz=NY)
    assert daily.next_after(utc(2024, 11, 3, 5, 29)) == utc(2024, 11, 3, 5, 30)
    for between in (utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 6, 10), utc(2024, 11, 3, 6, 30)):
        assert daily.next_after(between) == utc(2024, 11, 4, 6, 30)


def test_daily_asked_during_the_gap_day() -> None:
    daily = Daily(2, 30, tz=NY)
    assert daily.next_after(utc(2024, 3, 10, 6, 59)) == utc(2024, 3, 10, 7)
    assert daily.next_after(utc(2024, 3, 10, 7)) == utc(2024, 3, 11, 6, 30)
    assert daily.next_after(utc(2024, 3, 10, 7, 29)) == utc(2024, 3, 11, 6, 30)


def test_daily_berlin() -> None:
    # 2024-03-31 02:00 CET -> 03:00 CEST (01:00 UTC); 2024-10-27 03:00 CEST -> 02:00 CET.
    assert Daily(2, 30, tz=BERLIN).next_after(utc(2024, 3, 30, 12)) == utc(2024, 3, 31, 1)
    fall = fires(Daily(2, 30, tz=BERLIN), utc(2024, 10, 26, 12), 2)
    assert fall == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]


def test_daily_lord_howe_half_hour_shifts() -> None:
    # Spring 2024-10-06 02:00 +10:30 -> 02:30 +11 (15:30 UTC on the 5th).
    spring = fires(Daily(2, 15, tz=LORD_HOWE), utc(2024, 10, 5), 2)
    assert spring == [utc(2024, 10, 5, 15, 30), utc(2024, 10, 6, 15, 15)]
    assert Daily(2, 30, tz=LORD_HOWE).next_after(utc(2024, 10, 5)) == utc(2024, 10, 5, 15, 30)
    # Fall 2024-04-07 02:00 +11 -> 01:30 +10:30 (15:00 UTC on the 6th): 01:45 happens twice.
    fall = fires(Daily(1, 45, tz=LORD_HOWE), utc(2024, 4, 6), 2)
    assert fall == [utc(2024, 4, 6, 14, 45), utc(2024, 4, 7, 15, 15)]


def test_weekly_and_monthly_follow_the_fixed_hour_rules() -> None:
    assert Weekly(SUNDAY, 2, 30, tz=NY).next_after(utc(2024, 3, 9)) == utc(2024, 3, 10, 7)
    assert Monthly(10, 2, 30, tz=NY).next_after(utc(2024, 3, 1)) == utc(2024, 3, 10, 7)
    assert Monthly(3, 1, 30, tz=NY).next_after(utc(2024, 11, 1)) == utc(2024, 11, 3, 5, 30)
    assert Monthly(3, 1, 30, tz=NY).next_after(utc(2024, 11, 3, 5, 30)) == utc(2024, 12, 3, 6, 30)


# -- DST: cron ------------------------------------------------------------------------------


def test_hourly_cron_fires_at_both_repeated_hours() -> None:
    times = fires_between(Cron("0 * * * *", tz=NY), utc(2024, 11, 3, 3, 30), utc(2024, 11, 3, 8))
    assert times == [utc(2024, 11, 3, h) for h in (4, 5, 6, 7)]  # 00:00, 01:00 x2, 02:00 EST


def test_hourly_cron_skips_the_missing_hour() -> None:
    times = fires_between(Cron("0 * * * *", tz=NY), utc(2024, 3, 10, 4, 30), utc(2024, 3, 10, 9))
    assert times == [utc(2024, 3, 10, h) for h in (5, 6, 7, 8)]  # 00:00, 01:00 EST, 03:00, 04:00


def test_multi_hour_cron_follows_real_instants() -> None:
    cron = Cron("30 1-3 * * *", tz=NY)
    spring = fires_between(cron, utc(2024, 3, 10), utc(2024, 3, 10, 12))
    assert spring == [utc(2024, 3, 10, 6, 30), utc(2024, 3, 10, 7, 30)]  # 01:30 EST, 03:30 EDT
    fall = fires_between(cron, utc(2024, 11, 3), utc(2024, 11, 3, 12))
    assert fall == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 6, 30), utc(2024, 11, 3, 7, 30),
                    utc(2024, 11, 3, 8, 30)]  # fmt: skip


def test_single_hour_cron_follows_the_fixed_hour_rules() -> None:
    assert Cron("30 2 * * *", tz=NY).next_after(utc(2024, 3, 10)) == utc(2024, 3, 10, 7)
    assert fires_between(Cron("30 1 * * *", tz=NY), utc(2024, 11, 3), utc(2024, 11, 4)) == [
        utc(2024, 11, 3, 5, 30)
    ]
    quarter = Cron("*/15 2 * * *", tz=NY)
    assert fires_between(quarter, utc(2024, 3, 10), utc(2024, 3, 11)) == [utc(2024, 3, 10, 7)]
    fold = fires_between(Cron("*/15 1 * * *", tz=NY), utc(2024, 11, 3), utc(2024, 11, 4))
    assert fold == [utc(2024, 11, 3, 5, m) for m in (0, 15, 30, 45)]


def test_cron_lord_howe() -> None:
    # Spring: 02:00 and 02:30 both land on the gap's end, which fires once.
    fixed = Cron("0,30 2 * * *", tz=LORD_HOWE)
    assert fires_between(fixed, utc(2024, 10, 5), utc(2024, 10, 6, 16)) == [
        utc(2024, 10, 5, 15, 30),
        utc(2024, 10, 6, 15),
        utc(2024, 10, 6, 15, 30),
    ]
    hourly = Cron("0 * * * *", tz=LORD_HOWE)
    assert fires_between(hourly, utc(2024, 10, 5, 14), utc(2024, 10, 5, 17)) == [
        utc(2024, 10, 5, 14, 30),  # 01:00 +10:30
        utc(2024, 10, 5, 16),  # 03:00 +11; 02:00 never happened
    ]
    # Fall: 01:30 happens twice, at 14:30 and 15:00 UTC.
    half_past = Cron("30 * * * *", tz=LORD_HOWE)
    assert fires_between(half_past, utc(2024, 4, 6, 14), utc(2024, 4, 6, 16, 30)) == [
        utc(2024, 4, 6, 14, 30),
        utc(2024, 4, 6, 15),
        utc(2024, 4, 6, 16),
    ]


def test_cron_business_hours_in_berlin() -> None:
    cron = Cron("*/15 9-17 * * MON-FRI", tz=BERLIN)
    assert cron.next_after(utc(2024, 3, 8, 16, 50)) == utc(2024, 3, 11, 8)  # Fri 17:50 -> Mon
    assert cron.next_after(utc(2024, 4, 2, 7, 1)) == utc(2024, 4, 2, 7, 15)


def test_cron_rare_expressions_are_fast() -> None:
    begin = time.perf_counter()
    assert Cron("0 0 29 2 *").next_after(utc(2097, 1, 1)) == utc(2104, 2, 29)
    # Real-instant semantics, years between fires, transitions on the way.
    assert Cron("0 0-1 29 2 *", tz=NY).next_after(utc(2024, 3, 1)) == utc(2028, 2, 29, 5)
    assert Cron("0 0 31 12 *", tz=LORD_HOWE).next_after(utc(2024, 1, 1)) == utc(2024, 12, 30, 13)
    assert time.perf_counter() - begin < 2


def test_wall_clock_schedules_past_the_end_of_time() -> None:
    end = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    assert Cron("59 23 31 12 *").next_after(end) is None
    assert Cron("* * * * *", tz=NY).next_after(end) is None
    assert Daily(0, 0, tz=NY).next_after(end - timedelta(days=1)) == utc(9999, 12, 31, 5)
    assert Daily(0, 0, tz=NY).next_after(utc(9999, 12, 31, 5)) is None


# -- Weekly and Monthly -----------------------------------------------------------------------


def test_weekly() -> None:
    weekly = Weekly(MONDAY, 9, 0)
    assert weekly.next_after(utc(2024, 5, 5, 23)) == utc(2024, 5, 6, 9)  # Sunday -> Monday
    assert weekly.next_after(utc(2024, 5, 6, 9)) == utc(2024, 5, 13, 9)
    assert Weekly(WEDNESDAY, 0, 0).next_after(utc(2024, 12, 30)) == utc(2025, 1, 1)
    assert Weekly(FRIDAY, 23, 59).next_after(utc(2024, 12, 28)) == utc(2025, 1, 3, 23, 59)


def test_weekly_weekday_forms() -> None:
    assert Weekly(0, 9, 0) == Weekly(MONDAY, 9, 0)
    assert Weekly(6, 9, 0) == Weekly(SUNDAY, 9, 0)
    assert Weekly(dateutil.relativedelta.FR, 9, 0) == Weekly(FRIDAY, 9, 0)
    assert Weekly(weekday=MONDAY, hour=9, minute=0, tz=NY).weekday is MONDAY


def test_monthly_first_of_month() -> None:
    assert Monthly(1, 0, 0).next_after(utc(2024, 5, 1)) == utc(2024, 6, 1)
    assert Monthly(1, 0, 0).next_after(utc(2024, 12, 15)) == utc(2025, 1, 1)


def test_monthly_skips_months_without_the_day() -> None:
    assert fires(Monthly(31, 12, 0), utc(2024, 4, 1), 3) == [
        utc(2024, 5, 31, 12),
        utc(2024, 7, 31, 12),
        utc(2024, 8, 31, 12),
    ]
    assert Monthly(30, 0, 0).next_after(utc(2024, 1, 31)) == utc(2024, 3, 30)


def test_monthly_leap_day() -> None:
    assert Monthly(29, 0, 0).next_after(utc(2024, 2, 1)) == utc(2024, 2, 29)
    assert Monthly(29, 0, 0).next_after(utc(2023, 2, 1)) == utc(2023, 3, 29)


def test_monthly_last_day() -> None:
    assert fires(Monthly(-1, 23, 0), utc(2024, 1, 31, 23), 4) == [
        utc(2024, 2, 29, 23),
        utc(2024, 3, 31, 23),
        utc(2024, 4, 30, 23),
        utc(2024, 5, 31, 23),
    ]
    assert Monthly(-1, 0, 0).next_after(utc(2023, 2, 1)) == utc(2023, 2, 28)
    assert Monthly(-1, 0, 0).next_after(utc(2024, 12, 31)) == utc(2025, 1, 31)


# -- RRule ----------------------------------------------------------------------------------


def test_rrule_naive_dtstart_uses_tz_then_default_tz_then_utc() -> None:
    rule = rrule(DAILY, byhour=9, byminute=0, dtstart=datetime(2024, 1, 1))
    assert RRule(rule, tz=BERLIN).next_after(utc(2024, 1, 10)) == utc(2024, 1, 10, 8)
    assert RRule(rule).next_after(utc(2024, 1, 10), default_tz=ZoneInfo(NY)) == utc(2024, 1, 10, 14)
    assert RRule(rule).next_after(utc(2024, 1, 10)) == utc(2024, 1, 10, 9)


def test_rrule_aware_dtstart_keeps_its_zone() -> None:
    rule = rrule(DAILY, byhour=9, byminute=0, dtstart=datetime(2024, 1, 1, tzinfo=ZoneInfo(BERLIN)))
    assert RRule(rule, tz=NY).next_after(utc(2024, 7, 10)) == utc(2024, 7, 10, 7)


def test_rrule_fixed_hour_dst() -> None:
    rule = rrule(DAILY, byhour=2, byminute=30, dtstart=datetime(2024, 1, 1))
    assert fires(RRule(rule, tz=NY), utc(2024, 3, 9, 12), 2) == [
        utc(2024, 3, 10, 7),
        utc(2024, 3, 11, 6, 30),
    ]
    aware = rrule(DAILY, byhour=1, byminute=30, dtstart=datetime(2024, 1, 1, tzinfo=ZoneInfo(NY)))
    assert fires(RRule(aware), utc(2024, 11, 3), 2) == [
        utc(2024, 11, 3, 5, 30),
        utc(2024, 11, 4, 6, 30),
    ]


def test_rrule_hourly_follows_real_instants() -> None:
    rule = RRule(rrule(HOURLY, dtstart=datetime(2024, 1, 1)), tz=NY)
    times = fires_between(rule, utc(2024, 11, 3, 3, 30), utc(2024, 11, 3, 8))
    assert times == [utc(2024, 11, 3, h) for h in (4, 5, 6, 7)]
    times = fires_between(rule, utc(2024, 3, 10, 4, 30), utc(2024, 3, 10, 9))
    assert times == [utc(2024, 3, 10, h) for h in (5, 6, 7, 8)]


def test_rrule_with_seconds() -> None:
    rule = RRule(rrule(MINUTELY, bysecond=30, dtstart=datetime(2024, 5, 1)))
    assert rule.next_after(utc(2024, 5, 1, 12, 0, 30)) == utc(2024, 5, 1, 12, 1, 30)


def test_rrule_weekly_setpos_picks_within_whole_weeks() -> None:
    # Restarted on a Wednesday, dateutil's first week would begin that day and BYSETPOS=1
    # would pick its Friday; the rule's own weeks begin on Monday (found by hypothesis).
    rule = rrule(WEEKLY, dtstart=datetime(2018, 11, 28), bysetpos=1, byweekday=(MO, FR))
    assert rule.after(datetime(2020, 1, 1)) == datetime(2020, 1, 6)
    assert RRule(rule).next_after(utc(2020, 1, 1)) == utc(2020, 1, 6)


def test_rrule_count_runs_out() -> None:
    schedule = RRule(rrule(DAILY, count=2, dtstart=datetime(2024, 1, 1, 9)))
    assert fires(schedule, utc(2023, 1, 1), 2) == [utc(2024, 1, 1, 9), utc(2024, 1, 2, 9)]
    assert schedule.next_after(utc(2024, 1, 2, 9)) is None


@pytest.fixture
def generated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the occurrences every dateutil rule generates (the work of ``after``)."""
    count = [0]
    real = vars(rrule)["_iter"]

    def counting(self: rrule) -> Any:
        for occurrence in real(self):
            count[0] += 1
            yield occurrence

    monkeypatch.setattr(rrule, "_iter", counting)
    return count


OLD_WEDNESDAY = datetime(1990, 1, 3)


@pytest.mark.parametrize(
    "rule",
    [
        rrule(MINUTELY, dtstart=datetime(2024, 1, 1)),
        rrule(MINUTELY, interval=7, bysecond=(5, 35), dtstart=datetime(2020, 1, 1, 0, 3)),
        rrule(HOURLY, interval=5, byminute=(0, 30), dtstart=datetime(2000, 1, 1, 2)),
        rrule(DAILY, interval=3, byhour=(1, 13), byminute=15, dtstart=datetime(2000, 1, 1)),
        rrule(WEEKLY, interval=2, byweekday=(MO, FR), byhour=range(24), dtstart=OLD_WEDNESDAY),
        rrule(MONTHLY, bymonthday=(1, -1), byhour=range(0, 24, 2), dtstart=datetime(1980, 1, 31)),
        rrule(MONTHLY, interval=2, byweekday=FR(-1), bysetpos=1, dtstart=datetime(1980, 3, 1)),
        rrule(YEARLY, byyearday=range(1, 367), byhour=12, dtstart=datetime(1960, 2, 29)),
    ],
)
def test_rrule_cost_does_not_grow_with_the_age_of_dtstart(
    rule: rrule, generated: list[int]
) -> None:
    # dateutil replays every occurrence from dtstart on each call: 740,000 for a minutely
    # rule started 17 months ago. The schedule starts near the asked time instead.
    schedule = RRule(rule)
    start = utc(2025, 6, 1, 12, 0, 5)
    generated[0] = 0
    found = fires(schedule, start, 3)
    assert generated[0] < 3 * 800, generated[0]
    later = (o for o in rule if o > start.replace(tzinfo=None))
    assert found == [o.replace(tzinfo=UTC) for o in itertools.islice(later, 3)]


def test_rruleset_cost_does_not_grow_with_the_age_of_dtstart(generated: list[int]) -> None:
    rules = rruleset()
    rules.rrule(rrule(MINUTELY, interval=10, dtstart=datetime(2023, 1, 1)))
    rules.exrule(rrule(HOURLY, byminute=0, dtstart=datetime(2023, 1, 1)))
    rules.rdate(datetime(2025, 6, 1, 12, 5, 30))
    generated[0] = 0
    assert fires(RRule(rules), utc(2025, 6, 1, 11, 55), 3) == [
        utc(2025, 6, 1, 12, 5, 30),
        utc(2025, 6, 1, 12, 10),
        utc(2025, 6, 1, 12, 20),
    ]
    assert generated[0] < 100, generated[0]


def test_rrule_with_count_still_counts_from_dtstart() -> None:
    schedule = RRule(rrule(MINUTELY, count=100, dtstart=datetime(2024, 1, 1)))
    assert schedule.next_after(utc(2024, 1, 1, 1, 38)) == utc(2024, 1, 1, 1, 39)
    assert schedule.next_after(utc(2024, 1, 1, 1, 39)) is None


def test_rruleset_with_exdate() -> None:
    rules = rruleset()
    rules.rrule(rrule(MONTHLY, byweekday=FRIDAY(-1), byhour=17, dtstart=datetime(2024, 1, 1)))
    rules.exdate(datetime(2024, 3, 29, 17))
    assert fires(RRule(rules), utc(2024, 2, 1), 2) == [utc(2024, 2, 23, 17), utc(2024, 4, 26, 17)]


def test_rrule_matches_daily_across_dst() -> None:
    # rrule.after() walks from dtstart on every call, so dtstart stays close to keep this fast.
    rule = RRule(rrule(DAILY, byhour=2, byminute=30, dtstart=datetime(2024, 3, 1)), tz=BERLIN)
    start = utc(2024, 3, 1)
    assert fires(rule, start, 250) == fires(Daily(2, 30, tz=BERLIN), start, 250)


# -- value objects and validation -------------------------------------------------------------


def test_value_objects() -> None:
    assert Daily(2, 0) == Daily(hour=2, minute=0)
    assert Daily(2, 0, tz=NY) != Daily(2, 0)
    assert len({Daily(2, 0), Daily(2, 0), Cron("0 2 * * *"), Cron("0 2 * * *")}) == 2
    assert hash(Daily(2, 0, tz=dateutil.tz.gettz(NY))) == hash(Daily(2, 0))
    assert repr(Daily(2, 0, tz=NY)) == "Daily(hour=2, minute=0, tz='America/New_York')"
    assert repr(Cron("@daily")) == "Cron(expr='@daily', tz=None)"
    assert repr(Monthly(-1, 0, 0)) == "Monthly(day=-1, hour=0, minute=0, tz=None)"
    assert repr(Every(300)) == "Every(interval=datetime.timedelta(seconds=300))"
    with pytest.raises(AttributeError):
        Daily(2, 0).hour = 3  # type: ignore[misc]


ALL: list[Schedule] = [
    Every(60),
    Daily(2, 0),
    Weekly(MONDAY, 2, 0),
    Monthly(1, 2, 0),
    Cron("* * * * *"),
    RRule(rrule(DAILY, dtstart=datetime(2024, 1, 1))),
]


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_naive_dt_is_rejected(schedule: Schedule) -> None:
    with pytest.raises(ConfigError, match="dt must be timezone-aware"):
        schedule.next_after(datetime(2024, 1, 1))
    with pytest.raises(ConfigError, match="dt must be a datetime"):
        schedule.next_after("2024-01-01")  # type: ignore[arg-type]


@pytest.mark.parametrize("schedule", ALL[1:], ids=lambda s: type(s).__name__)
def test_default_tz_is_validated(schedule: Schedule) -> None:
    with pytest.raises(ConfigError, match="default_tz must be"):
        schedule.next_after(utc(2024, 1, 1), default_tz=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Daily(24, 0), r"hour must be in 0\.\.23, got 24"),
        (lambda: Daily(-1, 0), r"hour must be in 0\.\.23, got -1"),
        (lambda: Daily(True, 0), r"hour must be an integer, got True"),
        (lambda: Daily(bad(2.0), 0), r"hour must be an integer"),
        (lambda: Daily(bad("2"), 0), r"hour must be an integer"),
        (lambda: Daily(2, 60), r"minute must be in 0\.\.59, got 60"),
        (lambda: Daily(2, bad(None)), r"minute must be an integer"),
        (lambda: Daily(2, 0, tz="Mars/Olympus_Mons"), r"tz is not a known IANA time zone"),
        (lambda: Daily(2, 0, tz=""), r"tz is not a known IANA time zone"),
        (lambda: Daily(2, 0, tz="../etc/passwd"), r"tz is not a known IANA time zone"),
        (lambda: Daily(2, 0, tz="America"), r"tz is not a known IANA time zone"),
        (lambda: Daily(2, 0, tz=bad(5)), r"tz must be an IANA zone name or a tzinfo, got 5"),
        (lambda: Weekly(7, 9, 0), r"weekday must be jobs\.MONDAY\.\.jobs\.SUNDAY or an int 0\.\.6"),
        (lambda: Weekly(-1, 9, 0), r"weekday must be"),
        (lambda: Weekly(True, 9, 0), r"weekday must be"),
        (lambda: Weekly("MON", 9, 0), r"weekday must be"),
        (lambda: Weekly(MONDAY(+1), 9, 0), r"weekday must be"),
        (lambda: Weekly(MONDAY, 25, 0), r"hour must be in 0\.\.23"),
        (lambda: Weekly(MONDAY, 9, 0, tz="Nowhere"), r"tz is not a known"),
        (lambda: Monthly(0, 0, 0), r"day must be in 1\.\.31 or -1"),
        (lambda: Monthly(32, 0, 0), r"day must be in 1\.\.31 or -1"),
        (lambda: Monthly(-2, 0, 0), r"day must be in 1\.\.31 or -1"),
        (lambda: Monthly(bad(-1.0), 0, 0), r"day must be in 1\.\.31 or -1"),
        (lambda: Monthly(True, 0, 0), r"day must be in 1\.\.31 or -1"),
        (lambda: Monthly(1, 0, 99), r"minute must be in 0\.\.59"),
        (lambda: Cron(bad(5)), r"expr must be str"),
        (lambda: Cron("61 * * * *"), r"cron field 'minute' is invalid: '61'"),
        (lambda: Cron("* * *"), r"must have 5 fields"),
        (lambda: Cron("0 0 30 2 *"), r"never fires"),
        (lambda: Cron("* * * * *", tz=bad(3.5)), r"tz must be"),
        (lambda: RRule(bad("FREQ=DAILY")), r"rule must be rrule or rruleset"),
        (lambda: RRule(rrule(DAILY), tz="Bogus/Zone"), r"tz is not a known"),
    ],
)
def test_invalid_configuration_names_the_field(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(ConfigError, match=message):
        make()
