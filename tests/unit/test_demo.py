"""`ppo-alerts demo`'s replay, through the live rule and timing code (the simulation engine, no Kafka): the samples
dated from now give notices on time, and the one late case, and only it, is late on arrival."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from ppo_alerts.demo import SAMPLE, dated_from_now, late_rotl
from ppo_alerts.simulate import SimulationEngine
from shared.directory import Directory
from shared.register import Register

SAMPLES = [json.loads(x) for x in (SAMPLE / "events.jsonl").read_text().splitlines() if x.strip()]


def _occurred(body: dict) -> datetime:
    text = body.get("occurred_at") or body["occurredAt"]
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("now", [datetime(2027, 5, 4, 23, 50, tzinfo=UTC), datetime.now(UTC)])
def test_samples_are_moved_to_just_before_now_keeping_their_spacing(now: datetime) -> None:
    moved = dated_from_now(SAMPLES, now)
    assert max(_occurred(b) for b in moved) == (now - timedelta(minutes=2)).replace(microsecond=0)
    shift = _occurred(moved[0]) - _occurred(SAMPLES[0])
    assert all(_occurred(m) - _occurred(s) == shift for m, s in zip(moved, SAMPLES, strict=True))
    [release] = [(s, m) for s, m in zip(SAMPLES, moved, strict=True) if s.get("type") == "prison.release_date_set"]
    before, after = (date.fromisoformat(b["data"]["release_date"]) - _occurred(b).date() for b in release)
    assert before == after  # a release 28 days after its event is still 28 days after it
    births = [(s["person"].get("date_of_birth"), m["person"].get("date_of_birth"))
              for s, m in zip(SAMPLES, moved, strict=True) if "person" in s]
    assert all(a == b for a, b in births) and any(a for a, _ in births)  # a date of birth stays


def test_the_replay_gives_notices_on_time_and_only_the_late_case_late() -> None:
    now = datetime.now(UTC)
    engine = SimulationEngine(Register.load(SAMPLE / "register.csv"), Directory.load(SAMPLE / "directory.yaml"), now)
    for line, body in enumerate([*dated_from_now(SAMPLES, now), late_rotl(now)], start=1):
        engine.feed(now, body, line)
    engine.advance(now + timedelta(minutes=1))
    assert engine.rejected == []
    due = [o for o in engine.obligations() if o.send_at <= now + timedelta(minutes=1)]
    late = [o for o in due if o.late]
    assert [(o.rule, o.status) for o in late] == [("A8", "breached")]  # the demo's ROTL: escalated
    assert {o.rule for o in due} >= {"A1", "A2", "A4", "B1", "A8"}  # every sample made its notice
    assert all(o.status == "notified" for o in due if o not in late)
