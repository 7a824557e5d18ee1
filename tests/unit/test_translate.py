"""The intake core: format detection, canonical events, arrays, and fuzzing (only InputRejected escapes)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake.translate import FORMATS, Translation, detect_format, translate, translate_many
from shared.errors import InputRejected

R = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

CANONICAL = {
    "id": "e2-1",
    "type": "warrant.issued",
    "occurred_at": "2026-02-13T15:30:00+00:00",
    "source": "TEST",
    "person": {"noms": "h2345jk", "pnc": "04/12345D"},
    "data": {"warrant_id": "W-ST-1", "court_code": "B21AA00", "kind": "fta", "grade_given": "B"},
}
HMPPS = {
    "eventType": "prisoner-offender-search.prisoner.received",
    "version": 1,
    "occurredAt": "2026-02-10T14:00:00Z",
    "additionalInformation": {"nomsNumber": "G1234HJ", "prisonId": "LEI", "reason": "NEW_ADMISSION"},
    "personReference": {"identifiers": [{"type": "NOMS", "value": "G1234HJ"}]},
}
HEARING = {
    "hearing": {
        "id": "h1",
        "courtCentre": {"code": "B01LY00"},
        "hearingDays": [{"sittingDay": "2026-02-13T10:00:00Z"}],
        "prosecutionCases": [
            {
                "defendants": [
                    {
                        "id": "d1",
                        "pncId": "2004/0012345D",
                        "croNumber": "065656/91H",
                        "personDefendant": {
                            "personDetails": {
                                "firstName": "Sam",
                                "lastName": "Example",
                                "dateOfBirth": "1990-05-01",
                            }
                        },
                        "offences": [
                            {
                                "id": "o1",
                                "offenceCode": "BA76001",
                                "judicialResults": [
                                    {
                                        "judicialResultId": "r1",
                                        "cjsCode": "4576",
                                        "category": "INTERMEDIARY",
                                        "orderedDate": "2026-02-13",
                                    },
                                    {"judicialResultId": "r2", "cjsCode": "4028", "category": "INTERMEDIARY"},
                                    {
                                        "judicialResultId": "r3",
                                        "cjsCode": "1002",
                                        "category": "FINAL",
                                        "judicialResultPrompts": [
                                            {
                                                "label": "Total custodial period",
                                                "value": "2 Years 1 Month",
                                                "type": "DURATION",
                                            }
                                        ],
                                    },
                                    {
                                        "judicialResultId": "r4",
                                        "cjsCode": "2006",
                                        "category": "FINAL",
                                        "isConvictedResult": True,
                                    },
                                    {"judicialResultId": "r5", "cjsCode": "1115", "category": "FINAL"},
                                    {"judicialResultId": "r6", "cjsCode": "2509", "category": "FINAL"},
                                    {
                                        "judicialResultId": "r7",
                                        "cjsCode": "4027",
                                        "category": "INTERMEDIARY",
                                        "resultText": "Defendant failed to appear",
                                    },
                                ],
                            },
                        ],
                    }
                ]
            }
        ],
    }
}


def events(t: Translation) -> list[Any]:
    """The events, typed loosely: each is one of the per-type models, with its own `type` and `data`."""
    return list(t.events)


def sns(inner: dict[str, Any]) -> dict[str, Any]:
    return {"Type": "Notification", "MessageId": "m1", "Message": json.dumps(inner)}


# --- detection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "fmt"),
    [
        (CANONICAL, "canonical"),
        ({"type": "warrant.issued"}, "canonical"),  # incomplete, but clearly meant as canonical
        ({"data": {}}, "canonical"),
        (HMPPS, "hmpps"),
        ({"eventType": "anything"}, "hmpps"),
        (sns(HMPPS), "hmpps"),
        (HEARING, "common-platform"),
        (HEARING["hearing"], "common-platform"),
        ({"prosecutionCases": []}, "common-platform"),
        ({"courtCentre": {}, "type": {"description": "Sentence"}}, "common-platform"),
    ],
)
def test_detect_format(payload: dict[str, Any], fmt: str) -> None:
    assert detect_format(payload) == fmt
    assert fmt in FORMATS


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({}, "expected a canonical event"),
        ({"foo": 1}, "expected a canonical event"),
        ({"Type": "SubscriptionConfirmation", "Message": "x"}, "expected"),
        ([CANONICAL], "got an array"),
        ("text", "got a string"),
        (None, "got null"),
        (3, "got a number"),
        (True, "got a boolean"),
    ],
)
def test_unrecognised_payloads_are_rejected(payload: Any, says: str) -> None:
    with pytest.raises(InputRejected) as exc:
        detect_format(payload)
    assert exc.value.reason == "unrecognised payload"
    assert says in exc.value.problems[0]["problem"]
    with pytest.raises(InputRejected):
        translate(payload, R)


# --- canonical ------------------------------------------------------------------------------------


def test_a_canonical_event_is_validated_and_normalised() -> None:
    t = translate(CANONICAL, R)
    assert isinstance(t, Translation)
    assert (t.format, t.ignored, t.problems) == ("canonical", [], [])
    (e,) = events(t)
    assert (e.id, e.type, e.person.noms, e.person.pnc) == (
        "e2-1",
        "warrant.issued",
        "H2345JK",
        "2004/0012345D",
    )


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"occurred_at": "2026-02-13T15:30:00"}, "occurred_at", "no offset"),
        ({"person": {"noms": "not-a-noms"}}, "person.noms", "NOMS"),
        ({"person": {}}, "person", "at least one identifier"),
        ({"type": "warrant.exploded"}, "type", "unknown event type"),
        ({"data": {"warrant_id": "W", "court_code": "B", "kind": "sneeze"}}, "data.kind", "Input should be"),
        ({"extra": 1}, "extra", "Extra inputs"),
    ],
)
def test_an_invalid_canonical_event_says_which_field_and_why(
    change: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(InputRejected) as exc:
        translate({**CANONICAL, **change}, R)
    assert exc.value.reason == "invalid event"
    assert any(p["field"] == field and says in p["problem"] for p in exc.value.problems), exc.value.problems


def test_translation_is_immutable() -> None:
    t = translate(CANONICAL, R)
    with pytest.raises(AttributeError):
        t.format = "hmpps"  # type: ignore[misc]


# --- the other formats through the front door -----------------------------------------------------


def test_hmpps_through_translate() -> None:
    t = translate(HMPPS, R)
    assert (t.format, [e.type for e in events(t)]) == ("hmpps", ["prison.reception"])
    assert translate(sns(HMPPS), R).events == t.events


def test_a_hearing_through_translate() -> None:
    t = translate(HEARING, R)
    assert t.format == "common-platform"
    case_facts = {"case_urn", "hearing_date", "court_name", "result_text"}  # test_feeds_common_platform.py
    got = [(e.type, e.data.model_dump(exclude={"warrant_id", *case_facts})) for e in events(t)]
    assert got == [
        (
            "warrant.issued",
            {"court_code": "B01LY00", "kind": "fta", "backed_for_bail": False, "grade_given": None},
        ),
        ("court.bail_decision", {"court_code": "B01LY00", "decision": "custody"}),
        ("court.sentence", {"court_code": "B01LY00", "disposal": "custody", "custody_days": 760}),
        ("court.outcome", {"court_code": "B01LY00", "outcome": "conviction", "case_ended": True}),
        ("court.sentence", {"court_code": "B01LY00", "disposal": "suspended", "custody_days": None}),
        ("warrant.withdrawn", {}),
        ("court.bail_decision", {"court_code": "B01LY00", "decision": "conditional_bail"}),
    ]
    assert len({e.id for e in events(t)}) == len(t.events)
    assert all(e.person.pnc == "2004/0012345D" and e.person.cro == "065656/91H" for e in events(t))


# --- translate_many ---------------------------------------------------------------------------------


def test_one_object_or_an_array() -> None:
    assert [t.format for t in translate_many(CANONICAL, R)] == ["canonical"]
    assert [t.format for t in translate_many([CANONICAL, HMPPS, sns(HMPPS), HEARING], R)] == [
        "canonical",
        "hmpps",
        "hmpps",
        "common-platform",
    ]
    assert translate_many([], R) == []


def test_json_text_and_bytes_are_decoded_once() -> None:
    body = json.dumps([CANONICAL, HMPPS])
    assert [t.format for t in translate_many(body, R)] == ["canonical", "hmpps"]
    assert [t.format for t in translate_many(body.encode(), R)] == ["canonical", "hmpps"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("{", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid"),
        ("[" * 50_000 + "]" * 50_000, "nested too deeply"),
        ("", "not valid JSON"),
    ],
)
def test_bad_json_text_is_rejected(body: Any, says: str) -> None:
    with pytest.raises(InputRejected) as exc:
        translate_many(body, R)
    assert says in exc.value.problems[0]["problem"]


def test_an_array_with_a_bad_item_is_rejected_whole_with_indexed_problems() -> None:
    bad = {**CANONICAL, "person": {"noms": "nope"}}
    with pytest.raises(InputRejected) as exc:
        translate_many([CANONICAL, bad, "junk", [1]], R)
    assert exc.value.reason == "invalid items in array"
    assert exc.value.problems[0] == {"field": "(body)", "problem": "3 of 4 items rejected; none was accepted"}
    fields = [p["field"] for p in exc.value.problems]
    assert fields[1:] == ["[1].person.noms", "[2]", "[3]"]


def test_a_huge_array_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    import services.intake.translate as tr

    monkeypatch.setattr(tr, "MAX_BATCH", 3)
    with pytest.raises(InputRejected, match="too many"):
        translate_many([CANONICAL] * 4, R)


def test_a_large_batch_leaves_the_garbage_collector_as_it_found_it() -> None:
    import gc

    assert gc.isenabled()
    out = translate_many([CANONICAL] * 1500, R)
    assert len(out) == 1500 and gc.isenabled()
    with pytest.raises(InputRejected):
        translate_many([CANONICAL] * 1500 + ["x"], R)
    assert gc.isenabled()


# --- fuzzing: nothing but InputRejected ever escapes --------------------------------------------------

KEYS = [
    "type",
    "data",
    "id",
    "person",
    "occurred_at",
    "source",
    "eventType",
    "Type",
    "Message",
    "version",
    "occurredAt",
    "additionalInformation",
    "personReference",
    "identifiers",
    "value",
    "nomsNumber",
    "prisonId",
    "reason",
    "nomisMovementReasonCode",
    "hearing",
    "prosecutionCases",
    "courtCentre",
    "code",
    "hearingDays",
    "sittingDay",
    "isCancelled",
    "defendants",
    "pncId",
    "croNumber",
    "personDefendant",
    "personDetails",
    "firstName",
    "lastName",
    "dateOfBirth",
    "offences",
    "offenceCode",
    "judicialResults",
    "cjsCode",
    "category",
    "isConvictedResult",
    "orderedDate",
    "orderedHearingId",
    "judicialResultPrompts",
    "label",
    "resultText",
    "isDeleted",
    "defendantCaseJudicialResults",
    "defendantJudicialResults",
    "masterDefendantId",
    "judicialResult",
    "conditionalReleaseDate",
    "confirmedReleaseDate",
    "homeDetentionCurfewEligibilityDate",
    "releaseDate",
]
STRINGS = [
    "",
    " ",
    "Notification",
    "NOMS",
    "nomsNumber",
    "crn",
    "A1234BC",
    "a1234bc",
    "X123456",
    "2004/0012345D",
    "04/12345D",
    "065656/91H",
    "pnc number1",
    "LEI",
    "ADMISSION",
    "RELEASED",
    "UNKNOWN",
    "TRANSFERRED",
    "L",
    "N",
    "4575",
    "4576",
    "2509",
    "4027",
    "4028",
    "1002",
    "1115",
    "FINAL",
    "BA76001",
    "6 Months",
    "Total custodial period",
    "2026-02-13",
    "2026-02-13T10:00:00Z",
    "2026-02-13T10:00:00",
    "prison-offender-events.prisoner.received",
    "prisoner-offender-search.prisoner.released",
    "create-and-vary-a-licence.hdc-licence.activated",
    "calculate-release-dates.prisoner.changed",
    "warrant.issued",
    "prison.reception",
    "h1",
    "d1",
    "\x00",
    "\ud800",
]
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.sampled_from(STRINGS),
    st.text(max_size=20),
)
json_like = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=6),
    ),
    max_leaves=40,
)


def must_not_crash(payload: Any) -> None:
    try:
        translate_many(payload, R)
    except InputRejected as exc:
        assert isinstance(exc.reason, str) and exc.reason
        assert all(
            set(p) == {"field", "problem"} and all(isinstance(v, str) for v in p.values())
            for p in exc.problems
        )
    else:
        pass


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(json_like)
def test_arbitrary_json_like_input_raises_only_input_rejected(payload: Any) -> None:
    must_not_crash(payload)


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), json_like, max_size=8))
def test_arbitrary_objects_with_known_keys_raise_only_input_rejected(payload: dict[str, Any]) -> None:
    must_not_crash(payload)
    must_not_crash({"hearing": payload})
    must_not_crash({"eventType": "prison-offender-events.prisoner.received", **payload})
    must_not_crash(sns(payload) if _jsonable(payload) else payload)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (ValueError, TypeError):
        return False
    return True


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _mutate(doc: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


SEEDS = [
    CANONICAL,
    HMPPS,
    sns(HMPPS),
    HEARING,
    HEARING["hearing"],
    {
        **HMPPS,
        "eventType": "calculate-release-dates.prisoner.changed",
        "additionalInformation": {
            "nomsNumber": "G1234HJ",
            "prisonId": "LEI",
            "conditionalReleaseDate": "2026-07-15",
            "homeDetentionCurfewEligibilityDate": "2026-05-01",
        },
    },
    {
        **HMPPS,
        "eventType": "create-and-vary-a-licence.hdc-licence.activated",
        "additionalInformation": {"prisonId": "LEI"},
    },
]


@FUZZ
@given(st.data())
def test_real_shapes_with_one_part_replaced_raise_only_input_rejected(data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(SEEDS))
    path = data.draw(st.sampled_from(_paths(seed)))
    delete = bool(path) and data.draw(st.booleans())
    value = data.draw(json_like)
    mutated = _mutate(seed, path, value, delete)
    must_not_crash(mutated)
    if isinstance(mutated, dict) and path and path[0] != "Message" and _jsonable(mutated):
        must_not_crash(sns(mutated))
