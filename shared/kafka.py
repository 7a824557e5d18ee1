"""Kafka adapters: the broker (FastStream, with Prometheus metrics and consumer lag), topic creation, and reading
a compacted topic to its end."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from prometheus_client import REGISTRY
from pydantic import ValidationError

from shared.settings import Settings
from shared.topic_layout import TopicFound, TopicProblem, TopicShape, layout_problems, shape_for_cluster
from shared.topics import Topics

log = logging.getLogger("ppo.topics")

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


def bootstrap_servers(settings: Settings) -> list[str]:
    """`host:port,host:port` as the clients want it: a list (aiokafka reads one string as a single address)."""
    return [part.strip() for part in settings.kafka_bootstrap.split(",") if part.strip()]


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """The same connection settings for plain aiokafka clients (admin, catch-up readers)."""
    kw: dict[str, Any] = {"bootstrap_servers": bootstrap_servers(settings),
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
    return ServiceBroker(
        bootstrap_servers(settings),
        client_id=client_id,
        security=security(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        logger=logging.getLogger("ppo.kafka"),  # our JSON handler; per-message lines at DEBUG
        log_level=logging.DEBUG,
        # faststream_* metrics per topic (received, processed by status, durations, published), default registry
        middlewares=[KafkaPrometheusMiddleware(registry=REGISTRY, app_name=client_id)],
        lag_settings=settings,
    )


# --- consumer lag: end offsets minus the group's committed offsets, per (group, topic) ----------------------

def consumer_lag(end: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int | None],
                 beginning: Mapping[TopicPartition, int]) -> dict[str, int]:
    """Per topic, the records the group has not committed yet. A partition without a committed offset counts
    from its first record (the services consume from the earliest)."""
    lag: dict[str, int] = {}
    for tp, end_offset in end.items():
        done = committed.get(tp)
        if done is None or done < 0:
            done = beginning.get(tp, 0)
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end_offset - done)
    return lag


class ConsumerLagMonitor:
    """A small periodic task: `ppo_consumer_lag{group,topic}` for the consumer groups of one service. `groups` is
    asked again at every round (a service may subscribe later, e.g. a standby scheduler when it takes over)."""

    def __init__(self, settings: Settings, groups: Callable[[], Mapping[str, Sequence[str]]],
                 every_s: float = 15.0) -> None:
        self.settings = settings
        self.groups = groups
        self.every_s = every_s
        self._exported: set[tuple[str, str]] = set()
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = logging.getLogger("ppo.kafka.lag")

    async def measure(self) -> dict[tuple[str, str], int]:
        """One measurement, exported to the gauge; (group, topic) -> lag."""
        groups = {g: list(ts) for g, ts in self.groups().items() if ts}
        if not groups:
            return {}
        if self._admin is None or self._consumer is None:
            self._admin = AIOKafkaAdminClient(**client_kwargs(self.settings))
            await self._admin.start()
            self._consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(self.settings))
            await self._consumer.start()
        from shared import metrics

        out: dict[tuple[str, str], int] = {}
        for group, topics in groups.items():
            tps: list[TopicPartition] = []
            for topic in topics:
                partitions = self._consumer.partitions_for_topic(topic)
                if not partitions:
                    await self._consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
                    partitions = self._consumer.partitions_for_topic(topic) or set()
                tps += [TopicPartition(topic, p) for p in sorted(partitions)]
            if not tps:
                continue
            offsets = await self._admin.list_consumer_group_offsets(group, partitions=tps)
            committed = {tp: meta.offset for tp, meta in offsets.items()}
            end = await self._consumer.end_offsets(tps)
            beginning = await self._consumer.beginning_offsets(tps)
            for topic, lag in consumer_lag(end, committed, beginning).items():
                metrics.CONSUMER_LAG.labels(group=group, topic=topic).set(lag)
                self._exported.add((group, topic))
                out[(group, topic)] = lag
        return out

    async def run(self) -> None:
        while True:
            try:
                await self.measure()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the next round tries again with fresh clients
                self._log.warning("consumer lag not measured", extra={"error": type(exc).__name__})
                await self._close_clients()
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="ppo-consumer-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_clients()
        from shared import metrics

        for group, topic in self._exported:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(group, topic)
        self._exported.clear()

    async def _close_clients(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        for client in (consumer, admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    await (client.stop() if isinstance(client, AIOKafkaConsumer) else client.close())


class ServiceBroker(KafkaBroker):
    """FastStream's KafkaBroker, plus the consumer-lag monitor of its subscribers' groups while it runs."""

    def __init__(self, *args: Any, lag_settings: Settings | None = None, lag_every_s: float = 15.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lag_settings = lag_settings
        self.lag_every_s = lag_every_s
        self.lag_monitor: ConsumerLagMonitor | None = None
        # `ppo-rules` as the services write it, under the deployment's prefix (Topics.group)
        self.groups_under = Topics(lag_settings.topic_prefix) if lag_settings is not None else Topics()

    def subscriber(self, *topics: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if isinstance(kwargs.get("group_id"), str):
            kwargs["group_id"] = self.groups_under.group(kwargs["group_id"])
        return super().subscriber(*topics, **kwargs)

    def consumer_groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for sub in self.subscribers:
            group = getattr(sub, "group_id", None)
            if group:
                groups.setdefault(group, []).extend(t.name for t in getattr(sub, "topics", []))
        return groups

    async def start(self) -> None:
        await super().start()
        if self.lag_settings is not None and self.lag_monitor is None:
            self.lag_monitor = ConsumerLagMonitor(self.lag_settings, self.consumer_groups, self.lag_every_s)
            self.lag_monitor.start()

    async def stop(self, *args: Any, **kwargs: Any) -> None:
        if self.lag_monitor is not None:
            monitor, self.lag_monitor = self.lag_monitor, None
            await monitor.stop()
        await super().stop(*args, **kwargs)


class TopicLayoutRefused(RuntimeError):
    """An existing topic cannot serve: the message names the topic and the setting."""


async def ensure_topics(settings: Settings, topics: Topics) -> list[TopicProblem]:
    """Create the missing topics in the configured shape (compacted ones keep the latest record per key forever),
    then check the existing ones against it (shared/topic_layout.py): each problem is logged naming topic and
    setting; a state topic that is not compacted raises TopicLayoutRefused. Returns the problems found."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        brokers = [b["node_id"] for b in cluster.get("brokers", [])]
        defaults = await _configs(admin, ConfigResource(ConfigResourceType.BROKER, str(brokers[0]))) if brokers \
            else {}
        replication, min_insync = shape_for_cluster(
            partitions=settings.kafka_partitions, replication=settings.kafka_replication_factor,
            min_insync=settings.kafka_min_insync_replicas, brokers=max(1, len(brokers)),
            broker_replication=int(defaults.get("default.replication.factor") or 1))
        compacted = set(topics.compacted())
        # An acknowledgement is read again by intake after a restart ("already acknowledged at ...") for as long as
        # its link can be pressed: kept the links' lifetime and a day.
        keep = {topics.acknowledgements: (settings.ack_link_ttl_days + 1) * 86_400_000}
        shapes = {name: TopicShape(settings.kafka_partitions, replication, min_insync, name in compacted,
                                   keep.get(name))
                  for name in topics.all()}
        existing = set(await admin.list_topics()) & set(shapes)
        new = [NewTopic(name, num_partitions=shape.partitions, replication_factor=shape.replication,
                        topic_configs=_topic_configs(shape))
               for name, shape in shapes.items() if name not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                answer = await admin.create_topics(new)
                # created meanwhile by another instance or tool, or not yet in the metadata we listed: check it too
                existing |= {t[0] for t in answer.topic_errors if t[1] == TopicAlreadyExistsError.errno}
        found = await _settled(admin, sorted(existing))
    finally:
        await admin.close()
    problems = layout_problems(shapes, found, len(brokers))
    for problem in problems:
        log.log(logging.ERROR if problem.refuses_start else logging.WARNING, "topic layout: %s", problem.message,
                extra={"topic": problem.topic, "setting": problem.setting})
    refusing = [p.message for p in problems if p.refuses_start]
    if refusing:
        raise TopicLayoutRefused("; ".join(refusing))
    return problems


def _topic_configs(shape: TopicShape) -> dict[str, str]:
    configs = {"cleanup.policy": "compact"} if shape.compacted else {}
    if shape.min_insync is not None:
        configs["min.insync.replicas"] = str(shape.min_insync)
    if shape.retention_ms is not None:
        configs["retention.ms"] = str(shape.retention_ms)
    return configs


async def _configs(admin: AIOKafkaAdminClient, resource: ConfigResource) -> dict[str, str | None]:
    answers = await admin.describe_configs([resource])
    return {entry["config_names"]: entry["config_value"] for answer in answers
            for res in answer.to_object()["resources"] for entry in res["config_entries"]}


async def _settled(admin: AIOKafkaAdminClient, names: list[str], wait_s: float = 15.0) -> list[TopicFound]:
    """The topics as described once the cluster has finished creating them. Several instances starting together
    each find a topic another has just created: until its partitions and configuration reach the broker answering,
    it reads as 0 partitions and no `cleanup.policy`, which is no layout to judge (it would refuse the start)."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        found, complete = await _described(admin, names)
        if complete or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.2)


async def _described(admin: AIOKafkaAdminClient, names: list[str]) -> tuple[list[TopicFound], bool]:
    """The topics' layouts, and whether every one was fully described (partitions and configuration)."""
    if not names:
        return [], True
    found = []
    complete = True
    answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    configs = {res["resource_name"]: {e["config_names"]: e["config_value"] for e in res["config_entries"]}
               for answer in answers for res in answer.to_object()["resources"] if not res.get("error_code")}
    for topic in await admin.describe_topics(names):
        partitions = topic.get("partitions") or []
        config = configs.get(topic["topic"], {})
        complete = complete and bool(partitions) and "cleanup.policy" in config
        found.append(TopicFound(
            name=topic["topic"], partitions=len(partitions),
            replication=min((len(p["replicas"]) for p in partitions), default=0),
            compacted="compact" in str(config.get("cleanup.policy") or ""),
            min_insync=int(config.get("min.insync.replicas") or 1),
            retention_ms=int(config["retention.ms"]) if config.get("retention.ms") else None))
    return found, complete


# (partition, offset, timestamp in ms, key, value): a record where it sits
Positioned = tuple[int, int, int, bytes | None, bytes | None]


async def read_positioned(settings: Settings, topic: str) -> list[Positioned]:
    """Every record of a topic from the beginning to its current end, with where it sits and when it was written
    (the dead-letter tools name a record by its partition and offset)."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        # Offsets first, before anything is assigned: once it is, the fetcher's long poll of an empty partition
        # (fetch.max.wait, 500 ms) sits ahead of any other request on the connection, and a quiet topic such as
        # the dead letters took half a second to read. Only partitions with records are then fetched.
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if begin[tp] < end[tp]}
        if not remaining:
            return []
        consumer.assign(sorted(remaining, key=lambda tp: tp.partition))
        await consumer.seek_to_beginning(*remaining)
        out: list[Positioned] = []
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            out += [(r.partition, r.offset, r.timestamp, r.key, r.value)
                    for tp, records in batch.items() for r in records if r.offset < end[tp]]
            remaining = {tp for tp in remaining if await consumer.position(tp) < end[tp]}
        return out
    finally:
        await consumer.stop()


async def read_to_end(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of a topic from the beginning to its current end, as (key, value) (for materialising state)."""
    return [(key, value) for _, _, _, key, value in await read_positioned(settings, topic)]


def dumps(value: Any) -> bytes:
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json().encode()  # type: ignore[no-any-return]
    return json.dumps(value, default=str).encode()


MAX_PARKED_PAYLOAD_BYTES = 256 * 1024  # Kafka's default message size is 1 MB: the record around it must fit


def parked_payload(raw: bytes) -> dict[str, Any]:
    """The input as a dead-letter record keeps it: whole when it is small, otherwise its first 256 KiB with its
    size and sha256 (a larger body made a record over Kafka's message size: the park failed, the input was lost)."""
    import hashlib

    if len(raw) <= MAX_PARKED_PAYLOAD_BYTES:
        return {"payload": raw.decode("utf-8", "replace")}
    return {"payload": raw[:MAX_PARKED_PAYLOAD_BYTES].decode("utf-8", "ignore"), "payload_truncated": True,
            "payload_bytes": len(raw), "payload_sha256": hashlib.sha256(raw).hexdigest()}


async def dead_letter(broker: KafkaBroker, topic: str, service: str, record: Any, exc: Exception) -> None:
    """Park one consumed record on the dead-letter topic with the reason it could not be processed."""
    from shared import metrics
    from shared.errors import problems_of

    reason = type(exc).__name__
    problems = problems_of(exc) if isinstance(exc, ValidationError) else []
    metrics.DEAD_LETTERS.labels(service=service, reason=reason).inc()
    value: bytes = getattr(record, "value", None) or b""
    parked = {"service": service, "reason": reason, "problems": problems,
              "topic": getattr(record, "topic", None), "offset": getattr(record, "offset", None),
              **parked_payload(value)}
    await broker.publish(dumps(parked), topic)
    logging.getLogger(f"ppo.{service}").warning(
        "message dead-lettered", extra={"reason": reason, "fields": [p["field"] for p in problems][:10]})


def dead_letter_guard(service: str, broker: KafkaBroker, dead_letter_topic: str,
                      handler: Callable[[KafkaMessage], Awaitable[None]]) -> Callable[[KafkaMessage], Awaitable[None]]:
    """Wrap a handler so a message it cannot process goes to the dead-letter topic with its reason and the
    partition moves on. Kafka errors are re-raised: the message is redelivered, never parked for them."""

    @functools.wraps(handler)
    async def guarded(message: KafkaMessage) -> None:
        try:
            await handler(message)
        except KafkaError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is about this message: park it with its reason
            await dead_letter(broker, dead_letter_topic, service, message.raw_message, exc)

    return guarded


class RecordSink:
    """A plain aiokafka producer for a hot path: `send` hands a record over and returns the future of its
    acknowledgement, so a batch can be acknowledged with one wait (FastStream's publish costs ~100 µs a call)."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._producer: Any = None  # aiokafka wants a running loop: made in start()
        self._partitions: dict[str, list[int]] = {}
        self._open: dict[tuple[str, int], Any] = {}  # (topic, partition) -> the batch being filled
        self._full: list[tuple[Any, str, int]] = []  # filled batches, in order, not yet handed over

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        # linger 0: a batch's records are handed over without yielding, so they are batched anyway, and the
        # wait for their acknowledgements at the batch's end does not sit out a linger first.
        self._producer = AIOKafkaProducer(
            client_id=self._client_id, acks="all", enable_idempotence=True, linger_ms=0,
            max_batch_size=256 * 1024, **client_kwargs(self._settings))
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        return await self._producer.send(topic, value, key=key)

    # Batches built here: aiokafka's `send` costs ~60 us of Python a record (metadata, partitioner, accumulator),
    # more than evaluating the event that raised it (profiled). Records go to the partition the default
    # partitioner gives their key, as every other producer of these topics does, in the order they were added.

    async def add(self, topic: str, value: bytes, key: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Queue a record (with its headers, if any); it is handed to Kafka by the next `flush`."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        partition = _PARTITIONER(key, partitions, partitions)
        batch = self._open.get((topic, partition))
        if batch is None:
            batch = self._open[(topic, partition)] = self._producer.create_batch()
        if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:  # full: the next takes it
            self._full.append((batch, topic, partition))
            batch = self._open[(topic, partition)] = self._producer.create_batch()
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in a batch")

    async def flush(self) -> list[asyncio.Future[Any]]:
        """Hand every queued batch to Kafka; the futures of their acknowledgements."""
        batches = self._full + [(batch, topic, partition) for (topic, partition), batch in self._open.items()]
        self._full, self._open = [], {}
        return [await self._producer.send_batch(batch, topic, partition=partition)
                for batch, topic, partition in batches]

    def discard(self) -> None:
        """Forget what is queued (the batch that queued it failed and will be read again)."""
        self._full, self._open = [], {}


async def records_as_they_are(message: Any) -> None:
    """Decoder for every subscriber of ours: the handlers read the records themselves (`message.raw_message`,
    `message.body`) and park what they cannot read. FastStream's default decoder JSON-decodes the body before
    the handler runs: a poison record (not JSON, not UTF-8, nested too deep) failed there, outside the
    dead-letter guard, and was redelivered for ever with every record behind it waiting. For batches it was
    also work the handlers never use (a third of the rules service's time per event, profiled)."""
    return None


_PARTITIONER = DefaultPartitioner()


async def batch_as_it_is(records: tuple[Any, ...], parse_batch: Callable[..., Awaitable[Any]]) -> Any:
    """Parser for batch subscribers whose handlers read the records themselves: FastStream's own decodes every
    record's headers into a dict first (~4 µs a record, profiled in the rules service). The message is built as
    FastStream builds it (same class, consumer for the commit), without that. Falls back to FastStream's."""
    parser = getattr(parse_batch, "__self__", None)
    msg_class = getattr(parser, "msg_class", None)
    consumer = getattr(parser, "_consumer", None)
    if not records or msg_class is None or consumer is None:
        return await parse_batch(records)
    first, last = records[0], records[-1]
    return msg_class(raw_message=records, body=[r.value or b"" for r in records],
                     message_id=f"{first.offset}-{last.offset}-{first.timestamp}", consumer=consumer)
