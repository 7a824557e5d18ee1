"""Every file in shared/real-samples/ goes through intake: what the agencies' own test data yields.

The HMPPS files are AsyncAPI message descriptions; the example payload is rebuilt from their `example`
values. The Common Platform files are hearing bodies as posted (wrapped, bare, and a large update).
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.intake.translate import Translation, translate, translate_many
from shared.errors import InputRejected
from shared.identifiers import check_letter

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "real-samples"  # the workspace next to the project
CP = SAMPLES / "common-platform"
HMPPS = SAMPLES / "hmpps-domain-events"
R = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared/real-samples not available")


def example(node: Any) -> Any:
    """The example payload an AsyncAPI/JSON-schema description describes, from its `example` values."""
    if not isinstance(node, dict):
        return None
    if "properties" in node:
        return {k: example(v) for k, v in node["properties"].items()}
    if "items" in node:
        items = node["items"]
        return [example(i) for i in items] if isinstance(items, list) else [example(items)]
    return node.get("example")


def hmpps_example(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((HMPPS / name).read_text())
    payload = example(doc["payload"])
    assert isinstance(payload, dict) and payload["eventType"] == doc["name"]
    return payload


def load_cp(name: str) -> dict[str, Any]:
    return json.loads((CP / name).read_text())  # type: ignore[no-any-return]


def events(t: Translation) -> list[Any]:
    """The events, typed loosely: each is one of the per-type models, with its own `type` and `data`."""
    return list(t.events)


def sns(inner: dict[str, Any]) -> dict[str, Any]:
    return {"Type": "Notification", "MessageId": "m", "Message": json.dumps(inner), "MessageAttributes": {}}


def all_sample_files() -> list[Path]:
    return sorted(p for p in SAMPLES.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml", ".yml"))


def payload_of(path: Path) -> Any:
    if path.suffix in (".yaml", ".yml"):
        return example(yaml.safe_load(path.read_text())["payload"])
    return json.loads(path.read_text())


def test_the_samples_are_all_here() -> None:
    names = {p.name for p in all_sample_files()}
    assert {
        "court-hearing-event.json",
        "hearing-1.json",
        "large-hearing-update.json",
        "hmpps-domain-event.schema.json",
        "prison-offender-events_prisoner-received.yaml",
        "prison-offender-events_prisoner-released.yaml",
        "prisoner-offender-search_prisoner-received.yaml",
        "prisoner-offender-search_prisoner-released.yaml",
        "create-and-vary-a-licence_licence-activated.yaml",
    } <= names


@pytest.mark.parametrize("path", all_sample_files(), ids=lambda p: p.name)
def test_every_sample_file_goes_through_without_crashing(path: Path) -> None:
    payload = payload_of(path)
    try:
        out = translate_many(payload, R)
    except InputRejected as exc:
        assert path.name.endswith(".schema.json"), exc  # only the schema (not an event) is refused
        assert exc.problems
        return
    assert len(out) == 1
    assert out[0].format in ("hmpps", "common-platform")
    for e in out[0].events:  # what an adapter emits round-trips through the canonical model unchanged
        assert type(e).model_validate_json(e.model_dump_json()) == e


# --- HMPPS examples -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "etype", "reason", "noms", "occurred"),
    [
        (
            "prison-offender-events_prisoner-received.yaml",
            "prison.reception",
            "remand",
            "A3690EA",
            "2024-06-11T14:13:21+00:00",
        ),  # nomisMovementReasonCode N
        (
            "prison-offender-events_prisoner-released.yaml",
            "prison.release",
            "released",
            "A3695EA",
            "2024-06-11T14:14:46+00:00",
        ),
        (
            "prisoner-offender-search_prisoner-received.yaml",
            "prison.reception",
            "new",
            "A7928DZ",
            "2024-06-14T08:06:16.226039+00:00",
        ),  # READMISSION
        (
            "prisoner-offender-search_prisoner-released.yaml",
            "prison.release",
            "released",
            "A3766EA",
            "2024-06-14T08:07:15.624796+00:00",
        ),
    ],
)
def test_prisoner_movement_examples(name: str, etype: str, reason: str, noms: str, occurred: str) -> None:
    payload = hmpps_example(name)
    t = translate(payload, R)
    assert (t.format, t.ignored, t.problems) == ("hmpps", [], [])
    (e,) = events(t)
    assert (e.type, e.data.reason, e.data.prison_id, e.person.noms) == (etype, reason, "SWI", noms)
    assert e.occurred_at.astimezone(UTC).isoformat() == occurred
    assert e.source == "HMPPS:" + name.split("_")[0]
    wrapped = translate(sns(payload), R)
    assert wrapped.events == t.events


def test_licence_activated_example_is_accepted_but_not_mapped() -> None:
    payload = hmpps_example("create-and-vary-a-licence_licence-activated.yaml")
    t = translate(payload, R)
    assert (t.format, t.events, t.ignored) == ("hmpps", [], ["hmpps:event-type-not-mapped"])


def test_the_licence_example_as_an_hdc_activation() -> None:
    payload = hmpps_example("create-and-vary-a-licence_licence-activated.yaml")
    payload["eventType"] = "create-and-vary-a-licence.hdc-licence.activated"
    assert translate(payload, R).ignored == ["hmpps:hdc-licence:no-prison-id"]  # the example has no prison
    payload["additionalInformation"]["prisonId"] = "SWI"
    (e,) = events(translate(payload, R))
    assert (e.type, e.data.reason, e.person.noms, e.person.crn) == (
        "prison.release",
        "hdc",
        "A7928DZ",
        "X738925",
    )


def test_examples_have_what_the_envelope_schema_requires() -> None:
    schema = json.loads((HMPPS / "hmpps-domain-event.schema.json").read_text())
    for path in sorted(HMPPS.glob("*.yaml")):
        payload = hmpps_example(path.name)
        assert set(schema["required"]) <= set(payload), path.name
        minimal = {k: payload[k] for k in schema["required"]}  # only the required fields: never rejected
        t = translate(minimal, R)
        assert t.format == "hmpps" and t.events == []


def test_the_schema_itself_is_refused_cleanly() -> None:
    with pytest.raises(InputRejected):
        translate(json.loads((HMPPS / "hmpps-domain-event.schema.json").read_text()), R)


# --- Common Platform hearings ---------------------------------------------------------------------------


def test_court_hearing_event_with_pnc_number1() -> None:
    t = translate(load_cp("court-hearing-event.json"), R)
    assert (t.format, t.events) == ("common-platform", [])
    assert t.ignored == ["cp:no-identifier", "cp:no-identifier"]
    fields = [p["field"] for p in t.problems]
    assert fields == [
        "hearing.prosecutionCases[0].defendants[0].pncId",
        "hearing.prosecutionCases[0].defendants[0].croNumber",
        "hearing.prosecutionCases[0].defendants[1].pncId",
        "hearing.prosecutionCases[0].defendants[1].croNumber",
    ]
    assert "not a PNC ID" in t.problems[0]["problem"]
    assert "not a CRO number" in t.problems[1]["problem"]
    assert not any("number1" in p["problem"] or "number2" in p["problem"] for p in t.problems)


def test_court_hearing_event_with_identifiers_fixed_still_has_no_results() -> None:
    payload = load_cp("court-hearing-event.json")
    for d in payload["hearing"]["prosecutionCases"][0]["defendants"]:
        d["pncId"], d["croNumber"] = "2004/0012345D", None
    t = translate(payload, R)
    assert (t.events, t.ignored, t.problems) == ([], [], [])  # offences without judicial results


def test_hearing_1_is_a_bare_hearing_whose_defendants_have_no_identifiers() -> None:
    t = translate(load_cp("hearing-1.json"), R)
    assert (t.format, t.events) == ("common-platform", [])
    assert t.ignored == ["cp:no-identifier", "cp:no-identifier"]
    assert [p["field"] for p in t.problems] == [
        "prosecutionCases[0].defendants[0].pncId",
        "prosecutionCases[0].defendants[1].pncId",
    ]


def test_hearing_1_with_identifiers_reports_its_adjournment_as_not_mapped() -> None:
    payload = load_cp("hearing-1.json")
    payload["prosecutionCases"][0]["defendants"][0]["pncId"] = "2004/0012345D"
    t = translate(payload, R)
    assert t.events == []
    assert t.ignored == ["cp:result-not-mapped", "cp:no-identifier"]  # "Adjournment": no code, not FINAL


def test_large_hearing_update() -> None:
    payload = load_cp("large-hearing-update.json")
    started = time.perf_counter()
    t = translate(payload, R)
    assert time.perf_counter() - started < 1.0
    assert (t.format, t.events) == ("common-platform", [])
    assert Counter(t.ignored) == {"cp:no-identifier": 14, "cp:result-not-mapped": 4}
    problems = {p["field"]: p["problem"] for p in t.problems}
    assert len(t.problems) == 24
    assert "not a PNC ID" in problems["hearing.prosecutionCases[0].defendants[0].pncId"]
    assert "cannot be identified" in problems["hearing.prosecutionCases[1].defendants[0].pncId"]
    # a PNC without its slash is fine; the CRO next to it is not
    assert "hearing.prosecutionCases[2].defendants[0].pncId" not in problems
    assert "not a CRO number" in problems["hearing.prosecutionCases[2].defendants[0].croNumber"]
    assert "check character" in problems["hearing.prosecutionCases[4].defendants[0].pncId"]
    assert not any("Redacted" in p for p in problems.values())


def _with_identifiers(payload: dict[str, Any]) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    for ci, case in enumerate(payload["hearing"]["prosecutionCases"]):
        for di, d in enumerate(case["defendants"]):
            if d.get("pncId") == "Redacted":
                serial = ci * 100 + di + 1
                d["pncId"] = f"2010/{serial:07d}" + check_letter(int(f"10{serial:07d}"))
            if d.get("croNumber") == "Redacted":
                del d["croNumber"]
    return payload


def test_large_hearing_update_results_all_come_from_earlier_hearings() -> None:
    t = translate(_with_identifiers(load_cp("large-hearing-update.json")), R)
    assert t.events == []
    assert Counter(t.ignored) == {
        "cp:result-from-earlier-hearing": 112,
        "cp:result-not-mapped": 4,
        "cp:no-identifier": 4,
    }


def test_large_hearing_update_as_if_resulted_at_this_hearing() -> None:
    payload = _with_identifiers(load_cp("large-hearing-update.json"))
    hearing_id = payload["hearing"]["id"]
    for case in payload["hearing"]["prosecutionCases"]:
        for d in case["defendants"]:
            for o in d.get("offences", []):
                for r in o.get("judicialResults", []) or []:
                    if "orderedHearingId" in r:
                        r["orderedHearingId"] = hearing_id
    t = translate(payload, R)
    kinds = Counter(
        (e.type, e.data.model_dump().get("decision") or e.data.model_dump().get("outcome")) for e in events(t)
    )
    assert kinds == {
        ("court.outcome", "other"): 10,
        ("court.bail_decision", "conditional_bail"): 5,
        ("court.bail_decision", "custody"): 3,
    }
    assert len(t.events) == 18
    assert len({e.id for e in events(t)}) == 18
    assert all(e.data.court_code == "B10JQ" for e in events(t))
    assert all(e.occurred_at == datetime(2024, 11, 4, 10, 0, tzinfo=UTC) for e in events(t))
    assert Counter(t.ignored)["cp:duplicate-result"] == 44
    again = translate(copy.deepcopy(payload), R)
    assert [e.id for e in again.events] == [e.id for e in events(t)]  # a replay gives the same ids
