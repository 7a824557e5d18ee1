"""`ppo-alerts bench` end to end, with tiny sizes: every measurement runs on the real broker and an SMTP sink,
returns sane numbers, the report has every section, and the last line printed is the ratio."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest

from ppo_alerts.bench.command import Sizes, run_bench
from ppo_alerts.bench.report import SECTIONS

pytestmark = [pytest.mark.kafka, pytest.mark.smtp]

# Two sizes where the real command has three: enough to show growth. About 80 s, half of it starting the
# one- and two-instance processes of the instances measurement.
TINY = Sizes(
    name="test", ratio_events=(500, 2_000), latency_rates=(100, 200), latency_seconds=1.5, latency_drain_s=20,
    simulation_events=2_000, simulation_people=2_000, simulation_ppos=300, scheduler_timers=(500,),
    scheduler_live=50, scheduler_due=20, scheduler_burst=10, scheduler_window_after=0.5, scheduler_window=0.5,
    notifier_messages=(20, 60), notifier_rounds=1, notifier_concurrency=2, instances_events=1_000,
    instances_messages=20, console_entries=500, console_obligations=2_000, console_requests=5)


def test_bench_runs_every_measurement_and_ends_with_the_ratio(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = io.StringIO()
    report = tmp_path / "performance.md"
    r = run_bench(TINY, output=report, bootstrap=kafka_bootstrap, out=out, workdir=tmp_path)

    assert [x.events for x in r.ratio] == list(TINY.ratio_events)
    for x in r.ratio:
        assert x.raw_per_s > 0 and x.rules_per_s > 0
        assert x.ratio == pytest.approx(x.rules_per_s / x.raw_per_s)

    assert [x.rate for x in r.latency] == list(TINY.latency_rates)
    for y in r.latency:
        assert y.expected > 0 and y.delivered == y.expected, y
        assert y.errors == 0 and y.achieved_rate > 0
        assert 0 < y.p50_ms <= y.p95_ms <= y.p99_ms <= y.max_ms

    assert r.simulation is not None
    assert r.simulation.events == TINY.simulation_events and r.simulation.events_per_s > 0

    (s,) = r.scheduler
    assert s.timers == 500 and s.watched >= 500 and s.jobs >= 500
    assert s.cold_start_s > 0 and s.warm_start_s > 0 and s.peak_rss_mib >= s.base_rss_mib > 0
    assert s.fired == s.due == TINY.scheduler_due + TINY.scheduler_burst and s.duplicates == 0
    assert s.late_p50_ms <= s.late_p95_ms <= s.late_p99_ms <= s.late_max_ms

    assert [x.messages for x in r.notifier] == list(TINY.notifier_messages)
    assert all(x.pooled_per_s > 0 and x.one_shot_per_s > 0 for x in r.notifier)

    assert [(x.service, x.instances) for x in r.instances] == [
        ("rules", 1), ("rules", 2), ("notifier", 1), ("notifier", 1), ("notifier", 2)]
    assert all(x.seconds > 0 and x.per_s > 0 for x in r.instances)
    assert [x.items for x in r.instances] == [1_000, 1_000, 20, 20, 20]

    c = r.console
    assert c is not None and (c.entries, c.obligations) == (500, 2_000) and c.load_s > 0
    assert {p.role for p in c.pages} == {"bcu", "coordinator", "operator"}
    for page in c.pages:
        assert page.status == 200, page  # a page the bench times must answer
        assert 0 < page.p50_ms <= page.p95_ms <= page.max_ms and page.requests == 5
    assert len(c.catch_up_ms) == 20 and all(0 < t for t in c.catch_up_ms)

    text = report.read_text()
    for section in SECTIONS:
        assert section in text
    assert "rules / raw consumer" in text and "How to reproduce" in text and not re.search(r"\bnan\b", text)

    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"rules/raw-consumer ratio: \d+\.\d\d", lines[-1])
    assert lines[-1] == f"rules/raw-consumer ratio: {r.ratio[-1].ratio:.2f}"
    assert any(line.startswith("rules: ") for line in lines) and any(line.startswith("latency at ") for line in lines)
    assert not math.isnan(r.total_s) and set(r.timings) == {
        "rules", "latency", "simulation", "scheduler", "notifier", "postgres start", "instances", "console"}
