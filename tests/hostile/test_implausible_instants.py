"""Impossible or far-off instants and dates are refused at intake, field named, before anything is published
(issue 14, part 4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.plausibility import InstantWindow
from services.intake.translate import translate_many
from shared.errors import InputRejected

RECEIVED = datetime(2026, 3, 2, 12, tzinfo=UTC)


def reception(occurred_at: str, **person: Any) -> dict[str, Any]:
    return {"id": "i-1", "type": "prison.reception", "occurred_at": occurred_at, "source": "HMP-LEI",
            "person": {"noms": "A1234BC", **person}, "data": {"prison_id": "LEI", "reason": "new"}}


def release_date(release: str, occurred_at: str = "2026-03-02T10:00:00+00:00") -> dict[str, Any]:
    return {"id": "i-2", "type": "prison.release_date_set", "occurred_at": occurred_at, "source": "HMP-LEI",
            "person": {"noms": "A1234BC"}, "data": {"prison_id": "LEI", "release_date": release, "kind": "crd"}}


def refused(payload: Any, window: InstantWindow | None = None) -> list[dict[str, str]]:
    with pytest.raises(InputRejected) as caught:
        translate_many(payload, RECEIVED, *( [window] if window else []))
    return caught.value.problems


@pytest.mark.parametrize("instant", ["0001-01-01T00:00:00+05:00", "0001-01-01T00:00:00+00:00",
                                     "9999-12-31T23:59:59-05:00", "9999-12-31T00:00:00+00:00",
                                     "2046-03-02T10:00:00+00:00", "2026-03-02T14:00:00+00:00",
                                     "2001-01-01T00:00:00+00:00"])
def test_occurred_at_outside_the_window_is_refused_naming_the_field(instant: str) -> None:
    problems = refused(reception(instant))
    assert [p["field"] for p in problems] == ["occurred_at"]
    assert instant[:4] not in problems[0]["problem"], "the value is echoed"


def test_instants_inside_the_window_are_taken() -> None:
    for instant in ("2026-03-02T12:30:00+00:00", "2020-01-01T00:00:00Z", "2026-03-02T13:30:00+01:00"):
        (t,) = translate_many(reception(instant), RECEIVED)
        assert len(t.events) == 1


def test_the_window_is_configurable() -> None:
    tight = InstantWindow(max_past=timedelta(days=1), max_future=timedelta(seconds=60))
    assert refused(reception("2026-02-28T12:00:00+00:00"), tight)[0]["field"] == "occurred_at"
    assert refused(reception("2026-03-02T12:02:00+00:00"), tight)[0]["field"] == "occurred_at"
    assert translate_many(reception("2026-03-02T12:00:30+00:00"), RECEIVED, tight)[0].events


def test_dates_of_birth_and_data_dates_outside_plausible_ranges_are_refused() -> None:
    assert refused(reception("2026-03-02T10:00:00Z", date_of_birth="1850-01-01"))[0]["field"] == "person.date_of_birth"
    assert refused(reception("2026-03-02T10:00:00Z", date_of_birth="2027-01-01"))[0]["field"] == "person.date_of_birth"
    assert refused(release_date("9999-12-31"))[0]["field"] == "data.release_date"
    assert refused(release_date("0001-01-01"))[0]["field"] == "data.release_date"
    assert translate_many(release_date("2031-06-30"), RECEIVED)[0].events


def test_an_array_with_one_implausible_item_is_refused_whole_with_its_index() -> None:
    problems = refused([reception("2026-03-02T10:00:00Z"), reception("9999-01-01T00:00:00Z")])
    assert any(p["field"] == "[1].occurred_at" for p in problems)


def test_hmpps_movements_are_held_to_the_same_window() -> None:
    movement = {"eventType": "prison-offender-events.prisoner.received", "occurredAt": "2099-01-01T10:00:00Z",
                "additionalInformation": {"nomsNumber": "A1234BC", "prisonId": "LEI", "reason": "ADMISSION"}}
    assert refused(movement)[0]["field"] == "occurred_at"


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, None])))
def test_any_instant_is_taken_or_refused_with_a_named_field(instant: datetime) -> None:
    text = instant.isoformat() if instant.tzinfo else instant.isoformat() + "+14:00"
    try:
        (t,) = translate_many(reception(text), RECEIVED)
    except InputRejected as exc:
        assert exc.problems and all(p["field"] for p in exc.problems)
    else:
        event = t.events[0]
        assert RECEIVED - timedelta(days=3650) <= event.occurred_at <= RECEIVED + timedelta(hours=1)
