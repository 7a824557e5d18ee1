"""Prometheus metrics shared by every service. Labels are bounded: rule, event type, source, reason —
never a person, an address or an id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_RECEIVED = Counter("ppo_events_received_total", "Payloads received by intake", ["format", "channel"])
EVENTS_ACCEPTED = Counter("ppo_events_accepted_total", "Canonical events published by intake", ["event_type"])
EVENTS_REJECTED = Counter("ppo_events_rejected_total", "Payloads rejected by intake", ["channel", "reason"])
EVENTS_IGNORED = Counter("ppo_events_ignored_total", "Accepted input that raised nothing", ["service", "reason"])
DEAD_LETTERS = Counter("ppo_dead_letters_total", "Messages sent to the dead-letter topic", ["service", "reason"])
OBLIGATIONS_RAISED = Counter("ppo_obligations_raised_total", "Obligations raised", ["rule"])
OBLIGATIONS_CANCELLED = Counter("ppo_obligations_cancelled_total", "Obligations cancelled", ["rule"])
NOTIFICATIONS = Counter("ppo_notifications_total", "Messages by outcome", ["rule", "outcome"])
DEADLINES = Counter("ppo_deadlines_total", "Obligations by deadline result", ["rule", "result"])
EVENT_TO_NOTIFICATION = Histogram(
    "ppo_event_to_notification_seconds", "From the event's receipt to the mail server's acceptance", ["rule"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 900, 3600, 86400),
)
TIMERS_PENDING = Gauge("ppo_timers_pending", "Timed obligations waiting in the scheduler")
TIMERS_FIRED = Counter("ppo_timers_fired_total", "Timers fired", ["rule", "lateness"])
REGISTER_SIZE = Gauge("ppo_register_people", "People on the register now", ["bcu"])
