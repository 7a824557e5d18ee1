"""Every class of hostile input (tests/hostile/generate.py) through each channel, in process: HTTP, the raw topic's
handler and `simulate`. Each item is taken, or refused with a 4xx whose problems name a field without repeating its
value, and kept on the dead-letter topic with its reason; nothing is a 5xx or a traceback, nothing stops the
handler. The same classes run on the real stack in the fault suite (tests/faults, 'bad input')."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from ppo_alerts.simulate import run as simulate
from services.intake.service import IntakeService
from shared.clock import FixedClock
from shared.settings import Settings
from tests.faults.stack import people, register_csv
from tests.hostile.generate import CLASSES, hostile
from tests.unit.test_intake_fuzz import RecordingBroker

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
PEOPLE = people()
ITEMS = hostile(PEOPLE, NOW, seed=3)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "s01_a1_reception_reasons"


def intake() -> tuple[IntakeService, RecordingBroker]:
    broker = RecordingBroker()
    return IntakeService(Settings(intake_allow_anonymous=True), broker,  # type: ignore[arg-type]
                         FixedClock(NOW)), broker


def kept(broker: RecordingBroker) -> list[dict[str, Any]]:
    return [json.loads(m) for t, m in broker.published if t.endswith(".dead-letter")]


def test_every_class_is_generated() -> None:
    assert set(Counter(cls for cls, _, _ in ITEMS)) == set(CLASSES)


def test_over_http_each_is_taken_or_refused_4xx_kept_and_never_echoed() -> None:
    service, broker = intake()
    application = Starlette(routes=service.routes())

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://i") as client:
            return [await client.post("/v1/events", content=body,
                                      headers={"content-type": ctype} if ctype else {})
                    for _, body, ctype in ITEMS]

    answers = asyncio.run(run())
    by_class: Counter[tuple[str, int]] = Counter()
    should_keep = 0
    for (cls, _body, _), answer in zip(ITEMS, answers, strict=True):
        by_class[(cls, answer.status_code)] += 1
        assert answer.status_code in (202, 400, 413, 415, 422), (cls, answer.status_code, answer.text[:200])
        assert "Traceback" not in answer.text and ".py" not in answer.text
        assert len(answer.content) < 8_000, (cls, len(answer.content))  # nothing of a huge field comes back
        if answer.status_code != 202:
            assert answer.json()["problems"] and all(p["field"] for p in answer.json()["problems"]), answer.text
            should_keep += 1
        elif answer.json().get("not_taken"):
            should_keep += 1
    assert len(kept(broker)) == should_keep
    assert all(k["reason"] for k in kept(broker))
    # the classes that are never taken whole
    for cls in ("deep nesting", "wrong content type", "not JSON"):
        assert not by_class[(cls, 202)], (cls, by_class)
    assert by_class[("part not taken", 202)] == sum(1 for c, _, _ in ITEMS if c == "part not taken")


def test_on_the_raw_topic_each_is_taken_or_parked_and_the_handler_goes_on() -> None:
    service, broker = intake()

    class Record:
        def __init__(self, body: bytes) -> None:
            self.body = body

    async def run() -> None:
        for _, body, _ in ITEMS:
            await service.on_raw(Record(body))  # type: ignore[arg-type]  # raises nothing, whatever it holds

    asyncio.run(run())
    assert kept(broker), "some of it is refused"
    assert {k["channel"] for k in kept(broker)} == {"kafka"}


def test_through_simulate_each_bad_line_is_reported_and_the_run_completes(tmp_path: Path) -> None:
    lines = []
    for _, body, _ in ITEMS:
        try:
            lines.append(json.dumps({"at": NOW.isoformat(), "body": json.loads(body)}))
        except (ValueError, UnicodeDecodeError, RecursionError):
            lines.append(body.decode("utf-8", "replace").replace("\n", " "))
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    register = tmp_path / "register.csv"
    register.write_text(register_csv(PEOPLE, NOW.date()), encoding="utf-8")
    out = tmp_path / "out"
    simulate(register, EXAMPLES / "directory.yaml", events, NOW.replace(day=3), out)
    reported = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines() if x.strip()]
    assert reported and all(r["line"] and r["reason"] for r in reported)
    assert not any("internal error" in r["reason"] for r in reported), [r for r in reported
                                                                        if "internal error" in r["reason"]][:3]
