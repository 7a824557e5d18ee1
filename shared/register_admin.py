"""Register administration: checking a change against the register before it is published, planning an
import, the quarterly record, the directory check (docs/coordinators.md).

Every change to the register is a `register.*` canonical event on `<prefix>.events` (key: the person key, as
intake's), with who made it (`source`) and why (`reason`, `authority`). The rules service is the only writer
of the compacted `<prefix>.register` topic. Changes are checked here first, against the register as the topic
has it, by applying them to a copy with the same `Register` methods the rules service uses: an identity
clash, a person not on the register, a date in the future or a BCU the directory does not know is refused with
an explanation and nothing is published. Used by the `ppo-alerts register` CLI and intake's
`POST /v1/register/...` routes.
"""
from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import calendar as cal
from shared.directory import Directory, DirectoryError, missing_contacts
from shared.errors import problems_of
from shared.events import DeselectionReason, parse_event
from shared.identifiers import IDENTIFIER_KINDS, NORMALISERS
from shared.register import (
    CSV_COLUMNS,
    OPTIONAL_COLUMNS,
    Register,
    RegisterEntry,
    RegisterError,
    parse_row,
)
from shared.settings import Settings

DESELECTION_REASONS: tuple[str, ...] = typing.get_args(DeselectionReason)
EXIT_OK, EXIT_REFUSED, EXIT_UNCONFIRMED = 0, 1, 3


# --- refusals --------------------------------------------------------------------------------------------------


class ChangeRefused(Exception):
    """A change that cannot be made; `problems` say where and why. `status` is the HTTP status it maps to."""

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []
        self.status = status

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.message, "problems": self.problems}

    def __str__(self) -> str:
        extra = [p for p in self.problems if p["problem"] not in self.message]
        if not extra:
            return self.message
        return self.message + ": " + "; ".join(f"{p['field']}: {p['problem']}" for p in extra)


