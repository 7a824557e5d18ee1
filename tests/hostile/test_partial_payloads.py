"""Parts of a payload that intake cannot take, bodies it must not guess at, and values it must not echo (issue 14,
items 3, 5 and 6). A Common Platform hearing with one bad defendant is taken for the others and says which part it
left out (202 `not_taken`), and the whole payload is kept to be mended; a form body is a 415, not a guess; a
megabyte-long identifier is refused in a few hundred bytes that do not repeat it; the rate limit counts events."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette

from services.intake.service import PART_NOT_TAKEN, IntakeService
from shared import metrics
from shared.clock import FixedClock
from shared.settings import Settings
from tests.unit.test_intake_fuzz import HEARING, RecordingBroker

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
JSON = {"content-type": "application/json"}


def service(**settings: Any) -> tuple[Starlette, RecordingBroker]:
    broker = RecordingBroker()
    intake = IntakeService(Settings(intake_allow_anonymous=True, **settings), broker,  # type: ignore[arg-type]
                           FixedClock(NOW))
    return Starlette(routes=intake.routes()), broker


def post(application: Starlette, bodies: list[tuple[bytes, dict[str, str]]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://i") as client:
            return [await client.post("/v1/events", content=body, headers=headers) for body, headers in bodies]
    return asyncio.run(run())


def counted(metric: Any, **labels: str) -> float:
    return sum(s.value for m in metric.collect() for s in m.samples
               if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items()))


def dead_letters(broker: RecordingBroker) -> list[dict[str, Any]]:
    return [json.loads(m) for t, m in broker.published if t.endswith(".dead-letter")]


def events(broker: RecordingBroker) -> list[dict[str, Any]]:
    return [json.loads(m) for t, m in broker.published if t.endswith(".events")]


def two_defendants(second_pnc: str) -> dict[str, Any]:
    """The sample hearing (a failure-to-appear warrant) with a second defendant, also warranted."""
    hearing = copy.deepcopy(HEARING)
    case = hearing["hearing"]["prosecutionCases"][0]
    second = copy.deepcopy(case["defendants"][0])
    second.update({"id": "d2", "pncId": second_pnc, "croNumber": None})
    second["personDefendant"]["personDetails"].update({"firstName": "Alex", "lastName": "Second"})
    second["offences"][0]["judicialResults"][0]["judicialResultId"] = "r2"
    case["defendants"].append(second)
    return hearing


def test_a_hearing_with_one_bad_defendant_is_taken_for_the_other_and_says_what_it_left_out() -> None:
    application, broker = service()
    before = counted(metrics.EVENTS_REJECTED, channel="http", reason=PART_NOT_TAKEN)
    body = json.dumps(two_defendants("2004/0012345H")).encode()  # check character H: should be D
    (answer,) = post(application, [(body, JSON)])

    assert answer.status_code == 202, answer.text
    taken = events(broker)
    assert taken and answer.json()["accepted"] == [e["id"] for e in taken]
    assert {e["type"] for e in taken} == {"warrant.issued"}
    assert all(e["person"].get("pnc") == "2004/0012345D" for e in taken)  # the first defendant, not the second
    [part] = answer.json()["not_taken"]
    assert "defendants[1].pncId" in part["field"] and "check character" in part["problem"]
    assert "0012345H" not in answer.text  # the problem names the field, never repeats the value

    [kept] = dead_letters(broker)
    assert kept["reason"] == PART_NOT_TAKEN and kept["channel"] == "http"
    assert json.loads(kept["payload"]) == json.loads(body)  # the whole payload, to mend and replay
    assert kept["problems"] == answer.json()["not_taken"]
    assert counted(metrics.EVENTS_REJECTED, channel="http", reason=PART_NOT_TAKEN) == before + 1


def test_a_wholly_good_hearing_has_no_not_taken_and_keeps_nothing() -> None:
    application, broker = service()
    (answer,) = post(application, [(json.dumps(two_defendants("2004/0012345D")).encode(), JSON)])
    assert answer.status_code == 202 and "not_taken" not in answer.json()
    assert dead_letters(broker) == []


def test_in_an_array_the_part_not_taken_is_named_by_its_index() -> None:
    application, broker = service()
    good = copy.deepcopy(HEARING)
    good["hearing"]["id"] = "h-other"
    body = json.dumps([good, two_defendants("bad")]).encode()
    (answer,) = post(application, [(body, JSON)])
    assert answer.status_code == 202, answer.text
    [part] = answer.json()["not_taken"]
    assert part["field"].startswith("[1].")
    assert len(dead_letters(broker)) == 1


def test_a_body_that_is_not_json_by_its_content_type_is_refused_415_and_kept() -> None:
    application, broker = service()
    reception = json.dumps({"type": "prison.reception"}).encode()
    answers = post(application, [
        (b"noms=A1234BC&prison=LEI", {"content-type": "application/x-www-form-urlencoded"}),
        (reception, {"content-type": "text/plain"}),
        (reception, {"content-type": "multipart/form-data; boundary=x"}),
        (reception, {"content-type": "text/\x1b[31mred"}),
    ])
    assert [a.status_code for a in answers] == [415] * 4
    for a in answers:
        assert a.json()["problems"][0]["field"] == "content-type" and "application/json" in a.json()["problems"][0][
            "problem"]
    assert "\x1b" not in answers[3].text
    kept = dead_letters(broker)
    assert [k["reason"] for k in kept] == ["unsupported content type"] * 4
    assert kept[0]["payload"] == "noms=A1234BC&prison=LEI"
    assert events(broker) == []


def test_json_content_types_and_none_at_all_are_read() -> None:
    application, broker = service()
    body = json.dumps(HEARING).encode()
    answers = post(application, [(body, {"content-type": "application/json; charset=utf-8"}),
                                 (body, {"content-type": "application/vnd.cp.hearing+json"}),
                                 (body, {"content-type": ""})])
    assert [a.status_code for a in answers] == [202, 202, 415]  # an empty content type is not JSON either
    assert len({a.json()["accepted"][0] for a in answers[:2]}) == 1  # one event, the second a duplicate


def test_a_megabyte_identifier_is_refused_in_a_short_answer_that_does_not_repeat_it() -> None:
    application, broker = service(intake_max_body_bytes=3_000_000)
    pnc = "2004/" + "7" * 1_000_000
    event = {"id": "big-1", "type": "prison.reception", "occurred_at": "2026-03-02T10:15:00Z", "source": "x",
             "person": {"pnc": pnc, "given_name": "Q" * 500_000}, "data": {"prison_id": "LEI", "reason": "new"}}
    (answer,) = post(application, [(json.dumps(event).encode(), JSON)])
    assert answer.status_code == 422, answer.text[:300]
    assert len(answer.content) < 2_000, len(answer.content)
    assert "7777777777" not in answer.text and "QQQQQQQQQQ" not in answer.text
    assert {p["field"] for p in answer.json()["problems"]} >= {"person.pnc"}


def test_a_megabyte_field_name_is_cut_in_the_answer() -> None:
    application, _ = service(intake_max_body_bytes=3_000_000)
    event = {"id": "big-2", "type": "prison.reception", "occurred_at": "2026-03-02T10:15:00Z", "source": "x",
             "person": {"noms": "A1234BC", "k" * 1_000_000: 1}, "data": {"prison_id": "LEI", "reason": "new"}}
    (answer,) = post(application, [(json.dumps(event).encode(), JSON)])
    assert answer.status_code == 422 and len(answer.content) < 2_000


def test_the_rate_limit_counts_events_not_requests() -> None:
    application, broker = service(intake_rate_per_s=1.0, intake_rate_burst=10)
    one = {"type": "warrant.issued", "occurred_at": "2026-03-02T10:15:00Z", "source": "court",
           "person": {"cro": "065656/91H"}, "data": {"court_code": "B01AA00", "kind": "fta"}}
    batch = [dict(one, id=f"w-{i}", data=dict(one["data"], warrant_id=f"W{i}")) for i in range(8)]
    answers = post(application, [(json.dumps(batch).encode(), JSON),  # 8 of the 10: taken
                                 (json.dumps(batch[:3]).encode(), JSON),  # 3 more than the 2 left: refused
                                 (json.dumps(batch[0]).encode(), JSON)])  # 1 of the 1 left after that request
    assert [a.status_code for a in answers] == [202, 429, 202]
    assert int(answers[1].headers["Retry-After"]) >= 1
    assert len(events(broker)) == 8  # nothing of the refused batch was published; the last was a duplicate id


def test_a_body_over_the_limit_is_refused_413_and_its_head_kept() -> None:
    application, broker = service(intake_max_body_bytes=1_000_000)
    big = json.dumps([{"type": "prison.reception", "notes": "x" * 1000}] * 1500).encode()  # about 1.5 MB
    (answer,) = post(application, [(big, JSON)])
    assert answer.status_code == 413 and answer.json()["problems"][0]["field"] == "(body)"
    [kept] = dead_letters(broker)
    assert kept["reason"] == "body too large" and kept["payload_truncated"] is True
    assert big.startswith(kept["payload"].encode())  # its head, to recognise it and ask the sender
    assert events(broker) == []
