"""The rule book (obligations.md) as data plus small pure functions.

`RuleBook.evaluate(event, received_at)` returns candidate obligations for one canonical event; it does no
I/O and reads the time only from its arguments. Identity, replacement and cancellation are decided by the
ledger (`services.rules.ledger`), which keeps the state between events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from shared import calendar as cal
from shared.directory import Directory
from shared.events import EventBase
from shared.obligations import Obligation, PersonRef, obligation_id
from shared.register import Register, RegisterEntry, age_on
from shared.trusted import trusted_constructor


@dataclass(frozen=True)
class RuleSpec:
    id: str
    title: str
    roles: tuple[str, ...]
    source: str
    timed: bool = False


# The rule book: id -> who is told and where the duty comes from (obligations.md tables A, B, C).
RULES: dict[str, RuleSpec] = {r.id: r for r in (
    RuleSpec("A1", "received into custody", ("ppo", "om"), "001 §7.5"),
    RuleSpec("A2", "failure-to-appear warrant issued", ("ppo", "warrants"), "001 §6.4, §2.3, §4.5"),
    RuleSpec("A3", "warrant issued", ("ppo", "warrants"), "001 §4.5, §6.4"),
    RuleSpec("A4", "release in 28 days", ("ppo", "om"), "001 §7.5, §2.3", timed=True),
    RuleSpec("A5", "eligible for home detention curfew", ("ppo",), "001 §7.5, §4.5"),
    RuleSpec("A6", "possible HDC release date set", ("ppo", "om"), "001 §7.5"),
    RuleSpec("A7", "released from custody", ("ppo",), "001 §7.5"),
    RuleSpec("A8", "release on temporary licence", ("ppo",), "001 §7.5"),
    RuleSpec("B1", "bail decision", ("ppo", "om"), "001 §6.3, §2.3"),
    RuleSpec("B2", "court outcome", ("ppo", "om"), "001 §6.3, §4.5"),
    RuleSpec("B3", "sentenced", ("om",), "001 §7.3, §7.4, §8.3"),
    RuleSpec("B4", "community order starts or released into the community", ("om",), "001 §7.3"),
    RuleSpec("B5", "breach reported", ("ppo", "om"), "001 §6.4, §7.6"),
    RuleSpec("B6", "moved between prisons", ("ppo", "om"), "001 §7.4, §7.5"),
    RuleSpec("B8", "youth pre-sentence report needed", ("yot",), "001 §8.2"),
    RuleSpec("C1", "six months without arrest or intelligence", ("coordinator",), "004 criterion 1", timed=True),
    RuleSpec("C2", "two years on the register", ("coordinator",), "004 criterion 5", timed=True),
    RuleSpec("C3", "custodial sentence over two years", ("coordinator",), "004 criterion 3"),
    RuleSpec("C4", "release of a person de-selected for long custody", ("coordinator",), "004 criterion 3",
             timed=True),
    RuleSpec("C5", "moved into this area", ("coordinator",), "004 criterion 2"),
    RuleSpec("C6", "list review", ("coordinator",), "002 §28, §36; 004 §4.2, §5.1", timed=True),
    RuleSpec("C7", "offence flagged high risk of harm", ("coordinator",), "004 criterion 6"),
)}

# Timed rules with one pending obligation per person at a time: a newer fact replaces the older.
SLOT_RULES = frozenset({"A4", "C1", "C2", "C4"})

CUSTODY_RECEPTIONS = frozenset({"new", "remand", "recall", "transfer_in"})  # A1
COMMUNITY_RELEASES = frozenset({"released", "hdc", "licence", "end_of_sentence", "bail"})  # A7


class RuleTimings(BaseModel):
    """Timings are configuration; the defaults are the national values of the rule book."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    immediate_minutes: int = Field(default=15, ge=1)
    release_notice_days: int = Field(default=28, ge=1)  # A4
    inactivity_months: int = Field(default=6, ge=1)  # C1
    register_review_months: int = Field(default=24, ge=1)  # C2
    long_custody_notice_months: int = Field(default=3, ge=1)  # C4
    long_custody_days: int = Field(default=730, ge=1)  # C3
    youth_age: int = Field(default=18, ge=1)
    list_review_every_months: int = Field(default=1, ge=1, le=12)  # C6: 1 monthly, 3 quarterly


