"""The console's materialised view: obligations, register and acknowledgements as the pages ask for them.

Pure: it is given raw records (key and value bytes, as Kafka holds them) and answers queries at a `now` it is
given; it reads no clock, opens no connection and holds nothing a restart cannot rebuild from the topics:
`<prefix>.obligations` and `<prefix>.register` (compacted: latest per key, an empty value deletes it) and
`<prefix>.acknowledgements`. A record that does not decode is counted in `unreadable` and skipped, never raised.

Pages must answer in well under 200 ms with 20,000 register entries and 100,000 obligations, so records are
decoded once, on arrival, and indexed: open obligations by BCU, release dates (A4) by BCU, every obligation by
person, register entries by identifier, by home BCU and by name word. A query for one BCU touches that BCU's
rows only.

The view holds personal data (names, dates of birth) because the pages show it to the roles that need it; it
logs ids and record counts only, never a name, a date of birth or a decoding error's text (which quotes input).

Derived states, worked out at the query's `now` for an obligation that is *open*: its status is `pending`,
`breached` or `failed`, or it is `notified` by a rule whose notices are watched for acknowledgement (sent when
raised by a rule the rule book marks immediate, as the scheduler decides: `watched_for_acknowledgement`), and no
recipient has acknowledged it (an acknowledgement on the topic counts at once, before the scheduler's
`acknowledged` state arrives). `acknowledged`, `cancelled` and the other `notified` ones are closed.

- `failed`: every recipient refused it (status `failed`);
- `breached`: status `breached` (accepted after its deadline, or no outcome by it), or still `pending` at or
  after `notify_by` (the scheduler's breach has not arrived yet);
- `at risk`: `pending`, before `notify_by`, and `notify_by` is at most `max(1 hour, a quarter of its window)`
  away, the window being `send_at` to `notify_by`;
- `due`: `pending`, `send_at` reached, not at risk;
- `not acknowledged`: `notified`, waiting for a recipient to acknowledge it (the scheduler escalates it to the
  BCU's duty contact when its acknowledgement is due);
- `pending`: `send_at` still ahead, not at risk.

Most urgent first: failed, breached, at risk, due, not acknowledged, pending; within each, the earliest
`notify_by` first.
"""

from __future__ import annotations

import bisect
import heapq
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from ppo_alerts.reports import AT_RISK_WITHIN as REPORT_AT_RISK_WITHIN
from ppo_alerts.reports import Tally, TimelinessRow, classify, timeliness_rows
from services.scheduler.watch import ACKNOWLEDGED, WatchPolicy, merge, watched_for_acknowledgement
from shared.ack import Acknowledgement
from shared.calendar import london_date
from shared.identifiers import IDENTIFIER_KINDS, normalise_crn, normalise_cro, normalise_noms, normalise_pnc
from shared.obligations import HistoryEntry, Obligation, PersonRef
from shared.register import Period, Register, RegisterEntry

log = logging.getLogger("ppo.console")

AT_RISK_WITHIN: Final = timedelta(hours=1)
AT_RISK_FRACTION: Final = 0.25
URGENCY: Final[dict[str, int]] = {"failed": 0, "breached": 1, "at risk": 2, "due": 3, "not acknowledged": 4,
                                  "pending": 5}
NOT_ACKNOWLEDGED: Final = "not acknowledged"
_BREACHED, _AT_RISK, _DUE, _PENDING = URGENCY["breached"], URGENCY["at risk"], URGENCY["due"], URGENCY["pending"]
OPEN_STATUSES: Final = frozenset({"pending", "breached", "failed"})
CLOSED_LABELS: Final = ("notified", "acknowledged", "cancelled")
RELEASE_NOTICE_RULE: Final = "A4"  # a release date set or changed: its facts carry `release_date` (rule book)
RELEASED_RULE: Final = "A7"  # actually released: a countdown raised before it is over
SEARCH_LIMIT: Final = 50

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")  # letters, with inner apostrophes (O'Brien)


