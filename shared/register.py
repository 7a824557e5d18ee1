"""The PPO register: who is a PPO, in which BCU, from when to when (effective-dated).

A person is matched by any of PNC, CRO, NOMS or CRN. Membership is by London date: a person is on the
register from `selected_on` (inclusive) until `deselected_on` (exclusive: de-selection takes effect that day).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from shared.identifiers import IDENTIFIER_KINDS, NORMALISERS

CSV_COLUMNS = (
    "pnc", "cro", "noms", "crn", "given_name", "family_name", "date_of_birth",
    "home_bcu", "strand", "selected_on", "reason", "deselected_on",
)

# Added to the contract's columns (optional on import) so an export and re-import keep why and on whose
# authority someone was de-selected: C4 depends on the reason `long_custody`.
OPTIONAL_COLUMNS = ("deselection_reason", "deselection_authority")


class RegisterError(Exception):
    """A register file or change that cannot be applied; says which line and why."""


@dataclass(frozen=True, slots=True)  # slots: read for every event about someone on the register
class Period:
    start: date
    end: date | None
    home_bcu: str
    strand: str | None = None
    reason: str | None = None
    end_reason: str | None = None
    authority: str | None = None

    def covers(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day < self.end)


@dataclass(slots=True)
class RegisterEntry:
    person_id: str
    identifiers: dict[str, str]
    given_name: str | None = None
    family_name: str | None = None
    date_of_birth: date | None = None
    periods: list[Period] = field(default_factory=list)

    def period_at(self, day: date) -> Period | None:
        for p in self.periods:  # `covers`, inlined: every event about someone on the register asks this
            if p.start <= day and (p.end is None or day < p.end):
                return p
        return None

    def on_register(self, day: date) -> bool:
        return self.period_at(day) is not None

    def open_period(self) -> Period | None:
        return next((p for p in reversed(self.periods) if p.end is None), None)

    def last_period(self) -> Period | None:
        return max(self.periods, key=lambda p: p.start) if self.periods else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "identifiers": dict(self.identifiers),
            "given_name": self.given_name,
            "family_name": self.family_name,
            "date_of_birth": self.date_of_birth.isoformat() if self.date_of_birth else None,
            "periods": [
                {
                    "start": p.start.isoformat(), "end": p.end.isoformat() if p.end else None,
                    "home_bcu": p.home_bcu, "strand": p.strand, "reason": p.reason,
                    "end_reason": p.end_reason, "authority": p.authority,
                }
                for p in self.periods
            ],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RegisterEntry:
        return cls(
            person_id=raw["person_id"],
            identifiers=dict(raw["identifiers"]),
            given_name=raw.get("given_name"),
            family_name=raw.get("family_name"),
            date_of_birth=date.fromisoformat(raw["date_of_birth"]) if raw.get("date_of_birth") else None,
            periods=[
                Period(
                    start=date.fromisoformat(p["start"]),
                    end=date.fromisoformat(p["end"]) if p.get("end") else None,
                    home_bcu=p["home_bcu"], strand=p.get("strand"), reason=p.get("reason"),
                    end_reason=p.get("end_reason"), authority=p.get("authority"),
                )
                for p in raw.get("periods", [])
            ],
        )


def person_id_for(identifiers: dict[str, str]) -> str:
    for kind in ("pnc", "noms", "crn", "cro"):
        if identifiers.get(kind):
            return f"{kind}:{identifiers[kind]}"
    raise RegisterError("a register entry needs at least one identifier")


class Register:
    def __init__(self) -> None:
        self._entries: dict[str, RegisterEntry] = {}
        # kind -> identifier -> entry: one dict per kind, so the look-up every event makes builds no key
        self._by_kind: dict[str, dict[str, RegisterEntry]] = {k: {} for k in IDENTIFIER_KINDS}
        self._indexes = tuple(self._by_kind[k] for k in ("pnc", "cro", "noms", "crn"))  # find_person's order

    def _holder(self, kind: str, value: str) -> str | None:
        """The person_id that has this identifier, if anyone does."""
        entry = self._by_kind.get(kind, {}).get(value)
        return entry.person_id if entry is not None else None

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[RegisterEntry]:
        return list(self._entries.values())

    def get(self, person_id: str) -> RegisterEntry | None:
        return self._entries.get(person_id)

    def find(self, identifiers: dict[str, str]) -> RegisterEntry | None:
        """The entry matching any one of the identifiers (already normalised)."""
        for kind, value in identifiers.items():
            if value:
                entry = self._by_kind.get(kind, {}).get(value)
                if entry is not None:
                    return entry
        return None

    def find_person(self, person: Any) -> RegisterEntry | None:
        """`find` for an event's person (identifiers as attributes): the lookup every event makes, unrolled."""
        by_pnc, by_cro, by_noms, by_crn = self._indexes
        return ((person.pnc and by_pnc.get(person.pnc)) or (person.cro and by_cro.get(person.cro))
                or (person.noms and by_noms.get(person.noms)) or (person.crn and by_crn.get(person.crn)) or None)

    def check_identifiers_free(self, identifiers: dict[str, str], person_id: str) -> None:
        """Refuse identifiers that already belong to someone else (same PNC, different NOMS...)."""
        for kind, value in identifiers.items():
            holder = self._holder(kind, value)
            if holder is not None and holder != person_id:
                raise RegisterError(
                    f"{kind.upper()} {value} already belongs to register entry {holder}; "
                    f"cannot also give it to {person_id}"
                )

    def identify(self, identifiers: dict[str, str]) -> RegisterEntry | None:
        """The one entry these identifiers describe, or None for someone not on the register.

        Refused (RegisterError, saying why) when they point at two different entries, or when they give an
        identifier of a kind the entry already has with another value (same PNC, different NOMS...)."""
        found = {pid for kind, value in identifiers.items() if value and (pid := self._holder(kind, value))}
        if len(found) > 1:
            held: dict[str, list[str]] = {}
            for k, v in identifiers.items():
                if v and (holder := self._holder(k, v)) is not None:
                    held.setdefault(holder, []).append(f"{k.upper()} {v}")
            raise RegisterError("; ".join(f"{', '.join(ids)} already belong{'s' if len(ids) == 1 else ''} to "
                                          f"register entry {pid}"
                                          for pid, ids in sorted(held.items()))
                                + ": one person cannot be two register entries")
        if not found:
            return None
        entry = self._entries[found.pop()]
        for kind, value in identifiers.items():
            have = entry.identifiers.get(kind)
            if value and have and have != value:
                known = next((f"{k.upper()} {v}" for k, v in identifiers.items() if entry.identifiers.get(k) == v),
                             "an identifier")
                raise RegisterError(
                    f"{known} is register entry {entry.person_id}, whose {kind.upper()} is {have}, not {value}")
        return entry

    def update(self, identifiers: dict[str, str], given_name: str | None = None, family_name: str | None = None,
               date_of_birth: date | None = None) -> tuple[RegisterEntry | None, bool]:
        """Add identifiers (a NOMS on first reception, a CRN later) to the entry they describe, and fill in a
        missing name or date of birth (never overwrites). Returns the entry (None: not on the register) and
        whether anything changed. Checked before changed (see `identify`)."""
        entry = self.identify(identifiers)
        if entry is None:
            return None, False
        merged = {**entry.identifiers, **identifiers}
        changed = merged != entry.identifiers or any(
            new is not None and old is None for old, new in (
                (entry.given_name, given_name), (entry.family_name, family_name),
                (entry.date_of_birth, date_of_birth)))
        if not changed:
            return entry, False
        self.check_identifiers_free(merged, entry.person_id)
        entry.identifiers = merged
        entry.given_name = entry.given_name or given_name
        entry.family_name = entry.family_name or family_name
        entry.date_of_birth = entry.date_of_birth or date_of_birth
        self.put(entry)
        return entry, True

    def put(self, entry: RegisterEntry) -> None:
        """Insert or replace an entry (e.g. a snapshot read from the register topic). Checked before changed."""
        self.check_identifiers_free(entry.identifiers, entry.person_id)
        by_kind = self._by_kind
        if entry.person_id in self._entries:  # the identifiers it had may have changed: drop them all first
            pid = entry.person_id
            for index in by_kind.values():
                for value in [v for v, e in index.items() if e.person_id == pid]:
                    del index[value]
        for kind, value in entry.identifiers.items():
            by_kind[kind][value] = entry
        self._entries[entry.person_id] = entry

    # --- changes (register.* events), effective from a London date ---------------------------------

    def select(self, identifiers: dict[str, str], day: date, home_bcu: str, strand: str | None = None,
               reason: str | None = None, given_name: str | None = None, family_name: str | None = None,
               date_of_birth: date | None = None) -> RegisterEntry:
        entry = self.identify(identifiers)
        if entry is None:
            entry = RegisterEntry(person_id_for(identifiers), dict(identifiers), given_name, family_name,
                                  date_of_birth)
        else:
            merged = {**identifiers, **entry.identifiers}
            self.check_identifiers_free(merged, entry.person_id)
            entry.identifiers = merged
            entry.given_name = entry.given_name or given_name
            entry.family_name = entry.family_name or family_name
            entry.date_of_birth = entry.date_of_birth or date_of_birth
        if entry.period_at(day) is None:
            entry.periods.append(Period(day, None, home_bcu, strand, reason))
            entry.periods.sort(key=lambda p: p.start)
        self.put(entry)
        return entry

    def deselect(self, entry: RegisterEntry, day: date, reason: str, authority: str | None = None) -> bool:
        current = entry.period_at(day) or entry.open_period()
        if current is None or (current.end is not None and current.end <= day):
            return False
        entry.periods[entry.periods.index(current)] = replace(
            current, end=max(day, current.start), end_reason=reason, authority=authority
        )
        self.put(entry)
        return True

    def move(self, entry: RegisterEntry, day: date, to_bcu: str) -> bool:
        current = entry.period_at(day)
        if current is None or current.home_bcu == to_bcu:
            return False
        idx = entry.periods.index(current)
        if current.start == day:
            entry.periods[idx] = replace(current, home_bcu=to_bcu)
        else:
            entry.periods[idx] = replace(current, end=day, end_reason="moved_area", authority=None)
            entry.periods.insert(idx + 1, replace(current, start=day, home_bcu=to_bcu))
        self.put(entry)
        return True

    # --- CSV (contract §2) ---------------------------------------------------------------------------

    @classmethod
    def from_csv_text(cls, text: str, origin: str = "register") -> Register:
        register = cls()
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise RegisterError(f"{origin}: header is missing column(s) {', '.join(missing)}")
        problems: list[str] = []
        for row in reader:
            line_no = reader.line_num
            try:
                register._add_row(row)
            except (RegisterError, ValueError) as exc:
                problems.append(f"{origin} line {line_no}: {exc}")
        if problems:
            more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
            raise RegisterError("; ".join(problems[:20]) + more)
        return register

    @classmethod
    def load(cls, path: str | Path) -> Register:
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise RegisterError(f"cannot read register {path}: {exc.strerror}") from None
        return cls.from_csv_text(text, str(path))

    def _add_row(self, row: dict[str, str | None]) -> None:
        parsed = parse_row(row)
        period = parsed.periods[0]
        entry = self.identify(parsed.identifiers)
        if entry is None:
            entry = parsed
        else:
            if any(_overlap(p, period) for p in entry.periods):
                raise RegisterError("overlaps an earlier row for the same person")
            entry.identifiers = {**entry.identifiers, **parsed.identifiers}
            entry.periods.append(period)
            entry.periods.sort(key=lambda p: p.start)
        self.put(entry)

    def to_csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow((*CSV_COLUMNS, *OPTIONAL_COLUMNS))
        for e in self._entries.values():
            for p in e.periods:
                writer.writerow([
                    e.identifiers.get("pnc", ""), e.identifiers.get("cro", ""), e.identifiers.get("noms", ""),
                    e.identifiers.get("crn", ""), e.given_name or "", e.family_name or "",
                    e.date_of_birth.isoformat() if e.date_of_birth else "", p.home_bcu, p.strand or "",
                    p.start.isoformat(), p.reason or "", p.end.isoformat() if p.end else "",
                    p.end_reason or "" if p.end else "", p.authority or "",
                ])
        return out.getvalue()


