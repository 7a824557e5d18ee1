"""Rules throughput against the raw limit, on the same topic in the same run.

(a) the limit: a bare aiokafka consumer that only decodes JSON; (b) the rules service's real code path, built by
`services.rules.main.build` as `ppo-alerts run rules` builds it (validation, register lookup, rule evaluation,
publishing obligations, committing). Absolute rates drift on a shared machine; the ratio of two rates measured
one after the other on the same records does much less, so it is the figure to watch.

Both clocks start when the first records arrive (the raw consumer's first `getmany`; the first event the rules
service's ledger evaluates) and stop when the last offset is committed, so start-up, group joins and loading the
register are not counted.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ppo_alerts.bench.data import canonical_events, write_reference

log = logging.getLogger("ppo.bench")

PEOPLE = 20_000
PPO_SHARE = 0.05


@dataclass(frozen=True)
class RatioResult:
    events: int
    raw_s: float  # seconds for the bare consumer to decode every record
    rules_s: float  # seconds for the rules service to evaluate and commit every record
    validate_s: float = 0.0  # of which, measured alone on the same records: validating them (JSON bytes -> event)
    ledger_s: float = 0.0  # and evaluating them against the register and the ledger

    @property
    def raw_per_s(self) -> float:
        return self.events / self.raw_s

    @property
    def rules_per_s(self) -> float:
        return self.events / self.rules_s

    @property
    def ratio(self) -> float:
        return self.rules_per_s / self.raw_per_s

    @property
    def rules_us_per_event(self) -> float:
        return self.rules_s / self.events * 1e6

    @property
    def raw_us_per_event(self) -> float:
        return self.raw_s / self.events * 1e6

    @property
    def ceiling(self) -> float:
        """The ratio if consuming, publishing and committing cost the rules service nothing beyond what they cost
        the raw consumer: raw / (raw + validation + evaluation)."""
        return self.raw_s / (self.raw_s + self.validate_s + self.ledger_s)


async def fill_topic(bootstrap: str, topic: str, payloads: list[dict[str, Any]]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for p in payloads:
            pending.append(await producer.send(topic, json.dumps(p).encode(), key=p["person"]["pnc"].encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def raw_consume(bootstrap: str, topic: str, n: int) -> float:
    """The limit: a bare aiokafka consumer that only decodes JSON (and commits, as the service does)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=2000)
    await consumer.start()
    try:
        seen = 0
        started = None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            if started is None and batch:
                started = time.perf_counter()
            for records in batch.values():
                for rec in records:
                    json.loads(rec.value)
                    seen += 1
            if batch:
                await consumer.commit()
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        await consumer.stop()


async def _committed_total(admin: Any, group: str, topic: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


def _note_first_event(service: Any, first: list[float]) -> None:
    """Note when the service's ledger is first asked about an event (then step aside: no cost per event)."""
    ledger = service.ledger
    if ledger is None or not hasattr(ledger, "on_event"):
        return
    evaluate = ledger.on_event

    def on_event(*args: Any, **kwargs: Any) -> Any:
        first.append(time.perf_counter())
        del ledger.on_event  # back to the class's method
        return evaluate(*args, **kwargs)

    ledger.on_event = on_event


async def rules_consume(settings: Any, n: int, timeout_s: float = 600.0) -> float:
    """The rules service's real code path on the same topic, from the first event its ledger evaluates (as the raw
    consumer's clock starts at its first batch) to its group having committed all `n`."""
    from aiokafka.admin import AIOKafkaAdminClient

    from services.rules.main import build
    from shared.clock import SystemClock
    from shared.kafka import client_kwargs
    from shared.topics import Topics

    running, service = build(settings, SystemClock())
    first: list[float] = []
    load_state = running.before_broker

    async def load_then_watch() -> None:  # the state is loaded before the broker starts consuming
        if load_state is not None:
            await load_state()
        _note_first_event(service, first)

    running.before_broker = load_then_watch
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    await running.start()
    # The rule book reads the events re-keyed by person (after the resolve stage): done when it has committed all
    topic = Topics(settings.topic_prefix).events_by_person
    deadline = time.perf_counter() + timeout_s
    try:
        committed_first = None
        while time.perf_counter() < deadline:
            done = await _committed_total(admin, Topics(settings.topic_prefix).group("ppo-rules"), topic)
            if committed_first is None and done > 0:
                committed_first = time.perf_counter()
            if done >= n:
                if not first:  # the hook did not take (the service changed): the first commit, a lower bound
                    log.warning("rules bench: no first-event time; timing from the first commit")
                return time.perf_counter() - (first[0] if first else committed_first or time.perf_counter())
            await asyncio.sleep(0.05)  # each look costs the loop a request: not too often
        raise TimeoutError(f"the rules service did not commit {n:,} events within {timeout_s:.0f} s")
    finally:
        await running.stop()
        await admin.close()


async def measure_ratio(bootstrap: str, work: Path, n: int, people: int = PEOPLE,
                        ppo_share: float = PPO_SHARE) -> RatioResult:
    """Fill a fresh topic with `n` mixed events (about 5% about PPOs), then time (a) and (b) on it."""
    from shared.kafka import ensure_topics
    from shared.settings import Settings
    from shared.topics import Topics

    prefix = f"bench{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    register, directory, ppos = write_reference(work / prefix, people, ppo_share, now.date())
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, register_file=register,
                        directory_file=directory, state_dir=work / prefix / "state", rules_port=0,
                        directory_reload_s=0, log_level="WARNING")
    topics = Topics(prefix)
    await ensure_topics(settings, topics)
    payloads = canonical_events(n, people, ppos, ppo_share, now)
    await fill_topic(bootstrap, topics.events, payloads)
    log.info("topic filled", extra={"events": n})
    # The bench's own objects (the payloads, earlier results) are frozen out of the cyclic collector's view: the
    # rules service, which allocates more than the raw consumer, would otherwise pay for traversing them.
    gc.collect()
    gc.freeze()
    try:
        raw = await raw_consume(bootstrap, topics.events, n)
        rules = await rules_consume(settings, n)
        validate_s, ledger_s = pure_costs(register, directory, payloads)
    finally:
        gc.unfreeze()
    return RatioResult(n, raw, rules, validate_s, ledger_s)


def pure_costs(register: Path, directory: Path, payloads: list[dict[str, Any]]) -> tuple[float, float]:
    """Seconds to validate the records (from their JSON bytes) and to evaluate them, without Kafka: where the
    rules service's time goes, next to the raw consumer's."""
    from services.rules.ledger import Ledger
    from services.rules.rulebook import RuleBook
    from shared.directory import Directory
    from shared.events import parse_event
    from shared.register import Register

    bodies = [json.dumps(p).encode() for p in payloads]
    ledger = Ledger(RuleBook(Register.load(register), Directory.load(directory)))
    now = datetime.now(UTC)
    clock = time.perf_counter
    validate_s = ledger_s = 0.0
    for body in bodies:  # one at a time, as the service takes them: a list of them all would time the collector
        t0 = clock()
        event = parse_event(body)
        t1 = clock()
        ledger.on_event(event, now)
        validate_s += t1 - t0
        ledger_s += clock() - t1
    return validate_s, ledger_s