# --- what the queries answer ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObligationRow:
    """One line of a list: `state` is the derived state of an open obligation, or its closed status
    (`notified`, `acknowledged`, `cancelled`)."""

    obligation_id: str
    rule: str
    bcu: str | None
    state: str
    person: PersonRef | None
    send_at: datetime
    notify_by: datetime
    action_due: datetime | None
    raised_at: datetime


@dataclass(frozen=True, slots=True)
class AcknowledgementSeen:
    recipient: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ObligationDetail:
    row: ObligationRow
    obligation: Obligation  # the view's own copy: read, do not change
    history: list[HistoryEntry]
    acknowledgements: list[AcknowledgementSeen]  # first per recipient, earliest first


@dataclass(frozen=True, slots=True)
class CountdownRow:
    person_id: str | None
    person: PersonRef | None
    bcu: str | None
    release_date: date
    days_left: int
    kind: str | None  # crd, ard, confirmed, hdc, parole, other
    prison_id: str | None
    obligation_id: str


@dataclass(frozen=True, slots=True)
class RegisterRow:
    entry: RegisterEntry  # the view's own: read, do not change
    home_bcu: str | None  # the open period's, else the latest period's
    on_register: bool  # on the day of the query
    matched_by: str  # "pnc", "cro", "noms", "crn", "person_id" or "name"


# --- what is kept per obligation ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Placed:
    """An obligation as indexed: enough to take it out again exactly, and to derive its state without decoding.

    What a page over every BCU asks of each of 100,000 obligations is worked out here, once, when it is placed:
    its place in the urgency order when time cannot change it, its instants as whole microseconds (compared at the
    query's `now` by `_urgency`, which agrees with `_state`: tested), its London send date and its timeliness
    result when time cannot change it (`reports.classify`, likewise tested against the report)."""

    obligation: Obligation
    bcu: str | None
    label: str | None  # None: open; else the closed label it is counted under
    at_risk_from: datetime
    person_id: str | None
    release_date: date | None  # A4, not cancelled
    urgency: int | None  # open and time cannot change its state: URGENCY of it
    send_us: int
    at_risk_us: int
    notify_us: int
    send_date: date  # London
    result: str | None  # reports.classify, when time cannot change it
    oid: str
    rule: str


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_STATE_OF_URGENCY: Final = {u: s for s, u in URGENCY.items()}


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // _MICROSECOND  # exact, unlike a float timestamp


def _fixed_urgency(o: Obligation, label: str | None) -> int | None:
    if label is not None:
        return None
    if o.status == "notified":
        return URGENCY[NOT_ACKNOWLEDGED]
    return URGENCY[o.status] if o.status in ("failed", "breached") else None


def _settled_result(o: Obligation) -> str | None:
    """The report's result when no later `now` can change it (None: a pending notice's deadline may yet pass)."""
    if o.status in ("cancelled", "failed", "breached") or o.notified_at is not None:
        return classify(o, o.notify_by)  # any instant: the same
    return None


def _urgency(p: _Placed, now_us: int) -> int:
    """URGENCY[_state(p, now)] for an open obligation, from what was worked out when it was placed."""
    if p.urgency is not None:
        return p.urgency
    if now_us >= p.notify_us:
        return _BREACHED
    if now_us >= p.at_risk_us:
        return _AT_RISK
    return _DUE if now_us >= p.send_us else _PENDING


def _at_risk_from(o: Obligation) -> datetime:
    window = max(o.notify_by - o.send_at, timedelta(0))
    return o.notify_by - max(AT_RISK_WITHIN, window * AT_RISK_FRACTION)


def _state(p: _Placed, now: datetime) -> str:
    if p.label is not None:
        return p.label
    o = p.obligation
    if o.status == "notified":
        return NOT_ACKNOWLEDGED
    if o.status != "pending":
        return o.status  # failed, breached
    if now >= o.notify_by:
        return "breached"
    if now >= p.at_risk_from:
        return "at risk"
    return "due" if now >= o.send_at else "pending"


def _awaits_acknowledgement(o: Obligation) -> bool:
    """Sent, and watched for an acknowledgement (the scheduler's test, with acknowledgement escalation on)."""
    return o.status == "notified" and watched_for_acknowledgement(o, WatchPolicy())


