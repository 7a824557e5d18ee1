"""What the scheduler still owes an obligation, and when: pure functions of the obligation's state and the time.

The scheduler watches every obligation it sees on the obligations topic. For each it owes at most one thing at a
time, the obligation's *next step*:

- `send`: a pending timed obligation (send_at later than raised_at) not yet sent for delivery — at send_at,
  publish its NotificationRequest (immediate ones are requested by the rules service);
- `breach`: a pending obligation with no delivery outcome — at notify_by (+ a grace for the notifier's update to
  arrive), it becomes `breached` and is escalated (obligations.md lifecycle);
- `escalate-failed`: every recipient refused — escalated at once;
- `escalate-late`: accepted after notify_by (the notifier says `breached`) — escalated at once;
- `escalate-unacknowledged`: an immediate-rule obligation notified but not acknowledged within the configured
  working hours (default 4, `shared.calendar.add_working_hours`) — escalated then.

An obligation is escalated once at most, whatever the reason; an acknowledgement stops it. Everything the steps
depend on is in the obligation itself — status, notified_at and history entries written here — so the state on
the obligations topic is enough to rebuild the scheduler (`ppo-alerts scheduler rebuild`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from services.rules.rulebook import RULES
from shared.ack import Acknowledgement
from shared.calendar import add_working_hours
from shared.obligations import HistoryEntry, Obligation, attempts, this_attempt

__all__ = [
    "ACKNOWLEDGED", "BREACHED", "ESCALATED", "FIRED", "NOT_ESCALATED", "Step", "WatchPolicy", "escalated",
    "escalation_reason", "fired", "keep_until", "merge", "next_step", "record_acknowledgement", "record_breach",
    "record_escalation", "record_fired", "watched_for_acknowledgement",
]

# History entries this module writes and reads (their beginnings are the markers: keep them stable).
FIRED = "sent for delivery by the scheduler"
BREACHED = "breached: no delivery outcome by the deadline"
ESCALATED = "escalated to the BCU's escalation contact"
NOT_ESCALATED = "escalation not possible"
ACKNOWLEDGED = "acknowledged by"

# Rules the rule book marks timed (A4, C1, C2, C4, C6): their notices are not watched for acknowledgement, even
# when sent at once because their instant had passed.
TIMED_RULES = frozenset(spec.id for spec in RULES.values() if spec.timed)

StepName = Literal["send", "breach", "escalate-failed", "escalate-late", "escalate-unacknowledged"]


@dataclass(frozen=True)
class Step:
    name: StepName
    at: datetime


@dataclass(frozen=True)
class WatchPolicy:
    deadline_grace: timedelta = timedelta(seconds=60)  # notify_by + this, then breached
    ack_working_hours: float = 4.0  # immediate rules; 0: never escalate for want of an acknowledgement
    link_ttl: timedelta = timedelta(days=30)  # a notified obligation is kept while its links can be followed
    late_after: timedelta = timedelta(minutes=1)  # a timer firing later than this after its instant is late
    # when an acknowledgement is due for a notice accepted at the given instant (tests inject short windows)
    acknowledge_by: Callable[[datetime, float], datetime] | None = field(default=None, compare=False)

    def ack_due(self, notified_at: datetime) -> datetime:
        return (self.acknowledge_by or add_working_hours)(notified_at, self.ack_working_hours)


# --- reading the state ---------------------------------------------------------------------------------------


def _first(o: Obligation, *prefixes: str) -> HistoryEntry | None:
    """In the current attempt: an obligation raised again after failing is fired and escalated afresh."""
    return next((h for h in this_attempt(o.history) if h.what.startswith(prefixes)), None)


def fired(o: Obligation) -> bool:
    return _first(o, FIRED) is not None


def escalated(o: Obligation) -> bool:
    return _first(o, ESCALATED, NOT_ESCALATED) is not None


def watched_for_acknowledgement(o: Obligation, policy: WatchPolicy) -> bool:
    """Immediate rules only: sent when raised (send_at == raised_at) by a rule the rule book marks immediate."""
    return policy.ack_working_hours > 0 and o.send_at <= o.raised_at and o.rule not in TIMED_RULES


def next_step(o: Obligation, policy: WatchPolicy) -> Step | None:
    """What is owed next and from when, or None when nothing more is owed."""
    if o.status in ("cancelled", "acknowledged"):
        return None
    if o.status == "pending":
        if o.send_at > o.raised_at and not fired(o):
            return Step("send", o.send_at)
        if escalated(o):
            return None
        return Step("breach", max(o.notify_by, o.send_at) + policy.deadline_grace)
    if escalated(o):
        return None
    if o.status == "failed":
        return Step("escalate-failed", o.raised_at)
    if o.status == "breached":
        return Step("escalate-late", o.notify_by)
    # notified
    if watched_for_acknowledgement(o, policy):
        return Step("escalate-unacknowledged", policy.ack_due(o.notified_at or o.send_at))
    return None


def keep_until(o: Obligation, policy: WatchPolicy) -> datetime | None:
    """How long the scheduler keeps an obligation that owes nothing more: while its links can still be followed
    (so an acknowledgement is recorded in its state). None: keep (still pending)."""
    if o.status == "pending":
        return None
    if o.status == "cancelled":
        return o.raised_at
    return max(o.notified_at or o.send_at, o.notify_by) + policy.link_ttl + timedelta(days=1)


def escalation_reason(step: Step, o: Obligation, policy: WatchPolicy) -> str:
    """In words, for the duty inbox (the escalation message shows it)."""
    if step.name == "breach":
        return "breached: not accepted by the mail server by its deadline"
    if step.name == "escalate-late":
        return "breached: accepted by the mail server after its deadline"
    if step.name == "escalate-failed":
        return "failed: no recipient could be sent the notice"
    hours = f"{policy.ack_working_hours:g}"
    return f"not acknowledged within {hours} working hour{'' if hours == '1' else 's'}"


# --- changing the state --------------------------------------------------------------------------------------


def _note(o: Obligation, at: datetime, what: str) -> None:
    o.history.append(HistoryEntry(at=at, what=what))


def record_fired(o: Obligation, now: datetime, policy: WatchPolicy) -> bool:
    """The scheduler is publishing the NotificationRequest now; returns whether that is late."""
    late = now - o.send_at > policy.late_after
    _note(o, now, f"{FIRED}, late: it was due at {o.send_at.isoformat()}" if late else FIRED)
    return late


def record_breach(o: Obligation, now: datetime) -> None:
    o.status = "breached"
    _note(o, now, f"{BREACHED} ({o.notify_by.isoformat()})")


def record_escalation(o: Obligation, now: datetime, reason: str, contacts: list[str]) -> None:
    if contacts:
        _note(o, now, f"{ESCALATED}: {reason}")
    else:
        _note(o, now, f"{NOT_ESCALATED}: no escalation contact for BCU {o.bcu or '-'} ({reason})")


def record_acknowledgement(o: Obligation, ack: Acknowledgement) -> bool:
    """Acknowledged (first time) or acknowledged again by another recipient; False when nothing changed."""
    what = f"{ACKNOWLEDGED} {ack.recipient}"
    if any(h.what == what for h in o.history):
        return False
    if o.status != "cancelled":
        o.status = "acknowledged"
    _note(o, ack.acknowledged_at, what)
    return True


# --- several writers, one state --------------------------------------------------------------------------------

# How far along the lifecycle a status is: a record that is behind what is known is a stale copy (a redelivery,
# or a writer that had not seen the latest), and does not move the status back.
_PROGRESS = {"pending": 0, "notified": 1, "breached": 1, "failed": 1, "acknowledged": 2}


def merge(known: Obligation | None, incoming: Obligation) -> Obligation:
    """The obligation's state from what the scheduler knows and a record just read from the topic.

    The rules service, the notifier and the scheduler all publish an obligation's state, each from its own copy.
    The merge keeps every history entry either side has, takes the incoming status unless it is behind the known
    one (a cancellation, a revival or a new attempt from the rules service is always taken), and keeps notified_at."""
    if known is None:
        return incoming.model_copy(deep=True)
    merged = incoming.model_copy(deep=True)
    raised_again = attempts(incoming.history) > attempts(known.history)  # a new attempt: its status is taken
    if incoming.status != "cancelled" and known.status != "cancelled" and not raised_again and \
            _PROGRESS[incoming.status] < _PROGRESS[known.status]:
        merged.status = known.status
    merged.notified_at = incoming.notified_at or known.notified_at
    seen = {(h.at, h.what) for h in incoming.history}
    extra = [h for h in known.history if (h.at, h.what) not in seen]
    if extra:
        merged.history = sorted([*incoming.history, *extra], key=lambda h: h.at)
    return merged