class NothingToChange(ChangeRefused):
    """The register already says so: nothing is published (not an error)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=200)


IDENTITY_HINT = ("A person has one PNC, one CRO, one NOMS number and one CRN: check the identifiers against "
                 "PNC, NOMIS and nDelius; `ppo-alerts register show IDENTIFIER` shows the entry they clash with.")


def _identity_refused(exc: RegisterError) -> ChangeRefused:
    return ChangeRefused(f"identity refused: {exc}. {IDENTITY_HINT}", [{"field": "person", "problem": str(exc)}],
                         status=409)


# --- identifiers -----------------------------------------------------------------------------------------------


def normalise_ids(raw: dict[str, str | None], prefix: str = "") -> dict[str, str]:
    """Validated, normalised identifiers (check characters verified); every bad one named."""
    out: dict[str, str] = {}
    problems = []
    for kind in IDENTIFIER_KINDS:
        value = raw.get(kind)
        if value is None or not str(value).strip():
            continue
        try:
            out[kind] = NORMALISERS[kind](str(value))
        except ValueError as exc:
            problems.append({"field": f"{prefix}{kind}", "problem": str(exc)})
    if problems:
        raise ChangeRefused("invalid identifier", problems)
    return out


def parse_identifier(text: str) -> dict[str, str]:
    """`pnc:2004/0012345D` (also a register person id), or a bare PNC, CRO, NOMS number or CRN told apart by
    its shape. Ambiguous or invalid text is refused with what was tried."""
    text = text.strip()
    kind, sep, value = text.partition(":")
    if sep and kind.lower() in IDENTIFIER_KINDS:
        return normalise_ids({kind.lower(): value})
    matches: dict[str, str] = {}
    errors = []
    for kind in IDENTIFIER_KINDS:
        try:
            matches[kind] = NORMALISERS[kind](text)
        except ValueError as exc:
            errors.append(str(exc))
    if len(matches) == 1:
        return matches
    if len(matches) > 1:
        raise ChangeRefused(f"{text!r} could be a {' or a '.join(k.upper() for k in matches)}: write it as "
                            + " or ".join(f"{k}:{text}" for k in matches))
    raise ChangeRefused(f"{text!r} is not an identifier", [{"field": "identifier", "problem": e} for e in errors])


def describe(ids: dict[str, str]) -> str:
    return ", ".join(f"{k.upper()} {v}" for k, v in ids.items()) or "(no identifier)"


def _names(entry: RegisterEntry | None) -> str:
    if entry is None:
        return ""
    name = " ".join(n for n in (entry.given_name, entry.family_name) if n)
    return f" ({name})" if name else ""


# --- one change: checked against the register, applied to it, as an event -------------------------------------


@dataclass
class Change:
    action: str  # select | deselect | move | update
    person_id: str  # the register entry it is about (key of its snapshot on the register topic)
    event: dict[str, Any]  # the canonical event, validated
    summary: str  # for people
    line: int | None = None  # CSV line, for an import
    # True once a snapshot of the entry (on the register topic) shows this change, whatever else it shows
    applied: Callable[[RegisterEntry], bool] = field(default=lambda _: True, repr=False)

    @property
    def key(self) -> bytes:
        """The person key, as intake keys canonical events (best identifier first)."""
        person = self.event["person"]
        for kind in ("pnc", "noms", "crn", "cro"):
            if person.get(kind):
                return f"{kind}:{person[kind]}".encode()
        return b"-"


class Planner:
    """Turns requests into register.* events, checked against `register` and applied to it (a working copy:
    several changes in a row see each other). Nothing here does I/O."""

    def __init__(self, register: Register, *, source: str, now: datetime, known_bcus: Iterable[str] | None = None,
                 id_prefix: str = "register-cli") -> None:
        self.register = register
        self.source = source
        self.now = now.astimezone(UTC)
        self.today = cal.london_date(self.now)
        self.known_bcus = set(known_bcus) if known_bcus is not None else None
        self.id_prefix = id_prefix

    # --- helpers ---

    def _day(self, on: date | None, what: str) -> date:
        day = on or self.today
        if day > self.today:
            raise ChangeRefused(
                f"{what} {day} is in the future: a register change takes effect from today or an earlier date "
                f"(today is {self.today}); make it on the day", [{"field": what, "problem": "date in the future"}])
        return day

    def _instant(self, day: date) -> datetime:
        return self.now if day == self.today else cal.at_london(day, time(0))

    def _bcu(self, code: str, what: str) -> None:
        if self.known_bcus is not None and code not in self.known_bcus:
            known = ", ".join(sorted(self.known_bcus)) or "none"
            raise ChangeRefused(f"BCU {code!r} is not in the directory (known: {known}); add it to the directory "
                                "first, or check the code", [{"field": what, "problem": "unknown BCU"}])

    def _event(self, etype: str, person: dict[str, Any], data: dict[str, Any], day: date,
               event_id: str | None) -> dict[str, Any]:
        payload = {
            "id": event_id or f"{self.id_prefix}-{uuid.uuid4().hex}", "type": etype,
            "occurred_at": self._instant(day).isoformat(), "source": self.source,
            "person": {k: v for k, v in person.items() if v is not None},
            "data": {k: v for k, v in data.items() if v is not None},
        }
        try:
            parse_event(payload)
        except ValidationError as exc:
            raise ChangeRefused("invalid change", problems_of(exc)) from None
        return payload

    def _existing(self, ids: dict[str, str]) -> RegisterEntry:
        if not ids:
            raise ChangeRefused("no identifier given (pnc, cro, noms or crn)")
        try:
            entry = self.register.identify(ids)
        except RegisterError as exc:
            raise _identity_refused(exc) from None
        if entry is None:
            raise ChangeRefused(f"{describe(ids)} is not on the register", status=404)
        return entry

    # --- the changes ---

    def select(self, ids: dict[str, str | None], home_bcu: str, *, on: date | None = None, strand: str | None = None,
               reason: str | None = None, authority: str | None = None, given_name: str | None = None,
               family_name: str | None = None, date_of_birth: date | None = None, event_id: str | None = None,
               line: int | None = None) -> Change:
        norm = normalise_ids(ids)
        if not norm:
            raise ChangeRefused("a person needs at least one identifier: pnc, cro, noms or crn")
        day = self._day(on, "selected_on")
        self._bcu(home_bcu, "home_bcu")
        try:
            entry = self.register.identify(norm)
        except RegisterError as exc:
            raise _identity_refused(exc) from None
        if entry is not None:
            if (current := entry.period_at(day)) is not None:
                raise NothingToChange(f"{entry.person_id}{_names(entry)} is already on the register on {day} "
                                      f"(since {current.start}, BCU {current.home_bcu})") \
                    if current.home_bcu == home_bcu else ChangeRefused(
                        f"{entry.person_id}{_names(entry)} is already on the register on {day}, in BCU "
                        f"{current.home_bcu} since {current.start}: use `move` to change the BCU", status=409)
            later = sorted((p for p in entry.periods if p.start > day), key=lambda p: p.start)
            if later:
                raise ChangeRefused(f"{entry.person_id} has a later period on the register, from {later[0].start}: "
                                    f"a selection from {day} would overlap it", status=409)
        person = {**(entry.identifiers if entry else {}), **norm, "given_name": given_name,
                  "family_name": family_name, "date_of_birth": date_of_birth.isoformat() if date_of_birth else None}
        event = self._event("register.selected", person, {
            "home_bcu": home_bcu, "strand": strand, "reason": reason, "authority": authority}, day, event_id)
        try:
            applied = self.register.select(norm, day, home_bcu, strand, reason, given_name, family_name,
                                           date_of_birth)
        except RegisterError as exc:
            raise _identity_refused(exc) from None
        what = f"select {applied.person_id}{_names(applied)} into {home_bcu} from {day}"
        if strand:
            what += f" ({strand})"
        return Change("select", applied.person_id, event, what, line,
                      lambda e: any(p.start == day and p.home_bcu == home_bcu for p in e.periods))

    def deselect(self, ids: dict[str, str | None], reason: str, authority: str | None, *, on: date | None = None,
                 event_id: str | None = None, line: int | None = None) -> Change:
        if reason not in DESELECTION_REASONS:
            raise ChangeRefused(f"de-selection reason {reason!r} is not one of {', '.join(DESELECTION_REASONS)}",
                                [{"field": "reason", "problem": "unknown reason"}])
        day = self._day(on, "deselected_on")
        entry = self._existing(normalise_ids(ids))
        current = entry.period_at(day)
        if current is None:
            last = entry.last_period()
            since = f" (last period {last.start} to {last.end or 'open'})" if last else ""
            raise ChangeRefused(f"{entry.person_id}{_names(entry)} is not on the register on {day}{since}",
                                status=409)
        event = self._event("register.deselected", dict(entry.identifiers),
                            {"reason": reason, "authority": authority}, day, event_id)
        self.register.deselect(entry, day, reason, authority)
        who = f" on the authority of {authority}" if authority else ""
        return Change("deselect", entry.person_id, event,
                      f"deselect {entry.person_id}{_names(entry)} from {current.home_bcu} on {day}: {reason}{who}",
                      line, lambda e: any(p.end == day and p.start == current.start for p in e.periods))

    def move(self, ids: dict[str, str | None], to_bcu: str, *, on: date | None = None, reason: str | None = None,
             authority: str | None = None, event_id: str | None = None, line: int | None = None) -> Change:
        day = self._day(on, "moved_on")
        self._bcu(to_bcu, "to_bcu")
        entry = self._existing(normalise_ids(ids))
        current = entry.period_at(day)
        if current is None:
            raise ChangeRefused(f"{entry.person_id}{_names(entry)} is not on the register on {day}", status=409)
        if current.home_bcu == to_bcu:
            raise NothingToChange(f"{entry.person_id}{_names(entry)} is already in BCU {to_bcu} on {day}")
        event = self._event("register.moved_area", dict(entry.identifiers), {
            "from_bcu": current.home_bcu, "to_bcu": to_bcu, "reason": reason, "authority": authority}, day, event_id)
        self.register.move(entry, day, to_bcu)
        return Change("move", entry.person_id, event,
                      f"move {entry.person_id}{_names(entry)} from {current.home_bcu} to {to_bcu} on {day}",
                      line, lambda e: (p := e.period_at(day)) is not None and p.home_bcu == to_bcu)

    def update(self, ids: dict[str, str | None], add: dict[str, str | None], *, given_name: str | None = None,
               family_name: str | None = None, date_of_birth: date | None = None, reason: str | None = None,
               event_id: str | None = None, line: int | None = None) -> Change:
        entry = self._existing(normalise_ids(ids))
        new = normalise_ids(add, prefix="add.")
        try:
            self.register.identify({**entry.identifiers, **new})  # someone else's, or a second NOMS...
        except RegisterError as exc:
            raise _identity_refused(exc) from None
        added = {k: v for k, v in new.items() if entry.identifiers.get(k) != v}
        fills = {k: v for k, v in (("given_name", given_name), ("family_name", family_name),
                                   ("date_of_birth", date_of_birth)) if v is not None and getattr(entry, k) is None}
        if not added and not fills:
            raise NothingToChange(f"{entry.person_id}{_names(entry)} already has {describe(new) or 'all that'}")
        person = {**entry.identifiers, **new, **{k: (v.isoformat() if isinstance(v, date) else v)
                                                for k, v in fills.items()}}
        event = self._event("register.updated", person, {"reason": reason}, self.today, event_id)
        try:
            self.register.update({**entry.identifiers, **new}, given_name, family_name, date_of_birth)
        except RegisterError as exc:
            raise _identity_refused(exc) from None
        what = ", ".join([*(f"{k.upper()} {v}" for k, v in added.items()), *fills])
        return Change("update", entry.person_id, event, f"update {entry.person_id}{_names(entry)}: add {what}",
                      line, lambda e: all(e.identifiers.get(k) == v for k, v in added.items())
                      and all(getattr(e, k) is not None for k in fills))


# --- import: a CSV planned whole against the register ----------------------------------------------------------


@dataclass
class ImportPlan:
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0  # rows the register already says
    problems: list[dict[str, str]] = field(default_factory=list)  # {"field": "line N", "problem": ...}

    @property
    def refused(self) -> bool:
        return bool(self.problems)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.changes:
            out[c.action] = out.get(c.action, 0) + 1
        return out


def plan_import(text: str, planner: Planner, origin: str = "import") -> ImportPlan:
    """What importing this register CSV (contract §2; optional deselection_reason, deselection_authority) would
    change, row by row: new people and periods are selected (and de-selected when deselected_on is set), new
    identifiers added, open periods the file closes de-selected. Rows the register already says are unchanged;
    people the file does not mention are left alone. A row that contradicts the register (another BCU for the
    same period, a re-opened period, an identity clash) is a problem: resolve it with select/deselect/move."""
    plan = ImportPlan()
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        plan.problems.append({"field": "line 1", "problem": f"header is missing column(s) {', '.join(missing)}"})
        return plan
    unknown = [c for c in reader.fieldnames or [] if c not in (*CSV_COLUMNS, *OPTIONAL_COLUMNS)]
    if unknown:
        plan.problems.append({"field": "line 1", "problem": f"unknown column(s) {', '.join(unknown)}"})
        return plan
    for row in reader:
        line = reader.line_num
        try:
            before = len(plan.changes)
            _plan_row(row, line, planner, plan, f"{planner.id_prefix}-{digest}-{line}")
            if len(plan.changes) == before:
                plan.unchanged += 1
        except ChangeRefused as exc:
            if isinstance(exc, NothingToChange):
                plan.unchanged += 1
            else:
                plan.problems.append({"field": f"{origin} line {line}", "problem": str(exc)})
        except RegisterError as exc:
            plan.problems.append({"field": f"{origin} line {line}", "problem": str(exc)})
    return plan


def _plan_row(row: dict[str, str | None], line: int, planner: Planner, plan: ImportPlan, id_base: str) -> None:
    parsed = parse_row(row)  # RegisterError: identifiers, dates, empty BCU
    period = parsed.periods[0]
    ids: dict[str, str | None] = dict(parsed.identifiers)
    if period.end is not None and period.end_reason not in DESELECTION_REASONS:
        raise ChangeRefused(f"deselection_reason {period.end_reason!r} is not one of {', '.join(DESELECTION_REASONS)}")
    try:
        entry = planner.register.identify(parsed.identifiers)
    except RegisterError as exc:
        raise _identity_refused(exc) from None
    if entry is not None:
        new = {k: v for k, v in parsed.identifiers.items() if k not in entry.identifiers}
        fills = any(getattr(entry, k) is None and getattr(parsed, k) is not None
                    for k in ("given_name", "family_name", "date_of_birth"))
        if new or fills:
            plan.changes.append(planner.update(dict(entry.identifiers), dict(new), given_name=parsed.given_name,
                                               family_name=parsed.family_name, date_of_birth=parsed.date_of_birth,
                                               reason="register import", event_id=f"{id_base}-updated", line=line))
        same = next((p for p in entry.periods if p.start == period.start), None)
        if same is not None:
            if same.home_bcu != period.home_bcu:
                raise ChangeRefused(f"the register has {entry.person_id} in BCU {same.home_bcu} from {same.start}; "
                                    f"the file says {period.home_bcu}: use `register move` for a move", status=409)
            if period.end is None and same.end is not None:
                raise ChangeRefused(f"the register has {entry.person_id} de-selected on {same.end}; the file leaves "
                                    "the period open: to re-select, add a row with a new selected_on", status=409)
            if period.end is not None and same.end is not None and period.end != same.end:
                raise ChangeRefused(f"the register has {entry.person_id} de-selected on {same.end}; the file says "
                                    f"{period.end}", status=409)
            if period.end is not None and same.end is None:
                plan.changes.append(planner.deselect(ids, period.end_reason or "other", period.authority,
                                                     on=period.end, event_id=f"{id_base}-deselected", line=line))
            return
        clash = next((p for p in entry.periods if p.start < (period.end or date.max) and period.start <
                      (p.end or date.max)), None)
        if clash is not None:
            raise ChangeRefused(f"overlaps the register's period for {entry.person_id} from {clash.start} to "
                                f"{clash.end or 'now'} (BCU {clash.home_bcu})", status=409)
    plan.changes.append(planner.select(ids, period.home_bcu, on=period.start, strand=period.strand,
                                       reason=period.reason, given_name=parsed.given_name,
                                       family_name=parsed.family_name, date_of_birth=parsed.date_of_birth,
                                       event_id=f"{id_base}-selected", line=line))
    if period.end is not None:
        plan.changes.append(planner.deselect(ids, period.end_reason or "other", period.authority, on=period.end,
                                             event_id=f"{id_base}-deselected", line=line))


# --- reports ---------------------------------------------------------------------------------------------------

QUARTERLY_COLUMNS = ("bcu", "change", "date", "pnc", "cro", "noms", "crn", "given_name", "family_name", "strand",
                     "reason", "authority")
_CHANGE_ORDER = {"added": 0, "moved_in": 1, "moved_out": 2, "removed": 3}


def quarter_bounds(year: int, quarter: int) -> tuple[date, date]:
    """First day of the quarter and first day of the next (calendar quarters: Q1 is January to March)."""
    if quarter not in (1, 2, 3, 4):
        raise ValueError("quarter is 1, 2, 3 or 4")
    start = date(year, 3 * quarter - 2, 1)
    return start, cal.add_months(start, 3)


def quarterly_rows(register: Register, year: int, quarter: int, bcu: str | None = None) -> list[dict[str, str]]:
    """002 §37: each PPO added to or removed from each area's list in the quarter. A move between BCUs is
    `moved_out` of one and `moved_in` to the other; a removal carries its reason and authority (002 §54)."""
    start, end = quarter_bounds(year, quarter)
    rows: list[dict[str, str]] = []

    def add(entry: RegisterEntry, area: str, change: str, day: date, strand: str | None, reason: str | None,
            authority: str | None) -> None:
        if bcu is not None and area != bcu:
            return
        ids = entry.identifiers
        rows.append({"bcu": area, "change": change, "date": day.isoformat(), "pnc": ids.get("pnc", ""),
                     "cro": ids.get("cro", ""), "noms": ids.get("noms", ""), "crn": ids.get("crn", ""),
                     "given_name": entry.given_name or "", "family_name": entry.family_name or "",
                     "strand": strand or "", "reason": reason or "", "authority": authority or ""})

    for entry in register.entries():
        periods = sorted(entry.periods, key=lambda p: p.start)
        for i, p in enumerate(periods):
            before = periods[i - 1] if i > 0 else None
            after = periods[i + 1] if i + 1 < len(periods) else None
            if start <= p.start < end:
                if before is not None and before.end == p.start and before.end_reason == "moved_area":
                    add(entry, p.home_bcu, "moved_in", p.start, p.strand, f"moved from {before.home_bcu}", None)
                else:
                    add(entry, p.home_bcu, "added", p.start, p.strand, p.reason, None)
            if p.end is not None and start <= p.end < end:
                if p.end_reason == "moved_area" and after is not None and after.start == p.end:
                    add(entry, p.home_bcu, "moved_out", p.end, p.strand, f"moved to {after.home_bcu}", p.authority)
                else:
                    add(entry, p.home_bcu, "removed", p.end, p.strand, p.end_reason, p.authority)
    rows.sort(key=lambda r: (r["bcu"], r["date"], _CHANGE_ORDER[r["change"]], r["family_name"], r["pnc"]))
    return rows


LIST_COLUMNS = ("person_id", "given_name", "family_name", "date_of_birth", "bcu", "strand", "selected_on",
                "reason", "deselected_on", "deselection_reason")


def list_rows(register: Register, day: date, bcu: str | None = None, everyone: bool = False) -> list[dict[str, str]]:
    """The people on the register on `day` (in `bcu`); with `everyone`, every period ever, current or not."""
    rows = []
    for e in register.entries():
        periods = e.periods if everyone else [p for p in [e.period_at(day)] if p is not None]
        for p in periods:
            if bcu is not None and p.home_bcu != bcu:
                continue
            rows.append({"person_id": e.person_id, "given_name": e.given_name or "",
                         "family_name": e.family_name or "",
                         "date_of_birth": e.date_of_birth.isoformat() if e.date_of_birth else "",
                         "bcu": p.home_bcu, "strand": p.strand or "", "selected_on": p.start.isoformat(),
                         "reason": p.reason or "", "deselected_on": p.end.isoformat() if p.end else "",
                         "deselection_reason": p.end_reason or "" if p.end else ""})
    rows.sort(key=lambda r: (r["bcu"], r["family_name"], r["given_name"], r["person_id"], r["selected_on"]))
    return rows


def show_text(entry: RegisterEntry, day: date) -> str:
    lines = [f"{entry.person_id}{_names(entry)}"]
    lines += [f"  {k.upper():5} {v}" for k, v in entry.identifiers.items()]
    if entry.date_of_birth:
        lines.append(f"  born  {entry.date_of_birth}")
    current = entry.period_at(day)
    lines.append(f"  on the register today ({day}): " + (f"yes, BCU {current.home_bcu}" if current else "no"))
    for p in sorted(entry.periods, key=lambda p: p.start):
        line = f"  {p.start} .. {p.end or 'open'}  BCU {p.home_bcu}"
        if p.strand:
            line += f"  strand {p.strand}"
        if p.reason:
            line += f"  selected: {p.reason}"
        if p.end:
            line += f"  removed: {p.end_reason or '-'}" + (f" (authority: {p.authority})" if p.authority else "")
        lines.append(line)
    return "\n".join(lines)


def csv_text(columns: Iterable[str], rows: Iterable[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def people_by_bcu(register: Register, day: date) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in register.entries():
        if (p := e.period_at(day)) is not None:
            counts[p.home_bcu] = counts.get(p.home_bcu, 0) + 1
    return counts


# --- the directory ---------------------------------------------------------------------------------------------


@dataclass
class DirectoryCheck:
    directory: Directory | None
    error: str | None  # the file is refused (it would not load; a running service keeps the old one)
    gaps: list[tuple[str, str]]  # (bcu, role): a BCU with PPOs and no address for a role the rules need
    ppos: dict[str, int]  # people on the register now, per BCU

    @property
    def ok(self) -> bool:
        return self.error is None

    def report(self) -> list[str]:
        if self.error is not None:
            return [f"REFUSED: {self.error}", "a running service keeps the directory it has"]
        assert self.directory is not None
        lines = [f"OK: {len(self.directory.bcu_codes)} BCU(s), recipient domains "
                 f"{', '.join(self.directory.recipient_domains)}"]
        for bcu in sorted({b for b, _ in self.gaps}):
            roles = [r for b, r in self.gaps if b == bcu]
            where = "is not in the directory" if self.directory.bcu(bcu) is None else \
                f"has no {', '.join(roles)} contact"
            lines.append(f"WARNING: BCU {bcu} has {self.ppos.get(bcu, 0)} PPO(s) and {where}: "
                         "obligations for those roles will fail and be escalated")
        return lines


def check_directory(load: Callable[[], Directory], register: Register | None, day: date) -> DirectoryCheck:
    """Would this directory be accepted, and does every BCU with PPOs have each role the rules need?"""
    ppos = people_by_bcu(register, day) if register is not None else {}
    try:
        directory = load()
    except DirectoryError as exc:
        return DirectoryCheck(None, str(exc), [], ppos)
    return DirectoryCheck(directory, None, missing_contacts(directory, ppos), ppos)


# --- Kafka: read the register, publish changes, wait for the rules service ---------------------------------------


async def read_register(settings: Settings, warn: Callable[[str], None] | None = None) -> Register:
    """The register as the compacted topic has it (every snapshot the rules service published)."""
    from shared.kafka import read_to_end
    from shared.topics import Topics

    register = Register()
    bad = 0
    for _, value in await read_to_end(settings, Topics(settings.topic_prefix).register):
        if value:
            try:
                register.put(RegisterEntry.from_dict(json.loads(value)))
            except (ValueError, KeyError, TypeError, RegisterError):
                bad += 1
    if bad and warn is not None:
        warn(f"{bad} unreadable record(s) on the register topic were skipped")
    return register


async def publish_changes(settings: Settings, changes: list[Change], received_at: datetime) -> None:
    """Every change's event on the events topic, in order (one producer, idempotent, acks=all)."""
    from aiokafka import AIOKafkaProducer

    from shared.kafka import RECEIVED_AT_HEADER, client_kwargs
    from shared.topics import Topics

    topic = Topics(settings.topic_prefix).events
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, **client_kwargs(settings))
    await producer.start()
    try:
        headers = [(RECEIVED_AT_HEADER, received_at.isoformat().encode())]
        pending = [await producer.send(topic, json.dumps(c.event).encode(), key=c.key, headers=headers)
                   for c in changes]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


