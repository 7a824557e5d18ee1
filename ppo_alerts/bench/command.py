"""`ppo-alerts bench [--quick] [--output PATH] [--only NAME,...] [--kafka BOOTSTRAP]`: every measurement of issue #8
in one run, on a local Kafka and SMTP sink it starts itself.

It prints one line per figure as it goes (progress and logs go to stderr), writes the Markdown report, and ends
with exactly one line `rules/raw-consumer ratio: 0.63` (the ratio at the largest size).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

from ppo_alerts.bench import console as console_bench
from ppo_alerts.bench import report
from ppo_alerts.bench.instances import InstancesResult, measure_instances
from ppo_alerts.bench.latency import LatencyResult, measure_latency
from ppo_alerts.bench.notifier import NotifierResult, measure_notifier
from ppo_alerts.bench.rules import RatioResult, measure_ratio
from ppo_alerts.bench.scheduler import SchedulerResult, measure_scheduler
from ppo_alerts.bench.simulation import SimulationResult, measure_simulation
from ppo_alerts.bench.sink import SmtpSink

log = logging.getLogger("ppo.bench")
T = TypeVar("T")

MEASUREMENTS = ("rules", "latency", "simulation", "scheduler", "notifier", "instances", "console")
FULL_REPORT = Path("docs/performance.md")
QUICK_REPORT = Path(".run/bench/performance-quick.md")
PARTIAL_REPORT = Path(".run/bench/performance-partial.md")


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is. `FULL` and `QUICK` are the two the command offers."""

    name: str
    ratio_events: tuple[int, ...]  # three sizes: the growth of 1
    latency_rates: tuple[float, ...]
    latency_seconds: float
    latency_drain_s: float  # how long to wait, after the load, for the last notices
    simulation_events: int
    simulation_people: int
    simulation_ppos: int
    scheduler_timers: tuple[int, ...]
    scheduler_live: int
    scheduler_due: int
    scheduler_burst: int
    scheduler_window_after: float
    scheduler_window: float
    notifier_messages: tuple[int, ...]  # three sizes: the growth of 5
    notifier_rounds: int
    instances_events: int  # rules with one and two instances
    instances_messages: int  # notifier with one and two instances
    console_entries: int  # the console's pages with this many register entries
    console_obligations: int  # and this many obligations
    console_requests: int  # per page
    notifier_concurrency: int = 4


FULL = Sizes(
    name="full", ratio_events=(25_000, 50_000, 100_000), latency_rates=(200, 1000), latency_seconds=60,
    latency_drain_s=60, simulation_events=5_000_000, simulation_people=100_000, simulation_ppos=16_000,
    scheduler_timers=(100_000, 1_000_000), scheduler_live=5_000, scheduler_due=2_000, scheduler_burst=500,
    scheduler_window_after=20, scheduler_window=30, notifier_messages=(250, 500, 1_000), notifier_rounds=3,
    instances_events=50_000, instances_messages=1_000, console_entries=20_000, console_obligations=100_000,
    console_requests=100)

QUICK = Sizes(  # under two minutes on a 2-core machine, Kafka's start included
    name="quick", ratio_events=(5_000, 10_000, 20_000), latency_rates=(200, 1000), latency_seconds=5,
    latency_drain_s=15, simulation_events=100_000, simulation_people=30_000, simulation_ppos=4_800,
    scheduler_timers=(10_000, 40_000), scheduler_live=500, scheduler_due=200, scheduler_burst=100,
    scheduler_window_after=1, scheduler_window=1, notifier_messages=(100, 200, 400), notifier_rounds=1,
    instances_events=5_000, instances_messages=200, console_entries=5_000, console_obligations=20_000,
    console_requests=20)


@dataclass
class BenchResults:
    sizes: Sizes
    started_at: datetime
    only: frozenset[str] = frozenset()
    ratio: list[RatioResult] = field(default_factory=list)
    latency: list[LatencyResult] = field(default_factory=list)
    simulation: SimulationResult | None = None
    scheduler: list[SchedulerResult] = field(default_factory=list)
    notifier: list[NotifierResult] = field(default_factory=list)
    instances: list[InstancesResult] = field(default_factory=list)
    console: console_bench.ConsoleResult | None = None
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per step, in order
    total_s: float = 0.0
    report: Path | None = None

    @property
    def last_line(self) -> str | None:
        return f"rules/raw-consumer ratio: {self.ratio[-1].ratio:.2f}" if self.ratio else None


