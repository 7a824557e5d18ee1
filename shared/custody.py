"""Who is in custody, where, and until when: a pure fold of canonical prison events (rule book, section D).

`CustodyBook` folds `prison.reception`, `prison.release`, `prison.transfer` and `prison.release_date_set`
(plus `prison.hdc_eligible` and `prison.rotl_scheduled`, which also say "this person is in that prison") into
one `CustodyState` per person. It does no I/O and never reads a clock: `today` is passed in where it matters.

How the fold decides (so that feeds that start mid-story, replays and out-of-order delivery all agree):

- Every event is ordered by (occurred_at, event id). The book keeps, per person, only the latest event of
  each kind that matters, so the result does not depend on the order events arrive in, and applying an
  event twice changes nothing.
- Whether a person is in custody, and where, is the latest *presence* evidence: a reception, a transfer, a
  release date, HDC eligibility or a scheduled temporary licence says "in custody there" (the rule book:
  "a release date, a release or a transfer from a prison is enough to know the person is in custody
  there"); a release into the community (`released`, `hdc`, `licence`, `end_of_sentence`, `bail`) says
  "out". A release to court, on temporary licence, to hospital or for a transfer leaves the person in
  custody, marked `away`.
- A release date belongs to one period in custody: it is the latest `prison.release_date_set` (a null date
  withdraws it), and it is dropped when a period boundary comes after it (a release into the community,
  or a reception for `new`, `remand` or `recall`).

`CustodyRow` is one line of the weekly custody digest (001 §7.5, the Holme House daily countdown): what the
notifier renders as an HTML table and a CSV attachment. `digest_obligation` builds the notification the
scheduler publishes on the notifications topic for one BCU (rule id `DIGEST`); the notifier sends it through
its ordinary pipeline (dedup, allow-list, retry, outcomes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from shared.events import EventBase, Person
from shared.obligations import Obligation, obligation_id

__all__ = [
    "COMMUNITY_RELEASES",
    "CUSTODY_EVENT_TYPES",
    "DIGEST",
    "DIGEST_SOURCE",
    "NEW_PERIOD_RECEPTIONS",
    "CustodyBook",
    "CustodyRow",
    "CustodyState",
    "default_person_key",
    "digest_obligation",
    "rows_for",
]

DIGEST = "D2"  # rule book section D, second item: the custody list with a countdown of days to release
DIGEST_SOURCE = "001 §7.5 (custody list with days to release, Holme House countdown); rule book D"

COMMUNITY_RELEASES = frozenset({"released", "hdc", "licence", "end_of_sentence", "bail"})
NEW_PERIOD_RECEPTIONS = frozenset({"new", "remand", "recall"})
_AWAY = {"to_court": "at court", "rotl": "on temporary licence", "to_hospital": "in hospital",
         "transfer": "in transfer"}
CUSTODY_EVENT_TYPES = frozenset({
    "prison.reception", "prison.release", "prison.transfer", "prison.release_date_set",
    "prison.hdc_eligible", "prison.rotl_scheduled",
})

_Order = tuple[datetime, str]  # (occurred_at, event id): a total order over events


def default_person_key(person: Person) -> str:
    """NOMS number first (prison feeds always carry it), then PNC, CRN, CRO: `noms:A1234BC`."""
    for name in ("noms", "pnc", "crn", "cro"):
        value = getattr(person, name)
        if value:
            return f"{name}:{value}"
    raise ValueError("a person needs at least one identifier")  # pragma: no cover - Person guarantees one


@dataclass(frozen=True)
class CustodyState:
    """What the book knows about one person now."""

    key: str
    person: Person  # the most recent description of the person seen in a custody event
    in_custody: bool
    prison_id: str | None  # where, when in custody (the prison left, when `away`)
    away: str | None  # "at court", "on temporary licence", "in hospital", "in transfer", or None
    release_date: date | None  # the current period's release date, if one is known
    release_kind: str | None  # crd, ard, confirmed, hdc, parole, other
    custody_since: datetime | None  # the reception that began this period, when it was seen
    last_event_at: datetime

    def days_to_release(self, today: date) -> int | None:
        """Calendar days from `today` (a London date) to the release date; negative when it has passed."""
        if not self.in_custody or self.release_date is None:
            return None
        return (self.release_date - today).days


@dataclass
class _Track:
    person: Person
    person_at: _Order
    presence: tuple[_Order, bool, str | None, str | None] | None = None  # (order, in custody, prison, away)
    boundary: datetime | None = None  # latest release into the community or new-period reception
    period_start: datetime | None = None  # latest new-period reception
    release: tuple[_Order, date | None, str | None] | None = None  # latest release_date_set
    last: datetime | None = None


class CustodyBook:
    """Per-person custody state folded from canonical events. Pure and deterministic.

        book = CustodyBook()
        for event in events:
            book.apply(event)
        book.in_custody()  # [CustodyState, ...]
    """

    def __init__(self, key: Callable[[Person], str] = default_person_key) -> None:
        self._key = key
        self._tracks: dict[str, _Track] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    def apply(self, event: EventBase) -> bool:
        """Fold one event in; False (and no change) when it says nothing about custody."""
        etype: str = getattr(event, "type", "")
        if etype not in CUSTODY_EVENT_TYPES:
            return False
        data: Any = getattr(event, "data")  # noqa: B009 - EventBase subclasses carry `data`
        order: _Order = (event.occurred_at, event.id)
        at = event.occurred_at
        key = self._key(event.person)
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(event.person, order)
        elif order >= track.person_at:
            track.person, track.person_at = event.person, order
        track.last = at if track.last is None else max(track.last, at)

        if etype == "prison.reception":
            self._present(track, order, True, data.prison_id, None)
            if data.reason in NEW_PERIOD_RECEPTIONS:
                track.boundary = _latest(track.boundary, at)
                track.period_start = _latest(track.period_start, at)
        elif etype == "prison.release":
            if data.reason in COMMUNITY_RELEASES:
                self._present(track, order, False, None, None)
                track.boundary = _latest(track.boundary, at)
            else:
                self._present(track, order, True, data.prison_id, _AWAY.get(data.reason, str(data.reason)))
        elif etype == "prison.transfer":
            self._present(track, order, True, data.to_prison_id, None)
        elif etype == "prison.release_date_set":
            self._present(track, order, True, data.prison_id, None)
            if track.release is None or order >= track.release[0]:
                track.release = (order, data.release_date, data.kind)
        else:  # prison.hdc_eligible, prison.rotl_scheduled: the person is in that prison
            self._present(track, order, True, data.prison_id, None)
        return True

    def apply_all(self, events: Iterable[EventBase]) -> CustodyBook:
        for e in events:
            self.apply(e)
        return self

    @staticmethod
    def _present(track: _Track, order: _Order, inside: bool, prison: str | None, away: str | None) -> None:
        if track.presence is None or order >= track.presence[0]:
            track.presence = (order, inside, prison, away)

    # --- reading ---------------------------------------------------------------------------------------

    def state(self, key: str) -> CustodyState | None:
        track = self._tracks.get(key)
        return None if track is None else self._state(key, track)

    def state_of(self, person: Person) -> CustodyState | None:
        return self.state(self._key(person))

    def states(self) -> list[CustodyState]:
        return [self._state(k, t) for k, t in sorted(self._tracks.items())]

    def in_custody(self) -> list[CustodyState]:
        """Everyone the book believes is in custody now (including those away at court, on ROTL, ...)."""
        return [s for s in self.states() if s.in_custody]

    @staticmethod
    def _state(key: str, t: _Track) -> CustodyState:
        assert t.presence is not None and t.last is not None  # every custody event sets both
        _, inside, prison, away = t.presence
        release_date = release_kind = None
        if inside and t.release is not None:
            (set_at, _), day, kind = t.release
            if t.boundary is None or set_at >= t.boundary:
                release_date, release_kind = day, (kind if day is not None else None)
        # The reception that began this period: only when no release into the community came after it.
        since = t.period_start if inside and t.period_start is not None and t.period_start == t.boundary else None
        return CustodyState(
            key=key, person=t.person, in_custody=inside, prison_id=prison if inside else None,
            away=away if inside else None, release_date=release_date, release_kind=release_kind,
            custody_since=since, last_event_at=t.last,
        )


def _latest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate > current else current


# --- the digest --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustodyRow:
    """One person in custody, as the custody digest lists them."""

    person_name: str
    identifiers: Mapping[str, str] = field(default_factory=dict)  # pnc, noms, crn, cro -> value
    prison: str | None = None
    release_date: date | None = None
    kind: str | None = None  # the release date's kind: crd, ard, confirmed, hdc, parole, other
    away: str | None = None  # "at court", "on temporary licence", ... (still in custody)

    def days_to_release(self, today: date) -> int | None:
        return None if self.release_date is None else (self.release_date - today).days

    @classmethod
    def from_state(cls, state: CustodyState, person_name: str | None = None,
                   identifiers: Mapping[str, str] | None = None) -> CustodyRow:
        """A row from the book's state; name and identifiers from the register when given (it knows best)."""
        p = state.person
        name = person_name or " ".join(x for x in (p.given_name, (p.family_name or "").upper()) if x) or ""
        return cls(person_name=name, identifiers=dict(identifiers or p.identifiers()), prison=state.prison_id,
                   release_date=state.release_date, kind=state.release_kind, away=state.away)

    def to_fact(self) -> dict[str, Any]:
        """JSON-ready, as carried in an obligation's facts."""
        return {
            "person_name": self.person_name, "identifiers": dict(self.identifiers), "prison": self.prison,
            "release_date": self.release_date.isoformat() if self.release_date else None, "kind": self.kind,
            "away": self.away,
        }

    @classmethod
    def from_fact(cls, fact: Mapping[str, Any]) -> CustodyRow:
        raw = fact.get("release_date")
        released = raw if isinstance(raw, date) else (date.fromisoformat(str(raw)) if raw else None)
        ids = fact.get("identifiers")
        return cls(
            person_name=str(fact.get("person_name") or ""),
            identifiers={str(k): str(v) for k, v in ids.items() if v} if isinstance(ids, Mapping) else {},
            prison=fact.get("prison") or None, release_date=released, kind=fact.get("kind") or None,
            away=fact.get("away") or None,
        )


