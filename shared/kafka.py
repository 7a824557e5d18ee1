"""Kafka adapters: the broker (FastStream), topic creation, and reading a compacted topic to its end."""

from __future__ import annotations

import functools
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import ValidationError

from shared.settings import Settings
from shared.topics import Topics

RECEIVED_AT_HEADER = "ppo-received-at"


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    return ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)


def security(settings: Settings) -> BaseSecurity | None:
    ctx = _ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        user = settings.kafka_sasl_username or ""
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        cls = {"SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}.get(
            settings.kafka_sasl_mechanism or "PLAIN", SASLPlaintext)
        return cls(username=user, password=password, ssl_context=ctx)  # type: ignore[call-arg]
    if ctx is not None:
        return BaseSecurity(ssl_context=ctx)
    return None


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """The same connection settings for plain aiokafka clients (admin, catch-up readers)."""
    kw: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap,
                          "security_protocol": settings.kafka_security_protocol}
    if (ctx := _ssl_context(settings)) is not None:
        kw["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL"):
        kw["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        kw["sasl_plain_username"] = settings.kafka_sasl_username
        kw["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None)
    return kw


def make_broker(settings: Settings, client_id: str) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap,
        client_id=client_id,
        security=security(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        logger=logging.getLogger("ppo.kafka"),  # our JSON handler; per-message lines at DEBUG
        log_level=logging.DEBUG,
    )


async def ensure_topics(settings: Settings, topics: Topics, partitions: int = 3) -> None:
    """Create the topics if they are missing; compacted ones keep the latest record per key forever."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, num_partitions=partitions, replication_factor=1,
                     topic_configs={"cleanup.policy": "compact"} if name in topics.compacted() else {})
            for name in topics.all() if name not in existing
        ]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def read_to_end(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of a topic from the beginning to its current end (for materialising state)."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[tuple[bytes | None, bytes | None]] = []
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for rec in records:
                    out.append((rec.key, rec.value))
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


def dumps(value: Any) -> bytes:
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json().encode()  # type: ignore[no-any-return]
    return json.dumps(value, default=str).encode()


def dead_letter_guard(service: str, broker: KafkaBroker, dead_letter_topic: str,
                      handler: Callable[[KafkaMessage], Awaitable[None]]) -> Callable[[KafkaMessage], Awaitable[None]]:
    """Wrap a handler so a message it cannot process goes to the dead-letter topic with its reason and the
    partition moves on. Kafka errors are re-raised: the message is redelivered, never parked for them."""
    from shared import metrics

    log = logging.getLogger(f"ppo.{service}")

    @functools.wraps(handler)
    async def guarded(message: KafkaMessage) -> None:
        try:
            await handler(message)
        except KafkaError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is about this message: park it with its reason
            reason = type(exc).__name__
            problems: list[dict[str, str]] = []
            if isinstance(exc, ValidationError):
                from shared.errors import problems_of

                problems = problems_of(exc)
            metrics.DEAD_LETTERS.labels(service=service, reason=reason).inc()
            raw: bytes = message.body
            record = {"service": service, "reason": reason, "problems": problems,
                      "topic": getattr(message.raw_message, "topic", None),
                      "offset": getattr(message.raw_message, "offset", None),
                      "payload": raw.decode("utf-8", "replace")}
            await broker.publish(dumps(record), dead_letter_topic)
            fields = [p["field"] for p in problems][:10]
            log.warning("message dead-lettered", extra={"reason": reason, "fields": fields})

    return guarded
