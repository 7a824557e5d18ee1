"""Measurements on the real stack for `ppo-alerts bench`: rules vs a raw consumer, end-to-end latency.

Absolute times drift on a shared machine; ratios measured in the same run do not, so every throughput
figure here is paired with the limit it is measured against.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.clock import SystemClock
from shared.identifiers import check_letter
from shared.kafka import ensure_topics
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger("ppo.bench")

DIRECTORY = {
    "recipient_domains": ["police.uk", "justice.gov.uk", "gov.uk"],
    "bcus": {f"B{i:02d}": {"name": f"BCU {i}", "contacts": {
        role: [f"{role}.{i}@force{i}.police.uk"] for role in ("ppo", "warrants", "coordinator", "escalation")
    } | {"probation": [f"pp{i}@justice.gov.uk"], "yot": [f"yot{i}@council{i}.gov.uk"]}} for i in range(10)},
}


def pnc(serial: int) -> str:
    return f"2010/{serial:07d}{check_letter(int(f'10{serial:07d}'))}"


def noms(i: int) -> str:
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    return f"{letters[i % 24]}{(i // 24) % 10000:04d}{letters[(i // 240000) % 24]}{letters[(i // 7) % 24]}"


def write_reference(folder: Path, people: int, ppo_share: float, today: date) -> tuple[Path, Path, list[int]]:
    """A register where `ppo_share` of `people` are PPOs; returns the PPO indices."""
    folder.mkdir(parents=True, exist_ok=True)
    ppos = list(range(0, people, max(1, round(1 / ppo_share))))
    rows = ["pnc,cro,noms,crn,given_name,family_name,date_of_birth,home_bcu,strand,selected_on,reason,deselected_on"]
    selected = today - timedelta(days=30)
    rows += [f"{pnc(i)},,{noms(i)},,G{i},F{i},1985-01-01,B{i % 10:02d},deter,{selected},bench," for i in ppos]
    register = folder / "register.csv"
    register.write_text("\n".join(rows) + "\n")
    directory = folder / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    return register, directory, ppos


def canonical_events(n: int, people: int, ppos: list[int], ppo_share: float, now: datetime,
                     seed: int = 1) -> list[dict[str, Any]]:
    """Mixed canonical events; about `ppo_share` of them about a PPO."""
    rnd = random.Random(seed)
    ppo_set = set(ppos)
    others = [i for i in range(people) if i not in ppo_set] or [people + 1]
    out = []
    for k in range(n):
        i = rnd.choice(ppos) if rnd.random() < ppo_share else rnd.choice(others)
        at = (now - timedelta(seconds=rnd.randint(1, 3600))).isoformat()
        base = {"id": f"b-{seed}-{k}", "occurred_at": at, "source": "BENCH", "person": {"pnc": pnc(i), "noms": noms(i)}}
        kind = k % 4
        if kind == 0:
            out.append({**base, "type": "prison.reception", "data": {"prison_id": f"P{k % 997}", "reason": "new"}})
        elif kind == 1:
            out.append({**base, "type": "warrant.issued",
                        "data": {"warrant_id": f"W{k}", "court_code": "B01AA00", "kind": "fta"}})
        elif kind == 2:
            out.append({**base, "type": "court.bail_decision",
                        "data": {"court_code": f"B{k % 97:02d}AA00", "decision": "custody"}})
        else:
            out.append({**base, "type": "police.arrest", "data": {"force_code": "13"}})
    return out


async def fill_topic(bootstrap: str, topic: str, payloads: list[dict[str, Any]]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [await producer.send(topic, json.dumps(p).encode(), key=p["person"]["pnc"].encode())
                   for p in payloads]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def raw_consume(bootstrap: str, topic: str, n: int) -> float:
    """The limit: a bare aiokafka consumer that only decodes JSON."""
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


async def committed_total(admin: Any, group: str, topic: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


async def rules_consume(settings: Settings, n: int) -> float:
    """The rules service's real code path on the same topic: validation, register lookup, rules, publishing."""
    from aiokafka.admin import AIOKafkaAdminClient

    from services.rules.main import build

    running, _ = build(settings, SystemClock())
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    await running.start()
    topic = Topics(settings.topic_prefix).events
    try:
        # The clock starts when the first offset is committed, as the raw consumer's does at its first batch.
        started = None
        while True:
            done = await committed_total(admin, "ppo-rules", topic)
            if started is None and done > 0:
                started = time.perf_counter()
            if done >= n:
                return time.perf_counter() - (started or time.perf_counter())
            await asyncio.sleep(0.05)
    finally:
        await running.stop()
        await admin.close()