class RegisterWatch:
    """Positioned at the register topic's end before publishing; then waits for the rules service's snapshots."""

    def __init__(self, settings: Settings) -> None:
        from aiokafka import AIOKafkaConsumer

        from shared.kafka import client_kwargs
        from shared.topics import Topics

        self.topic = Topics(settings.topic_prefix).register
        self.consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))

    async def __aenter__(self) -> RegisterWatch:
        from aiokafka import TopicPartition

        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(self.topic)
        if not partitions:
            await self.consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh in aiokafka
            partitions = self.consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        for tp, offset in (await self.consumer.end_offsets(tps)).items():
            self.consumer.seek(tp, offset)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()

    async def wait(self, changes: list[Change], timeout: float) -> set[str]:
        """Person ids whose snapshot did not (yet) show every change to them when `timeout` ran out. A change
        made at the same time by someone else to the same person may show too: each change is checked alone."""
        waiting: dict[str, list[Callable[[RegisterEntry], bool]]] = {}
        for c in changes:
            waiting.setdefault(c.person_id, []).append(c.applied)
        deadline = asyncio.get_running_loop().time() + timeout
        while waiting:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            batch = await self.consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for records in batch.values():
                for rec in records:
                    pid = rec.key.decode() if rec.key else None
                    if pid in waiting and rec.value:
                        try:
                            snapshot = RegisterEntry.from_dict(json.loads(rec.value))
                        except (ValueError, KeyError, TypeError):
                            continue
                        if all(check(snapshot) for check in waiting[pid]):
                            del waiting[pid]
        return set(waiting)


