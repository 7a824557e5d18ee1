"""The scheduler's pure core (services/scheduler/watch.py): what an obligation owes next, and merging states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.scheduler.watch import (
    ESCALATED,
    FIRED,
    WatchPolicy,
    escalated,
    escalation_reason,
    fired,
    keep_until,
    merge,
    next_step,
    record_acknowledgement,
    record_breach,
    record_escalation,
    record_fired,
)
from shared.ack import Acknowledgement
from shared.calendar import add_working_hours
from shared.obligations import HistoryEntry, Obligation

POLICY = WatchPolicy(deadline_grace=timedelta(seconds=60), ack_working_hours=4.0)
MON_10 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday; London is on GMT
DUTY = ["leeds.duty@westyorkshire.police.uk"]


def obligation(rule: str = "A1", status: str = "pending", send_in: timedelta = timedelta(0),
               raised_at: datetime = MON_10, **kw: object) -> Obligation:
    send_at = raised_at + send_in
    return Obligation(obligation_id=f"{rule}-{'0' * 24}", rule=rule, source_paragraph="001 §7.5", person=None,
                      bcu="13-LD", recipients=["leeds.ppo@westyorkshire.police.uk"], send_at=send_at,
                      notify_by=send_at + timedelta(minutes=15), raised_at=raised_at, status=status, **kw)


def ack(who: str = "leeds.ppo@westyorkshire.police.uk", at: datetime = MON_10) -> Acknowledgement:
    return Acknowledgement(obligation_id="A1-" + "0" * 24, recipient=who, acknowledged_at=at,
                           link_expires_at=at + timedelta(days=30))


# --- next step --------------------------------------------------------------------------------------------


def test_a_pending_timed_obligation_is_sent_at_send_at_then_watched_for_its_deadline():
    o = obligation("A4", send_in=timedelta(days=3))
    step = next_step(o, POLICY)
    assert step is not None and (step.name, step.at) == ("send", o.send_at)
    assert record_fired(o, o.send_at + timedelta(seconds=2), POLICY) is False
    assert fired(o) and o.history[-1].what == FIRED
    step = next_step(o, POLICY)
    assert step is not None and (step.name, step.at) == ("breach", o.notify_by + timedelta(seconds=60))


def test_a_timer_fired_more_than_a_minute_late_is_recorded_as_late():
    o = obligation("A4", send_in=timedelta(days=3))
    assert record_fired(o, o.send_at + timedelta(hours=2), POLICY) is True
    assert o.history[-1].what.startswith(FIRED + ", late: it was due at ")


def test_an_immediate_obligation_is_only_watched_for_its_deadline():
    o = obligation("A1")
    step = next_step(o, POLICY)
    assert step is not None and (step.name, step.at) == ("breach", o.notify_by + timedelta(seconds=60))


def test_breach_is_recorded_and_escalated_once():
    o = obligation("A1")
    step = next_step(o, POLICY)
    assert step is not None
    record_breach(o, step.at)
    record_escalation(o, step.at, escalation_reason(step, o, POLICY), DUTY)
    assert o.status == "breached" and escalated(o)
    assert next_step(o, POLICY) is None
    assert any(h.what.startswith(ESCALATED + ": breached") for h in o.history)


def test_failed_is_escalated_at_once_and_once():
    o = obligation("B2", status="failed")
    step = next_step(o, POLICY)
    assert step is not None and step.name == "escalate-failed" and step.at <= MON_10
    record_escalation(o, MON_10, escalation_reason(step, o, POLICY), DUTY)
    assert next_step(o, POLICY) is None


def test_accepted_late_is_escalated():
    o = obligation("A2")
    o.record_acceptance(o.notify_by + timedelta(minutes=5))
    assert o.status == "breached"
    step = next_step(o, POLICY)
    assert step is not None and step.name == "escalate-late"
    assert "after its deadline" in escalation_reason(step, o, POLICY)


def test_no_escalation_contact_is_recorded_and_not_retried():
    o = obligation("B2", status="failed")
    record_escalation(o, MON_10, "failed", [])
    assert o.history[-1].what.startswith("escalation not possible: no escalation contact for BCU 13-LD")
    assert next_step(o, POLICY) is None


def test_an_immediate_notice_not_acknowledged_in_four_working_hours_is_escalated():
    friday_3pm = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    o = obligation("A1", raised_at=friday_3pm - timedelta(minutes=1))
    o.record_acceptance(friday_3pm)
    step = next_step(o, POLICY)
    assert step is not None and step.name == "escalate-unacknowledged"
    assert step.at == add_working_hours(friday_3pm, 4) == datetime(2026, 11, 30, 11, 0, tzinfo=UTC)  # Monday 11:00
    assert escalation_reason(step, o, POLICY) == "not acknowledged within 4 working hours"


def test_an_acknowledgement_stops_escalation():
    o = obligation("A1")
    o.record_acceptance(MON_10 + timedelta(minutes=1))
    assert record_acknowledgement(o, ack()) is True
    assert o.status == "acknowledged" and next_step(o, POLICY) is None
    assert record_acknowledgement(o, ack()) is False  # the same recipient again: nothing changes
    assert record_acknowledgement(o, ack("leeds.iom@justice.gov.uk")) is True  # another one is noted
    assert o.status == "acknowledged"


@pytest.mark.parametrize("rule", ["A4", "C1", "C2", "C4", "C6"])
def test_timed_rules_are_not_watched_for_acknowledgement(rule: str):
    o = obligation(rule)  # sent at once (its instant had passed): still a timed rule
    o.record_acceptance(MON_10 + timedelta(minutes=1))
    assert next_step(o, POLICY) is None


def test_acknowledgement_watch_can_be_switched_off():
    o = obligation("A1")
    o.record_acceptance(MON_10 + timedelta(minutes=1))
    assert next_step(o, WatchPolicy(ack_working_hours=0)) is None


def test_the_acknowledgement_window_can_be_injected():
    o = obligation("A1")
    o.record_acceptance(MON_10)
    policy = WatchPolicy(acknowledge_by=lambda t, _: t + timedelta(seconds=3))
    step = next_step(o, policy)
    assert step is not None and step.at == MON_10 + timedelta(seconds=3)


@pytest.mark.parametrize("status", ["cancelled", "acknowledged"])
def test_nothing_is_owed_for_cancelled_or_acknowledged(status: str):
    assert next_step(obligation("A4", status=status, send_in=timedelta(days=1)), POLICY) is None


def test_kept_while_links_can_be_followed():
    o = obligation("A1")
    assert keep_until(o, POLICY) is None
    o.record_acceptance(MON_10)
    kept = keep_until(o, POLICY)
    assert kept is not None and kept >= MON_10 + POLICY.link_ttl


# --- merging the states several services publish -----------------------------------------------------------


def test_merge_takes_a_new_obligation_as_it_is():
    o = obligation("A1")
    assert merge(None, o) == o


def test_a_stale_copy_does_not_move_the_status_back():
    known = obligation("A1")
    known.record_acceptance(MON_10 + timedelta(minutes=1))
    stale = obligation("A1")  # a redelivered older record: still pending
    merged = merge(known, stale)
    assert merged.status == "notified" and merged.notified_at == known.notified_at
    assert merged.history == known.history


def test_the_notifiers_copy_keeps_the_schedulers_escalation_entry():
    known = obligation("A1")
    record_breach(known, known.notify_by + timedelta(minutes=1))
    record_escalation(known, known.notify_by + timedelta(minutes=1), "breached: ...", DUTY)
    notifier_copy = obligation("A1")  # the request's copy, accepted late: no escalation entry in it
    notifier_copy.record_acceptance(known.notify_by + timedelta(minutes=3))
    merged = merge(known, notifier_copy)
    assert merged.status == "breached" and merged.notified_at is not None
    assert escalated(merged) and next_step(merged, POLICY) is None  # not escalated a second time
    assert [h.at for h in merged.history] == sorted(h.at for h in merged.history)
    assert merged != notifier_copy  # so the scheduler publishes the whole state


def test_acknowledged_is_kept_when_the_notified_record_arrives_after_it():
    known = obligation("A1")
    record_acknowledgement(known, ack())
    notified = obligation("A1")
    notified.record_acceptance(MON_10 + timedelta(seconds=5))
    merged = merge(known, notified)
    assert merged.status == "acknowledged" and merged.notified_at == notified.notified_at


def test_cancellation_and_revival_from_the_rules_service_are_taken():
    known = obligation("A4", send_in=timedelta(days=2))
    cancelled = known.model_copy(update={"status": "cancelled", "cancelled_reason": "release date withdrawn"})
    assert merge(known, cancelled).status == "cancelled"
    revived = known.model_copy(update={"history": [HistoryEntry(at=MON_10, what="revived")]})
    assert merge(cancelled, revived).status == "pending"
