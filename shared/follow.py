"""Compacted topics followed into memory: one consumer, no group, every partition of the topics, read from the
beginning and then followed, so every instance holds the whole picture and none keeps state of its own (the
console's view; the scheduler's register for C6, which a standby then already has when it takes over)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shared.kafka import client_kwargs
from shared.settings import Settings

log = logging.getLogger("ppo.follow")

Apply = Callable[[bytes | None, bytes | None], None]


class Follower:
    """`apply[topic](key, value)` for every record of each topic, in order per partition. `caught_up` is set once
    everything that was on the topics at the start has been applied; `last_record_at` (loop time) says how fresh
    the view is."""

    def __init__(self, settings: Settings, apply: dict[str, Apply], name: str) -> None:
        self.settings = settings
        self.apply = apply
        self.name = name  # in the task's name and the log lines
        self.caught_up = asyncio.Event()
        self.records = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name=f"{self.name}-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        tps = []
        for topic in self.apply:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                raise KafkaError(f"topic {topic} has no partitions yet")
            tps += [TopicPartition(topic, p) for p in sorted(partitions)]
        return tps

    async def _follow(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(self.settings))
            try:
                await consumer.start()
                tps = await self._partitions(consumer)
                end = await consumer.end_offsets(tps)  # before assigning: see shared.kafka.read_positioned
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                behind = {tp for tp in tps if end[tp] > 0}
                if not behind:
                    self.caught_up.set()
                while True:
                    batch = await consumer.getmany(timeout_ms=200)
                    for tp, records in batch.items():
                        apply = self.apply[tp.topic]
                        for record in records:
                            apply(record.key, record.value)  # must not raise: count what cannot be read
                        self.records += len(records)
                    if behind:
                        behind = {tp for tp in behind if await consumer.position(tp) < end[tp]}
                        if not behind:
                            log.info("topics loaded", extra={"follower": self.name, "records": self.records})
                            self.caught_up.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # Kafka trouble: read again from the beginning (applying is by key: idempotent)
                log.warning("following interrupted; reading again", extra={"follower": self.name}, exc_info=True)
                await asyncio.sleep(2.0)
            finally:
                with suppress(Exception):
                    await consumer.stop()
