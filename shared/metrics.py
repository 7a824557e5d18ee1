"""Prometheus metrics shared by every service. Labels are bounded: rule, event type, source, reason, consumer
group and topic — never a person, an address or an id. FastStream's own `faststream_*` metrics (per topic) come
from the middleware that shared/kafka.py `make_broker` installs; all go to the default registry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Metric

from shared.obligations import Obligation

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
# strand: as the coordinators write it (a handful per scheme), "none" when empty
REGISTER_SIZE = Gauge("ppo_register_people", "People on the register now", ["bcu", "strand"])
DIRECTORY_MISSING_CONTACTS = Gauge(
    "ppo_directory_missing_contacts", "1 for each BCU with PPOs that has no address for a role the rules need",
    ["bcu", "role"])
DIRECTORY_RELOADS = Counter("ppo_directory_reloads_total", "Directory file changes seen", ["result"])
CONSUMER_LAG = Gauge("ppo_consumer_lag", "Records not yet processed: end offsets minus the group's committed offsets",
                     ["group", "topic"])
ACK_LINKS = Counter("ppo_ack_links_total", "Acknowledgement links: pages shown (GET) and posts, by result",
                    ["result"])  # services/intake
CONSUMER_STUCK = Gauge("ppo_consumer_stuck",
                       "1 while a consumer's handler has been running, or failing on every try, for over 5 minutes",
                       ["service", "topic"])  # shared/consumer_watch.py
HANDLER_ERRORS = Counter("ppo_consumer_handler_errors_total",
                         "Handler calls that raised and will read the same record again (Kafka errors)",
                         ["service", "topic"])
OBLIGATIONS_AT_RISK = Gauge(
    "ppo_obligations_at_risk", "Pending obligations past their send time whose notify-by is within the hour or passed",
    ["rule"])

# --- label values known in advance: series exist at 0 from start-up, so alert rules see the first event ----

# The rule book's ids (services/rules/rulebook.py RULES; tests/unit/test_deploy.py keeps the two equal).
RULE_IDS = ("A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "B1", "B2", "B3", "B4", "B5", "B6", "B8",
            "C1", "C2", "C3", "C4", "C5", "C6", "C7")
NOTIFICATION_OUTCOMES = ("sent", "temporary-failure", "permanent-failure", "duplicate-suppressed")
DEADLINE_RESULTS = ("met", "breached", "failed")  # breached: accepted after notify_by; failed: every recipient refused
TIMER_LATENESS = ("on_time", "late")
AT_RISK_WITHIN = timedelta(hours=1)


def initialise(service: str) -> None:
    """Create the service's rule-labelled series at 0 (call once when the service is built)."""
    if service == "intake":
        from shared.events import EVENT_TYPES

        for event_type in EVENT_TYPES:
            EVENTS_ACCEPTED.labels(event_type=event_type)
    for rule in RULE_IDS:
        if service == "rules":
            OBLIGATIONS_RAISED.labels(rule=rule)
            OBLIGATIONS_CANCELLED.labels(rule=rule)
        elif service == "notifier":
            EVENT_TO_NOTIFICATION.labels(rule=rule)
            for outcome in NOTIFICATION_OUTCOMES:
                NOTIFICATIONS.labels(rule=rule, outcome=outcome)
            for result in DEADLINE_RESULTS:
                DEADLINES.labels(rule=rule, result=result)
        elif service == "scheduler":
            OBLIGATIONS_AT_RISK.labels(rule=rule).set(0)
            for lateness in TIMER_LATENESS:
                TIMERS_FIRED.labels(rule=rule, lateness=lateness)


# --- obligations at risk: a pure count, and a tracker for the service that sees every obligation state ----

def obligations_at_risk(obligations: Iterable[Obligation], now: datetime,
                        within: timedelta = AT_RISK_WITHIN) -> dict[str, int]:
    """Per rule, the pending obligations whose send time has come and whose notify-by is within `within` of
    `now` (or already passed): those a person should look at. A timed obligation still waiting for its send
    time is on schedule, not at risk."""
    return _count_at_risk(((o.rule, o.send_at, o.notify_by) for o in obligations if o.status == "pending"), now,
                          within)


def _count_at_risk(pending: Iterable[tuple[str, datetime, datetime]], now: datetime,
                   within: timedelta = AT_RISK_WITHIN) -> dict[str, int]:
    """`obligations_at_risk` over (rule, send_at, notify_by) of pending obligations."""
    counts: dict[str, int] = {}
    horizon = now + within
    for rule, send_at, notify_by in pending:
        if send_at <= now and notify_by <= horizon:
            counts[rule] = counts.get(rule, 0) + 1
    return counts


