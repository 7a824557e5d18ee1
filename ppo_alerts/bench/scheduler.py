"""Scheduler scale: start-up time and memory with N pending timers, and how late timers fire among them.

Part of `ppo-alerts bench`, which runs it in a child process so the memory figures are the scheduler's own; also
runs on its own:

    .venv/bin/python -m ppo_alerts.bench.scheduler --timers 100000 [--kafka HOST:PORT] [--json]

Without --kafka it starts a local Kafka broker (ppo_alerts.localkafka) in a temporary folder. Then:

1. it publishes N pending timed obligations (A4, release in 28 days) on the obligations topic, due over the 30 days
   from tomorrow; they are generated as they are sent, never all held in memory;
2. it starts the scheduler on an empty state dir ("cold": the store is missing, so it is rebuilt from the topic and
   a job made for every timer), stops it, and starts it again ("warm": the job store is there, reconciled);
3. with the N timers pending, it publishes `--live` more obligations and times how fast the live consumer takes
   them;
4. it then publishes `--due` obligations due spread over a `--window`-second window starting `--window-after`
   seconds later, and `--burst` more all due at one instant in the middle of it, and reads the notification
   requests back: lateness = requested_at - send_at.

Memory is this process's resident set (VmRSS now, VmHWM peak): the scheduler, its SQLite stores and this small
driver. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from ppo_alerts.bench.data import DIRECTORY, obligation_records
from ppo_alerts.bench.latency import percentile


@dataclass(frozen=True)
class SchedulerResult:
    timers: int  # pending timers when it starts
    publish_s: float
    base_rss_mib: float  # before the scheduler is built (Python, imports, Kafka client)
    cold_start_s: float  # store missing: rebuilt from the topic, a job made per timer
    cold_rss_mib: float
    warm_start_s: float  # job store present: reconciled
    warm_rss_mib: float
    peak_rss_mib: float  # VmHWM over the whole run
    watched: int  # obligations the store holds after the cold start
    jobs: int  # APScheduler jobs after the cold start
    live: int
    live_per_s: float  # obligations per second the live consumer took while N timers were pending
    due: int  # timers due in the window (spread + burst)
    fired: int
    duplicates: int
    late_p50_ms: float  # timers spread over the window
    late_p95_ms: float
    late_p99_ms: float
    late_max_ms: float
    burst: int
    burst_p50_ms: float  # the burst due at one instant
    burst_max_ms: float


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set of this process in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def publish(settings: Any, topic: str, records: Iterable[tuple[bytes, bytes]]) -> float:
    from aiokafka import AIOKafkaProducer

    from shared.kafka import client_kwargs

    producer = AIOKafkaProducer(linger_ms=20, max_batch_size=512 * 1024, acks="all", **client_kwargs(settings))
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def start_scheduler(settings: Any) -> tuple[Any, Any, float]:
    from services.scheduler.service import SchedulerService
    from services.scheduler.watch import WatchPolicy
    from shared.clock import SystemClock
    from shared.http import HttpServer, build_app
    from shared.kafka import make_broker
    from shared.service import RunningService

    broker = make_broker(settings, "ppo-scheduler")
    service = SchedulerService(settings, broker, SystemClock(), policy=WatchPolicy(deadline_grace=timedelta(hours=1)))
    running = RunningService("scheduler", broker, HttpServer(build_app("scheduler", lambda: service.ready),
                                                             "127.0.0.1", 0),
                             after_broker=service.start, on_stop=[service.stop])
    started = time.monotonic()
    await running.start()
    return running, service, time.monotonic() - started


async def bench(bootstrap: str, work: Path, timers: int, live: int, due: int, burst: int, window_after: float,
                window: float) -> SchedulerResult:
    from sqlalchemy import text

    from services.scheduler.store import JOBS_TABLE
    from shared.kafka import ensure_topics, read_to_end
    from shared.obligations import NotificationRequest
    from shared.settings import Settings
    from shared.topics import Topics

    directory = work / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"sched{uuid.uuid4().hex[:6]}",
                        directory_file=directory, state_dir=work / "state", scheduler_port=0, log_level="WARNING")
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics)
    now = datetime.now(UTC)
    first = now + timedelta(days=1)
    spread = (first + timedelta(seconds=(i * 2_592_000) // max(timers, 1)) for i in range(timers))
    publish_s = await publish(settings, topics.obligations, obligation_records(0, spread, now))
    gc.collect()
    base_rss = rss_mib()[0]

    running, service, cold = await start_scheduler(settings)
    cold_rss = rss_mib()[0]
    watched = service.store.count()
    with service.jobs_engine.connect() as c:
        jobs = c.execute(text(f"SELECT count(*) FROM {JOBS_TABLE}")).scalar_one()
    await running.stop()
    del service, running
    gc.collect()

    running, service, warm = await start_scheduler(settings)
    warm_rss = rss_mib()[0]
    try:
        # The live consumer, with the N timers pending.
        before = service.store.count()
        more_now = datetime.now(UTC)
        more = (more_now + timedelta(days=2, seconds=i) for i in range(live))
        started = time.monotonic()
        await publish(settings, topics.obligations, obligation_records(10_000_000, more, more_now))
        while service.store.count() < before + live and time.monotonic() - started < 600:
            await asyncio.sleep(0.1)
        live_s = time.monotonic() - started

        # Timers due in a window among the N pending.
        window_start = datetime.now(UTC) + timedelta(seconds=window_after)
        burst_at = window_start + timedelta(seconds=window / 2)
        due_at = [window_start + timedelta(seconds=window * j / max(due, 1)) for j in range(due)] + [burst_at] * burst
        await publish(settings, topics.obligations, obligation_records(20_000_000, due_at, datetime.now(UTC)))
        wait = (window_start - datetime.now(UTC)).total_seconds() + window + 1
        if wait > 0:
            await asyncio.sleep(wait)
        deadline = time.monotonic() + max(60.0, window)
        requests: list[Any] = []
        while time.monotonic() < deadline:
            requests = [NotificationRequest.model_validate_json(v)
                        for _, v in await read_to_end(settings, topics.notifications) if v]
            if len(requests) >= due + burst:
                break
            await asyncio.sleep(0.5)
    finally:
        await running.stop()
    late = [(r.requested_at - r.obligation.send_at).total_seconds() * 1000 for r in requests]
    spread_ms = [x for r, x in zip(requests, late, strict=True) if r.obligation.send_at != burst_at]
    burst_ms = [x for r, x in zip(requests, late, strict=True) if r.obligation.send_at == burst_at]
    nan = float("nan")
    return SchedulerResult(
        timers=timers, publish_s=publish_s, base_rss_mib=base_rss, cold_start_s=cold, cold_rss_mib=cold_rss,
        warm_start_s=warm, warm_rss_mib=warm_rss, peak_rss_mib=rss_mib()[1], watched=watched, jobs=jobs, live=live,
        live_per_s=live / live_s if live_s else 0.0, due=due + burst, fired=len({r.obligation.obligation_id
                                                                                  for r in requests}),
        duplicates=len(requests) - len({r.obligation.obligation_id for r in requests}),
        late_p50_ms=percentile(spread_ms, 50), late_p95_ms=percentile(spread_ms, 95),
        late_p99_ms=percentile(spread_ms, 99), late_max_ms=max(spread_ms, default=nan), burst=burst,
        burst_p50_ms=percentile(burst_ms, 50), burst_max_ms=max(burst_ms, default=nan))


def measure_scheduler(bootstrap: str, work: Path, timers: int, live: int, due: int, burst: int,
                      window_after: float, window: float, timeout_s: float = 7200) -> SchedulerResult:
    """Run the measurement in a child process (`python -m ppo_alerts.bench.scheduler --json`)."""
    work.mkdir(parents=True, exist_ok=True)
    log_file = work / "scheduler-bench.log"
    command = [sys.executable, "-m", "ppo_alerts.bench.scheduler", "--json", "--kafka", bootstrap,
               "--work", str(work), "--timers", str(timers), "--live", str(live), "--due", str(due),
               "--burst", str(burst), "--window-after", str(window_after), "--window", str(window)]
    with open(log_file, "ab") as err:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the scheduler benchmark exited with {done.returncode}\n"
                           f"{log_file.read_text(errors='replace')[-3000:]}")
    return SchedulerResult(**json.loads(done.stdout))


def _print(r: SchedulerResult) -> None:
    print(f"{r.timers:,} pending timers published in {r.publish_s:.1f} s")
    print(f"cold start (store rebuilt from the topic, jobs made): {r.cold_start_s:.1f} s; {r.watched:,} watched, "
          f"{r.jobs:,} jobs; RSS {r.cold_rss_mib:.0f} MiB ({r.base_rss_mib:.0f} before)")
    print(f"warm start (job store present, reconciled): {r.warm_start_s:.1f} s; RSS {r.warm_rss_mib:.0f} MiB")
    print(f"live consumer: {r.live:,} new obligations at {r.live_per_s:,.0f}/s")
    print(f"timers fired: {r.fired:,} of {r.due:,} due in the window (duplicates: {r.duplicates})")
    print(f"  lateness, spread: p50 {r.late_p50_ms:.0f} ms, p95 {r.late_p95_ms:.0f} ms, p99 {r.late_p99_ms:.0f} ms, "
          f"max {r.late_max_ms:.0f} ms")
    print(f"  lateness, burst of {r.burst:,} at one instant: p50 {r.burst_p50_ms:.0f} ms, max {r.burst_max_ms:.0f} ms")
    print(f"peak RSS {r.peak_rss_mib:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppo_alerts.bench.scheduler",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--timers", type=int, default=100_000, help="pending timers at start (default 100,000)")
    parser.add_argument("--live", type=int, default=5_000, help="obligations published while it runs")
    parser.add_argument("--due", type=int, default=2_000, help="timers due spread over the window")
    parser.add_argument("--burst", type=int, default=500, help="timers due at one instant in the window")
    parser.add_argument("--window-after", type=float, default=20.0,
                        help="seconds from publishing the due timers to the window's start")
    parser.add_argument("--window", type=float, default=30.0, help="the window's length in seconds")
    parser.add_argument("--kafka", help="bootstrap of a running broker (default: start a local one)")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for `ppo-alerts bench`)")
    parser.add_argument("--without-at-risk-gauge", action="store_true",
                        help="switch off ppo_obligations_at_risk (shared.metrics.OpenObligations keeps every pending "
                             "obligation in memory): the scheduler's own footprint")
    args = parser.parse_args(argv)
    if args.without_at_risk_gauge:
        from shared import metrics

        metrics.OpenObligations.observe = lambda self, o: None  # type: ignore[method-assign]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    measure = (args.timers, args.live, args.due, args.burst, args.window_after, args.window)
    with tempfile.TemporaryDirectory(prefix="ppo-bench-scheduler-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.kafka:
            result = asyncio.run(bench(args.kafka, work, *measure))
        else:
            from ppo_alerts.localkafka import LocalKafka

            with LocalKafka(work / "kafka") as kafka:  # started on entry
                result = asyncio.run(bench(kafka.bootstrap, work, *measure))
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
