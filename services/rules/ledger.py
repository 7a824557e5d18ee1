"""The ledger: obligation identity, replacement and cancellation, between events. Pure: no I/O, no clock.

The rules service materialises it from the obligations topic on start-up and feeds it live events, and what
other rules instances publish (`learn`, `learn_register_entry`); `simulate` feeds it lines of a file. Both get
the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from services.rules.rulebook import RULES, SLOT_RULES, Candidate, RuleBook
from shared import calendar as cal
from shared.calendar import london_date
from shared.events import EVENT_TYPES, EventBase
from shared.obligations import RAISED_AGAIN, Obligation, attempts, history_entry, obligation_id
from shared.register import Period, RegisterEntry, RegisterError


@dataclass(slots=True)
class Decision:
    raised: list[Obligation] = field(default_factory=list)  # new (or revived) obligations to publish
    cancelled: list[Obligation] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # obligation ids already known: nothing to do
    graded_warrants: list[dict[str, Any]] = field(default_factory=list)  # A3: for police systems
    register_changes: list[RegisterEntry] = field(default_factory=list)
    ignored: str | None = None  # why the event raised nothing, in a bounded vocabulary

    def extend(self, other: Decision) -> None:
        self.raised += other.raised
        self.cancelled += other.cancelled
        self.duplicates += other.duplicates
        self.graded_warrants += other.graded_warrants
        self.register_changes += other.register_changes


# Most events are about someone not on the register, or no longer on it: one shared, empty decision for each
# (returned by `on_event`, whose callers read decisions and never change them).
_NOT_ON_REGISTER = Decision(ignored="not-on-register")
_NOT_ON_REGISTER_AT_EVENT_TIME = Decision(ignored="not-on-register-at-event-time")
_REGISTER_EVENTS = frozenset(t for t in EVENT_TYPES if t.startswith("register."))


def _reported_anew_after_failure(existing: Obligation | None, event: EventBase | None) -> bool:
    """A failed obligation's fact in an event it has not seen (a replay of one it has is a duplicate)."""
    return (existing is not None and existing.status == "failed" and event is not None
            and event.id not in existing.source_event_ids)


def _note(o: Obligation, at: datetime, what: str) -> None:
    o.history.append(history_entry(at, what))


def membership_start(entry: RegisterEntry, period: Period) -> date:
    """`selected_on` of the membership `period` belongs to: a move of area continues a membership (the
    register splits the period at the move), so the six months of C1 and the two years of C2 run on."""
    start = period.start
    for p in reversed(entry.periods):
        if p.start < start and p.end == start and p.end_reason == "moved_area":
            start = p.start
    return start


def membership_end(entry: RegisterEntry, period: Period) -> date | None:
    """`deselected_on` of the membership `period` belongs to (None: still on the register): a move of area
    continues the membership, so its end is the end of the last period the moves lead to."""
    current = period
    while current.end is not None and current.end_reason == "moved_area":
        following = next((p for p in entry.periods if p.start == current.end), None)
        if following is None:
            break
        current = following
    return current.end


def next_membership(entry: RegisterEntry, day: date) -> Period | None:
    """The first period starting on or after `day`: a (re-)selection the register file already records."""
    return next((p for p in entry.periods if p.start >= day), None)


def _of_membership(o: Obligation, start: date, end: date) -> bool:
    """Whether a C1 or C2 timer is about the membership from `start` to `end` (by its anchor or selected_on)."""
    fact = o.facts.get("anchor") or o.facts.get("selected_on")
    return fact is not None and start.isoformat() <= str(fact) < end.isoformat()


