"""Scheduler benchmark (not a test): 100,000 pending timers; start-up time, memory, and how late timers fire.

    .venv/bin/python bench/scheduler_bench.py [--timers 100000] [--due 2000] [--burst 500] [--kafka HOST:PORT]

Without --kafka it starts a local Kafka broker (ppo_alerts.localkafka) in a temporary folder. It then

1. publishes N pending timed obligations on the obligations topic: all but `--due` of them fall due over the next
   30 days; `--due` of them fall due spread over a 30-second window starting about two minutes after the
   scheduler is up, `--burst` more all at the same instant in the middle of it;
2. starts the scheduler on an empty state dir ("cold": the store is missing, so it is rebuilt from the topic and
   the jobs made from it), stops it, and starts it again ("warm": the job store is there);
3. waits for the window and reads the NotificationRequests back: lateness = requested_at - send_at;
4. publishes 5,000 more obligations while it runs and times how fast the live consumer takes them.

It prints the figures; nothing is asserted. Memory is the process's resident set (VmRSS now, VmHWM peak),
which includes the benchmark's own copies of the records it publishes and reads.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.scheduler.service import SchedulerService  # noqa: E402
from services.scheduler.store import JOBS_TABLE  # noqa: E402
from services.scheduler.watch import WatchPolicy  # noqa: E402
from shared.clock import SystemClock  # noqa: E402
from shared.http import HttpServer, build_app  # noqa: E402
from shared.kafka import client_kwargs, ensure_topics, make_broker, read_to_end  # noqa: E402
from shared.obligations import NotificationRequest, Obligation  # noqa: E402
from shared.service import RunningService  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.topics import Topics  # noqa: E402
from tests.rulebook_fixtures import DIRECTORY  # noqa: E402


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def obligation(i: int, send_at: datetime, now: datetime) -> Obligation:
    return Obligation(
        obligation_id=f"A4-{i:024x}", rule="A4", source_paragraph="001 §7.5, §2.3", person=None, bcu="13-LD",
        recipients=["leeds.ppo@westyorkshire.police.uk", "leeds.iom@justice.gov.uk"],
        recipient_roles={"leeds.ppo@westyorkshire.police.uk": "ppo", "leeds.iom@justice.gov.uk": "probation"},
        send_at=send_at, notify_by=send_at + timedelta(minutes=15), raised_at=now,
        facts={"release_date": "2027-01-01", "prison_id": "LEI", "rule_title": "release in 28 days"},
        source_event_ids=[f"bench-{i}"], event_type="prison.release_date_set")


async def publish_all(settings: Settings, topic: str, items: list[Obligation]) -> float:
    producer = AIOKafkaProducer(linger_ms=20, max_batch_size=512 * 1024, acks="all", **client_kwargs(settings))
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for o in items:
            pending.append(await producer.send(topic, o.model_dump_json().encode(), key=o.obligation_id.encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def start_scheduler(settings: Settings) -> tuple[RunningService, SchedulerService, float]:
    broker = make_broker(settings, "ppo-scheduler")
    service = SchedulerService(settings, broker, SystemClock(), policy=WatchPolicy(deadline_grace=timedelta(hours=1)))
    running = RunningService("scheduler", broker, HttpServer(build_app("scheduler", lambda: service.ready),
                                                             "127.0.0.1", 0),
                             after_broker=service.start, on_stop=[service.stop])
    started = time.monotonic()
    await running.start()
    return running, service, time.monotonic() - started


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def bench(args: argparse.Namespace, bootstrap: str, work: Path) -> None:
    directory = work / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}",
                        directory_file=directory, state_dir=work / "state", scheduler_port=0, log_level="WARNING")
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics)
    now = datetime.now(UTC)
    far = args.timers - args.due - args.burst
    window_start = now + timedelta(seconds=args.window_after)
    items = [obligation(i, now + timedelta(days=1) + timedelta(seconds=(i * 2_592_000) // max(far, 1)), now)
             for i in range(far)]
    items += [obligation(far + j, window_start + timedelta(seconds=30 * j / max(args.due, 1)), now)
              for j in range(args.due)]
    burst_at = window_start + timedelta(seconds=15)
    items += [obligation(far + args.due + k, burst_at, now) for k in range(args.burst)]
    print(f"publishing {len(items):,} pending obligations ...", flush=True)
    seconds = await publish_all(settings, topics.obligations, items)
    print(f"  published in {seconds:.1f} s ({len(items) / seconds:,.0f}/s)")
    del items
    gc.collect()
    base_rss = rss_mb()[0]

    running, service, cold = await start_scheduler(settings)
    rss_cold = rss_mb()
    watched = service.store.count()
    with service.jobs_engine.connect() as c:
        jobs = c.execute(text(f"SELECT count(*) FROM {JOBS_TABLE}")).scalar_one()
    print(f"cold start (store missing: rebuilt from the topic, jobs made): {cold:.1f} s; "
          f"{watched:,} obligations watched, {jobs:,} jobs; RSS {rss_cold[0]:.0f} MiB (peak {rss_cold[1]:.0f}, "
          f"{base_rss:.0f} before)")
    await running.stop()
    del service, running
    gc.collect()

    running, service, warm = await start_scheduler(settings)
    rss_warm = rss_mb()
    print(f"warm start (job store present, reconciled): {warm:.1f} s; RSS {rss_warm[0]:.0f} MiB "
          f"(peak {rss_warm[1]:.0f})")

    # Live intake of obligations while 100k jobs are pending.
    more_now = datetime.now(UTC)
    more = [obligation(10_000_000 + i, more_now + timedelta(days=2, seconds=i), more_now)
            for i in range(args.live)]
    before = service.store.count()
    started = time.monotonic()
    await publish_all(settings, topics.obligations, more)
    while service.store.count() < before + args.live and time.monotonic() - started < 600:
        await asyncio.sleep(0.5)
    live = time.monotonic() - started
    print(f"live consumer: {args.live:,} new obligations tracked in {live:.1f} s ({args.live / live:,.0f}/s)")

    wait = (window_start - datetime.now(UTC)).total_seconds() + 30 + 10
    if wait > 0:
        print(f"waiting {wait:.0f} s for the {args.due:,} + {args.burst:,} timers of the window ...", flush=True)
        await asyncio.sleep(wait)
    deadline = time.monotonic() + 120
    requests: list[NotificationRequest] = []
    while time.monotonic() < deadline:
        requests = [NotificationRequest.model_validate_json(v)
                    for _, v in await read_to_end(settings, topics.notifications) if v]
        if len(requests) >= args.due + args.burst:
            break
        await asyncio.sleep(2)
    lateness = [(r.requested_at - r.obligation.send_at).total_seconds() for r in requests]
    spread = [x for r, x in zip(requests, lateness, strict=True) if r.obligation.send_at != burst_at]
    burst = [x for r, x in zip(requests, lateness, strict=True) if r.obligation.send_at == burst_at]
    print(f"timers fired: {len(requests):,} of {args.due + args.burst:,} due in the window "
          f"(duplicates: {len(requests) - len({r.obligation.obligation_id for r in requests})})")
    for name, xs in (("spread over 30 s", spread), (f"burst of {args.burst} at one instant", burst)):
        if xs:
            print(f"  lateness, {name}: p50 {pct(xs, 50) * 1000:.0f} ms, p95 {pct(xs, 95) * 1000:.0f} ms, "
                  f"p99 {pct(xs, 99) * 1000:.0f} ms, max {max(xs) * 1000:.0f} ms, mean "
                  f"{statistics.fmean(xs) * 1000:.0f} ms")
    print(f"RSS at the end {rss_mb()[0]:.0f} MiB (peak {rss_mb()[1]:.0f})")
    await running.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=2_000, help="timers due spread over a 30-second window")
    parser.add_argument("--burst", type=int, default=500, help="timers due at one instant in that window")
    parser.add_argument("--live", type=int, default=5_000, help="obligations published while it runs")
    parser.add_argument("--window-after", type=float, default=240.0,
                        help="seconds from publishing to the window (must exceed both start-ups)")
    parser.add_argument("--kafka", help="bootstrap of a running broker (default: start a local one)")
    parser.add_argument("--without-at-risk-gauge", action="store_true",
                        help="switch off ppo_obligations_at_risk (shared.metrics.OpenObligations keeps every pending "
                             "obligation in memory): the scheduler's own footprint")
    args = parser.parse_args()
    if args.without_at_risk_gauge:
        from shared import metrics

        metrics.OpenObligations.observe = lambda self, o: None  # type: ignore[method-assign]
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ppo-bench-") as tmp:
        work = Path(tmp)
        if args.kafka:
            asyncio.run(bench(args, args.kafka, work))
            return 0
        from ppo_alerts.localkafka import LocalKafka

        with LocalKafka(work / "kafka") as kafka:
            kafka.start()
            asyncio.run(bench(args, kafka.bootstrap, work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