def parse_row(row: dict[str, str | None]) -> RegisterEntry:
    """One CSV row (contract §2, plus OPTIONAL_COLUMNS) as an entry with one period; RegisterError says why not."""
    def cell(name: str) -> str | None:
        v = (row.get(name) or "").strip()
        return v or None

    identifiers: dict[str, str] = {}
    for kind in IDENTIFIER_KINDS:
        if (value := cell(kind)) is not None:
            try:
                identifiers[kind] = NORMALISERS[kind](value)
            except ValueError as exc:
                raise RegisterError(f"{kind}: {exc}") from None
    if not identifiers:
        raise RegisterError("no identifier (pnc, cro, noms or crn)")
    home_bcu = cell("home_bcu")
    if not home_bcu:
        raise RegisterError("home_bcu is empty")
    selected = _date(cell("selected_on"), "selected_on", required=True)
    assert selected is not None
    deselected = _date(cell("deselected_on"), "deselected_on")
    if deselected is not None and deselected < selected:
        raise RegisterError(f"deselected_on {deselected} is before selected_on {selected}")
    dob = _date(cell("date_of_birth"), "date_of_birth")
    end_reason = cell("deselection_reason") or ("other" if deselected else None)
    period = Period(selected, deselected, home_bcu, cell("strand"), cell("reason"), end_reason,
                    cell("deselection_authority"))
    return RegisterEntry(person_id_for(identifiers), identifiers, cell("given_name"), cell("family_name"), dob,
                         [period])


def _overlap(a: Period, b: Period) -> bool:
    return (a.end is None or b.start < a.end) and (b.end is None or a.start < b.end)


def _date(value: str | None, name: str, required: bool = False) -> date | None:
    if value is None:
        if required:
            raise RegisterError(f"{name} is empty")
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise RegisterError(f"{name} {value!r} is not a date (YYYY-MM-DD)") from None


def age_on(date_of_birth: date, day: date) -> int:
    """Whole years; someone born on 29 February turns a year older on 1 March in common years."""
    years = day.year - date_of_birth.year
    if (day.month, day.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years
