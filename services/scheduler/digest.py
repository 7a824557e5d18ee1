"""The weekly custody digest (rule D2) as the scheduler fires it: when, and whose PPOs. Pure: no I/O, no clock.

The custody state itself is `shared.custody.CustodyBook`, which the scheduler keeps current from the canonical
events topic (service.py); the register says who is a PPO of which BCU on the digest's date.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta

from shared import calendar as cal
from shared.register import Register

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday")

People = dict[str, tuple[str, Mapping[str, str]]]  # CustodyBook key -> (name, identifiers), as rows_for takes


def digest_at(after: datetime, weekday: str = "monday") -> datetime:
    """The next digest strictly after `after`: 09:00 London on `weekday`, or on the next working day when that
    day is a bank holiday (Easter Monday: Tuesday)."""
    wanted = WEEKDAYS.index(weekday.lower())
    day = cal.london_date(after)
    day -= timedelta(days=(day.weekday() - wanted) % 7)  # this week's, which may have moved to a later day
    while True:
        at = cal.nine_am(cal.first_working_day_on_or_after(day))
        if at > after:
            return at
        day += timedelta(days=7)


def display_name(given_name: str | None, family_name: str | None) -> str:
    return " ".join(x for x in (given_name, (family_name or "").upper()) if x)


def ppos_by_bcu(register: Register, day: date) -> dict[str, People]:
    """The PPOs of each BCU on `day` (London), keyed by every identifier the custody book may key them by
    (`noms:G1234HJ`, `pnc:...`, ...): the book keys a person by the first identifier its events carry."""
    out: dict[str, People] = {}
    for entry in register.entries():
        period = entry.period_at(day)
        if period is None:
            continue
        ids = {k: v for k, v in entry.identifiers.items() if v}
        person = (display_name(entry.given_name, entry.family_name), ids)
        people = out.setdefault(period.home_bcu, {})
        for name, value in ids.items():
            people[f"{name}:{value}"] = person
    return out
