"""Canonical events (contract §1): every type validates, and every refusal says where and why."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from shared.errors import problems_of, rejected_from
from shared.events import DATA_MODELS, EVENT_MODELS, EVENT_TYPES, parse_event

# The table in contract §1: type -> (minimal valid data, required data fields).
MINIMAL: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "prison.reception": ({"prison_id": "LEI", "reason": "new"}, ("prison_id", "reason")),
    "prison.release": ({"prison_id": "LEI", "reason": "released"}, ("prison_id", "reason")),
    "prison.transfer": ({"from_prison_id": "LEI", "to_prison_id": "MDI"}, ("from_prison_id", "to_prison_id")),
    "prison.release_date_set": (
        {"prison_id": "LEI", "release_date": "2026-06-01", "kind": "crd"},
        ("prison_id", "release_date", "kind"),
    ),
    "prison.hdc_eligible": (
        {"prison_id": "LEI", "eligibility_date": "2026-05-01"},
        ("prison_id", "eligibility_date"),
    ),
    "prison.rotl_scheduled": (
        {"prison_id": "LEI", "starts_at": "2026-03-10T08:00:00+00:00"},
        ("prison_id", "starts_at"),
    ),
    "court.bail_decision": ({"court_code": "B01LY00", "decision": "custody"}, ("court_code", "decision")),
    "court.outcome": ({"court_code": "B01LY00", "outcome": "conviction"}, ("court_code", "outcome")),
    "court.sentence": ({"court_code": "C01LY00", "disposal": "custody"}, ("court_code", "disposal")),
    "warrant.issued": (
        {"warrant_id": "W-1", "court_code": "B01LY00", "kind": "fta"},
        ("warrant_id", "court_code", "kind"),
    ),
    "warrant.withdrawn": ({"warrant_id": "W-1"}, ("warrant_id",)),
    "breach.reported": ({"order": "licence"}, ("order",)),
    "police.arrest": ({}, ()),
    "police.intelligence": ({}, ()),
    "offence.high_harm": ({}, ()),
    "register.selected": ({"home_bcu": "13-LD"}, ("home_bcu",)),
    "register.deselected": ({"reason": "stopped_offending"}, ("reason",)),
    "register.moved_area": ({"from_bcu": "13-LD", "to_bcu": "21-ST"}, ("from_bcu", "to_bcu")),
    "register.updated": ({}, ()),
}

# Optional fields, each with a valid value: all may be given together.
OPTIONAL: dict[str, dict[str, Any]] = {
    "prison.hdc_eligible": {"decision_due": "2026-04-20"},
    "prison.rotl_scheduled": {"ends_at": "2026-03-10T18:00:00+00:00"},
    "court.outcome": {"case_ended": True},
    "court.sentence": {"custody_days": 800},
    "warrant.issued": {"backed_for_bail": False, "grade_given": "B"},
    "police.arrest": {"force_code": "13"},
    "police.intelligence": {"force_code": "13"},
    "register.selected": {"strand": "catch_and_convict", "reason": "NIM core nominal"},
    "register.deselected": {"authority": "Leeds IOM panel"},
}

# One wrong value per type: (data field, bad value).
WRONG: dict[str, tuple[str, Any]] = {
    "prison.reception": ("reason", "escaped"),
    "prison.release": ("reason", "escaped"),
    "prison.transfer": ("to_prison_id", "leeds prison!"),
    "prison.release_date_set": ("release_date", "next Tuesday"),
    "prison.hdc_eligible": ("eligibility_date", "2026-02-30"),
    "prison.rotl_scheduled": ("starts_at", "2026-03-10T08:00:00"),  # naive
    "court.bail_decision": ("decision", "bail"),
    "court.outcome": ("outcome", "guilty"),
    "court.sentence": ("custody_days", -1),
    "warrant.issued": ("kind", "bench"),
    "warrant.withdrawn": ("warrant_id", ""),
    "breach.reported": ("order", "parole"),
    "police.arrest": ("force_code", "X" * 11),
    "police.intelligence": ("force_code", 13),
    "offence.high_harm": ("anything", "x"),  # NoData forbids every field
    "register.selected": ("home_bcu", ""),
    "register.deselected": ("reason", "bored"),
    "register.moved_area": ("to_bcu", None),
}

ENUMS: dict[tuple[str, str], list[str]] = {
    ("prison.reception", "reason"): [
        "new",
        "remand",
        "recall",
        "transfer_in",
        "return_from_court",
        "rotl_return",
    ],
    ("prison.release", "reason"): [
        "released",
        "hdc",
        "licence",
        "end_of_sentence",
        "bail",
        "rotl",
        "to_court",
        "transfer",
        "to_hospital",
    ],
    ("prison.release_date_set", "kind"): ["crd", "ard", "confirmed", "hdc", "parole", "other"],
    ("court.bail_decision", "decision"): ["custody", "conditional_bail", "unconditional_bail"],
    ("court.outcome", "outcome"): [
        "conviction",
        "acquittal",
        "adjournment",
        "dismissed",
        "withdrawn",
        "committal",
        "other",
    ],
    ("court.sentence", "disposal"): ["custody", "community", "suspended", "fine", "discharge", "other"],
    ("warrant.issued", "kind"): ["fta", "breach", "recall", "arrest"],
    ("breach.reported", "order"): ["community_order", "licence", "bail"],
    ("register.deselected", "reason"): [
        "stopped_offending",
        "moved_area",
        "long_custody",
        "two_year_review",
        "high_harm",
        "other",
    ],
}


def payload(etype: str, data: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"test-{etype}-1",
        "type": etype,
        "occurred_at": "2026-03-02T10:15:00+00:00",
        "source": "HMP-LEI",
        "person": {"pnc": "2004/0012345D", "noms": "A1234BC"},
        "data": copy.deepcopy(MINIMAL[etype][0]) if data is None else data,
    }
    body.update(top)
    return body


def problems(body: Any) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as info:
        parse_event(body)
    return problems_of(info.value)


def fields(body: Any) -> set[str]:
    return {p["field"] for p in problems(body)}


# --- the set of types --------------------------------------------------------------------------------------


def test_every_contract_type_is_known_and_no_other():
    assert set(EVENT_TYPES) == set(MINIMAL) == set(EVENT_MODELS) == set(DATA_MODELS)


# --- valid events ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("etype", list(MINIMAL))
def test_minimal_payload_validates(etype):
    event = parse_event(payload(etype))
    assert event.type == etype
    assert event.id == f"test-{etype}-1"
    assert event.occurred_at == datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
    assert event.person.pnc == "2004/0012345D"
    assert isinstance(event, EVENT_MODELS[etype])
    assert isinstance(event.data, DATA_MODELS[etype])


@pytest.mark.parametrize("etype", list(MINIMAL))
def test_minimal_payload_validates_from_json(etype):
    event = parse_event(json.dumps(payload(etype)))
    assert event.type == etype
    assert parse_event(event.model_dump_json()) == event  # serialises back to something valid and equal


@pytest.mark.parametrize("etype", list(OPTIONAL))
def test_optional_fields_are_accepted(etype):
    data = {**MINIMAL[etype][0], **OPTIONAL[etype]}
    event = parse_event(payload(etype, data))
    for name in OPTIONAL[etype]:
        assert getattr(event.data, name) is not None


@pytest.mark.parametrize(("etype", "name", "value"), [(t, f, v) for (t, f), vs in ENUMS.items() for v in vs])
def test_every_contract_value_is_accepted(etype, name, value):
    data = {**MINIMAL[etype][0], name: value}
    assert getattr(parse_event(payload(etype, data)).data, name) == value


def test_typed_values_are_parsed():
    e = parse_event(payload("prison.release_date_set"))
    assert e.data.release_date == date(2026, 6, 1)
    e = parse_event(
        payload("prison.rotl_scheduled", {"prison_id": "LEI", "starts_at": "2026-07-10T09:00:00+01:00"})
    )
    assert e.data.starts_at == datetime(2026, 7, 10, 8, 0, tzinfo=UTC)


def test_release_date_null_means_withdrawn_but_must_be_stated():
    e = parse_event(
        payload("prison.release_date_set", {"prison_id": "LEI", "release_date": None, "kind": "crd"})
    )
    assert e.data.release_date is None
    assert "data.release_date" in fields(
        payload("prison.release_date_set", {"prison_id": "LEI", "kind": "crd"})
    )


@pytest.mark.parametrize(
    "stamp", ["2026-03-02T10:15:00Z", "2026-03-02T11:15:00+01:00", "2026-03-02T05:15:00-05:00"]
)
def test_instants_with_any_offset_are_accepted(stamp):
    assert parse_event(payload("police.arrest", occurred_at=stamp)).occurred_at == datetime(
        2026, 3, 2, 10, 15, tzinfo=UTC
    )


# --- wrong data --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("etype", list(WRONG))
def test_wrong_data_field_is_refused_naming_the_field(etype):
    name, bad = WRONG[etype]
    body = payload(etype, {**MINIMAL[etype][0], name: bad})
    with pytest.raises(ValidationError) as info:
        parse_event(body)
    locs = [e["loc"] for e in info.value.errors()]
    assert any(loc[-2:] == ("data", name) or loc[-3:-1] == ("data", name) for loc in locs), locs
    found = problems_of(info.value)
    assert [p["field"] for p in found] == [f"data.{name}"], found
    assert etype not in found[0]["field"]  # the discriminator tag is not part of the location
    assert found[0]["problem"]


@pytest.mark.parametrize(("etype", "name"), [(t, f) for t, (_, req) in MINIMAL.items() for f in req])
def test_each_required_data_field_is_required(etype, name):
    data = {k: v for k, v in MINIMAL[etype][0].items() if k != name}
    found = problems(payload(etype, data))
    assert found == [{"field": f"data.{name}", "problem": "Field required"}]


@pytest.mark.parametrize("etype", list(MINIMAL))
def test_data_of_another_type_is_refused(etype):
    other = "warrant.withdrawn" if etype != "warrant.withdrawn" else "breach.reported"
    assert any(f.startswith("data") for f in fields(payload(etype, MINIMAL[other][0])))


def test_reason_list_in_message():
    found = problems(payload("prison.reception", {"prison_id": "LEI", "reason": "escaped"}))
    assert found[0]["field"] == "data.reason"
    for reason in ENUMS[("prison.reception", "reason")]:
        assert reason in found[0]["problem"]


# --- instants ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stamp", ["2026-03-02T10:15:00", "2026-03-02 10:15:00"])
def test_naive_occurred_at_is_refused(stamp):
    found = problems(payload("prison.reception", occurred_at=stamp))
    assert found == [
        {"field": "occurred_at", "problem": "instant has no offset (write e.g. 2026-03-02T10:15:00+00:00)"}
    ]


def test_naive_occurred_at_is_refused_from_json_too():
    with pytest.raises(ValidationError) as info:
        parse_event(json.dumps(payload("prison.reception", occurred_at="2026-03-02T10:15:00")))
    assert problems_of(info.value)[0]["field"] == "occurred_at"


def test_naive_python_datetime_is_refused():
    found = problems(payload("prison.reception", occurred_at=datetime(2026, 3, 2, 10, 15)))
    assert found[0]["field"] == "occurred_at" and "offset" in found[0]["problem"]


def test_naive_instant_inside_data_is_refused():
    data = {"prison_id": "LEI", "starts_at": "2026-03-10T08:00:00", "ends_at": "2026-03-10T18:00:00"}
    assert fields(payload("prison.rotl_scheduled", data)) == {"data.starts_at", "data.ends_at"}


def test_a_date_is_not_an_instant():
    assert "occurred_at" in fields(payload("police.arrest", occurred_at="2026-03-02"))


def test_aware_python_datetime_is_accepted():
    t = datetime(2026, 3, 2, 10, 15, tzinfo=UTC) + timedelta(hours=1)
    assert parse_event(payload("police.arrest", occurred_at=t)).occurred_at == t


# --- type --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["prison.escape", "PRISON.RECEPTION", "", "prison_reception"])
def test_unknown_type_is_refused_listing_the_known_ones(bad):
    body = payload("prison.reception", type=bad)
    found = problems(body)
    assert len(found) == 1 and found[0]["field"] == "type"
    message = found[0]["problem"]
    assert repr(bad) in message
    for known in EVENT_TYPES:
        assert known in message


def test_missing_type_is_refused():
    body = payload("prison.reception")
    del body["type"]
    found = problems(body)
    assert len(found) == 1 and found[0]["problem"] == "missing field 'type'"
    assert found[0]["field"] in {"type", "(body)"}  # (body) today; "type" would read better (see report)


def test_rejected_from_reads_like_a_sentence():
    with pytest.raises(ValidationError) as info:
        parse_event(
            payload("court.outcome", {"court_code": "B01LY00", "outcome": "guilty"}, occurred_at="2026-03-02")
        )
    rejected = rejected_from(info.value)
    assert rejected.as_dict()["error"] == "invalid event"
    assert {p["field"] for p in rejected.as_dict()["problems"]} == {"data.outcome", "occurred_at"}
    assert "data.outcome:" in str(rejected) and "Traceback" not in str(rejected)


@pytest.mark.parametrize("body", [[], "not json", 42, None])
def test_non_object_bodies_are_refused_with_validation_error(body):
    with pytest.raises(ValidationError):
        parse_event(body)


# --- person ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "person",
    [
        {},
        {"given_name": "Sam", "family_name": "Example", "date_of_birth": "1990-05-01"},
        {"pnc": "", "cro": "  ", "noms": None, "crn": None, "given_name": "Sam"},
    ],
)
def test_person_without_identifier_is_refused(person):
    found = problems(payload("prison.reception", person=person))
    assert found == [
        {"field": "person", "problem": "a person needs at least one identifier: pnc, cro, noms or crn"}
    ]


def test_missing_person_is_refused():
    body = payload("prison.reception")
    del body["person"]
    assert problems(body) == [{"field": "person", "problem": "Field required"}]


@pytest.mark.parametrize(
    ("person", "normal"),
    [
        ({"pnc": "04/12345d"}, {"pnc": "2004/0012345D"}),
        ({"pnc": "20020073319Z"}, {"pnc": "2002/0073319Z"}),
        ({"cro": "65656/91h"}, {"cro": "065656/91H"}),
        ({"cro": "sf91/65656h"}, {"cro": "SF91/065656H"}),
        ({"noms": " a1234bc "}, {"noms": "A1234BC"}),
        ({"crn": "x123456"}, {"crn": "X123456"}),
        (
            {"pnc": "2004/12345D", "cro": "065656/91H", "noms": "a1234bc", "crn": "x123456"},
            {"pnc": "2004/0012345D", "cro": "065656/91H", "noms": "A1234BC", "crn": "X123456"},
        ),
        ({"pnc": "", "noms": "A1234BC"}, {"noms": "A1234BC"}),
    ],
)
def test_identifiers_are_normalised(person, normal):
    event = parse_event(payload("prison.reception", person=person))
    assert event.person.identifiers() == normal
    assert event.person.log_ref == next(f"{k}:{v}" for k, v in normal.items())


@pytest.mark.parametrize(
    ("person", "field", "words"),
    [
        ({"pnc": "2004/0012345A"}, "person.pnc", "expected D"),
        ({"cro": "065656/91A"}, "person.cro", "expected H"),
        ({"noms": "A1234B"}, "person.noms", "NOMS"),
        ({"crn": "X12345"}, "person.crn", "CRN"),
        ({"noms": "A1234BC", "date_of_birth": "01/05/1990"}, "person.date_of_birth", ""),
        ({"noms": "A1234BC", "given_name": "x" * 101}, "person.given_name", ""),
    ],
)
def test_bad_person_fields_are_named(person, field, words):
    found = problems(payload("prison.reception", person=person))
    assert [p["field"] for p in found] == [field]
    assert words in found[0]["problem"]
    assert not found[0]["problem"].startswith("Value error")


def test_names_and_date_of_birth_are_kept_but_never_logged():
    person = {"noms": "A1234BC", "given_name": "Sam", "family_name": "Example", "date_of_birth": "1990-05-01"}
    event = parse_event(payload("prison.reception", person=person))
    assert event.person.given_name == "Sam" and event.person.date_of_birth == date(1990, 5, 1)
    assert "Sam" not in event.person.log_ref and "1990" not in event.person.log_ref
    assert "Sam" not in event.log_ref


# --- extra fields ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "field"),
    [("top", "priority"), ("person", "nickname"), ("data", "comment")],
)
def test_extra_fields_are_forbidden(where, field):
    body = payload("prison.reception")
    target = body if where == "top" else body[where]
    target[field] = "x"
    expected = field if where == "top" else f"{where}.{field}"
    found = problems(body)
    assert [p["field"] for p in found] == [expected]
    assert "not permitted" in found[0]["problem"].lower()


@pytest.mark.parametrize("etype", list(MINIMAL))
def test_extra_data_fields_are_forbidden_for_every_type(etype):
    data = {**MINIMAL[etype][0], "unexpected": 1}
    assert fields(payload(etype, data)) == {"data.unexpected"}


def test_events_are_immutable():
    event = parse_event(payload("prison.reception"))
    with pytest.raises(ValidationError):
        event.id = "other"  # type: ignore[misc]