def known_bcus(settings: Settings) -> tuple[set[str] | None, str | None]:
    """The BCUs of the directory file in settings, or (None, why) when it cannot be read: BCUs are not checked."""
    try:
        return set(Directory.load(settings.directory_file).bcu_codes), None
    except DirectoryError as exc:
        return None, f"BCU codes not checked: {exc}"


# --- HTTP (intake's POST /v1/register/...) ---------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PersonIn(_In):
    pnc: str | None = None
    cro: str | None = None
    noms: str | None = None
    crn: str | None = None
    given_name: str | None = Field(default=None, max_length=100)
    family_name: str | None = Field(default=None, max_length=100)
    date_of_birth: date | None = None

    def ids(self) -> dict[str, str | None]:
        return {"pnc": self.pnc, "cro": self.cro, "noms": self.noms, "crn": self.crn}


class SelectIn(_In):
    person: PersonIn
    home_bcu: str = Field(min_length=1, max_length=40)
    strand: str | None = None
    reason: str | None = None
    authority: str | None = None
    on: date | None = None


class DeselectIn(_In):
    person: PersonIn
    reason: DeselectionReason
    authority: str = Field(min_length=1, max_length=200)
    on: date | None = None


class MoveIn(_In):
    person: PersonIn
    to_bcu: str = Field(min_length=1, max_length=40)
    reason: str | None = None
    authority: str | None = None
    on: date | None = None


