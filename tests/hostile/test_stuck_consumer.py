"""A consumer that does not move shows (issue 14, part 2): a handler failing on every try (a Kafka error, so the
same record is read again and again) or one that has not returned holds its partition; `/healthz` says `stuck`
with the topic, `ppo_consumer_stuck` is 1, and both clear once the record goes through."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError

from ppo_alerts.runner import build_service
from shared.clock import SystemClock
from shared.consumer_watch import CONSUMER_STUCK, WATCH, ConsumerWatch
from shared.kafka import ensure_topics, read_to_end
from shared.settings import Settings
from shared.topics import Topics
from tests.hostile.test_poison_records import publish


def stuck_gauge(service: str, topic: str) -> float | None:
    for metric in CONSUMER_STUCK.collect():
        for s in metric.samples:
            if s.labels == {"service": service, "topic": topic}:
                return s.value
    return None


async def test_the_watch_names_a_handler_running_too_long_and_one_failing_every_try() -> None:
    now = [0.0]
    watch = ConsumerWatch(monotonic=lambda: now[0], after_s=10)
    release = asyncio.Event()

    async def slow(_: Any) -> None:
        await release.wait()

    async def failing(_: Any) -> None:
        raise KafkaConnectionError()

    slow_w, failing_w = watch.watched("svc", "t.slow", slow), watch.watched("svc", "t.failing", failing)
    call = asyncio.create_task(slow_w(None))
    await asyncio.sleep(0)
    with pytest.raises(KafkaConnectionError):
        await failing_w(None)
    now[0] = 5
    assert watch.stuck() == []
    with pytest.raises(KafkaConnectionError):
        await failing_w(None)  # failing since 0, not since the last try
    now[0] = 11
    assert sorted((s.topic, s.why) for s in watch.stuck()) == [("t.failing", "failing"), ("t.slow", "running")]
    assert stuck_gauge("svc", "t.slow") == 1.0
    release.set()
    await call
    assert [s.topic for s in watch.stuck()] == ["t.failing"]
    assert stuck_gauge("svc", "t.slow") == 0.0


@pytest.mark.kafka
async def test_intake_failing_on_every_try_shows_stuck_then_recovers(kafka_bootstrap: str, tmp_path: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WATCH, "after_s", 1.0)
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"st{uuid.uuid4().hex[:8]}",
                        state_dir=tmp_path / "state", intake_port=0)
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics)
    service, intake = build_service("intake", settings, SystemClock())
    broken = True
    accept = intake.accept

    async def accept_or_fail(*args: Any, **kwargs: Any) -> Any:
        if broken:  # as when the events topic cannot be written: the guard re-raises, the record comes again
            raise KafkaConnectionError()
        return await accept(*args, **kwargs)

    monkeypatch.setattr(intake, "accept", accept_or_fail)
    event = {"id": f"st-{uuid.uuid4().hex}", "type": "prison.reception",
             "occurred_at": datetime.now(UTC).isoformat(), "source": "HMP-LEI",
             "person": {"noms": "G1234HJ"}, "data": {"prison_id": "LEI", "reason": "new"}}
    await service.start()
    try:
        await publish(settings, [(topics.intake_raw, json.dumps(event).encode())])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}", timeout=10) as client:
            deadline = time.monotonic() + 30
            health = await client.get("/healthz")
            while health.status_code == 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                health = await client.get("/healthz")
            assert health.status_code == 503, health.text
            [stuck] = health.json()["stuck"]
            assert health.json()["status"] == "stuck"
            assert stuck["topic"] == topics.intake_raw and stuck["why"] == "failing"
            assert stuck_gauge("intake", topics.intake_raw) == 1.0
            assert f'ppo_consumer_stuck{{service="intake",topic="{topics.intake_raw}"}} 1.0' in (
                await client.get("/metrics")).text

            broken = False
            deadline = time.monotonic() + 30
            while (await client.get("/healthz")).status_code != 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
            assert (await client.get("/healthz")).json()["status"] == "ok"
            assert stuck_gauge("intake", topics.intake_raw) == 0.0
        ids = [json.loads(v)["id"] for _, v in await read_to_end(settings, topics.events) if v]
        assert ids == [event["id"]]  # the record held, then went through: nothing lost
    finally:
        await service.stop()
