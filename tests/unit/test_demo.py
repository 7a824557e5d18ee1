"""`ppo-alerts demo`'s replay, through the live rule and timing code (the simulation engine, no Kafka): the samples
dated from now give notices on time, and the one late case, and only it, is late on arrival."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from ppo_alerts.demo import SAMPLE, dated_from_now, late_rotl
from ppo_alerts.simulate import SimulationEngine
from shared.calendar import london_date
from shared.directory import Directory
from shared.register import Register

SAMPLES = [json.loads(x) for x in (SAMPLE / "events.jsonl").read_text().splitlines() if x.strip()]


def _occurred(body: dict) -> datetime:
    text = body.get("occurred_at") or body["occurredAt"]
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# Every hour of a winter and a summer day: the move takes some events across midnight and not others (CI failed at
# 02:39 UTC on 2026-12-04, when only the latest event's day shift was applied to every event's dates).
MOMENTS = [datetime(2026, 12, 4, h, 39, tzinfo=UTC) for h in range(24)] + [
    datetime(2027, 5, 4, h, 50, tzinfo=UTC) for h in range(24)] + [datetime.now(UTC)]


@pytest.mark.parametrize("now", MOMENTS)
def test_samples_are_moved_to_just_before_now_keeping_their_spacing(now: datetime) -> None:
    moved = dated_from_now(SAMPLES, now)
    assert max(_occurred(b) for b in moved) == (now - timedelta(minutes=2)).replace(microsecond=0)
    shift = _occurred(moved[0]) - _occurred(SAMPLES[0])
    assert all(_occurred(m) - _occurred(s) == shift for m, s in zip(moved, SAMPLES, strict=True))
    [release] = [(s, m) for s, m in zip(SAMPLES, moved, strict=True) if s.get("type") == "prison.release_date_set"]
    before, after = (date.fromisoformat(b["data"]["release_date"]) - london_date(_occurred(b)) for b in release)
    assert before == after  # a release 27 days after its event is still 27 days after it
    births = [(s["person"].get("date_of_birth"), m["person"].get("date_of_birth"))
              for s, m in zip(SAMPLES, moved, strict=True) if "person" in s]
    assert all(a == b for a, b in births) and any(a for a, _ in births)  # a date of birth stays


@pytest.mark.parametrize("now", MOMENTS)
def test_the_replay_gives_notices_on_time_and_only_the_late_case_late(now: datetime) -> None:
    engine = SimulationEngine(Register.load(SAMPLE / "register.csv"), Directory.load(SAMPLE / "directory.yaml"), now)
    for line, body in enumerate([*dated_from_now(SAMPLES, now), late_rotl(now)], start=1):
        engine.feed(now, body, line)
    engine.advance(now + timedelta(minutes=1))
    assert engine.rejected == []
    due = [o for o in engine.obligations() if o.send_at <= now + timedelta(minutes=1)]
    late = [o for o in due if o.late]
    assert [(o.rule, o.status) for o in late] == [("A8", "breached")]  # the demo's ROTL: escalated
    # every sample made its notice at once, at any hour: the sample's release is 27 days off, so A4's 28-day notice
    # day has passed (at 28 days, an event before 09:00 on a working day would wait for that day's 09:00)
    assert {o.rule for o in due} >= {"A1", "A2", "A4", "B1", "A8"}
    assert all(o.status == "notified" for o in due if o not in late)