class UpdateIn(_In):
    person: PersonIn  # identifies the entry (at least one identifier the register knows)
    add: PersonIn  # identifiers to add; a name or date of birth the register lacks
    reason: str | None = None


REQUESTS: dict[str, type[_In]] = {"select": SelectIn, "deselect": DeselectIn, "move": MoveIn, "update": UpdateIn}


def plan_request(planner: Planner, action: str, body: Any) -> Change:
    """One JSON request (HTTP) as a checked change; ChangeRefused says what is wrong."""
    model = REQUESTS.get(action)
    if model is None:
        raise ChangeRefused(f"unknown register action {action!r}; expected one of "
                            f"{', '.join([*REQUESTS, 'import'])}", status=404)
    try:
        req = model.model_validate(body)
    except ValidationError as exc:
        raise ChangeRefused("invalid request", problems_of(exc)) from None
    if isinstance(req, SelectIn):
        p = req.person
        return planner.select(p.ids(), req.home_bcu, on=req.on, strand=req.strand, reason=req.reason,
                              authority=req.authority, given_name=p.given_name, family_name=p.family_name,
                              date_of_birth=p.date_of_birth)
    if isinstance(req, DeselectIn):
        return planner.deselect(req.person.ids(), req.reason, req.authority, on=req.on)
    if isinstance(req, MoveIn):
        return planner.move(req.person.ids(), req.to_bcu, on=req.on, reason=req.reason, authority=req.authority)
    assert isinstance(req, UpdateIn)
    a = req.add
    return planner.update(req.person.ids(), a.ids(), given_name=a.given_name, family_name=a.family_name,
                          date_of_birth=a.date_of_birth, reason=req.reason)


