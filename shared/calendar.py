"""Working days in England and Wales, reckoned in Europe/London (obligations.md conventions).

Days, working days, 09:00 and end of day (23:59:59) are London wall-clock; the results are UTC instants,
so a change to or from British Summer Time never moves a deadline.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

import holidays

from shared.clock import LONDON

NINE_AM = time(9, 0)
END_OF_DAY = time(23, 59, 59)


@lru_cache(maxsize=256)
def _bank_holidays(year: int) -> frozenset[date]:
    # England and Wales share the list (formats.md §5); includes substitute days and one-off holidays.
    return frozenset(holidays.country_holidays("GB", subdiv="ENG", years=year).keys())


def is_bank_holiday(day: date) -> bool:
    return day in _bank_holidays(day.year)


def is_working_day(day: date) -> bool:
    return day.weekday() < 5 and not is_bank_holiday(day)


def london_date(instant: datetime) -> date:
    """The London calendar date of an instant. Since 1970 London's offset from UTC has always been a whole
    number of hours, changing on the hour, so the date is a function of the UTC hour: remembered per hour for
    instants given in UTC, as nearly all are here (every event asks, and a zone conversion costs more)."""
    if instant.utcoffset() == _NO_OFFSET:
        hour = instant.toordinal() * 24 + instant.hour
        day = _LONDON_DAY_OF_HOUR.get(hour)
        if day is None:
            day = instant.astimezone(LONDON).date()
            if hour >= _FIRST_HOUR_KEPT:
                if len(_LONDON_DAY_OF_HOUR) >= _LONDON_HOURS_KEPT:
                    _LONDON_DAY_OF_HOUR.clear()
                _LONDON_DAY_OF_HOUR[hour] = day
        return day
    return instant.astimezone(LONDON).date()


_NO_OFFSET = timedelta(0)
_LONDON_DAY_OF_HOUR: dict[int, date] = {}  # UTC hour (days since 0001-01-01 x 24 + hour) -> London date
_FIRST_HOUR_KEPT = date(1972, 1, 1).toordinal() * 24
_LONDON_HOURS_KEPT = 24 * 366 * 20


def at_london(day: date, clock_time: time) -> datetime:
    """The UTC instant of a London wall-clock time on a London day."""
    return datetime.combine(day, clock_time, tzinfo=LONDON).astimezone(UTC)


def nine_am(day: date) -> datetime:
    return at_london(day, NINE_AM)


def end_of_day(day: date) -> datetime:
    return at_london(day, END_OF_DAY)


def first_working_day_on_or_after(day: date) -> date:
    while not is_working_day(day):
        day += timedelta(days=1)
    return day


def last_working_day_on_or_before(day: date) -> date:
    while not is_working_day(day):
        day -= timedelta(days=1)
    return day


def nth_working_day_after(day: date, n: int) -> date:
    """The n-th working day strictly after `day` (n >= 1)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    while n:
        day += timedelta(days=1)
        if is_working_day(day):
            n -= 1
    return day


def add_months(day: date, months: int) -> date:
    """Calendar months; the 31st of a shorter month falls back to its last day (29 Feb -> 28 Feb)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    for candidate in (day.day, 30, 29, 28):
        try:
            return date(year, month, min(day.day, candidate))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def add_working_hours(start: datetime, hours: float, day_start: time = NINE_AM,
                      day_end: time = time(17, 0)) -> datetime:
    """`hours` of working time after `start`, counting only London working days between day_start and day_end."""
    remaining = timedelta(hours=hours)
    current = start.astimezone(LONDON)
    while True:
        day = current.date()
        open_at = datetime.combine(day, day_start, tzinfo=LONDON)
        close_at = datetime.combine(day, day_end, tzinfo=LONDON)
        if is_working_day(day) and current < close_at:
            begin = max(current, open_at)
            available = close_at - begin
            if remaining <= available:
                return (begin + remaining).astimezone(UTC)
            remaining -= available
        current = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=LONDON)