class Candidate(NamedTuple):  # a tuple: made for every event about a PPO; a frozen dataclass is slow to build
    """What a rule asks for; the ledger turns it into an Obligation (or finds it already exists)."""

    rule: str
    fact: str
    send_at: datetime
    notify_by: datetime
    action_due: datetime | None = None
    grade: str | None = None
    extra_facts: dict[str, Any] | None = None
    recipients_bcu: str | None = None  # overrides the home BCU (C5: the receiving BCU)
    roles: tuple[str, ...] | None = None


# Obligations are built here from a validated event, the register and the rule book's own timings: every value
# already has its field's type, so they are constructed without a second validation (see trusted_constructor).
_obligation = trusted_constructor(Obligation)
_person_ref = trusted_constructor(PersonRef)
_PERSON_REFS_KEPT = 1 << 16
_Addressed = tuple[tuple[str, ...], dict[str, str], tuple[str, ...]]  # addresses, address -> role, roles missing
_PERSON_REF_FIELDS = ("person_id", "pnc", "cro", "noms", "crn", "given_name", "family_name", "date_of_birth")


def _iso(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


class RuleBook:
    def __init__(self, register: Register, directory: Directory, timings: RuleTimings | None = None) -> None:
        self.register = register
        self.directory = directory
        self.timings = timings or RuleTimings()
        self._immediate = timedelta(minutes=self.timings.immediate_minutes)
        # Deadlines depend only on a day (and the timings): worked out once per day, not once per event.
        self._instants: dict[tuple[str, date, int], datetime] = {}
        self._addressed: dict[tuple[str | None, tuple[str, ...]], _Addressed] = {}
        self._addressed_by: Directory | None = None
        self._person_refs: dict[tuple[Any, ...], PersonRef] = {}  # one frozen PersonRef per person as known
        self._by_type: dict[str, Callable[[EventBase, datetime], Iterable[Candidate]]] = {
            "prison.reception": self._reception,
            "prison.release": self._release,
            "prison.transfer": self._transfer,
            "prison.release_date_set": self._release_date_set,
            "prison.hdc_eligible": self._hdc_eligible,
            "prison.rotl_scheduled": self._rotl_scheduled,
            "court.bail_decision": self._bail_decision,
            "court.outcome": self._court_outcome,
            "court.sentence": self._sentence,
            "warrant.issued": self._warrant,
            "breach.reported": self._breach,
            "offence.high_harm": self._high_harm,
        }

    # --- timing helpers (obligations.md conventions) ---------------------------------------------

    def immediate(self, rule: str, fact: str, r: datetime, **kw: Any) -> Candidate:
        return Candidate(rule, fact, r, r + self._immediate, **kw)

    def timed(self, rule: str, fact: str, send_at: datetime, r: datetime, **kw: Any) -> Candidate:
        send = max(send_at, r)  # a timer already past at R is sent at R
        return Candidate(rule, fact, send, send + self._immediate, **kw)

    def _instant(self, what: str, day: date, n: int = 0) -> datetime:
        """Memoised day arithmetic (pure: a function of the day, `n` and the timings)."""
        key = (what, day, n)
        found = self._instants.get(key)
        if found is None:
            found = self._instants[key] = self._work_out(what, day, n)
        return found

    def _work_out(self, what: str, day: date, n: int) -> datetime:
        t = self.timings
        if what == "A4":  # 09:00 on the last working day that is at least 28 days before the release date
            return cal.nine_am(cal.last_working_day_on_or_before(day - timedelta(days=t.release_notice_days)))
        if what == "C1":  # 09:00 on the first working day on or after anchor + 6 months (x n)
            return cal.nine_am(cal.first_working_day_on_or_after(cal.add_months(day, t.inactivity_months * n)))
        if what == "C2":  # 09:00 on the first working day on or after selected_on + 2 years
            return cal.nine_am(cal.first_working_day_on_or_after(cal.add_months(day, t.register_review_months)))
        if what == "C4":  # 09:00 on the last working day on or before the release date minus 3 months
            return cal.nine_am(cal.last_working_day_on_or_before(
                cal.add_months(day, -t.long_custody_notice_months)))
        if what == "end of nth working day":
            return cal.end_of_day(cal.nth_working_day_after(day, n))
        if what == "end of day":
            return cal.end_of_day(day + timedelta(days=n))
        raise ValueError(what)

    def release_notice_at(self, release_date: date) -> datetime:
        """A4: 09:00 on the last working day that is at least 28 days before the release date."""
        return self._instant("A4", release_date)

    def inactivity_review_at(self, anchor: date, occurrence: int = 1) -> datetime:
        """C1: 09:00 on the first working day on or after anchor + 6 months (x occurrence)."""
        return self._instant("C1", anchor, occurrence)

    def register_review_at(self, selected_on: date) -> datetime:
        """C2: 09:00 on the first working day on or after selected_on + 2 years."""
        return self._instant("C2", selected_on)

    def long_custody_notice_at(self, release_date: date) -> datetime:
        """C4: 09:00 on the last working day on or before the release date minus 3 months."""
        return self._instant("C4", release_date)

    def end_of_nth_working_day_after(self, day: date, n: int) -> datetime:
        """23:59:59 London on the n-th working day after `day`."""
        return self._instant("end of nth working day", day, n)

    def end_of_day(self, day: date, plus_days: int = 0) -> datetime:
        """23:59:59 London on `day` + `plus_days` calendar days."""
        return self._instant("end of day", day, plus_days)

    def list_review_at(self, after: datetime) -> tuple[datetime, str]:
        """C6: the next 09:00 on the first working day of a review month, strictly after `after`."""
        day = cal.london_date(after).replace(day=1)
        every = self.timings.list_review_every_months
        while True:
            if (day.month - 1) % every == 0:
                at = cal.nine_am(cal.first_working_day_on_or_after(day))
                if at > after:
                    return at, day.strftime("%Y-%m")
            day = cal.add_months(day, 1)

    # --- recipients ----------------------------------------------------------------------------------

    def om_role(self, entry: RegisterEntry | None, day: date, dob: date | None = None) -> str:
        """`om` is the youth offending team when the person is under 18 on the London date (001 §7.5, §8)."""
        born = (entry.date_of_birth if entry else None) or dob
        if born is not None and age_on(born, day) < self.timings.youth_age:
            return "yot"
        return "probation"

    def is_youth(self, entry: RegisterEntry | None, day: date, dob: date | None = None) -> bool:
        return self.om_role(entry, day, dob) == "yot"

    def recipients(self, bcu: str | None, roles: Iterable[str], entry: RegisterEntry | None, day: date,
                   dob: date | None = None) -> tuple[list[str], dict[str, str], list[str]]:
        addresses, by_address, missing = self._addressed_to(bcu, tuple(roles), self.om_role(entry, day, dob))
        return list(addresses), dict(by_address), list(missing)  # the caller's to keep

    def _addressed_to(self, bcu: str | None, roles: tuple[str, ...], om: str) -> _Addressed:
        """(addresses, address -> role, roles without a contact), `om` being the role it stands for here;
        remembered per (BCU, roles): not to be changed."""
        if "om" in roles:
            roles = tuple(om if role == "om" else role for role in roles)
        # A new directory (a holder's reload replaces what it holds, not itself): forget the old addresses
        in_force = getattr(self.directory, "current", self.directory)
        if self._addressed_by is not in_force:
            self._addressed, self._addressed_by = {}, in_force
        key = (bcu, roles)
        found = self._addressed.get(key)
        if found is None:
            addresses, by_address, missing = self._address(bcu, roles)
            found = self._addressed[key] = (tuple(addresses), by_address, tuple(missing))
        return found

    def _address(self, bcu: str | None, roles: tuple[str, ...]) -> tuple[list[str], dict[str, str], list[str]]:
        addresses: list[str] = []
        by_address: dict[str, str] = {}
        missing: list[str] = []
        for real in roles:
            found = self.directory.contacts(bcu, real)
            if not found:
                missing.append(real)
            for a in found:
                if a not in by_address:
                    addresses.append(a)
                    by_address[a] = real
        return addresses, by_address, missing

    # --- evaluation ----------------------------------------------------------------------------------

    def candidates(self, event: EventBase, received_at: datetime) -> list[Candidate]:
        handler = self._by_type.get(event.type)  # type: ignore[attr-defined]
        return list(handler(event, received_at)) if handler else []

    @staticmethod
    def identity(cand: Candidate, entry: RegisterEntry | None, bcu: str | None) -> str:
        """The obligation id `build` would give: (rule, person, fact); (rule, BCU, fact) without a person."""
        subject = entry.person_id if entry is not None else (cand.recipients_bcu or bcu or "-")
        return obligation_id(cand.rule, subject, cand.fact)

    def build(self, cand: Candidate, entry: RegisterEntry | None, event: EventBase | None,
              received_at: datetime, bcu: str | None, identity: str | None = None) -> Obligation:
        spec = RULES[cand.rule]
        day = cal.london_date(event.occurred_at if event else received_at)
        dob = event.person.date_of_birth if event else None
        target_bcu = cand.recipients_bcu or bcu
        om = self.om_role(entry, day, dob)
        addresses, by_address, missing = self._addressed_to(target_bcu, cand.roles or spec.roles, om)
        facts: dict[str, Any] = {}
        if event is not None:
            # The data models are flat: their field values are what model_dump() would give, without the cost.
            facts.update({k: _iso(v) for k, v in event.data.__dict__.items()})  # type: ignore[attr-defined]
            facts["source"] = event.source
        if cand.extra_facts:
            facts.update({k: _iso(v) for k, v in cand.extra_facts.items()})
        facts["rule_title"] = spec.title
        if missing:
            facts["missing_roles"] = list(missing)
        if entry is not None and event is not None and om == "yot":
            facts["youth"] = True
        return _obligation({
            "obligation_id": identity or self.identity(cand, entry, bcu),
            "rule": cand.rule,
            "source_paragraph": spec.source,
            "person": None if entry is None else self._person_ref(entry, event.person if event else None),
            "bcu": target_bcu,
            "recipients": list(addresses),
            "recipient_roles": dict(by_address),
            "send_at": cand.send_at,
            "notify_by": cand.notify_by,
            "action_due": cand.action_due,
            "grade": cand.grade,
            "status": "pending",
            "notified_at": None,
            "source_event_ids": [event.id] if event else [],
            "raised_at": received_at,
            "occurred_at": event.occurred_at if event else None,
            "event_type": event.type if event else None,  # type: ignore[attr-defined]
            "facts": facts,
            "replaces": None,
            "cancelled_reason": None,
            "history": [],
        })

    def _person_ref(self, entry: RegisterEntry, p: Any) -> PersonRef:
        """Who the obligation is about: the register's details, the event's where the register has none.
        One frozen PersonRef per distinct set of details, shared by that person's obligations."""
        ids = entry.identifiers
        key = (
            entry.person_id,
            ids.get("pnc") or (p.pnc if p else None),
            ids.get("cro") or (p.cro if p else None),
            ids.get("noms") or (p.noms if p else None),
            ids.get("crn") or (p.crn if p else None),
            entry.given_name or (p.given_name if p else None),
            entry.family_name or (p.family_name if p else None),
            entry.date_of_birth or (p.date_of_birth if p else None),
        )
        found = self._person_refs.get(key)
        if found is None:
            if len(self._person_refs) >= _PERSON_REFS_KEPT:
                self._person_refs.clear()
            found = self._person_refs[key] = _person_ref(dict(zip(_PERSON_REF_FIELDS, key, strict=True)))
        return found

    # --- rules, one small function per event type ----------------------------------------------------

    def _reception(self, e: Any, r: datetime) -> Iterable[Candidate]:
        # A1 (001 §7.5): "as soon as an establishment becomes aware of a PPO in its care".
        if e.data.reason in CUSTODY_RECEPTIONS:
            yield self.immediate("A1", f"{e.data.prison_id}|{cal.london_date(e.occurred_at)}", r)

    def _release(self, e: Any, r: datetime) -> Iterable[Candidate]:
        day = cal.london_date(e.occurred_at)
        if e.data.reason in COMMUNITY_RELEASES:
            # A7 (001 §7.5): "on the day the prisoner is actually released".
            yield self.immediate("A7", f"{day}", r)
            # B4 (001 §7.3): risk-of-harm assessment by the 5th working day.
            yield self.immediate("B4", f"{day}", r, action_due=self.end_of_nth_working_day_after(day, 5),
                                 extra_facts={"trigger": "release"})
        elif e.data.reason == "rotl":
            # A8 (001 §7.5): police must be told in advance; told at release it is late by construction.
            yield Candidate("A8", f"rotl|{day}", r, e.occurred_at, extra_facts={"late_by_construction": True})

    def _transfer(self, e: Any, r: datetime) -> Iterable[Candidate]:
        # B6 (001 §7.4, §7.5).
        d = e.data
        yield self.immediate("B6", f"{d.from_prison_id}|{d.to_prison_id}|{cal.london_date(e.occurred_at)}", r,
                             extra_facts={"prison_id": d.to_prison_id})

    def _release_date_set(self, e: Any, r: datetime) -> Iterable[Candidate]:
        d = e.data
        if d.release_date is None:
            return  # a withdrawal only cancels (ledger)
        # A4 (001 §7.5, §2.3 "at least 28 days in advance").
        yield self.timed("A4", f"{d.release_date}", self.release_notice_at(d.release_date), r)
        if d.kind == "hdc":
            # A6 (001 §7.5): immediate, in addition to A4's 28-day notice.
            yield self.immediate("A6", f"{d.release_date}", r)

    def _hdc_eligible(self, e: Any, r: datetime) -> Iterable[Candidate]:
        # A5 (001 §7.5, §4.5): police input to the Governor's decision by decision_due.
        d = e.data
        due = self.end_of_day(d.decision_due) if d.decision_due else None
        yield self.immediate("A5", f"{d.eligibility_date}", r, action_due=due)

    def _rotl_scheduled(self, e: Any, r: datetime) -> Iterable[Candidate]:
        # A8 (001 §7.5): notify_by = starts_at.
        d = e.data
        yield Candidate("A8", f"rotl|{cal.london_date(d.starts_at)}", r, d.starts_at)

    def _bail_decision(self, e: Any, r: datetime) -> Iterable[Candidate]:
        # B1 (001 §6.3): within 24 hours of the decision.
        d = e.data
        yield Candidate("B1", f"{d.court_code}|{cal.london_date(e.occurred_at)}|{d.decision}", r,
                        e.occurred_at + timedelta(hours=24))

    def _court_outcome(self, e: Any, r: datetime) -> Iterable[Candidate]:
        d = e.data
        day = cal.london_date(e.occurred_at)
        # B2 (001 §6.3, §4.5): by the end of the day; case tracking record within 7 days of a case ending.
        due = self.end_of_day(day, 7) if d.case_ended else None
        yield Candidate("B2", f"{d.court_code}|{day}|{d.outcome}", r, self.end_of_day(cal.london_date(r)),
                        action_due=due)
        # B8 (001 §8.2): a youth convicted needs a pre-sentence report within 10 working days.
        if d.outcome == "conviction" and self.is_youth(self._entry(e), day, e.person.date_of_birth):
            yield self.immediate("B8", f"{d.court_code}|{day}", r,
                                 action_due=self.end_of_nth_working_day_after(day, 10))

    def _sentence(self, e: Any, r: datetime) -> Iterable[Candidate]:
        d = e.data
        day = cal.london_date(e.occurred_at)
        # B3 (001 §7.3, §7.4, §8.3): sentence / training plan within 5 days.
        yield self.immediate("B3", f"{d.court_code}|{day}|{d.disposal}", r,
                             action_due=self.end_of_day(day, 5))
        if d.disposal == "community":
            # B4 (001 §7.3): risk-of-harm assessment by the 5th working day.
            yield self.immediate("B4", f"{day}", r, action_due=self.end_of_nth_working_day_after(day, 5),
                                 extra_facts={"trigger": "community_order"})
        if d.custody_days is not None and d.custody_days > self.timings.long_custody_days:
            # C3 (004 criterion 3): consider de-selection.
            yield self.immediate("C3", f"{d.court_code}|{day}", r)

    def _warrant(self, e: Any, r: datetime) -> Iterable[Candidate]:
        # A2/A3 (001 §6.4, §4.5): end of the next working day; every PPO warrant is Category A.
        d = e.data
        rule = "A2" if d.kind == "fta" else "A3"
        by = self.end_of_nth_working_day_after(cal.london_date(e.occurred_at), 1)
        yield Candidate(rule, f"{d.warrant_id}", r, by, grade="A")

    def _breach(self, e: Any, r: datetime) -> Iterable[Candidate]:
        # B5 (001 §6.4, §7.6): fast-tracked listing within 7 days.
        day = cal.london_date(e.occurred_at)
        yield self.immediate("B5", f"{e.data.order}|{day}", r, action_due=self.end_of_day(day, 7))

    def _high_harm(self, e: Any, r: datetime) -> Iterable[Candidate]:
        # C7 (004 criterion 6): refer to MAPPA.
        yield self.immediate("C7", f"{cal.london_date(e.occurred_at)}", r)

    def _entry(self, e: EventBase) -> RegisterEntry | None:
        return self.register.find(e.person.identifiers())
