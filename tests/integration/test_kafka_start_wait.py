"""PPO_KAFKA_START_WAIT_S: a service started before its broker waits for it (a cluster coming up, a host rebooting);
with the default 0 it gives up at once with the clear "cannot reach Kafka" line."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from aiokafka.errors import KafkaConnectionError

from ppo_alerts.localkafka import LocalKafka
from ppo_alerts.runner import ensure_topics_when_reachable
from shared.settings import Settings

pytestmark = [pytest.mark.kafka]


async def test_a_service_started_before_its_broker_waits_for_it(local_kafka: LocalKafka) -> None:
    settings = Settings(kafka_bootstrap=local_kafka.bootstrap, topic_prefix=f"w{uuid.uuid4().hex[:8]}",
                        kafka_start_wait_s=90)
    local_kafka.stop()
    back = threading.Timer(3.0, local_kafka.restart)  # same port: the bootstrap stays valid
    back.start()
    started = time.monotonic()
    try:
        await ensure_topics_when_reachable(settings)
    finally:
        back.join()
    assert time.monotonic() - started >= 3.0


async def test_without_a_wait_an_unreachable_broker_is_reported_at_once() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="w", kafka_start_wait_s=0)
    started = time.monotonic()
    with pytest.raises(KafkaConnectionError):
        await ensure_topics_when_reachable(settings)
    assert time.monotonic() - started < 10


async def test_the_wait_gives_up_after_its_time() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="w", kafka_start_wait_s=3)
    started = time.monotonic()
    with pytest.raises(KafkaConnectionError):
        await ensure_topics_when_reachable(settings)
    assert 3 <= time.monotonic() - started < 15