def default_output(sizes: Sizes, only: frozenset[str]) -> Path:
    if sizes.name == "full" and not only:
        return FULL_REPORT
    return QUICK_REPORT if sizes.name == "quick" else PARTIAL_REPORT


# --- one line per figure ---------------------------------------------------------------------------------------------

def ratio_line(x: RatioResult) -> str:
    return (f"rules: {x.rules_per_s:,.0f} ev/s vs raw {x.raw_per_s:,.0f} ev/s at {x.events:,} events "
            f"(ratio {x.ratio:.2f}; {x.rules_us_per_event:,.1f} µs/event, of which validation "
            f"{x.validate_s / x.events * 1e6:,.1f} and rules {x.ledger_s / x.events * 1e6:,.1f} measured alone; "
            f"raw {x.raw_us_per_event:,.1f} µs/event; ceiling {x.ceiling:.2f})")


def latency_line(x: LatencyResult) -> str:
    return (f"latency at {x.rate:,.0f} ev/s: p50 {x.p50_ms:,.0f} ms, p95 {x.p95_ms:,.0f} ms, p99 {x.p99_ms:,.0f} ms "
            f"({x.delivered:,} of {x.expected:,} notices delivered; achieved {x.achieved_rate:,.0f} ev/s, "
            f"{x.errors:,} errors)")


def simulation_line(x: SimulationResult) -> str:
    return f"simulation: {x.events_per_s:,.0f} ev/s through the pure core ({x.events:,} events)"


def scheduler_lines(x: SchedulerResult) -> list[str]:
    return [
        f"scheduler with {x.timers:,} timers: cold start {x.cold_start_s:,.1f} s, warm start {x.warm_start_s:,.1f} s, "
        f"RSS {x.warm_rss_mib:,.0f} MiB (peak {x.peak_rss_mib:,.0f} MiB)",
        f"scheduler with {x.timers:,} timers: lateness p50 {x.late_p50_ms:,.0f} ms, p99 {x.late_p99_ms:,.0f} ms, "
        f"max {x.late_max_ms:,.0f} ms; burst of {x.burst:,} max {x.burst_max_ms:,.0f} ms ({x.fired:,} of {x.due:,} "
        "fired)",
    ]


def instances_line(x: InstancesResult) -> str:
    unit = "events" if x.service == "rules" else "msg"
    return (f"{x.service} with {x.instances} instance(s): {x.per_s:,.0f} {unit}/s ({x.items:,} in {x.seconds:,.1f} s; "
            f"{x.state})")


def notifier_line(x: NotifierResult) -> str:
    return (f"notifier: pooled {x.pooled_per_s:,.0f} msg/s vs one connection per message {x.one_shot_per_s:,.0f} "
            f"msg/s at {x.messages:,} messages (×{x.speedup:.2f})")


# --- the run ---------------------------------------------------------------------------------------------------------