class OpenObligations:
    """The pending obligations, kept from the obligation states as they pass (a consumer of the obligations
    topic calls `observe` with each), and the `ppo_obligations_at_risk` gauge computed from them."""

    def __init__(self) -> None:
        # Only what the gauge needs of each pending obligation: a whole one is ~2 KB, and a scheduler can have
        # a million pending.
        self._pending: dict[str, tuple[str, datetime, datetime]] = {}
        self._version: dict[str, int] = {}  # obligation id -> length of the history last seen
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def observe(self, o: Obligation) -> None:
        """Take one state. An older state seen after a newer one (a catch-up read racing the live consumer) is
        ignored: an obligation's history only grows."""
        version = len(o.history)
        if version < self._version.get(o.obligation_id, -1):
            return
        self._version[o.obligation_id] = version
        if o.status == "pending":
            self._pending[o.obligation_id] = (o.rule, o.send_at, o.notify_by)
        else:
            self._pending.pop(o.obligation_id, None)

    def export(self, now: datetime) -> dict[str, int]:
        counts = _count_at_risk(self._pending.values(), now)
        for rule in {*RULE_IDS, *counts, *_AT_RISK_EXPORTED}:
            OBLIGATIONS_AT_RISK.labels(rule=rule).set(counts.get(rule, 0))
        _AT_RISK_EXPORTED.update(counts)
        return counts

    def seed(self, records: Iterable[bytes | None]) -> None:
        """Observe every obligation state among `records` (values read from the obligations topic at start-up);
        anything that is not an obligation is skipped (the live consumer dead-letters it)."""
        for value in records:
            if value:
                try:
                    self.observe(Obligation.model_validate_json(value))
                except ValueError:
                    continue

    async def run(self, now: Callable[[], datetime], every_s: float = 15.0) -> None:
        """Export every `every_s` seconds until cancelled."""
        while True:
            self.export(now())
            await asyncio.sleep(every_s)

    def start(self, now: Callable[[], datetime], every_s: float = 15.0) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(now, every_s), name="ppo-obligations-at-risk")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


_AT_RISK_EXPORTED: set[str] = set()


# --- one process, several services: each /metrics serves only its own service's series ----------------------
# Every service registers in the one default registry, so when several run in one process (`ppo-alerts demo`,
# `ppo-alerts run all`) each port would serve them all and a Prometheus scraping every port would count each
# obligation once per port. shared/http.py serves `ServiceView(service, services)` instead while more than one
# service's HTTP server is up in the process; with one (a process per service) it serves the registry unchanged.

# Families that carry no `service` label, by the service that counts them. A family not named here and without
# a service label (process_*, python_*, a new metric) is served by the process's first service: never lost, never
# served twice. Families two services count (ppo_obligations_raised: rules and the scheduler's custody digest;
# ppo_deadlines: rules and notifier) are one series in one process and go to one port.
SERVICE_OF_FAMILY: dict[str, str] = {
    "ppo_events_received": "intake", "ppo_events_accepted": "intake", "ppo_events_rejected": "intake",
    "ppo_ack_links": "intake",
    "ppo_obligations_raised": "rules", "ppo_obligations_cancelled": "rules", "ppo_register_people": "rules",
    "ppo_directory_missing_contacts": "rules", "ppo_directory_reloads": "rules",
    "ppo_timers_pending": "scheduler", "ppo_timers_fired": "scheduler", "ppo_obligations_at_risk": "scheduler",
    "ppo_scheduler_active": "scheduler", "ppo_escalations": "scheduler", "ppo_acknowledgements_recorded": "scheduler",
    "ppo_notifications": "notifier", "ppo_deadlines": "notifier", "ppo_event_to_notification_seconds": "notifier",
    "ppo_smtp_send_seconds": "notifier", "ppo_notifier_deliveries": "notifier",
}
# Labels that name the service in another form: FastStream's app_name is the broker's client id and consumer lag
# is per group, "ppo-<service>" and "<prefix>-<service>[-<part>]" (shared/kafka.py make_broker, Topics.group).
_SERVICE_NAMING_LABELS = ("app_name", "group")


def owner_of(family: str, labels: dict[str, str], services: Sequence[str]) -> str:
    """Which of `services` (those sharing the process; the first is the fallback) serves this sample."""
    candidates = [labels.get("service", "")]
    # a group is <prefix>-<service>[-<what>] (Topics.group, and a prefix may have dashes); an app_name ppo-<service>
    candidates += [part for label in _SERVICE_NAMING_LABELS for part in labels.get(label, "").split("-")]
    candidates.append(SERVICE_OF_FAMILY.get(family, ""))
    return next((c for c in candidates if c in services), services[0])


class ServiceView(CollectorRegistry):
    """`registry` as `service` should serve it: only the samples `owner_of` gives to it (for generate_latest)."""

    def __init__(self, service: str, services: Sequence[str], registry: CollectorRegistry = REGISTRY) -> None:
        super().__init__(auto_describe=False)
        self.service = service
        self.services = tuple(services)
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            samples = [s for s in family.samples if owner_of(family.name, s.labels, self.services) == self.service]
            if samples:
                view = Metric(family.name, family.documentation, family.type, family.unit)
                view.samples = samples
                yield view