def change_json(c: Change) -> dict[str, Any]:
    return {"action": c.action, "person_id": c.person_id, "event_id": c.event["id"], "summary": c.summary,
            **({"line": c.line} if c.line is not None else {})}


async def http_register(settings: Settings, action: str, body: bytes, source: str, now: datetime,
                        publish: Callable[[list[Change]], Awaitable[None]],
                        dry_run: bool = False) -> tuple[int, dict[str, Any]]:
    """A coordinator's POST /v1/register/{action}: (status, JSON body). `body` is JSON, or CSV for import."""
    register = await read_register(settings)
    bcus, _ = known_bcus(settings)
    planner = Planner(register, source=source, now=now, known_bcus=bcus, id_prefix="register-http")
    if action == "import":
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            return 400, {"error": "body is not UTF-8 CSV", "problems": []}
        plan = plan_import(text, planner, origin="body")
        if plan.refused:
            return 422, {"error": "import refused; nothing was changed", "problems": plan.problems[:200]}
        if not dry_run and plan.changes:
            await publish(plan.changes)
        return (200 if dry_run else 202), {"dry_run": dry_run, "counts": plan.counts(), "unchanged": plan.unchanged,
                                           "changes": [change_json(c) for c in plan.changes]}
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return 400, {"error": "body is not JSON", "problems": [{"field": "(body)", "problem": str(exc)[:200]}]}
    try:
        change = plan_request(planner, action, payload)
    except NothingToChange as exc:
        return 200, {"accepted": [], "unchanged": True, "message": exc.message}
    except ChangeRefused as exc:
        return exc.status, exc.as_dict()
    if not dry_run:
        await publish([change])
    return (200 if dry_run else 202), {"accepted": [] if dry_run else [change.event["id"]], "dry_run": dry_run,
                                       **change_json(change)}
