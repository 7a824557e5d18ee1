"""The custody digest's content, without the renderer: its rows in order, the CSV and the template variables.

Pure. Both the renderer (`render.py`, which fills the digest template from `digest_context`) and the digest's
entry point (`digest.py`, which drives the renderer) depend on this module, so imports go one way:
digest -> render -> digest_context.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from shared.clock import LONDON
from shared.custody import CustodyRow

__all__ = [
    "CSV_COLUMNS",
    "RELEASE_KINDS",
    "SOON_DAYS",
    "URGENT_DAYS",
    "CustodyLine",
    "custody_csv",
    "custody_lines",
    "digest_context",
    "digest_filename",
]

SOON_DAYS = 28  # the A4 notice period: releases this close are highlighted
URGENT_DAYS = 7
CSV_COLUMNS = ("days_to_release", "release_date", "release_date_kind", "name", "noms", "pnc", "crn", "cro",
               "prison", "note")
_ID_ORDER = ("noms", "pnc", "crn", "cro")
RELEASE_KINDS = {  # the kinds of `prison.release_date_set`, in words
    "crd": "conditional release date (CRD)",
    "ard": "automatic release date (ARD)",
    "hdc": "home detention curfew date (HDC)",
    "confirmed": "confirmed release date",
    "parole": "parole release date",
    "other": "release date",
}
_KIND_SHORT = {"crd": "CRD", "ard": "ARD", "hdc": "HDC", "confirmed": "confirmed", "parole": "parole"}
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class CustodyLine:
    """One row of the digest, ready to show: what the templates and the CSV use."""

    row: CustodyRow
    days: int | None  # to release, from `today`; negative when the date has passed

    @property
    def days_label(self) -> str:
        if self.days is None:
            return "not known"
        if self.days < 0:
            return f"passed {-self.days} day{'' if self.days == -1 else 's'} ago"
        if self.days == 0:
            return "today"
        return f"{self.days} day{'' if self.days == 1 else 's'}"

    @property
    def urgency(self) -> str:
        """`passed`, `urgent` (7 days or fewer), `soon` (28 or fewer), `later`, or `unknown`."""
        if self.days is None:
            return "unknown"
        if self.days < 0:
            return "passed"
        if self.days <= URGENT_DAYS:
            return "urgent"
        return "soon" if self.days <= SOON_DAYS else "later"

    @property
    def release_label(self) -> str:
        d = self.row.release_date
        if d is None:
            return "not known"
        text = f"{_DAYS[d.weekday()][:3]} {d.day} {_MONTHS[d.month - 1][:3]} {d.year}"
        short = _KIND_SHORT.get(self.row.kind or "")
        return f"{text} ({short})" if short else text

    @property
    def identifiers(self) -> list[tuple[str, str]]:
        ids = self.row.identifiers
        return [(k.upper(), ids[k]) for k in _ID_ORDER if ids.get(k)]

    @property
    def note(self) -> str:
        notes = []
        if self.row.away:
            notes.append(self.row.away)
        if self.days is not None and self.days < 0:
            notes.append("date passed, no release reported")
        return "; ".join(notes)


def custody_lines(rows: Iterable[CustodyRow], today: date) -> list[CustodyLine]:
    """Sorted by days to release (soonest first, passed dates at the top), unknown dates last, then by name."""
    lines = [CustodyLine(r, r.days_to_release(today)) for r in rows]
    return sorted(lines, key=lambda x: (x.days is None, x.days if x.days is not None else 0,
                                        x.row.person_name.lower(), sorted(x.row.identifiers.items())))


_FORMULA = re.compile(r"^[=+\-@\t\r]")


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run as a formula (CSV injection): a leading ' when it could be one."""
    text = "" if value is None else str(value)
    return "'" + text if _FORMULA.match(text) else text


def custody_csv(rows: Iterable[CustodyRow], today: date) -> bytes:
    """RFC 4180 CSV (CRLF), UTF-8 with a byte-order mark so that Excel shows names correctly."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for line in custody_lines(rows, today):
        r = line.row
        text = [_cell(x) for x in (r.kind, r.person_name, *(r.identifiers.get(k) for k in _ID_ORDER), r.prison,
                                   line.note)]
        writer.writerow(["" if line.days is None else line.days,
                         r.release_date.isoformat() if r.release_date else "", *text])
    return out.getvalue().encode("utf-8-sig")


def digest_filename(bcu: str, today: date) -> str:
    safe = re.sub(r"[^A-Za-z0-9-]+", "-", bcu).strip("-") or "bcu"
    return f"custody-countdown-{safe}-{today.isoformat()}.csv"


def digest_context(facts: Mapping[str, Any], bcu: str, now: datetime) -> dict[str, Any]:
    """Template variables of the digest, from an obligation's facts (`today`, `rows`)."""
    raw_today = facts.get("today")
    today = date.fromisoformat(str(raw_today)) if raw_today else now.astimezone(LONDON).date()
    raw_rows = facts.get("rows")
    rows = [CustodyRow.from_fact(r) for r in raw_rows if isinstance(r, Mapping)] if isinstance(raw_rows, list) else []
    lines = custody_lines(rows, today)
    soon = [x for x in lines if x.days is not None and x.days <= SOON_DAYS]
    return {
        "custody_today": today,
        "custody_lines": lines,
        "custody_count": len(lines),
        "custody_soon": len(soon),
        "custody_unknown": sum(1 for x in lines if x.days is None),
        "custody_next": min((x.days for x in lines if x.days is not None and x.days >= 0), default=None),
        "custody_csv_name": digest_filename(bcu or "bcu", today),
        "custody_csv": custody_csv(rows, today),
    }
