"""Instants and dates an agency could really mean, judged against the time a payload was received (pure).

A typo'd year is not harmless: `occurred_at` decides which `release_date_set` is the newest, so one dated decades
ahead would win over every later correct update and the real release would get no 28-day notice; a year-1 or
year-9999 instant overflowed later in the rules service, with no field named. Intake refuses them first, naming
the field. The past is bounded loosely (agencies backfill), the future tightly (clocks drift by seconds, not days).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from shared.events import EventBase

EARLIEST_BIRTH = date(1900, 1, 1)


@dataclass(frozen=True, slots=True)
class InstantWindow:
    max_past: timedelta = timedelta(days=3650)  # occurred_at at most this long before receipt
    max_future: timedelta = timedelta(hours=1)  # and at most this long after it
    date_years: int = 100  # dates in an event's data within this many years of receipt, either way


DEFAULT_WINDOW = InstantWindow()


def implausible(event: EventBase, received_at: datetime,
                window: InstantWindow = DEFAULT_WINDOW) -> list[dict[str, str]]:
    """Problems (field and why, never the value) with the event's instants and dates; empty when all are plausible."""
    problems: list[dict[str, str]] = []
    try:
        if event.occurred_at < received_at - window.max_past:
            problems.append({"field": "occurred_at",
                             "problem": f"more than {window.max_past.days} days before it was received"})
        elif event.occurred_at > received_at + window.max_future:
            problems.append({"field": "occurred_at",
                             "problem": f"more than {_span(window.max_future)} after it was received"})
    except OverflowError:  # an offset that moves the instant outside the calendar (year 1, year 9999)
        problems.append({"field": "occurred_at", "problem": "outside the calendar once its offset applied"})
    today = received_at.date()
    birth = event.person.date_of_birth
    if birth is not None and not EARLIEST_BIRTH <= birth <= today:
        problems.append({"field": "person.date_of_birth",
                         "problem": f"must be between {EARLIEST_BIRTH.isoformat()} and the day it was received"})
    earliest, latest = date(max(1, today.year - window.date_years), 1, 1), date(
        min(9999, today.year + window.date_years), 12, 31)
    data = event.data  # type: ignore[attr-defined]
    for name, value in (getattr(data, "__dict__", None) or {}).items():
        if isinstance(value, date):
            day = value.date() if isinstance(value, datetime) else value
            if not earliest <= day <= latest:
                problems.append({"field": f"data.{name}",
                                 "problem": f"more than {window.date_years} years from the day it was received"})
    return problems


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 3600} hours" if seconds % 3600 == 0 and seconds >= 3600 else f"{seconds} seconds"
