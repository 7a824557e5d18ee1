"""The real local Kafka broker from ppo_alerts.localkafka: round trip and restarts keep data."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ppo_alerts.localkafka import LocalKafka

pytestmark = pytest.mark.kafka


def _fresh_topic() -> str:
    return f"test-localkafka-{uuid.uuid4().hex[:12]}"


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=f"k{i}".encode())
    finally:
        await producer.stop()


async def _consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < expected:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    got.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return got


async def test_produce_and_consume_on_a_fresh_topic(kafka_bootstrap: str) -> None:
    topic = _fresh_topic()  # auto-created by the broker on first use
    values = [f"hello {i}".encode() for i in range(5)]
    await _produce(kafka_bootstrap, topic, values)

    assert sorted(await _consume_all(kafka_bootstrap, topic, len(values))) == sorted(values)

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        assert len(await producer.partitions_for(topic)) == 3  # num.partitions=3
    finally:
        await producer.stop()


async def test_consumer_group_commit_round_trip(kafka_bootstrap: str) -> None:
    topic, group = _fresh_topic(), f"g-{uuid.uuid4().hex[:8]}"
    await _produce(kafka_bootstrap, topic, [b"a", b"b"])
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        got: list[bytes] = []
        async with asyncio.timeout(30):
            while len(got) < 2:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(r.value for r in records)
        await consumer.commit()
        committed = [await consumer.committed(tp) for tp in consumer.assignment()]
        assert sum(c or 0 for c in committed) == 2
    finally:
        await consumer.stop()


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_restart_keeps_data_and_port(local_kafka: LocalKafka, how: str) -> None:
    bootstrap = local_kafka.bootstrap
    topic = _fresh_topic()
    values = [f"durable {how} {i}".encode() for i in range(3)]
    await _produce(bootstrap, topic, values)

    if how == "kill":
        local_kafka.kill()  # crash: SIGKILL, no controlled shutdown
        assert not local_kafka.is_running()
        assert local_kafka.restart() == bootstrap
    else:
        assert local_kafka.restart() == bootstrap  # clean stop + start
    assert local_kafka.is_running()

    assert sorted(await _consume_all(bootstrap, topic, len(values))) == sorted(values)