@dataclass
class Throughput:
    events: int
    raw_per_s: float
    rules_per_s: float

    @property
    def ratio(self) -> float:
        return self.rules_per_s / self.raw_per_s


async def rules_vs_raw(bootstrap: str, work: Path, n: int, people: int = 20_000, ppo_share: float = 0.05) -> Throughput:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    register, directory, ppos = write_reference(work / prefix, people, ppo_share, now.date())
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, register_file=register,
                        directory_file=directory, state_dir=work / prefix / "state", rules_port=0,
                        directory_reload_s=0)
    await ensure_topics(settings, Topics(prefix))
    payloads = canonical_events(n, people, ppos, ppo_share, now)
    await fill_topic(bootstrap, Topics(prefix).events, payloads)
    log.info("topic filled", extra={"events": n})
    raw = await raw_consume(bootstrap, Topics(prefix).events, n)
    log.info("raw consumer done", extra={"seconds": raw})
    rules = await rules_consume(settings, n)
    return Throughput(n, n / raw, n / rules)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class Latency:
    rate: float
    seconds: float
    sent: int
    achieved_rate: float
    ppo_events: int
    delivered: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


async def end_to_end(bootstrap: str, work: Path, rate: float, seconds: float, ppo_share: float = 0.05) -> Latency:
    """Intake HTTP -> SMTP accepted, at a steady rate of mixed events (~5% for PPOs)."""
    import httpx
    from aiosmtpd.controller import Controller

    from ppo_alerts.runner import SERVICES, start_services, stop_services
    from services.rules.ledger import Ledger
    from services.rules.rulebook import RuleBook
    from shared.directory import Directory
    from shared.events import parse_event
    from shared.register import Register

    arrivals: dict[str, float] = {}

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            text = (envelope.original_content or envelope.content).decode("utf-8", "replace")
            for line in text.splitlines():
                if line.startswith("X-PPO-Obligation:"):
                    arrivals.setdefault(line.split(":", 1)[1].strip(), time.perf_counter())
                    break
            return "250 OK"

    smtp = Controller(Handler(), hostname="127.0.0.1", port=0)
    smtp.start()
    prefix = f"e2e{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    people = 20_000
    register, directory, ppos = write_reference(work / prefix, people, ppo_share, now.date())
    settings = Settings(
        kafka_bootstrap=bootstrap, topic_prefix=prefix, register_file=register, directory_file=directory,
        state_dir=work / prefix / "state", smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_tls_mode="plain",
        smtp_allow_plaintext=True, intake_allow_anonymous=True, intake_port=0, rules_port=0, scheduler_port=0,
        notifier_port=0, log_level="WARNING",
    )
    n = int(rate * seconds)
    payloads = canonical_events(n, people, ppos, ppo_share, now, seed=int(rate))
    # Which obligation each PPO event raises (the oracle: the pure core), to match emails to events.
    oracle = Ledger(RuleBook(Register.load(register), Directory.load(directory)))
    obligation_of: dict[int, str] = {}
    for k, p in enumerate(payloads):
        decision = oracle.on_event(parse_event(p), now)
        if decision.raised:
            obligation_of[k] = decision.raised[0].obligation_id
    running = await start_services(list(SERVICES), settings, SystemClock())
    intake = next(s for s in running if s.name == "intake")
    posted: dict[str, float] = {}
    try:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{intake.http.port}", limits=limits,
                                     timeout=30) as client:
            async def send(k: int, body: dict[str, Any]) -> None:
                t = time.perf_counter()
                response = await client.post("/v1/events", json=body)
                if response.status_code == 202 and k in obligation_of:
                    posted[obligation_of[k]] = t

            started = time.perf_counter()
            tasks = []
            for k, body in enumerate(payloads):
                target = started + k / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(k, body)))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - started
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and not set(posted) <= set(arrivals):
            await asyncio.sleep(0.2)
    finally:
        await stop_services(running)
        smtp.stop()
    latencies = [(arrivals[o] - t) * 1000 for o, t in posted.items() if o in arrivals]
    return Latency(rate, seconds, n, n / elapsed, len(posted), len(latencies), percentile(latencies, 50),
                   percentile(latencies, 95), percentile(latencies, 99))


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")
