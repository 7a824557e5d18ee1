"""The rules service on the real broker when publishing fails: the batch is read again, and the obligations
its events raised are published then, not lost as duplicates of what the ledger already held."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from ppo_alerts.runner import build_service
from shared.clock import SystemClock
from shared.kafka import client_kwargs, ensure_topics
from shared.settings import Settings
from shared.topics import Topics
from tests.rulebook_fixtures import DIRECTORY, REGISTER_CSV

pytestmark = [pytest.mark.kafka]

ALEX = {"pnc": "2006/0777001G", "noms": "G1234HJ"}  # on the register (tests/rulebook_fixtures.py)


class FailingFlush:
    """Stands in for the sink's `flush`: the next `failures` flushes hand nothing over and are not acknowledged
    (a broker timeout)."""

    def __init__(self, sink: Any, failures: int) -> None:
        self.sink = sink
        self.flush = sink.flush
        self.failures = failures
        self.failed = 0

    async def __call__(self) -> list[asyncio.Future[Any]]:
        if self.failed < self.failures:
            self.failed += 1
            self.sink.discard()
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(KafkaTimeoutError())
            return [future]
        return await self.flush()


async def a1_records(settings: Settings, noms: str, timeout: float) -> list[dict[str, Any]]:
    """A1 obligations for `noms` on the obligations topic, read until one appears or `timeout` passes."""
    consumer = AIOKafkaConsumer(Topics(settings.topic_prefix).obligations, auto_offset_reset="earliest",
                                enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not found:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    o = json.loads(r.value)
                    if o["rule"] == "A1" and (o.get("person") or {}).get("noms") == noms:
                        found.append(o)
        return found
    finally:
        await consumer.stop()


async def test_obligations_of_a_batch_whose_publishing_failed_are_published_when_it_is_read_again(
        kafka_bootstrap: str, tmp_path: Any) -> None:
    register = tmp_path / "register.csv"
    register.write_text(REGISTER_CSV)
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"pf{uuid.uuid4().hex[:8]}",
                        directory_file=directory, register_file=register, state_dir=tmp_path / "state",
                        rules_port=0, directory_reload_s=0)
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics)
    running, rules = build_service("rules", settings, SystemClock())
    await running.start()
    try:
        failing = FailingFlush(rules.sink, failures=1)
        rules.sink.flush = failing  # after start-up: its own records went out
        producer = AIOKafkaProducer(**client_kwargs(settings))
        await producer.start()
        try:
            event = {"id": f"pf-{uuid.uuid4().hex}", "type": "prison.reception",
                     "occurred_at": datetime.now(UTC).isoformat(), "source": "HMP-LEI", "person": ALEX,
                     "data": {"prison_id": "LEI", "reason": "new"}}
            await producer.send_and_wait(topics.events, json.dumps(event).encode(), key=b"G1234HJ")
        finally:
            await producer.stop()
        found = await a1_records(settings, ALEX["noms"], timeout=45)
    finally:
        await running.stop()
    assert failing.failed == 1, "the publish failure was not injected"
    assert len(found) == 1, f"A1 expected once on the obligations topic, found {len(found)}"
    assert found[0]["source_event_ids"] == [event["id"]]
