"""Poison records on the real broker: a record that is not JSON but says `content-type: application/json`, or JSON
nested far too deep, must be dead-lettered with its reason and the partition must move on (issue 14, part 2).
Before, FastStream's own decoder failed on them before the dead-letter guard ran, so they were redelivered for ever
and every record behind them waited."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ppo_alerts.runner import build_service
from shared.clock import SystemClock
from shared.kafka import client_kwargs, ensure_topics
from shared.settings import Settings
from shared.topics import Topics

pytestmark = [pytest.mark.kafka]

JSON_HEADERS = [("content-type", b"application/json")]
POISON = {
    "not-json": b"\x00\xffthis is not json{{{",
    "nested-too-deep": b"[" * 5000 + b"]" * 5000,
    "not-utf8": b'{"type": "\xff\xfe"}',
}


async def read_all(settings: Settings, topic: str, until: Any, timeout: float) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                                **client_kwargs(settings))
    await consumer.start()
    seen: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(seen):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen += records
        return seen
    finally:
        await consumer.stop()


@asynccontextmanager
async def running(name: str, settings: Settings) -> AsyncIterator[Topics]:
    """One service on the real broker, its topics created; stopped on the way out."""
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics)
    service, _ = build_service(name, settings, SystemClock())
    await service.start()
    try:
        yield topics
    finally:
        await service.stop()


async def publish(settings: Settings, records: list[tuple[str, bytes]]) -> None:
    """Records in order, all with one key (so on one partition) and a JSON content type, whatever they hold."""
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        for topic, value in records:
            await producer.send_and_wait(topic, value, key=b"same", headers=JSON_HEADERS)
    finally:
        await producer.stop()


async def test_poison_records_on_intake_raw_are_parked_and_the_next_event_gets_through(
        kafka_bootstrap: str, tmp_path: Any) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"hp{uuid.uuid4().hex[:8]}",
                        state_dir=tmp_path / "state", intake_port=0)
    event = {"id": f"hp-{uuid.uuid4().hex}", "type": "prison.reception",
             "occurred_at": datetime.now(UTC).isoformat(), "source": "HMP-LEI",
             "person": {"noms": "G1234HJ"}, "data": {"prison_id": "LEI", "reason": "new"}}
    async with running("intake", settings) as topics:
        # the poison ahead of the true fact, on its partition
        await publish(settings, [(topics.intake_raw, v) for v in POISON.values()]
                      + [(topics.intake_raw, json.dumps(event).encode())])
        events = await read_all(settings, topics.events,
                                lambda rs: any(json.loads(r.value)["id"] == event["id"] for r in rs), 30)
        parked = await read_all(settings, topics.dead_letter, lambda rs: len(rs) >= len(POISON), 15)
    assert any(json.loads(r.value)["id"] == event["id"] for r in events), "the event behind the poison is stuck"
    records = [json.loads(r.value) for r in parked]
    assert len(records) == len(POISON), records
    for record in records:
        assert record["service"] == "intake" and record["channel"] == "kafka"
        assert record["reason"] and record["problems"], record
        assert "Traceback" not in json.dumps(record)


@pytest.mark.smtp
async def test_poison_records_on_the_notifier_topics_are_parked_and_the_partition_moves_on(
        kafka_bootstrap: str, tmp_path: Any) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"hn{uuid.uuid4().hex[:8]}",
                        state_dir=tmp_path / "state", notifier_port=0, smtp_port=1, smtp_tls_mode="plain",
                        smtp_allow_plaintext=True)
    async with running("notifier", settings) as topics:
        await publish(settings, [(t, v) for t in (topics.notifications, topics.escalations) for v in POISON.values()])
        parked = await read_all(settings, topics.dead_letter, lambda rs: len(rs) >= 2 * len(POISON), 30)
    records = [json.loads(r.value) for r in parked]
    assert len(records) == 2 * len(POISON), [r["reason"] for r in records]
    assert {r["topic"] for r in records} == {topics.notifications, topics.escalations}
    assert all(r["service"] == "notifier" and r["reason"] for r in records)
