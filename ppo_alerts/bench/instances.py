"""Rules and notifier throughput with one and with two instances, in the same run (issue #16's cluster shape).

Each instance is a process, `python -m ppo_alerts.cli run rules|notifier`, with its own state folder (as if on its
own host), in one consumer group; the notifiers share one PostgreSQL send log, as the cluster shape deploys them.
The instances start first and the bench waits until their groups are stable with every member holding partitions
(a warm-up batch has been committed); only then is the measured batch published, and the clock runs from the first
record published to the last one done: the rules' group has committed every event (resolve stage and rule book),
or the SMTP sink has accepted every message.

On a machine with two cores this shows what coordination costs, not a speed-up: the instances, the broker (and
PostgreSQL) share the same two cores, so a second instance adds group traffic, a second register in memory and,
for the notifier, a second pool of database connections, and takes CPU from the first. On separate hosts each
instance has its own cores and the partitions (three by default) bound how far the work spreads.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from ppo_alerts.bench.data import SENDER, canonical_events, write_reference
from ppo_alerts.bench.latency import ServiceProcesses
from ppo_alerts.bench.rules import fill_topic
from ppo_alerts.bench.sink import SmtpSink
from ppo_alerts.localpostgres import fresh_schema

log = logging.getLogger("ppo.bench")

PEOPLE = 20_000
PPO_SHARE = 0.05
WARM_UP = 200


@dataclass(frozen=True)
class InstancesResult:
    service: str  # "rules" or "notifier"
    instances: int
    items: int  # events (rules) or messages (notifier) in the measured batch
    seconds: float
    state: str  # where the service's shared state lives in this run

    @property
    def per_s(self) -> float:
        return self.items / self.seconds


class _Instances:
    """`count` processes of one service, each with its own state folder and port, started together."""

    def __init__(self, work: Path, service: str, count: int, env: dict[str, str]) -> None:
        self.service = service
        self.stacks = []
        for i in range(count):
            folder = work / f"{service}-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            self.stacks.append(ServiceProcesses(folder, {**env, "PPO_STATE_DIR": str(folder / "state")},
                                                names=(service,)))

    def start(self) -> None:
        for stack in self.stacks:
            stack.start()

    def stop(self) -> None:
        for stack in self.stacks:
            stack.stop()


async def _group_ready(admin: AIOKafkaAdminClient, group: str, members: int) -> bool:
    answers = await admin.describe_consumer_groups([group])
    for answer in answers:
        for g in answer.to_object().get("groups", []):
            if g.get("state") != "Stable" or len(g.get("members") or []) < members:
                return False
    return bool(answers)


async def _committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


async def _wait(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"bench: {what} not within {timeout:.0f} s")


async def measure_rules_instances(bootstrap: str, work: Path, events: int, instances: int) -> InstancesResult:
    """The rules service (resolve stage and rule book) as `instances` processes on a fresh topic set."""
    from shared.kafka import client_kwargs, ensure_topics
    from shared.settings import Settings
    from shared.topics import Topics

    prefix = f"bench{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    folder = work / prefix
    register, directory, ppos = write_reference(folder, PEOPLE, PPO_SHARE, now.date())
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
    topics = Topics(prefix)
    await ensure_topics(settings, topics)
    payloads = canonical_events(WARM_UP + events, PEOPLE, ppos, PPO_SHARE, now, seed=instances)
    env = {"PPO_KAFKA_BOOTSTRAP": bootstrap, "PPO_TOPIC_PREFIX": prefix, "PPO_REGISTER_FILE": str(register),
           "PPO_DIRECTORY_FILE": str(directory), "PPO_LOG_LEVEL": "WARNING", "PPO_DIRECTORY_RELOAD_S": "0"}
    group = _Instances(folder, "rules", instances, env)
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await asyncio.to_thread(group.start)
        await fill_topic(bootstrap, topics.events, payloads[:WARM_UP])

        async def warmed() -> bool:
            return (await _committed(admin, topics.group("ppo-rules"), topics.events_by_person) >= WARM_UP
                    and await _group_ready(admin, topics.group("ppo-rules"), instances)
                    and await _group_ready(admin, topics.group("ppo-rules-resolve"), instances))

        await _wait("the rules instances' warm-up", warmed, 120)
        started = time.perf_counter()
        await fill_topic(bootstrap, topics.events, payloads[WARM_UP:])

        async def done() -> bool:
            return await _committed(admin, topics.group("ppo-rules"), topics.events_by_person) >= WARM_UP + events

        await _wait(f"{events:,} events through {instances} rules instance(s)", done, 900)
        seconds = time.perf_counter() - started
    finally:
        await admin.close()
        await asyncio.to_thread(group.stop)
    return InstancesResult("rules", instances, events, seconds, "Kafka (register and obligations topics)")


def _requests(n: int, offset: int, tag: str) -> list[tuple[bytes, bytes]]:
    """`n` notification requests (a real A1 obligation, one recipient each), as rules publishes them."""
    from ppo_alerts.render_examples import sample_obligation
    from shared.obligations import NotificationRequest

    base = sample_obligation("A1")
    now = datetime.now(UTC)
    out = []
    for i in range(offset, offset + n):
        recipient = f"officer{i}@westyorkshire.police.uk"
        o = base.model_copy(update={
            "obligation_id": f"A1-{tag}-{i:07d}", "recipients": [recipient], "recipient_roles": {recipient: "ppo"},
            "send_at": now, "raised_at": now, "notify_by": now + timedelta(hours=1)})
        request = NotificationRequest(obligation=o, requested_at=now)
        out.append((o.obligation_id.encode(), request.model_dump_json().encode()))
    return out


async def _publish(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap.split(","), linger_ms=10)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, value, key=key) for key, value in records])
    finally:
        await producer.stop()


async def measure_notifier_instances(bootstrap: str, work: Path, sink: SmtpSink, messages: int, instances: int,
                                     sendlog_url: str | None) -> InstancesResult:
    """The notifier as `instances` processes sending to `sink`; its send log in PostgreSQL (`sendlog_url`) or, for
    the single-node default, each instance's own SQLite file."""
    from shared.kafka import client_kwargs, ensure_topics
    from shared.settings import Settings
    from shared.topics import Topics

    prefix = f"bench{uuid.uuid4().hex[:6]}"
    folder = work / prefix
    _, directory, _ = write_reference(folder, 10, 1.0, datetime.now(UTC).date())
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
    topics = Topics(prefix)
    await ensure_topics(settings, topics)
    env = {"PPO_KAFKA_BOOTSTRAP": bootstrap, "PPO_TOPIC_PREFIX": prefix, "PPO_DIRECTORY_FILE": str(directory),
           "PPO_SMTP_HOST": sink.host, "PPO_SMTP_PORT": str(sink.port), "PPO_SMTP_TLS_MODE": "plain",
           "PPO_SMTP_ALLOW_PLAINTEXT": "true", "PPO_SMTP_SENDER": SENDER, "PPO_LOG_LEVEL": "WARNING",
           "PPO_DIRECTORY_RELOAD_S": "0", "PPO_ACK_SECRET": "b3" * 32}
    if sendlog_url:
        env["PPO_NOTIFIER_SENDLOG_URL"] = sendlog_url
    group = _Instances(folder, "notifier", instances, env)
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await asyncio.to_thread(group.start)
        before = sink.count
        await _publish(bootstrap, topics.notifications, _requests(WARM_UP // 10, 0, prefix))

        async def warmed() -> bool:
            return (sink.count - before >= WARM_UP // 10
                    and await _group_ready(admin, topics.group("ppo-notifier"), instances))

        await _wait("the notifier instances' warm-up", warmed, 120)
        records = _requests(messages, WARM_UP // 10, prefix)
        before = sink.count
        started = time.perf_counter()
        await _publish(bootstrap, topics.notifications, records)

        async def done() -> bool:
            return sink.count - before >= messages

        await _wait(f"{messages:,} messages through {instances} notifier instance(s)", done, 900)
        seconds = time.perf_counter() - started
        if sink.count - before != messages:
            raise RuntimeError(f"the sink counted {sink.count - before} messages of {messages}")
    finally:
        await admin.close()
        await asyncio.to_thread(group.stop)
    return InstancesResult("notifier", instances, messages, seconds,
                           "PostgreSQL send log" if sendlog_url else "SQLite send log (one per instance)")


async def measure_instances(bootstrap: str, work: Path, sink: SmtpSink, events: int, messages: int,
                            postgres_url: str) -> list[InstancesResult]:
    """One, then two instances of each; the notifier also once on its single-node default (SQLite)."""
    results = [await measure_rules_instances(bootstrap, work / "rules", events, n) for n in (1, 2)]
    results.append(await measure_notifier_instances(bootstrap, work / "notifier", sink, messages, 1, None))
    for n in (1, 2):
        results.append(await measure_notifier_instances(bootstrap, work / "notifier", sink, messages, n,
                                                        fresh_schema(postgres_url, "bench")))
    return results


def main(argv: list[str] | None = None) -> int:
    """`python -m ppo_alerts.bench.instances [--events N] [--messages N]`: this measurement alone, on a local
    broker and PostgreSQL it starts."""
    import argparse
    import tempfile

    from ppo_alerts.localkafka import LocalKafka
    from ppo_alerts.localpostgres import LocalPostgres

    parser = argparse.ArgumentParser(prog="python -m ppo_alerts.bench.instances", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ppo-bench-") as tmp, SmtpSink() as sink:
        kafka = LocalKafka(Path(tmp) / "kafka")
        postgres = LocalPostgres(tempfile.mkdtemp(prefix="ppo-bench-pg-"))
        try:
            bootstrap = kafka.start()
            url = postgres.start()
            for r in asyncio.run(measure_instances(bootstrap, Path(tmp), sink, args.events, args.messages, url)):
                print(f"{r.service} x{r.instances}: {r.per_s:,.0f}/s ({r.items:,} in {r.seconds:.1f} s; {r.state})")
        finally:
            postgres.close()
            kafka.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
