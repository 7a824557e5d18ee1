"""The register as the scheduler needs it for C6: read from its compacted topic and kept current.

No consumer group: every instance (active or standby) reads the whole topic from the beginning and then follows
it, so a standby that takes over already has the register. `caught_up` is set once everything that was on the
topic when it started has been applied.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import suppress

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shared import metrics
from shared.kafka import client_kwargs
from shared.register import Register, RegisterEntry, RegisterError
from shared.settings import Settings

log = logging.getLogger("ppo.scheduler")


class RegisterView:
    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.register = Register()
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="scheduler-register-view")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def apply(self, value: bytes | None) -> None:
        if not value:
            return
        try:
            self.register.put(RegisterEntry.from_dict(json.loads(value)))
        except (ValueError, KeyError, TypeError, RegisterError):
            metrics.EVENTS_IGNORED.labels(service="scheduler", reason="invalid-register-record").inc()

    async def _follow(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(self.settings))
            try:
                await consumer.start()
                partitions = consumer.partitions_for_topic(self.topic)
                if not partitions:
                    await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
                    partitions = consumer.partitions_for_topic(self.topic) or set()
                if not partitions:
                    raise KafkaError(f"topic {self.topic} has no partitions yet")
                tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                end = await consumer.end_offsets(tps)
                behind = {tp for tp in tps if end[tp] > 0}
                if not behind:
                    self.caught_up.set()
                while True:
                    batch = await consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        for record in records:
                            self.apply(record.value)
                    if behind:
                        for tp in list(behind):
                            if await consumer.position(tp) >= end[tp]:
                                behind.discard(tp)
                        if not behind:
                            log.info("register loaded", extra={"register_entries": len(self.register)})
                            self.caught_up.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # Kafka trouble: start again from the beginning (puts are idempotent)
                log.warning("register view interrupted; reading again", exc_info=True)
                await asyncio.sleep(2.0)
            finally:
                with suppress(Exception):
                    await consumer.stop()