def digest_obligation(bcu: str, rows: Iterable[CustodyRow], today: date, recipients: Mapping[str, str],
                      now: datetime, notify_within: timedelta = timedelta(minutes=15)) -> Obligation:
    """The custody digest of one BCU as an obligation for the notifier (rule `DIGEST`, no person).

    `recipients` maps address -> role (e.g. the BCU's `ppo` and `coordinator` contacts from the directory).
    Identity is (DIGEST, BCU, today): firing the weekly trigger twice on one day sends one digest.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    addresses = list(recipients)
    return Obligation(
        obligation_id=obligation_id(DIGEST, bcu, f"custody-digest|{today.isoformat()}"),
        rule=DIGEST, source_paragraph=DIGEST_SOURCE, person=None, bcu=bcu, recipients=addresses,
        recipient_roles=dict(recipients), send_at=now, notify_by=now + notify_within, raised_at=now,
        facts={"today": today.isoformat(), "rows": [r.to_fact() for r in rows]},
    )


def rows_for(book: CustodyBook, people: Mapping[str, tuple[str, Mapping[str, str]]]) -> list[CustodyRow]:
    """Rows for the people in custody among `people` (book key -> (name, identifiers)), e.g. one BCU's PPOs."""
    return [CustodyRow.from_state(s, *people[s.key]) for s in book.in_custody() if s.key in people]

