"""CustodyBook (shared.custody): custody state folded from canonical prison events, and digest rows."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.custody import (
    DIGEST,
    CustodyBook,
    CustodyRow,
    default_person_key,
    digest_obligation,
    rows_for,
)
from shared.events import Person
from tests.rulebook_fixtures import event

ALEX = {"noms": "G1234HJ", "pnc": "2006/0777001G", "given_name": "Alex", "family_name": "Sample"}
SAM = {"noms": "H2345JK"}
KEY = "noms:G1234HJ"


def reception(at: str, reason: str = "new", prison: str = "LEI", person: dict | None = None, **kw):
    return event("prison.reception", person or ALEX, at, prison_id=prison, reason=reason, **kw)


def release(at: str, reason: str = "released", prison: str = "LEI", person: dict | None = None):
    return event("prison.release", person or ALEX, at, prison_id=prison, reason=reason)


def release_date(at: str, day: str | None, kind: str = "crd", prison: str = "LEI", person: dict | None = None):
    return event("prison.release_date_set", person or ALEX, at, prison_id=prison, release_date=day, kind=kind)


def transfer(at: str, from_prison: str = "LEI", to_prison: str = "WDI"):
    return event("prison.transfer", ALEX, at, from_prison_id=from_prison, to_prison_id=to_prison)


def state(*events):
    book = CustodyBook().apply_all(events)
    return book.state(KEY)


# --- the fold ------------------------------------------------------------------------------------------


def test_reception_then_release_date_then_release() -> None:
    s = state(reception("2026-01-05T10:00:00Z"))
    assert s is not None and s.in_custody and s.prison_id == "LEI" and s.release_date is None
    assert s.custody_since == datetime(2026, 1, 5, 10, tzinfo=UTC)
    s = state(reception("2026-01-05T10:00:00Z"), release_date("2026-01-06T09:00:00Z", "2026-03-01"))
    assert s is not None and (s.release_date, s.release_kind) == (date(2026, 3, 1), "crd")
    assert s.days_to_release(date(2026, 2, 1)) == 28
    assert s.days_to_release(date(2026, 3, 3)) == -2  # passed, release not reported yet
    s = state(reception("2026-01-05T10:00:00Z"), release_date("2026-01-06T09:00:00Z", "2026-03-01"),
              release("2026-03-01T08:00:00Z"))
    assert s is not None and not s.in_custody and s.prison_id is None and s.release_date is None
    assert s.days_to_release(date(2026, 2, 1)) is None
    assert s.custody_since is None


def test_a_release_date_alone_is_enough_to_know_the_person_is_in_custody() -> None:
    """Feeds start mid-story (rule book, notes): no reception is needed."""
    s = state(release_date("2026-02-01T09:00:00Z", "2026-04-20", kind="hdc", prison="HLI"))
    assert s is not None and s.in_custody and s.prison_id == "HLI"
    assert (s.release_date, s.release_kind) == (date(2026, 4, 20), "hdc")
    assert s.custody_since is None  # the reception was never seen


def test_transfer_moves_the_prison_and_keeps_the_release_date() -> None:
    s = state(reception("2026-01-05T10:00:00Z"), release_date("2026-01-06T09:00:00Z", "2026-03-01"),
              transfer("2026-02-01T12:00:00Z"))
    assert s is not None and s.in_custody and s.prison_id == "WDI" and s.release_date == date(2026, 3, 1)
    # A transfer alone also says "in custody at the receiving prison".
    s = state(transfer("2026-02-01T12:00:00Z", "LEI", "HLI"))
    assert s is not None and s.in_custody and s.prison_id == "HLI"


@pytest.mark.parametrize(("reason", "away"), [("to_court", "at court"), ("rotl", "on temporary licence"),
                                              ("to_hospital", "in hospital"), ("transfer", "in transfer")])
def test_releases_that_are_not_into_the_community_leave_the_person_in_custody(reason: str, away: str) -> None:
    s = state(reception("2026-01-05T10:00:00Z"), release_date("2026-01-06T09:00:00Z", "2026-03-01"),
              release("2026-02-02T08:00:00Z", reason))
    assert s is not None and s.in_custody and s.away == away and s.prison_id == "LEI"
    assert s.release_date == date(2026, 3, 1)
    back = state(reception("2026-01-05T10:00:00Z"), release("2026-02-02T08:00:00Z", reason),
                 reception("2026-02-02T17:00:00Z", "return_from_court"))
    assert back is not None and back.in_custody and back.away is None


@pytest.mark.parametrize("reason", ["released", "hdc", "licence", "end_of_sentence", "bail"])
def test_releases_into_the_community_end_the_period(reason: str) -> None:
    s = state(reception("2026-01-05T10:00:00Z"), release("2026-02-02T08:00:00Z", reason))
    assert s is not None and not s.in_custody


def test_withdrawn_release_date() -> None:
    s = state(release_date("2026-01-06T09:00:00Z", "2026-03-01"), release_date("2026-01-20T09:00:00Z", None))
    assert s is not None and s.in_custody and s.release_date is None and s.release_kind is None


def test_a_changed_release_date_replaces_the_earlier_one_whatever_the_arrival_order() -> None:
    first, second = release_date("2026-01-06T09:00:00Z", "2026-03-01"), release_date(
        "2026-01-20T09:00:00Z", "2026-02-20", kind="confirmed")
    for events in ((first, second), (second, first)):
        s = state(*events)
        assert s is not None and (s.release_date, s.release_kind) == (date(2026, 2, 20), "confirmed")


def test_a_release_date_from_an_earlier_period_does_not_survive_a_recall() -> None:
    s = state(reception("2025-01-05T10:00:00Z"), release_date("2025-01-06T09:00:00Z", "2025-06-01"),
              release("2025-06-01T08:00:00Z"), reception("2026-01-10T10:00:00Z", "recall"))
    assert s is not None and s.in_custody and s.release_date is None
    assert s.custody_since == datetime(2026, 1, 10, 10, tzinfo=UTC)
    # The release was never reported, but a new period began: the old date goes too.
    s = state(release_date("2025-01-06T09:00:00Z", "2025-06-01"), reception("2026-01-10T10:00:00Z", "recall"))
    assert s is not None and s.in_custody and s.release_date is None


def test_a_late_arriving_old_event_changes_nothing() -> None:
    now_out = state(reception("2026-01-05T10:00:00Z"), release("2026-03-01T08:00:00Z"),
                    release_date("2026-01-06T09:00:00Z", "2026-03-01"))  # arrives after the release
    assert now_out is not None and not now_out.in_custody and now_out.release_date is None
    stale = state(release("2026-03-01T08:00:00Z"), reception("2026-01-05T10:00:00Z"))
    assert stale is not None and not stale.in_custody


def test_applying_an_event_twice_changes_nothing() -> None:
    events = [reception("2026-01-05T10:00:00Z"), release_date("2026-01-06T09:00:00Z", "2026-03-01"),
              transfer("2026-02-01T12:00:00Z")]
    assert state(*events) == state(*events, *events)


def test_other_events_are_ignored() -> None:
    book = CustodyBook()
    assert not book.apply(event("police.arrest", ALEX, "2026-01-05T10:00:00Z"))
    assert not book.apply(event("warrant.issued", ALEX, "2026-01-05T10:00:00Z", warrant_id="W1",
                                court_code="B01LY00", kind="fta"))
    assert len(book) == 0 and book.in_custody() == [] and book.state(KEY) is None


def test_people_are_kept_apart_and_listed_in_key_order() -> None:
    book = CustodyBook().apply_all([
        reception("2026-01-05T10:00:00Z"), reception("2026-01-07T10:00:00Z", person=SAM, prison="HLI"),
        release("2026-01-08T10:00:00Z", person=SAM, prison="HLI"),
    ])
    assert [s.key for s in book.states()] == ["noms:G1234HJ", "noms:H2345JK"]
    assert [s.key for s in book.in_custody()] == [KEY]
    assert book.state_of(Person(noms="H2345JK")) is not None


def test_the_key_function_is_injectable() -> None:
    book = CustodyBook(key=lambda p: "person-1" if p.noms == "G1234HJ" else default_person_key(p))
    book.apply(reception("2026-01-05T10:00:00Z"))
    assert book.state("person-1") is not None
    assert default_person_key(Person(pnc="2006/0777001G")) == "pnc:2006/0777001G"


# --- order independence (property) ---------------------------------------------------------------------

_KINDS = st.sampled_from(["reception-new", "reception-recall", "reception-return", "release", "release-court",
                          "transfer", "date", "withdraw"])


def _make(i: int, kind: str, day: int) -> object:
    at, eid = f"2026-01-{day:02d}T{i % 24:02d}:{i % 60:02d}:00Z", f"e{i}"
    if kind.startswith("reception-"):
        reason = {"reception-new": "new", "reception-recall": "recall", "reception-return": "return_from_court"}
        return event("prison.reception", ALEX, at, eid, prison_id="LEI", reason=reason[kind])
    if kind.startswith("release"):
        reason = "to_court" if kind == "release-court" else "released"
        return event("prison.release", ALEX, at, eid, prison_id="LEI", reason=reason)
    if kind == "transfer":
        return event("prison.transfer", ALEX, at, eid, from_prison_id="LEI", to_prison_id="WDI")
    day_set = None if kind == "withdraw" else f"2026-{(i % 12) + 1:02d}-15"
    return event("prison.release_date_set", ALEX, at, eid, prison_id="LEI", release_date=day_set, kind="crd")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_KINDS, st.integers(1, 28)), min_size=1, max_size=12), st.randoms())
def test_the_state_does_not_depend_on_arrival_order(specs: list[tuple[str, int]], rnd) -> None:  # type: ignore[no-untyped-def]
    events = [_make(i, kind, day) for i, (kind, day) in enumerate(specs)]
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert state(*events) == state(*shuffled)


# --- rows and the digest obligation --------------------------------------------------------------------


def test_rows_from_the_book_use_the_register_name_when_given() -> None:
    book = CustodyBook().apply_all([reception("2026-01-05T10:00:00Z"),
                                    release_date("2026-01-06T09:00:00Z", "2026-03-01"),
                                    reception("2026-01-07T10:00:00Z", person=SAM, prison="HLI")])
    rows = rows_for(book, {KEY: ("Alex SAMPLE", {"pnc": "2006/0777001G", "noms": "G1234HJ"})})
    assert rows == [CustodyRow("Alex SAMPLE", {"pnc": "2006/0777001G", "noms": "G1234HJ"}, "LEI",
                               date(2026, 3, 1), "crd", None)]
    [state_row] = [CustodyRow.from_state(s) for s in book.in_custody() if s.key == KEY]
    assert state_row.person_name == "Alex SAMPLE"  # from the event's person


def test_rows_travel_as_facts() -> None:
    row = CustodyRow("Alex SAMPLE", {"noms": "G1234HJ"}, "LEI", date(2026, 3, 1), "crd", "at court")
    assert CustodyRow.from_fact(row.to_fact()) == row
    bare = CustodyRow("Sam JUNIOR", {"noms": "H2345JK"}, "HLI", None, None)
    assert CustodyRow.from_fact(bare.to_fact()) == bare
    assert row.days_to_release(date(2026, 2, 27)) == 2 and bare.days_to_release(date(2026, 2, 27)) is None


def test_digest_obligation_identity_is_bcu_and_day() -> None:
    now = datetime(2026, 2, 9, 9, 0, tzinfo=UTC)
    rows = [CustodyRow("Alex SAMPLE", {"noms": "G1234HJ"}, "LEI", date(2026, 3, 1), "crd")]
    o = digest_obligation("13-LD", rows, date(2026, 2, 9), {"leeds.ppo@westyorkshire.police.uk": "ppo"}, now)
    assert o.rule == DIGEST and o.person is None and o.bcu == "13-LD"
    assert o.recipients == ["leeds.ppo@westyorkshire.police.uk"]
    assert o.facts["today"] == "2026-02-09" and o.facts["rows"][0]["release_date"] == "2026-03-01"
    again = digest_obligation("13-LD", [], date(2026, 2, 9), {}, now.replace(hour=15))
    assert again.obligation_id == o.obligation_id
    assert digest_obligation("13-LD", [], date(2026, 2, 16), {}, now).obligation_id != o.obligation_id
    assert digest_obligation("21-ST", [], date(2026, 2, 9), {}, now).obligation_id != o.obligation_id
    with pytest.raises(ValueError):
        digest_obligation("13-LD", [], date(2026, 2, 9), {}, datetime(2026, 2, 9, 9))
