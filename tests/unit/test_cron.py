"""The cron parser and wall-clock matcher in jobs.schedule._cron (no time zones here)."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from jobs.errors import ConfigError
from jobs.schedule._cron import LAST_DAY, CronFields, parse_cron

pytestmark = pytest.mark.timeout(60)

MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


def test_star_allows_everything() -> None:
    fields = parse_cron("* * * * *")
    assert fields == CronFields()
    assert fields.day_or is False


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("5", {5}),
        ("1,2,5", {1, 2, 5}),
        ("1-5", {1, 2, 3, 4, 5}),
        ("*/15", {0, 15, 30, 45}),
        ("10-50/10", {10, 20, 30, 40, 50}),
        ("5/15", {5, 20, 35, 50}),
        ("0-4,50-59/3,7", {0, 1, 2, 3, 4, 7, 50, 53, 56, 59}),
        ("59", {59}),
        ("*/60", {0}),
        ("3-3", {3}),
    ],
)
def test_minute_syntax(field: str, expected: set[int]) -> None:
    assert parse_cron(f"{field} * * * *").minutes == expected


def test_each_field_lands_in_its_place() -> None:
    fields = parse_cron("1 2 3 4 5")
    assert fields.minutes == {1}
    assert fields.hours == {2}
    assert fields.days == {3}
    assert fields.months == {4}
    assert fields.weekdays == {FRI}


def test_month_names_case_insensitive() -> None:
    assert parse_cron("0 0 1 jan,Mar,DEC *").months == {1, 3, 12}
    assert parse_cron("0 0 1 FEB-apr *").months == {2, 3, 4}


def test_weekday_names_and_numbers() -> None:
    assert parse_cron("0 0 * * MON-FRI").weekdays == {MON, TUE, WED, THU, FRI}
    assert parse_cron("0 0 * * sun,sat").weekdays == {SAT, SUN}
    assert parse_cron("0 0 * * 0").weekdays == {SUN}
    assert parse_cron("0 0 * * 7").weekdays == {SUN}
    assert parse_cron("0 0 * * 5-7").weekdays == {FRI, SAT, SUN}
    assert parse_cron("0 0 * * */2").weekdays == {SUN, TUE, THU, SAT}


@pytest.mark.parametrize(
    ("macro", "expr"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        (" @DAILY ", "0 0 * * *"),
    ],
)
def test_macros(macro: str, expr: str) -> None:
    assert parse_cron(macro) == parse_cron(expr)


def test_whitespace_between_fields_is_free() -> None:
    assert parse_cron("  0\t9  *  * \n MON ") == parse_cron("0 9 * * MON")


@pytest.mark.parametrize(
    ("expr", "day_or"),
    [
        ("0 0 1 * MON", True),
        ("0 0 1-31 * MON", True),
        ("0 0 * * MON", False),
        ("0 0 1 * *", False),
        ("0 0 */2 * MON", False),  # Vixie: a field starting with '*' is unrestricted
        ("0 0 1 * *", False),
    ],
)
def test_day_fields_combine_like_vixie(expr: str, day_or: bool) -> None:
    assert parse_cron(expr).day_or is day_or


def test_day_or_matches_either_day_field() -> None:
    fields = parse_cron("0 0 13 * FRI")
    assert fields.day_matches(date(2024, 9, 13))  # Friday the 13th
    assert fields.day_matches(date(2024, 10, 13))  # a Sunday, but the 13th
    assert fields.day_matches(date(2024, 10, 4))  # a Friday
    assert not fields.day_matches(date(2024, 10, 5))


def test_day_and_when_one_field_starts_with_star() -> None:
    fields = parse_cron("0 0 */2 * FRI")
    assert fields.day_matches(date(2024, 10, 11))  # odd day and Friday
    assert not fields.day_matches(date(2024, 10, 18))  # Friday, but even
    assert not fields.day_matches(date(2024, 10, 13))  # odd, but Sunday


def test_last_day_of_month() -> None:
    fields = CronFields(days=frozenset({LAST_DAY}))
    assert fields.day_matches(date(2024, 2, 29))
    assert not fields.day_matches(date(2024, 2, 28))
    assert fields.day_matches(date(2023, 2, 28))
    assert fields.day_matches(date(2024, 4, 30))
    assert not fields.day_matches(date(2024, 5, 30))


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", r"5 fields .* got 0"),
        ("* * * *", r"5 fields .* got 4"),
        ("* * * * * *", r"5 fields .* got 6"),
        ("60 * * * *", r"'minute' is invalid: '60' \(60 is out of range 0\.\.59\)"),
        ("61 * * * *", r"cron field 'minute' is invalid: '61'"),
        ("* 24 * * *", r"'hour' is invalid: '24'"),
        ("* * 0 * *", r"'day-of-month' is invalid: '0'"),
        ("* * 32 * *", r"'day-of-month' is invalid: '32'"),
        ("* * * 13 *", r"'month' is invalid: '13'"),
        ("* * * 0 *", r"'month' is invalid: '0'"),
        ("* * * * 8", r"'day-of-week' is invalid: '8'"),
        ("*/0 * * * *", r"'minute' is invalid: '\*/0' \(step 0 is out of range"),
        ("*/61 * * * *", r"'minute' .*step 61 is out of range 1\.\.60"),
        ("*/x * * * *", r"'minute' .*step 'x' is not a number"),
        ("*/ * * * *", r"'minute' .*step '' is not a number"),
        ("1-2/-1 * * * *", r"'minute' .*step '-1' is not a number"),
        ("5-1 * * * *", r"'minute' .*range '5-1' is reversed"),
        ("* * * * FRI-MON", r"'day-of-week' .*range 'FRI-MON' is reversed"),
        ("* * * FOO *", r"'month' is invalid: 'FOO' \('FOO' is not a number or a name"),
        ("* * * * MONDAY", r"'day-of-week' .*'MONDAY' is not a number or a name"),
        ("JAN * * * *", r"'minute' .*'JAN' is not a number\)"),
        ("* * * JAN-* *", r"'month' .*'\*' is not a number or a name"),
        ("1,,2 * * * *", r"'minute' .*empty list item"),
        ("1, * * * *", r"'minute' .*empty list item"),
        ("-1 * * * *", r"'minute' .*'' is not a number"),
        ("1.5 * * * *", r"'minute' .*'1.5' is not a number"),
        ("? * * * *", r"'minute' .*'\?' is not a number"),
        ("* * L * *", r"'day-of-month' .*'L' is not a number"),
        ("* * * * 1#2", r"'day-of-week' .*'1#2' is not a number"),
        ("\u0661 * * * *", r"'minute' .*is not a number"),  # a non-ASCII digit
        ("@reboot", r"unknown cron macro '@reboot'"),
        ("@every 5m", r"unknown cron macro"),
        ("0 0 30 2 *", r"never fires"),
        ("0 0 31 2,4,6,9,11 *", r"never fires"),
    ],
)
def test_invalid_expressions_name_the_problem(expr: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_cron(expr)


@pytest.mark.parametrize("expr", ["0 0 29 2 *", "0 0 30 2 MON", "0 0 31 * *", "0 0 30,31 2,3 *"])
def test_rare_but_possible_days_are_valid(expr: str) -> None:
    assert parse_cron(expr).can_fire()


def test_can_fire_with_last_day() -> None:
    assert CronFields(days=frozenset({LAST_DAY}), months=frozenset({2})).can_fire()


# -- next_wall: calendar arithmetic on naive datetimes ----------------------------------


def nw(expr: str, start: datetime, *, inclusive: bool = True) -> datetime | None:
    return parse_cron(expr).next_wall(start, inclusive=inclusive)


def test_next_wall_inclusive_and_exclusive() -> None:
    start = datetime(2024, 5, 1, 12, 15)
    assert nw("*/15 * * * *", start) == start
    assert nw("*/15 * * * *", start, inclusive=False) == datetime(2024, 5, 1, 12, 30)


def test_next_wall_rounds_seconds_up() -> None:
    start = datetime(2024, 5, 1, 12, 15, 0, 1)
    assert nw("*/15 * * * *", start) == datetime(2024, 5, 1, 12, 30)
    assert nw("* * * * *", datetime(2024, 5, 1, 12, 15, 59)) == datetime(2024, 5, 1, 12, 16)


def test_next_wall_business_hours() -> None:
    expr = "*/15 9-17 * * MON-FRI"
    assert nw(expr, datetime(2024, 3, 8, 17, 50)) == datetime(2024, 3, 11, 9, 0)  # Fri -> Mon
    assert nw(expr, datetime(2024, 3, 11, 8, 59)) == datetime(2024, 3, 11, 9, 0)
    assert nw(expr, datetime(2024, 3, 11, 9, 1)) == datetime(2024, 3, 11, 9, 15)


def test_next_wall_crosses_year_end() -> None:
    assert nw("0 0 * * *", datetime(2024, 12, 31, 0, 1)) == datetime(2025, 1, 1)
    assert nw("30 23 31 12 *", datetime(2024, 12, 31, 23, 31)) == datetime(2025, 12, 31, 23, 30)


def test_next_wall_leap_day_skips_century() -> None:
    assert nw("0 0 29 2 *", datetime(2024, 3, 1)) == datetime(2028, 2, 29)
    assert nw("0 0 29 2 *", datetime(2097, 1, 1)) == datetime(2104, 2, 29)


def test_next_wall_finds_the_rarest_days_across_a_non_leap_century() -> None:
    # Feb 29 on a Sunday: 2088, then 2128 (2100 is no leap year). The longest wait of any
    # valid expression is 40 years; the search covers the whole 400-year cycle.
    assert nw("0 0 29 2 */7", datetime(2089, 1, 1)) == datetime(2128, 2, 29)
    for weekday in range(7):
        fields = CronFields(
            frozenset({0}), frozenset({0}), frozenset({29}), frozenset({2}), frozenset({weekday})
        )
        expected = next(
            y for y in range(2104, 2400, 4) if y % 100 and date(y, 2, 29).weekday() == weekday
        )
        assert fields.next_wall(datetime(2097, 3, 1)) == datetime(expected, 2, 29)


def test_next_wall_skips_short_months() -> None:
    assert nw("0 0 31 * *", datetime(2024, 4, 1)) == datetime(2024, 5, 31)
    assert nw("0 0 30 * *", datetime(2023, 1, 31)) == datetime(2023, 3, 30)


def test_next_wall_day_or() -> None:
    # The 1st of the month or any Monday, whichever comes first.
    assert nw("0 0 1 * MON", datetime(2024, 4, 2)) == datetime(2024, 4, 8)
    assert nw("0 0 1 * MON", datetime(2024, 4, 29, 1)) == datetime(2024, 5, 1)


def test_next_wall_at_end_of_datetime_range() -> None:
    assert nw("0 0 1 1 *", datetime(9999, 6, 1)) is None
    assert nw("59 23 31 12 *", datetime(9999, 12, 31, 23, 59)) == datetime(9999, 12, 31, 23, 59)
