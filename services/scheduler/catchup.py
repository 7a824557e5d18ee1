"""Reading the obligations topic to rebuild from it, and moving the scheduler's consumer group past what was read.

After a rebuild the store holds everything up to the end offsets the rebuild read to; the live consumer then
starts from there instead of re-reading (and re-writing) the whole topic first, which for 100,000 obligations
would hold new ones back for minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shared.kafka import client_kwargs
from shared.settings import Settings

log = logging.getLogger("ppo.scheduler")

Offsets = dict[TopicPartition, int]


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
        partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def _read_to(consumer: AIOKafkaConsumer, end: Offsets, take: Callable[[list[bytes]], Awaitable[None]]) -> int:
    """From each assigned partition's position up to `end`, values handed to `take` a fetch at a time; how many."""
    remaining = {tp for tp in end if await consumer.position(tp) < end[tp]}
    count = 0
    while remaining:
        batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
        values = [r.value for tp, records in batch.items() for r in records if r.value and r.offset < end[tp]]
        if values:
            count += len(values)
            await take(values)
        for tp in list(remaining):
            if await consumer.position(tp) >= end[tp]:
                remaining.discard(tp)
    return count


async def read_with_end_offsets(settings: Settings, topic: str,
                                take: Callable[[list[bytes]], Awaitable[None]]) -> Offsets:
    """Every value of the topic, from the beginning to its end as of now, handed to `take` a fetch at a time (in
    each partition's order; nothing kept here); returns those end offsets."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        if not tps:
            return {}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end: Offsets = await consumer.end_offsets(tps)
        await _read_to(consumer, end, take)
        return end
    finally:
        await consumer.stop()


async def forward_group(settings: Settings, group: str, offsets: Offsets) -> int:
    """Commit `offsets` for the consumer group where its committed offset is behind them; how many partitions
    moved. Kafka accepts this only while the group has no members: when a killed instance's consumer has not yet
    timed out, nothing moves and the live consumer re-reads the records (idempotently, only slower)."""
    if not offsets:
        return 0
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        forward = {}
        for tp, end in offsets.items():
            committed = await consumer.committed(tp)
            if committed is None or committed < end:
                forward[tp] = end
        if forward:
            await consumer.commit(forward)
        return len(forward)
    except KafkaError as exc:
        log.warning("consumer group not moved past the rebuild; it will re-read those records",
                    extra={"group": group, "error": type(exc).__name__})
        return 0
    finally:
        await consumer.stop()


async def read_since_committed(settings: Settings, topic: str, group: str,
                               take: Callable[[list[bytes]], Awaitable[None]]) -> int:
    """Every value of the topic after the group's committed offsets (from the beginning where it has none) up to
    the end as of now, handed to `take` a fetch at a time; how many. The group's offsets are not moved."""
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        if not tps:
            return 0
        consumer.assign(tps)
        end: Offsets = await consumer.end_offsets(tps)
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        return await _read_to(consumer, end, take)
    finally:
        await consumer.stop()
