"""Bodies that gave a bare 500 and kept nothing (issue 14, part 5): JSON nested too deep, and rejected bodies too
large for a dead-letter record. Each is now a 4xx with its reason, kept on the dead-letter topic, and counted."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from services.intake.service import IntakeService
from services.intake.translate import translate_many
from shared import metrics
from shared.clock import FixedClock
from shared.errors import InputRejected
from shared.kafka import MAX_PARKED_PAYLOAD_BYTES
from shared.settings import Settings
from tests.unit.test_intake_fuzz import RecordingBroker

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def service() -> tuple[Starlette, RecordingBroker]:
    broker = RecordingBroker()
    intake = IntakeService(Settings(intake_allow_anonymous=True, intake_max_body_bytes=3_000_000),
                           broker, FixedClock(NOW))  # type: ignore[arg-type]
    return Starlette(routes=intake.routes()), broker


def post(application: Starlette, bodies: list[bytes]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://i") as client:
            return [await client.post("/v1/events", content=b, headers={"content-type": "application/json"})
                    for b in bodies]
    return asyncio.run(run())


def nested(depth: int) -> bytes:
    return b'{"type": "prison.reception", "data": ' + b"[" * depth + b"]" * depth + b"}"


def rejected(channel: str) -> float:
    return sum(s.value for m in metrics.EVENTS_REJECTED.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels.get("channel") == channel)


@pytest.mark.parametrize("depth", [500, 980, 990, 1_000, 5_000, 100_000])
def test_json_nested_at_any_depth_is_a_4xx_kept_and_counted(depth: int) -> None:
    application, broker = service()
    before = rejected("http")
    (response,) = post(application, [nested(depth)])
    assert response.status_code in (400, 422), response.text
    answer = response.json()
    assert answer["error"] and answer["problems"] and "Traceback" not in response.text
    parked = [json.loads(m) for t, m in broker.published if t.endswith("dead-letter")]
    assert len(parked) == 1 and parked[0]["reason"] == answer["error"]
    assert rejected("http") == before + 1


def test_a_decoded_payload_nested_too_deep_for_validation_is_refused_not_a_crash() -> None:
    data: Any = []
    for _ in range(20_000):
        data = [data]
    try:
        translate_many({"type": "prison.reception", "data": data}, NOW)
    except InputRejected as exc:
        assert exc.problems
    else:
        pytest.fail("a payload nested 20,000 deep was accepted")


def test_a_large_rejected_body_is_kept_truncated_with_its_size_and_digest() -> None:
    application, broker = service()
    body = json.dumps({"type": "prison.reception", "id": "x" * 1_500_000, "data": {}}).encode()
    (response,) = post(application, [body])
    assert response.status_code == 422
    assert "x" * 1000 not in response.text, "the answer echoes the value"
    (record,) = [json.loads(m) for t, m in broker.published if t.endswith("dead-letter")]
    assert len(json.dumps(record)) < 1_000_000, "the dead-letter record would exceed Kafka's message size"
    assert record["payload_truncated"] is True and record["payload_bytes"] == len(body)
    assert record["payload_sha256"] == hashlib.sha256(body).hexdigest()
    assert body.decode().startswith(record["payload"]) and len(record["payload"]) <= MAX_PARKED_PAYLOAD_BYTES


def test_a_small_rejected_body_is_kept_whole() -> None:
    application, broker = service()
    body = b'{"type": "prison.reception", "data": {}}'
    post(application, [body])
    (record,) = [json.loads(m) for t, m in broker.published if t.endswith("dead-letter")]
    assert record["payload"] == body.decode() and "payload_truncated" not in record