def run_bench(sizes: Sizes, *, output: Path | None = None, only: frozenset[str] = frozenset(),
              bootstrap: str | None = None, out: TextIO | None = None, workdir: Path | None = None) -> BenchResults:
    """Every measurement in order (those in `only`, when given), printing one line per figure to `out`; writes the
    report and returns the results. The last line printed is the rules/raw-consumer ratio, when measured."""
    out = out or sys.stdout
    unknown = set(only) - set(MEASUREMENTS)
    if unknown:
        raise ValueError(f"unknown measurement(s): {', '.join(sorted(unknown))}; choose from {', '.join(MEASUREMENTS)}")
    wanted = [m for m in MEASUREMENTS if not only or m in only]
    output = output or default_output(sizes, only)
    started = time.perf_counter()
    results = BenchResults(sizes, datetime.now(UTC), frozenset(only))
    machine = report.Machine.describe()

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    def step(name: str, fn: Callable[[], T]) -> T:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            results.timings[name] = results.timings.get(name, 0.0) + time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="ppo-bench-", dir=workdir) as tmp:
        work = Path(tmp)
        kafka_obj = None
        if bootstrap is None and any(m in wanted for m in ("rules", "latency", "scheduler", "instances", "console")):
            from ppo_alerts.localkafka import KAFKA_VERSION, LocalKafka

            kafka_obj = LocalKafka(work / "kafka")
            bootstrap = step("kafka start", kafka_obj.start)
            kafka = f"Apache Kafka {KAFKA_VERSION} (local)"
        else:
            kafka = f"external broker at {bootstrap}" if bootstrap else "not used"
        sink = SmtpSink().start()
        try:
            if "rules" in wanted:
                assert bootstrap is not None
                for events in sizes.ratio_events:
                    ratio = step("rules", partial(asyncio.run, measure_ratio(bootstrap, work / "rules", events)))
                    results.ratio.append(ratio)
                    say(ratio_line(ratio))
                say("growth, rules: " + report.growth_verdict([x.events for x in results.ratio],
                                                             [x.rules_us_per_event for x in results.ratio]))
            if "latency" in wanted:
                assert bootstrap is not None
                results.latency = step("latency", partial(asyncio.run, measure_latency(
                    bootstrap, work / "latency", sink, sizes.latency_rates, sizes.latency_seconds,
                    sizes.latency_drain_s)))
                for latency in results.latency:
                    say(latency_line(latency))
            if "simulation" in wanted:
                (work / "simulation").mkdir()
                simulation = step("simulation", partial(
                    measure_simulation, sizes.simulation_events, sizes.simulation_people, sizes.simulation_ppos,
                    log_file=work / "simulation" / "simulation.log"))
                results.simulation = simulation
                say(simulation_line(simulation))
            if "scheduler" in wanted:
                assert bootstrap is not None
                for timers in sizes.scheduler_timers:
                    scheduler = step("scheduler", partial(
                        measure_scheduler, bootstrap, work / f"scheduler-{timers}", timers, sizes.scheduler_live,
                        sizes.scheduler_due, sizes.scheduler_burst, sizes.scheduler_window_after,
                        sizes.scheduler_window))
                    results.scheduler.append(scheduler)
                    for line in scheduler_lines(scheduler):
                        say(line)
            if "notifier" in wanted:
                for messages in sizes.notifier_messages:
                    notifier = step("notifier", partial(asyncio.run, measure_notifier(
                        sink, messages, sizes.notifier_concurrency, sizes.notifier_rounds)))
                    results.notifier.append(notifier)
                    say(notifier_line(notifier))
                say("growth, notifier (pooled): " + report.growth_verdict(
                    [x.messages for x in results.notifier], [x.pooled_ms_per_message for x in results.notifier]))
            if "instances" in wanted:
                assert bootstrap is not None
                from ppo_alerts.localpostgres import LocalPostgres

                postgres = LocalPostgres(tempfile.mkdtemp(prefix="ppo-bench-pg-"))  # its own user may need /tmp
                try:
                    url = step("postgres start", postgres.start)
                    results.instances = step("instances", partial(asyncio.run, measure_instances(
                        bootstrap, work / "instances", sink, sizes.instances_events, sizes.instances_messages, url)))
                finally:
                    postgres.close()
                for x in results.instances:
                    say(instances_line(x))
            if "console" in wanted:
                assert bootstrap is not None
                results.console = step("console", partial(asyncio.run, console_bench.measure_console(
                    bootstrap, work / "console", sizes.console_entries, sizes.console_obligations,
                    sizes.console_requests)))
                for line in console_bench.lines(results.console):
                    say(line)
        finally:
            sink.stop()
            if kafka_obj is not None:
                kafka_obj.stop()
        results.total_s = time.perf_counter() - started
        results.report = report.write(results, machine, kafka, output)
    say(f"report: {output}")
    say(f"total: {results.total_s:,.0f} s (" + ", ".join(f"{k} {v:,.0f} s" for k, v in results.timings.items()) + ")")
    if results.last_line:
        say(results.last_line)
    return results


def main_bench(args: Any) -> int:
    """The CLI entry: `args` has quick, output, only, kafka."""
    from shared.logs import configure_logging

    configure_logging("WARNING")  # JSON lines on stderr; stdout carries only the figures
    only = frozenset(x.strip() for x in (args.only or "").split(",") if x.strip())
    unknown = only - set(MEASUREMENTS)
    if unknown:
        print(f"ppo-alerts bench: unknown measurement(s) {', '.join(sorted(unknown))}; choose from "
              f"{', '.join(MEASUREMENTS)}", file=sys.stderr)
        return 2
    try:
        run_bench(QUICK if args.quick else FULL, output=Path(args.output) if args.output else None, only=only,
                  bootstrap=args.kafka)
    except Exception as exc:  # a failed measurement: say which, without a wall of traceback on stdout
        log.exception("bench failed")
        print(f"ppo-alerts bench: failed: {exc}", file=sys.stderr)
        return 1
    return 0
