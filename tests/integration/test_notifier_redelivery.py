"""The redelivery table of the send log (a real SQLite file): parked requests survive a restart, come due in
order, back off, and are cleared when the request ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.notifier.pipeline import RetryPolicy
from services.notifier.sendlog import SendLog

T0 = datetime(2026, 2, 10, 14, 0, tzinfo=UTC)
POLICY = RetryPolicy(redeliver_initial_s=30, redeliver_max_s=120)


def test_park_backs_off_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    with SendLog(path) as log:
        first = log.park("A1-1", "p.notifications", b"request-1", now=T0, delay_s=POLICY.redelivery_delay)
        assert (first.round, first.due_at) == (1, T0 + timedelta(seconds=30))
        assert log.due_redeliveries(T0 + timedelta(seconds=29)) == []
        log.mark_redelivered("A1-1", 1, now=T0 + timedelta(seconds=30))
        again = log.park("A1-1", "p.notifications", b"request-1", now=T0 + timedelta(minutes=1),
                         delay_s=POLICY.redelivery_delay)
        assert (again.round, again.due_at) == (2, T0 + timedelta(minutes=2))
        log.park("A2-9#escalation", "p.escalations", b"escalation-9", now=T0, delay_s=POLICY.redelivery_delay)
    with SendLog(path) as log:  # a restart
        assert log.next_redelivery_at() == T0 + timedelta(seconds=30)
        due = log.due_redeliveries(T0 + timedelta(minutes=5))
        assert [(r.delivery_key, r.topic, r.request, r.round) for r in due] == [
            ("A2-9#escalation", "p.escalations", b"escalation-9", 1), ("A1-1", "p.notifications", b"request-1", 2)]
        log.mark_redelivered("A1-1", 1, now=T0)  # an older round: the newer park is left alone
        assert len(log.due_redeliveries(T0 + timedelta(minutes=5))) == 2
        log.mark_redelivered("A1-1", 2, now=T0)
        assert [r.delivery_key for r in log.due_redeliveries(T0 + timedelta(hours=1))] == ["A2-9#escalation"]
        assert log.redeliveries() == [("A1-1", 2, True), ("A2-9#escalation", 1, False)]
        log.clear_redelivery("A1-1")
        log.clear_redelivery("A2-9#escalation")
        assert log.redeliveries() == [] and log.next_redelivery_at() is None


def test_redelivery_delay_doubles_up_to_the_cap() -> None:
    assert [POLICY.redelivery_delay(n) for n in (1, 2, 3, 4, 50, 10_000)] == [30, 60, 120, 120, 120, 120]
    assert RetryPolicy().redelivery_delay(1) == 30 and RetryPolicy().redelivery_delay(99) == 900
