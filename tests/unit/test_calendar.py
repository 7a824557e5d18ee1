"""Working days and London wall-clock instants (obligations.md conventions, formats.md §5).

The properties are checked against an independent reading of the same facts: weekdays from `date.weekday`,
bank holidays straight from the `holidays` package, wall-clock times from `zoneinfo`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared import calendar as cal

LONDON = ZoneInfo("Europe/London")
FIRST, LAST = date(2000, 1, 1), date(2040, 12, 31)
BANK_HOLIDAYS = frozenset(
    holidays.country_holidays("GB", subdiv="ENG", years=range(FIRST.year - 1, LAST.year + 2))
)
WALES = frozenset(holidays.country_holidays("GB", subdiv="WLS", years=range(FIRST.year, LAST.year + 1)))

days = st.dates(min_value=FIRST, max_value=LAST)
DST_DAYS = (date(2026, 3, 29), date(2026, 10, 25))
FAST = settings(max_examples=150, deadline=None)


def expected_working(day: date) -> bool:
    return day.weekday() < 5 and day not in BANK_HOLIDAYS


def working_days_between(a: date, b: date) -> int:
    """Working days strictly between a and b."""
    return sum(expected_working(a + timedelta(days=i)) for i in range(1, (b - a).days))


# --- working days ------------------------------------------------------------------------------------------


@FAST
@given(day=days)
@example(day=date(2026, 4, 3))
@example(day=date(2022, 9, 19))
def test_working_day_is_a_weekday_that_is_not_a_bank_holiday(day):
    assert cal.is_working_day(day) == expected_working(day)
    assert cal.is_bank_holiday(day) == (day in BANK_HOLIDAYS)
    if day.weekday() >= 5:
        assert not cal.is_working_day(day)


def test_england_and_wales_share_the_list_used():
    # formats.md §5: Wales has the same list, so one calendar serves both.
    assert {d for d in WALES if d.year >= FIRST.year} == {d for d in BANK_HOLIDAYS if FIRST <= d <= LAST}


@FAST
@given(day=days, n=st.integers(min_value=1, max_value=25))
@example(day=date(2026, 4, 2), n=1)
@example(day=date(2026, 12, 24), n=1)
@example(day=date(2027, 12, 24), n=2)
def test_nth_working_day_after(day, n):
    out = cal.nth_working_day_after(day, n)
    assert out > day
    assert expected_working(out)
    assert working_days_between(day, out) == n - 1


@pytest.mark.parametrize("n", [0, -1])
def test_nth_working_day_after_needs_n_at_least_1(n):
    with pytest.raises(ValueError):
        cal.nth_working_day_after(date(2026, 3, 2), n)


@FAST
@given(day=days)
@example(day=date(2026, 4, 6))
@example(day=date(2027, 12, 28))
def test_last_working_day_on_or_before(day):
    out = cal.last_working_day_on_or_before(day)
    assert out <= day
    assert expected_working(out)
    assert not any(expected_working(out + timedelta(days=i)) for i in range(1, (day - out).days + 1))
    if expected_working(day):
        assert out == day


@FAST
@given(day=days)
@example(day=date(2026, 4, 3))
@example(day=date(2026, 12, 25))
def test_first_working_day_on_or_after(day):
    out = cal.first_working_day_on_or_after(day)
    assert out >= day
    assert expected_working(out)
    assert not any(expected_working(day + timedelta(days=i)) for i in range((out - day).days))
    if expected_working(day):
        assert out == day


# --- London 09:00 and end of day ---------------------------------------------------------------------------


def _assert_london_wall_clock(instant: datetime, day: date, wall: time) -> None:
    assert instant.tzinfo is not None and instant.utcoffset() == timedelta(0), "stored instants are UTC"
    local = instant.astimezone(LONDON)
    assert local.date() == day
    assert local.time() == wall
    # and it is the real instant of that wall-clock time, not one an hour off
    assert instant == datetime.combine(day, wall, tzinfo=LONDON)
    assert cal.london_date(instant) == day


@FAST
@given(day=days)
@example(day=DST_DAYS[0])
@example(day=DST_DAYS[1])
def test_nine_am_and_end_of_day_are_london_wall_clock(day):
    _assert_london_wall_clock(cal.nine_am(day), day, time(9, 0, 0))
    _assert_london_wall_clock(cal.end_of_day(day), day, time(23, 59, 59))


@pytest.mark.parametrize(
    ("day", "nine_utc", "eod_utc"),
    [
        (date(2026, 3, 28), "2026-03-28T09:00:00+00:00", "2026-03-28T23:59:59+00:00"),  # GMT
        (
            date(2026, 3, 29),
            "2026-03-29T08:00:00+00:00",
            "2026-03-29T22:59:59+00:00",
        ),  # clocks go forward at 01:00
        (date(2026, 7, 1), "2026-07-01T08:00:00+00:00", "2026-07-01T22:59:59+00:00"),  # BST
        (
            date(2026, 10, 25),
            "2026-10-25T09:00:00+00:00",
            "2026-10-25T23:59:59+00:00",
        ),  # clocks go back at 02:00
        (date(2026, 10, 24), "2026-10-24T08:00:00+00:00", "2026-10-24T22:59:59+00:00"),  # last BST day
    ],
)
def test_nine_am_and_end_of_day_on_dst_change_days(day, nine_utc, eod_utc):
    assert cal.nine_am(day) == datetime.fromisoformat(nine_utc)
    assert cal.end_of_day(day) == datetime.fromisoformat(eod_utc)


def test_london_date_of_instants_near_midnight():
    assert cal.london_date(datetime(2026, 7, 1, 23, 30, tzinfo=UTC)) == date(2026, 7, 2)  # 00:30 BST
    assert cal.london_date(datetime(2026, 1, 1, 23, 30, tzinfo=UTC)) == date(2026, 1, 1)  # 23:30 GMT


offsets = st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(hours=-5), timedelta(hours=5, minutes=30),
                            timedelta(hours=-9, minutes=-45)])


@settings(max_examples=2000, deadline=None)
@given(instant=st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2100, 12, 31)), offset=offsets)
@example(instant=datetime(2026, 3, 29, 0, 59, 59, 999999), offset=timedelta(0))  # the hour before BST
@example(instant=datetime(2026, 3, 29, 1, 0), offset=timedelta(0))
@example(instant=datetime(2026, 10, 24, 22, 59, 59), offset=timedelta(0))  # 23:59:59 BST
@example(instant=datetime(2026, 10, 24, 23, 0), offset=timedelta(0))  # midnight BST
@example(instant=datetime(2026, 10, 25, 0, 59, 59), offset=timedelta(0))  # 01:59:59 BST, the last BST second
def test_london_date_is_the_date_on_a_london_clock(instant, offset):
    # london_date remembers the London date per UTC hour; zoneinfo is the independent reading.
    aware = instant.replace(tzinfo=timezone(offset))
    assert cal.london_date(aware) == aware.astimezone(LONDON).date()
    assert cal.london_date(aware) == aware.astimezone(LONDON).date()  # and again, from what it remembered


# --- add_months --------------------------------------------------------------------------------------------


def _last_day(year: int, month: int) -> int:
    nxt = date(year + month // 12, month % 12 + 1, 1)
    return (nxt - timedelta(days=1)).day


@FAST
@given(day=days, months=st.integers(min_value=-240, max_value=240))
@example(day=date(2026, 1, 31), months=1)
@example(day=date(2024, 2, 29), months=12)
def test_add_months_keeps_the_day_or_clamps_to_month_end(day, months):
    out = cal.add_months(day, months)
    assert out.year * 12 + out.month == day.year * 12 + day.month + months
    assert out.day == min(day.day, _last_day(out.year, out.month))


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2024, 2, 29), 48, date(2028, 2, 29)),
        (date(2026, 3, 31), 1, date(2026, 4, 30)),
        (date(2026, 3, 31), -1, date(2026, 2, 28)),
        (date(2026, 8, 31), 6, date(2027, 2, 28)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
        (date(2026, 1, 15), -1, date(2025, 12, 15)),
        (date(2025, 6, 1), 24, date(2027, 6, 1)),
        (date(2026, 5, 17), 0, date(2026, 5, 17)),
    ],
)
def test_add_months_examples(day, months, expected):
    assert cal.add_months(day, months) == expected


# --- add_working_hours -------------------------------------------------------------------------------------


def working_time_between(a: datetime, b: datetime) -> timedelta:
    """Time in [a, b] that falls between 09:00 and 17:00 London on working days."""
    total = timedelta(0)
    day = cal.london_date(a)
    while day <= cal.london_date(b):
        if expected_working(day):
            open_at = datetime.combine(day, time(9), tzinfo=LONDON)
            close_at = datetime.combine(day, time(17), tzinfo=LONDON)
            lo, hi = max(a, open_at), min(b, close_at)
            if hi > lo:
                total += hi - lo
        day += timedelta(days=1)
    return total


instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 1), timezones=st.just(UTC)
)


@settings(max_examples=150, deadline=None)
@given(start=instants, minutes=st.integers(min_value=0, max_value=60 * 40))
@example(start=datetime(2026, 3, 27, 16, 0, tzinfo=UTC), minutes=120)  # Friday before the clocks go forward
@example(start=datetime(2026, 10, 23, 15, 0, tzinfo=UTC), minutes=240)  # Friday before the clocks go back
@example(start=datetime(2026, 4, 2, 15, 0, tzinfo=UTC), minutes=240)  # Maundy Thursday
@example(start=datetime(2026, 3, 2, 16, 0, tzinfo=UTC), minutes=60)  # lands exactly at 17:00
def test_add_working_hours_lands_inside_working_hours(start, minutes):
    out = cal.add_working_hours(start, minutes / 60)
    assert out.utcoffset() == timedelta(0)
    assert out >= start
    local = out.astimezone(LONDON)
    assert expected_working(local.date()), local
    assert time(9) <= local.time() <= time(17), local
    # exactly that much working time has passed (to the microsecond rounding of a float number of hours)
    assert abs(working_time_between(start, out) - timedelta(minutes=minutes)) <= timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("start", "hours", "expected"),
    [
        # Friday 16:00 GMT + 2h -> Monday 10:00 BST (clocks went forward on the Sunday)
        ("2026-03-27T16:00:00+00:00", 2, "2026-03-30T10:00:00+01:00"),
        # Maundy Thursday 16:00 BST + 4h -> Tuesday after Easter Monday, 12:00 BST
        ("2026-04-02T16:00:00+01:00", 4, "2026-04-07T12:00:00+01:00"),
        # Christmas Eve 2026 (Thu) 15:00 GMT + 4h -> Tue 29th 11:00 (25th and substitute 28th are holidays)
        ("2026-12-24T15:00:00+00:00", 4, "2026-12-29T11:00:00+00:00"),
        # Saturday night -> counted from Monday 09:00
        ("2026-03-07T23:00:00+00:00", 1, "2026-03-09T10:00:00+00:00"),
        # before opening on a working day
        ("2026-03-02T07:30:00+00:00", 0.5, "2026-03-02T09:30:00+00:00"),
        # zero hours inside working time is the start itself
        ("2026-03-02T16:00:00+00:00", 0, "2026-03-02T16:00:00+00:00"),
    ],
)
def test_add_working_hours_examples(start, hours, expected):
    assert cal.add_working_hours(datetime.fromisoformat(start), hours) == datetime.fromisoformat(expected)


# --- the bank holidays that catch mistakes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "why"),
    [
        (date(2026, 4, 3), "Good Friday 2026"),
        (date(2026, 4, 6), "Easter Monday 2026"),
        (date(2026, 12, 25), "Christmas Day 2026 (Friday)"),
        (date(2026, 12, 28), "Boxing Day 2026 substitute (26th is a Saturday)"),
        (date(2027, 12, 27), "Christmas Day 2027 substitute (25th is a Saturday)"),
        (date(2027, 12, 28), "Boxing Day 2027 substitute (26th is a Sunday)"),
        (date(2027, 5, 3), "early May bank holiday 2027"),
        (date(2027, 5, 31), "spring bank holiday 2027"),
        (date(2022, 6, 2), "spring bank holiday 2022, moved for the jubilee"),
        (date(2022, 6, 3), "Platinum Jubilee 2022 (one-off)"),
        (date(2022, 9, 19), "state funeral of Queen Elizabeth II (one-off)"),
        (date(2023, 5, 8), "coronation of King Charles III (one-off)"),
        (date(2020, 5, 8), "early May bank holiday 2020, moved to VE day"),
    ],
)
def test_bank_holidays_are_not_working_days(day, why):
    assert day.weekday() < 5, why
    assert cal.is_bank_holiday(day), why
    assert not cal.is_working_day(day), why


@pytest.mark.parametrize(
    "day",
    [
        date(2026, 4, 2),
        date(2026, 4, 7),
        date(2026, 12, 24),
        date(2026, 12, 29),
        date(2027, 12, 29),
        date(2022, 5, 30),
        date(2020, 5, 4),
        date(2027, 5, 4),
    ],
)
def test_neighbouring_days_are_working_days(day):
    assert cal.is_working_day(day)


@pytest.mark.parametrize(
    ("day", "n", "expected"),
    [
        (date(2026, 4, 2), 1, date(2026, 4, 7)),  # over Easter
        (date(2026, 12, 24), 1, date(2026, 12, 29)),  # over Christmas 2026 with the substitute day
        (date(2027, 12, 24), 1, date(2027, 12, 29)),  # over Christmas 2027, two substitute days
        (date(2027, 4, 30), 1, date(2027, 5, 4)),  # over early May 2027
        (date(2027, 5, 28), 1, date(2027, 6, 1)),  # over spring bank holiday 2027
        (date(2022, 9, 16), 1, date(2022, 9, 20)),  # over the state funeral
        (date(2023, 5, 5), 1, date(2023, 5, 9)),  # over the coronation
        (date(2026, 3, 2), 5, date(2026, 3, 9)),
        (date(2026, 3, 27), 10, date(2026, 4, 14)),  # 10 working days spanning Easter
    ],
)
def test_nth_working_day_after_examples(day, n, expected):
    assert cal.nth_working_day_after(day, n) == expected


@pytest.mark.parametrize(
    ("day", "on_or_before", "on_or_after"),
    [
        (date(2026, 4, 6), date(2026, 4, 2), date(2026, 4, 7)),
        (date(2026, 12, 26), date(2026, 12, 24), date(2026, 12, 29)),
        (date(2027, 12, 27), date(2027, 12, 24), date(2027, 12, 29)),
        (date(2023, 5, 8), date(2023, 5, 5), date(2023, 5, 9)),
        (date(2026, 3, 4), date(2026, 3, 4), date(2026, 3, 4)),
    ],
)
def test_first_and_last_working_day_examples(day, on_or_before, on_or_after):
    assert cal.last_working_day_on_or_before(day) == on_or_before
    assert cal.first_working_day_on_or_after(day) == on_or_after