def _row(p: _Placed, now: datetime) -> ObligationRow:
    o = p.obligation
    return ObligationRow(o.obligation_id, o.rule, o.bcu, _state(p, now), o.person, o.send_at, o.notify_by,
                         o.action_due, o.raised_at)


def _release_date(o: Obligation) -> date | None:
    if o.rule != RELEASE_NOTICE_RULE or o.status == "cancelled":
        return None
    raw = o.facts.get("release_date")
    if not isinstance(raw, str):
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None


def _home_bcu(entry: RegisterEntry) -> str | None:
    period: Period | None = entry.open_period() or entry.last_period()
    return period.home_bcu if period is not None else None


def _words(text: str) -> list[str]:
    return [w.replace("’", "'") for w in _WORD.findall(text.casefold())]


def _key_text(key: bytes | None) -> str | None:
    if not key:
        return None
    return key.decode("utf-8")


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("console view: naive datetime: `now` must carry an offset")
    return now


def _decode_entry(value: bytes) -> RegisterEntry:
    raw: Any = json.loads(value)
    if not isinstance(raw, dict):
        raise ValueError("a register record is an object")
    entry = RegisterEntry.from_dict(raw)
    if not isinstance(entry.person_id, str) or not entry.person_id:
        raise ValueError("person_id")
    if not entry.identifiers or any(k not in IDENTIFIER_KINDS or not isinstance(v, str) or not v
                                    for k, v in entry.identifiers.items()):
        raise ValueError("identifiers")
    if any(n is not None and not isinstance(n, str) for n in (entry.given_name, entry.family_name)):
        raise ValueError("names")
    if any(not isinstance(p.home_bcu, str) for p in entry.periods):
        raise ValueError("home_bcu")
    return entry