class Ledger:
    def __init__(self, rulebook: RuleBook) -> None:
        self.rulebook = rulebook
        self.register = rulebook.register
        self.obligations: dict[str, Obligation] = {}
        self._slots: dict[tuple[str, str], str] = {}  # (rule, person_id) -> current obligation id
        self._slot_t: dict[tuple[str, str], datetime] = {}  # when the fact behind the slot occurred
        self._activity: dict[str, date] = {}  # person_id -> London date of the last arrest / intelligence
        self._release: dict[str, tuple[date, datetime]] = {}  # person_id -> last release date and its T

    # --- state from the obligations topic -------------------------------------------------------------

    def load(self, o: Obligation) -> None:
        """Take an obligation as published (restart, or another service's update)."""
        self.obligations[o.obligation_id] = o
        if o.rule in SLOT_RULES and o.person is not None:
            key = (o.rule, o.person.person_id)
            current = self._slots.get(key)
            if current is None or current == o.obligation_id or o.status != "cancelled":
                if o.status != "cancelled" or current is None:
                    self._slots[key] = o.obligation_id
                    if o.occurred_at is not None:
                        self._slot_t[key] = o.occurred_at
            if o.rule == "C1" and o.facts.get("anchor"):
                anchor = date.fromisoformat(o.facts["anchor"])
                pid = o.person.person_id
                if anchor > self._activity.get(pid, date.min):
                    self._activity[pid] = anchor

    def learn_failure(self, o: Obligation) -> bool:
        """Another service recorded that this attempt failed (every recipient refused for good): remember it, so
        that a new report of the fact tries again. A failure of an earlier attempt, read late, changes nothing."""
        known = self.obligations.get(o.obligation_id)
        if known is None or o.status != "failed" or known.status != "pending" or \
                attempts(o.history) < attempts(known.history):
            return False
        known.status = "failed"
        known.history = sorted({(h.at, h.what): h for h in [*known.history, *o.history]}.values(),
                               key=lambda h: h.at)
        return True

    def learn(self, o: Obligation) -> bool:
        """Another rules instance published this state (it had the person's partition before a rebalance, or an
        event keyed before the selection reached the resolver): take it, unless this instance holds a later state
        of the same obligation. History only grows (raised, cancelled, revived, sent...): a shorter one is older."""
        known = self.obligations.get(o.obligation_id)
        if known is not None and len(o.history) <= len(known.history):
            return False
        self.load(o)
        return True

    def learn_register_entry(self, entry: RegisterEntry) -> None:
        """Another rules instance changed this register entry: its snapshot is the entry now (RegisterError
        when its identifiers are someone else's here: then this instance keeps what it has)."""
        self.register.put(entry)

    def get(self, obligation_id: str) -> Obligation | None:
        return self.obligations.get(obligation_id)

    def pending(self) -> list[Obligation]:
        return [o for o in self.obligations.values() if o.status == "pending"]

    # --- events ----------------------------------------------------------------------------------------

    def on_event(self, event: EventBase, received_at: datetime) -> Decision:
        etype: str = event.type  # type: ignore[attr-defined]
        if etype in _REGISTER_EVENTS:
            return self._register_event(event, received_at)
        entry = self.register.find_person(event.person)
        if entry is None:
            return _NOT_ON_REGISTER
        day = london_date(event.occurred_at)
        period = entry.period_at(day)
        if period is None:
            if etype == "prison.release_date_set":
                return self._long_custody_release(entry, event, received_at)
            return _NOT_ON_REGISTER_AT_EVENT_TIME
        decision = Decision()
        if etype in ("police.arrest", "police.intelligence"):
            decision.extend(self._activity_seen(entry, day, received_at))
        if etype == "prison.release_date_set":
            superseded, d = self._release_date_slot(entry, event, received_at)
            decision.extend(d)
            if superseded:
                decision.ignored = "superseded-by-newer-release-date"
                return decision
        for cand in self.rulebook.candidates(event, received_at):
            self._take(cand, entry, event, received_at, period.home_bcu, decision)
        if etype == "warrant.issued":
            data = event.data  # type: ignore[attr-defined]
            decision.graded_warrants.append({
                "warrant_id": data.warrant_id, "person_id": entry.person_id, "grade": "A",
                "grade_given": data.grade_given, "court_code": data.court_code, "kind": data.kind,
                "source_event_id": event.id, "graded_at": received_at.isoformat(),
            })
        if not decision.raised and not decision.duplicates and not decision.cancelled:
            decision.ignored = decision.ignored or "no-rule-applies"
        return decision

    def _take(self, cand: Candidate, entry: RegisterEntry | None, event: EventBase | None, r: datetime,
              bcu: str | None, decision: Decision) -> Obligation | None:
        oid = self.rulebook.identity(cand, entry, bcu)
        existing = self.obligations.get(oid)
        retry = _reported_anew_after_failure(existing, event)
        if existing is not None and existing.status != "cancelled" and not retry:  # known: not built again
            decision.duplicates.append(oid)
            if entry is not None and cand.rule in SLOT_RULES:
                self._slots[(cand.rule, entry.person_id)] = oid
            return None
        o = self.rulebook.build(cand, entry, event, r, bcu, oid)
        if existing is not None and retry:  # a failed send must not make the fact disappear: try again
            o.history = [*existing.history]
            o.source_event_ids = [*existing.source_event_ids, *o.source_event_ids]
            _note(o, r, RAISED_AGAIN)
        elif existing is not None:  # the same fact again after it was cancelled (e.g. date moved back)
            o.history = [*existing.history]
            _note(o, r, "revived: the fact it is about is current again")
        else:
            _note(o, r, "raised")
        if not o.recipients:
            o.status = "failed"
            _note(o, r, f"no contact for role(s) {', '.join(o.facts.get('missing_roles', []))} in BCU {o.bcu}")
        self.obligations[o.obligation_id] = o
        if entry is not None and o.rule in SLOT_RULES:
            key = (o.rule, entry.person_id)
            self._slots[key] = o.obligation_id
            if event is not None:
                self._slot_t[key] = event.occurred_at
        decision.raised.append(o)
        return o

    def _cancel_slot(self, rule: str, person_id: str, r: datetime, reason: str,
                     keep: str | None = None) -> list[Obligation]:
        oid = self._slots.get((rule, person_id))
        if oid is None or oid == keep:
            return []
        o = self.obligations.get(oid)
        if o is None or o.status != "pending":
            return []
        o.status = "cancelled"
        o.cancelled_reason = reason
        _note(o, r, f"cancelled: {reason}")
        return [o]

    def _release_date_slot(self, entry: RegisterEntry, event: Any, r: datetime) -> tuple[bool, Decision]:
        """A4: one pending notice per person; a newer date replaces it, an older report does not."""
        decision = Decision()
        key = ("A4", entry.person_id)
        last_t = self._slot_t.get(key)
        if last_t is not None and event.occurred_at < last_t:
            return True, decision
        self._slot_t[key] = event.occurred_at
        new_date = event.data.release_date
        self._release[entry.person_id] = (new_date, event.occurred_at) if new_date else (date.min, event.occurred_at)
        keep = obligation_id("A4", entry.person_id, f"{new_date}") if new_date is not None else None
        reason = "release date withdrawn" if new_date is None else f"release date changed to {new_date}"
        decision.cancelled += self._cancel_slot("A4", entry.person_id, r, reason, keep=keep)
        return False, decision

    def _long_custody_release(self, entry: RegisterEntry, event: Any, r: datetime) -> Decision:
        """C4: applies to people no longer on the register, de-selected for long custody."""
        last = entry.last_period()
        day = cal.london_date(event.occurred_at)
        if last is None or last.end is None or last.end > day or last.end_reason != "long_custody":
            return Decision(ignored="not-on-register-at-event-time")
        decision = Decision()
        release_date = event.data.release_date
        key = ("C4", entry.person_id)
        last_t = self._slot_t.get(key)
        if last_t is not None and event.occurred_at < last_t:
            return Decision(ignored="superseded-by-newer-release-date")
        self._slot_t[key] = event.occurred_at
        if release_date is None:
            decision.cancelled += self._cancel_slot("C4", entry.person_id, r, "release date withdrawn")
            return decision
        cand = self.rulebook.timed("C4", f"{release_date}", self.rulebook.long_custody_notice_at(release_date), r,
                                   extra_facts={"release_date": release_date})
        keep = obligation_id("C4", entry.person_id, cand.fact)
        decision.cancelled += self._cancel_slot("C4", entry.person_id, r, f"release date changed to {release_date}",
                                                keep=keep)
        self._take(cand, entry, event, r, last.home_bcu, decision)
        return decision

    # --- C1 / C2: timers that come from the register --------------------------------------------------

    def _activity_seen(self, entry: RegisterEntry, day: date, r: datetime) -> Decision:
        pid = entry.person_id
        if day <= self._activity.get(pid, date.min):
            return Decision()  # older than what we know: out of order, moves nothing
        self._activity[pid] = day
        return self._inactivity_timer(entry, r)

    def _inactivity_timer(self, entry: RegisterEntry, r: datetime, after: datetime | None = None) -> Decision:
        """C1: 09:00 on the first working day on or after (later of selected_on, last activity) + 6 months,
        while the person is on the register: a review due on or after `deselected_on` is not for a PPO."""
        decision = Decision()
        day = cal.london_date(r)
        period = entry.period_at(day) or entry.open_period() or next_membership(entry, day)
        book = self.rulebook
        while period is not None:
            anchor = max(membership_start(entry, period), self._activity.get(entry.person_id, date.min))
            k = 1
            # On load long after the anchor, the condition already holds: one notice now, then every 6 months.
            while book.inactivity_review_at(anchor, k + 1) <= (after or r):
                k += 1
            if after is not None:
                while book.inactivity_review_at(anchor, k) <= after:
                    k += 1
            cand = book.timed("C1", f"{anchor}|{k}", book.inactivity_review_at(anchor, k), r,
                              extra_facts={"anchor": anchor, "occurrence": k})
            end = membership_end(entry, period)
            current = self.obligations.get(self._slots.get(("C1", entry.person_id), ""))
            same_anchor = current is not None and current.facts.get("anchor") == anchor.isoformat()
            start = membership_start(entry, period)
            if self._after_deselection("C1", entry, cand, start, end, r, decision):
                if current is not None and end is not None and not same_anchor and _of_membership(current, start, end):
                    # a pending review from before the last arrest or intelligence moves all the same
                    decision.cancelled += self._cancel_slot("C1", entry.person_id, r, "arrest or intelligence since")
                period = next_membership(entry, end) if end is not None else None
                after = None  # a re-selection starts the clock again
                continue
            if same_anchor and after is None:
                return decision  # already have the timer for this anchor (restart, replay)
            keep = obligation_id("C1", entry.person_id, cand.fact)
            decision.cancelled += self._cancel_slot("C1", entry.person_id, r, "arrest or intelligence since",
                                                    keep=keep)
            self._take(cand, entry, None, r, period.home_bcu, decision)
            return decision
        return decision

    def _review_timer(self, entry: RegisterEntry, r: datetime, period: Period | None = None) -> Decision:
        """C2: 09:00 on the first working day on or after selected_on + 2 years, if still on the register then."""
        decision = Decision()
        if period is None:
            day = cal.london_date(r)
            period = entry.period_at(day) or next_membership(entry, day)
        book = self.rulebook
        while period is not None:
            selected_on = membership_start(entry, period)
            cand = book.timed("C2", f"{selected_on}", book.register_review_at(selected_on), r,
                              extra_facts={"selected_on": selected_on})
            end = membership_end(entry, period)
            if self._after_deselection("C2", entry, cand, selected_on, end, r, decision):
                period = next_membership(entry, end) if end is not None else None  # a re-selection: two years
                continue
            self._take(cand, entry, None, r, period.home_bcu, decision)
            return decision
        return decision

    def _after_deselection(self, rule: str, entry: RegisterEntry, cand: Candidate, start: date, end: date | None,
                           r: datetime, decision: Decision) -> bool:
        """Whether the timer of the membership from `start` falls on or after its `deselected_on` (London day),
        when it would no longer be about a PPO (obligations.md: rules apply to people on the register at the
        time). Then this membership's pending timer, also due then, is cancelled as `register.deselected` would."""
        if end is None or cal.london_date(cand.send_at) < end:
            return False
        pending = self.obligations.get(self._slots.get((rule, entry.person_id), ""))
        if pending is not None and _of_membership(pending, start, end) and cal.london_date(pending.send_at) >= end:
            decision.cancelled += self._cancel_slot(rule, entry.person_id, r, f"person de-selected on {end}")
        return True

    def on_register_loaded(self, entry: RegisterEntry, r: datetime) -> Decision:
        """The register entry became known at R: start its C1 and C2 timers (if on the register now, or from a
        later selection the register already records), each only if due before the person is de-selected."""
        day = cal.london_date(r)
        if entry.period_at(day) is None and next_membership(entry, day) is None:
            return Decision()
        decision = self._review_timer(entry, r)
        decision.extend(self._inactivity_timer(entry, r))
        return decision

    def after_sent(self, o: Obligation, at: datetime) -> Decision:
        """Follow-ups once an obligation has been sent: C1 repeats every 6 months while nothing happens (and
        while on the register); after C2, a re-selection the register records has its own two years."""
        if o.rule not in ("C1", "C2") or o.person is None:
            return Decision()
        entry = self.register.get(o.person.person_id)
        period = entry.period_at(cal.london_date(at)) if entry is not None else None
        if entry is None or period is None:
            return Decision()
        if o.rule == "C2":
            end = membership_end(entry, period)
            later = next_membership(entry, end) if end is not None else None
            return self._review_timer(entry, at, later) if later is not None else Decision()
        if o.facts.get("anchor") != max(membership_start(entry, period),
                                        self._activity.get(entry.person_id, date.min)).isoformat():
            return Decision()
        return self._inactivity_timer(entry, at, after=o.send_at)

    # --- register.* events ---------------------------------------------------------------------------

    def _register_event(self, event: Any, r: datetime) -> Decision:
        etype = event.type
        day = cal.london_date(event.occurred_at)
        ids = event.person.identifiers()
        decision = Decision()
        try:
            if etype == "register.selected":
                p = event.person
                entry = self.register.select(ids, day, event.data.home_bcu, event.data.strand, event.data.reason,
                                             p.given_name, p.family_name, p.date_of_birth)
                decision.register_changes.append(entry)
                decision.extend(self.on_register_loaded(entry, r))
                return decision
            if etype == "register.updated":  # identifiers added; a clash with someone else is refused
                p = event.person
                updated, changed = self.register.update(ids, p.given_name, p.family_name, p.date_of_birth)
                if updated is None:
                    return Decision(ignored="not-on-register")
                if changed:
                    decision.register_changes.append(updated)
                else:
                    decision.ignored = "register-unchanged"
                return decision
            found = self.register.find(ids)
            if found is None:
                return Decision(ignored="not-on-register")
            entry = found
            if etype == "register.deselected":
                if not self.register.deselect(entry, day, event.data.reason, event.data.authority):
                    return Decision(ignored="not-on-register-at-event-time")
                decision.register_changes.append(entry)
                for rule in ("A4", "C1", "C2"):
                    decision.cancelled += self._cancel_slot(rule, entry.person_id, r, "person de-selected")
                known = self._release.get(entry.person_id)
                if event.data.reason == "long_custody" and known and known[0] != date.min:
                    book = self.rulebook
                    cand = book.timed("C4", f"{known[0]}", book.long_custody_notice_at(known[0]), r,
                                      extra_facts={"release_date": known[0]})
                    last = entry.last_period()
                    self._take(cand, entry, event, r, last.home_bcu if last else None, decision)
                return decision
            if etype == "register.moved_area":
                to_bcu = event.data.to_bcu
                if not self.register.move(entry, day, to_bcu):
                    return Decision(ignored="not-on-register-at-event-time")
                decision.register_changes.append(entry)
                # C5 (004 criterion 2): tell the receiving BCU's coordinator.
                cand = self.rulebook.immediate(
                    "C5", f"{event.data.from_bcu}|{to_bcu}|{day}", r, recipients_bcu=to_bcu)
                self._take(cand, entry, event, r, to_bcu, decision)
                decision.raised += self._follow_move(entry, to_bcu, r)
                return decision
        except RegisterError as exc:
            return Decision(ignored=f"register-conflict: {exc}")
        return Decision(ignored="unknown-register-event")

    def _follow_move(self, entry: RegisterEntry, to_bcu: str, r: datetime) -> list[Obligation]:
        """Pending timers (A4, C1, C2) go to the roles of the new home BCU: they are resolved from the PPO's
        home BCU (obligations.md conventions), and the old BCU no longer manages the person. Returned for
        publishing again (same identity, new recipients)."""
        moved = []
        for rule in ("A4", "C1", "C2"):
            o = self.obligations.get(self._slots.get((rule, entry.person_id), ""))
            if o is None or o.status != "pending" or o.bcu == to_bcu:
                continue
            day = cal.london_date(o.occurred_at or o.raised_at)
            recipients, roles, missing = self.rulebook.recipients(to_bcu, RULES[rule].roles, entry, day)
            from_bcu = o.bcu
            o.bcu, o.recipients, o.recipient_roles = to_bcu, recipients, roles
            if missing:
                o.facts["missing_roles"] = missing
            else:
                o.facts.pop("missing_roles", None)
            _note(o, r, f"moved with the person from BCU {from_bcu} to {to_bcu}")
            if not recipients:
                o.status = "failed"
                _note(o, r, f"no contact for role(s) {', '.join(missing)} in BCU {to_bcu}")
            moved.append(o)
        return moved

    # --- C6: calendar -----------------------------------------------------------------------------------

    def list_reviews(self, at: datetime, period_label: str) -> Decision:
        """C6: every BCU's coordinator gets the list of that BCU's PPOs (002 §28, §36)."""
        decision = Decision()
        day = cal.london_date(at)
        book = self.rulebook
        by_bcu: dict[str, list[dict[str, Any]]] = {bcu: [] for bcu in book.directory.bcu_codes}
        for entry in self.register.entries():  # one pass, not one per BCU
            p = entry.period_at(day)
            if p is not None and p.home_bcu in by_bcu:
                by_bcu[p.home_bcu].append({
                    "given_name": entry.given_name, "family_name": entry.family_name,
                    "pnc": entry.identifiers.get("pnc"), "noms": entry.identifiers.get("noms"),
                    "strand": p.strand, "selected_on": membership_start(entry, p).isoformat(), "reason": p.reason,
                })
        for bcu, ppos in by_bcu.items():
            cand = Candidate("C6", period_label, at, at + book._immediate,
                             extra_facts={"period": period_label, "ppos": ppos})
            self._take(cand, None, None, at, bcu, decision)
        return decision

    # --- outcomes ----------------------------------------------------------------------------------------

    def mark_sent(self, o: Obligation, at: datetime) -> Obligation:
        o.record_acceptance(at)
        return o