class ConsoleView:
    def __init__(self) -> None:
        self.unreadable = 0
        self.unreadable_by_topic: Counter[str] = Counter()
        # obligations
        self._placed: dict[str, _Placed] = {}
        self._open_by_bcu: dict[str | None, dict[str, _Placed]] = {}
        self._all_by_bcu: dict[str | None, dict[str, _Placed]] = {}
        self._closed_counts: dict[str | None, Counter[str]] = {}
        self._releases_by_bcu: dict[str | None, dict[str, _Placed]] = {}
        self._by_person: dict[str, dict[str, _Placed]] = {}
        # acknowledgements: obligation id -> recipient (lower case) -> the first
        self._acks: dict[str, dict[str, AcknowledgementSeen]] = {}
        # register
        self._entries: dict[str, RegisterEntry] = {}
        self._entry_bcu: dict[str, str | None] = {}
        self._by_identifier: dict[tuple[str, str], str] = {}
        self._by_word: dict[str, set[str]] = {}
        self._words: list[str] = []  # the keys of _by_word, sorted: a name part is a prefix range

    # --- records in -------------------------------------------------------------------------------------------

    def _skip(self, topic: str, why: BaseException | str) -> None:
        self.unreadable += 1
        self.unreadable_by_topic[topic] += 1
        # the kind of failure only: an exception's text can quote the record (names, dates of birth)
        reason = why if isinstance(why, str) else type(why).__name__
        log.warning("unreadable record skipped", extra={"topic": topic, "reason": reason})

    def apply_obligation(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the obligations topic (key obligation id; value the obligation's JSON, empty: deleted).
        Several services write an obligation's state: a record is merged with what is known as the scheduler
        merges it (`services.scheduler.watch.merge`: a stale copy does not move the status back)."""
        try:
            if not value:
                oid = _key_text(key)
                if oid is None:
                    self._skip("obligations", "tombstone without a key")
                    return
                self._unplace(oid)
                self._placed.pop(oid, None)
                return
            incoming = Obligation.model_validate_json(value)
        except Exception as exc:  # noqa: BLE001 - any record, any failure: counted, skipped
            self._skip("obligations", exc)
            return
        known = self._placed.get(incoming.obligation_id)
        o = merge(known.obligation, incoming) if known is not None else incoming
        self._place(o)

    def apply_register(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the register topic (key register person id; value the entry snapshot, empty: deleted)."""
        try:
            if not value:
                pid = _key_text(key)
                if pid is None:
                    self._skip("register", "tombstone without a key")
                    return
                self._remove_entry(pid)
                return
            entry = _decode_entry(value)
        except Exception as exc:  # noqa: BLE001
            self._skip("register", exc)
            return
        self._remove_entry(entry.person_id)
        self._add_entry(entry)

    def apply_acknowledgement(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the acknowledgements topic (key obligation id; value an `Acknowledgement`). The first per
        recipient is kept (two instances may record one press twice). An empty value forgets that obligation's."""
        try:
            if not value:
                oid = _key_text(key)
                if oid is None:
                    self._skip("acknowledgements", "tombstone without a key")
                    return
                if self._acks.pop(oid, None) is not None:
                    self._replace(oid)
                return
            ack = Acknowledgement.model_validate_json(value)
        except Exception as exc:  # noqa: BLE001
            self._skip("acknowledgements", exc)
            return
        seen = self._acks.setdefault(ack.obligation_id, {})
        who = ack.recipient.strip().lower()
        known = seen.get(who)
        if known is not None and known.at <= ack.acknowledged_at:
            return
        first_for_obligation = not seen
        seen[who] = AcknowledgementSeen(ack.recipient, ack.acknowledged_at)
        if first_for_obligation:
            self._replace(ack.obligation_id)

    def apply_obligations(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        for key, value in records:
            self.apply_obligation(key, value)

    def apply_registers(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        for key, value in records:
            self.apply_register(key, value)

    # --- obligation indexes -----------------------------------------------------------------------------------

    def _place(self, o: Obligation) -> None:
        oid = o.obligation_id
        self._unplace(oid)
        acked = oid in self._acks or o.status == "acknowledged"
        label = "acknowledged" if acked else (None if o.status in OPEN_STATUSES or _awaits_acknowledgement(o)
                                              else o.status)
        person_id = o.person.person_id if o.person is not None else None
        at_risk_from = _at_risk_from(o)
        p = _Placed(o, o.bcu, label, at_risk_from, person_id, _release_date(o), _fixed_urgency(o, label),
                    _micros(o.send_at), _micros(at_risk_from), _micros(o.notify_by), london_date(o.send_at),
                    _settled_result(o), oid, o.rule)
        self._placed[oid] = p
        self._all_by_bcu.setdefault(p.bcu, {})[oid] = p
        if label is None:
            self._open_by_bcu.setdefault(p.bcu, {})[oid] = p
        else:
            self._closed_counts.setdefault(p.bcu, Counter())[label] += 1
        if p.release_date is not None:
            self._releases_by_bcu.setdefault(p.bcu, {})[oid] = p
        if person_id is not None:
            self._by_person.setdefault(person_id, {})[oid] = p

    def _unplace(self, oid: str) -> None:
        p = self._placed.get(oid)
        if p is None:
            return
        _discard(self._all_by_bcu, p.bcu, oid)
        if p.label is None:
            _discard(self._open_by_bcu, p.bcu, oid)
        else:
            counts = self._closed_counts[p.bcu]
            counts[p.label] -= 1
            if counts[p.label] <= 0:
                del counts[p.label]
        if p.release_date is not None:
            _discard(self._releases_by_bcu, p.bcu, oid)
        if p.person_id is not None:
            _discard(self._by_person, p.person_id, oid)

    def _replace(self, oid: str) -> None:
        """Index a known obligation again (its acknowledgements changed)."""
        p = self._placed.get(oid)
        if p is not None:
            self._place(p.obligation)

    # --- register indexes -------------------------------------------------------------------------------------

    def _add_entry(self, entry: RegisterEntry) -> None:
        pid = entry.person_id
        self._entries[pid] = entry
        self._entry_bcu[pid] = _home_bcu(entry)
        for kind, value in entry.identifiers.items():
            self._by_identifier[(kind, value)] = pid  # two entries with one identifier: the later read wins
        for word in self._entry_words(entry):
            holders = self._by_word.get(word)
            if holders is None:
                holders = self._by_word[word] = set()
                bisect.insort(self._words, word)
            holders.add(pid)

    def _remove_entry(self, pid: str) -> None:
        entry = self._entries.pop(pid, None)
        if entry is None:
            return
        del self._entry_bcu[pid]
        for kind, value in entry.identifiers.items():
            if self._by_identifier.get((kind, value)) == pid:
                del self._by_identifier[(kind, value)]
        for word in self._entry_words(entry):
            holders = self._by_word.get(word)
            if holders is None:
                continue
            holders.discard(pid)
            if not holders:
                del self._by_word[word]
                i = bisect.bisect_left(self._words, word)
                if i < len(self._words) and self._words[i] == word:
                    del self._words[i]

    @staticmethod
    def _entry_words(entry: RegisterEntry) -> set[str]:
        return set(_words(" ".join(n for n in (entry.given_name, entry.family_name) if n)))

    # --- queries ----------------------------------------------------------------------------------------------

    def _open_in(self, bcus: set[str] | None) -> Iterable[_Placed]:
        if bcus is None:
            for rows in self._open_by_bcu.values():
                yield from rows.values()
            return
        for bcu in bcus:
            yield from self._open_by_bcu.get(bcu, {}).values()

    @staticmethod
    def _visible(p: _Placed, bcus: set[str] | None) -> bool:
        return bcus is None or (p.bcu is not None and p.bcu in bcus)

    def open_for_bcus(self, bcus: set[str] | None, now: datetime, limit: int = 50,
                      offset: int = 0) -> list[ObligationRow]:
        """Open obligations of these BCUs (None: every BCU, for operators), most urgent first, one page."""
        now = _aware(now)
        if limit <= 0 or offset < 0:
            return []
        now_us = _micros(now)
        keyed = [(_urgency(p, now_us), p.notify_us, p.oid) for p in self._open_in(bcus)]
        return [_row(self._placed[oid], now) for _, _, oid in heapq.nsmallest(offset + limit, keyed)[offset:]]

    def counts(self, bcus: set[str] | None, now: datetime) -> dict[str, int]:
        """How many obligations of these BCUs are in each state: the open ones' derived states (failed, breached,
        at risk, due, pending) and the closed ones' (notified, acknowledged, cancelled); every key present, maybe 0."""
        now = _aware(now)
        result = dict.fromkeys((*URGENCY, *CLOSED_LABELS), 0)
        now_us = _micros(now)
        for urgency, n in Counter(_urgency(p, now_us) for p in self._open_in(bcus)).items():
            result[_STATE_OF_URGENCY[urgency]] += n
        chosen = self._closed_counts.values() if bcus is None else (
            self._closed_counts[b] for b in bcus if b in self._closed_counts)
        for counted in chosen:
            for label, n in counted.items():
                result[label] = result.get(label, 0) + n
        return result

    def obligation(self, obligation_id: str, bcus: set[str] | None, now: datetime) -> ObligationDetail | None:
        """One obligation with its history and acknowledgements; None when unknown or of another BCU."""
        now = _aware(now)
        p = self._placed.get(obligation_id)
        if p is None or not self._visible(p, bcus):
            return None
        o = p.obligation
        first: dict[str, AcknowledgementSeen] = {}
        prefix = ACKNOWLEDGED + " "
        for h in o.history:  # the scheduler's record of it: outlives the topic's retention
            if h.what.startswith(prefix):
                who = h.what[len(prefix):]
                first.setdefault(who.strip().lower(), AcknowledgementSeen(who, h.at))
        for who, seen in self._acks.get(obligation_id, {}).items():
            if who not in first or seen.at < first[who].at:
                first[who] = seen
        acks = sorted(first.values(), key=lambda a: (a.at, a.recipient))
        return ObligationDetail(_row(p, now), o, list(o.history), acks)

    def person_trail(self, person_id: str, bcus: set[str] | None, now: datetime) -> list[ObligationRow]:
        """Every obligation about a person (register person id), cancelled and closed ones too, oldest first."""
        now = _aware(now)
        rows = [p for p in self._by_person.get(person_id, {}).values() if self._visible(p, bcus)]
        rows.sort(key=lambda p: (p.obligation.raised_at, p.obligation.obligation_id))
        return [_row(p, now) for p in rows]

    def custody_countdown(self, bcus: set[str] | None, now: datetime, days: int = 28) -> list[CountdownRow]:
        """People whose release date (an A4 obligation's, not cancelled) falls from today to `days` days ahead
        (London dates), soonest first. Per person the date of the latest A4 raised counts (a changed date raises
        a new one); someone released (A7) since it was raised is left out."""
        now = _aware(now)
        today = london_date(now)
        last = today + timedelta(days=days)
        chosen = self._releases_by_bcu.values() if bcus is None else (
            self._releases_by_bcu[b] for b in bcus if b in self._releases_by_bcu)
        latest: dict[str, _Placed] = {}
        for by_id in chosen:
            for oid, p in by_id.items():
                who = p.person_id or oid
                known = latest.get(who)
                if known is None or (p.obligation.raised_at, oid) > (known.obligation.raised_at,
                                                                      known.obligation.obligation_id):
                    latest[who] = p
        rows: list[CountdownRow] = []
        for p in latest.values():
            release = p.release_date
            assert release is not None
            if not today <= release <= last or self._released_since(p):
                continue
            o = p.obligation
            kind, prison = o.facts.get("kind"), o.facts.get("prison_id")
            rows.append(CountdownRow(p.person_id, o.person, o.bcu, release, (release - today).days,
                                     kind if isinstance(kind, str) else None,
                                     prison if isinstance(prison, str) else None, o.obligation_id))
        rows.sort(key=lambda r: (r.release_date, r.person_id or "", r.obligation_id))
        return rows

    def _released_since(self, p: _Placed) -> bool:
        if p.person_id is None:
            return False
        since = p.obligation.occurred_at or p.obligation.raised_at
        return any(q.obligation.rule == RELEASED_RULE and q.obligation.status != "cancelled"
                   and (q.obligation.occurred_at or q.obligation.raised_at) >= since
                   for q in self._by_person.get(p.person_id, {}).values())

    def register_search(self, query: str, bcus: set[str] | None, now: datetime,
                        limit: int = SEARCH_LIMIT) -> list[RegisterRow]:
        """Register entries of these BCUs (their home BCU: the open period's, else the latest) matching the query:
        an identifier in any accepted spelling (PNC long or short year, with or without the slash; CRO; NOMS;
        CRN), a register person id, or the beginnings of name words ("sm jo" finds John Smith). Identifier matches
        first, then by family and given name; `limit` (at most 50) rows."""
        now = _aware(now)
        limit = max(0, min(limit, SEARCH_LIMIT))
        text = query.strip()
        if not text or limit == 0:
            return []
        today = london_date(now)
        found: dict[str, str] = {}  # person id -> matched by
        if text in self._entries:
            found[text] = "person_id"
        for kind, normal in self._identifier_forms(text, today):
            pid = self._by_identifier.get((kind, normal))
            if pid is not None:
                found.setdefault(pid, kind)
        by_identifier = set(found)
        for pid in self._name_matches(text):
            found.setdefault(pid, "name")
        rows: list[tuple[tuple[int, str, str, str], RegisterRow]] = []
        for pid, how in found.items():
            bcu = self._entry_bcu.get(pid)
            if bcus is not None and bcu not in bcus:
                continue
            entry = self._entries[pid]
            order = (0 if pid in by_identifier else 1, (entry.family_name or "").casefold(),
                     (entry.given_name or "").casefold(), pid)
            rows.append((order, RegisterRow(entry, bcu, entry.on_register(today), how)))
        return [row for _, row in heapq.nsmallest(limit, rows, key=lambda r: r[0])]

    @staticmethod
    def _identifier_forms(text: str, today: date) -> list[tuple[str, str]]:
        forms: list[tuple[str, str]] = []
        for kind, normalise in (("pnc", lambda v: normalise_pnc(v, today)), ("cro", normalise_cro),
                                ("noms", normalise_noms), ("crn", normalise_crn)):
            try:
                forms.append((kind, normalise(text)))
            except ValueError:
                continue
        return forms

    def _name_matches(self, text: str) -> set[str]:
        words = _words(text)
        if not words:
            return set()
        result: set[str] | None = None
        for word in words:
            holders: set[str] = set()
            i = bisect.bisect_left(self._words, word)
            while i < len(self._words) and self._words[i].startswith(word):
                holders |= self._by_word[self._words[i]]
                i += 1
            result = holders if result is None else result & holders
            if not result:
                return set()
        return result or set()

    # --- what the register and report pages read ---------------------------------------------------------------

    def entry(self, person_id: str) -> RegisterEntry | None:
        return self._entries.get(person_id)

    def register_for_change(self, identifiers: dict[str, str]) -> Register:
        """A working copy of just the entries holding any of these (normalised) identifiers: all a change naming
        them can touch or clash with, so `register_admin.Planner` checks it exactly as against the whole register
        (it mutates what it is given: these are copies)."""
        holders = {pid for kind, value in identifiers.items() if (pid := self._by_identifier.get((kind, value)))}
        register = Register()
        for pid in sorted(holders):
            register.put(RegisterEntry.from_dict(self._entries[pid].to_dict()))
        return register

    def entries_in(self, bcus: set[str] | None) -> list[RegisterEntry]:
        """Entries with any period, past or present, in these BCUs (None: every entry), by person id."""
        return sorted((e for e in self._entries.values()
                       if bcus is None or any(p.home_bcu in bcus for p in e.periods)), key=lambda e: e.person_id)

    def _all_in(self, bcus: set[str] | None) -> Iterable[_Placed]:
        if bcus is None:
            return self._placed.values()
        return (p for b in bcus for p in self._all_by_bcu.get(b, {}).values())

    def obligations_in(self, bcus: set[str] | None) -> list[Obligation]:
        """Every obligation of these BCUs (None: every BCU), open and closed."""
        return [p.obligation for p in self._all_in(bcus)]

    def timeliness(self, bcus: set[str] | None, start: date, end: date, now: datetime) -> list[TimelinessRow]:
        """`reports.timeliness` of these BCUs' obligations, from each one's London send date and settled result
        worked out when it was placed (the report over every BCU reads 100,000 of them: tested against it)."""
        now = _aware(now)
        tally = Tally()
        chosen = [p for p in self._all_in(bcus) if start <= p.send_date <= end]
        # Settled ones (never open, so never at risk) as they are; the others are `classify` and `at_risk` of a
        # notice not yet sent: breached once its deadline has passed, else open, and at risk when sendable and
        # due within the hour
        now_us = _micros(now)
        soon_us = _micros(now + REPORT_AT_RISK_WITHIN)
        tally.results.update((p.rule, p.result if p.result is not None else
                              "breached" if p.notify_us < now_us else "open") for p in chosen)
        tally.at_risk.update(p.rule for p in chosen if p.result is None and p.send_us <= now_us
                             and now_us <= p.notify_us <= soon_us)
        for p in chosen:
            if p.rule not in tally.sources:
                tally.sources[p.rule] = p.obligation.source_paragraph
        return timeliness_rows(tally)

    # --- sizes (for metrics and logs: counts only) ------------------------------------------------------------

    def sizes(self) -> dict[str, int]:
        return {"obligations": len(self._placed), "open": sum(len(v) for v in self._open_by_bcu.values()),
                "register_entries": len(self._entries), "acknowledged_obligations": len(self._acks),
                "unreadable": self.unreadable}


def _discard(index: dict[Any, dict[str, _Placed]], bucket: Any, oid: str) -> None:
    rows = index.get(bucket)
    if rows is None:
        return
    rows.pop(oid, None)
    if not rows:
        del index[bucket]
