"""The rules service: consumes canonical events, keeps the ledger, publishes obligations.

At-least-once: the event's offset is committed only after every resulting record is acknowledged by
Kafka. A replayed event finds its obligations already in the ledger (same identity) and publishes nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from services.rules.ledger import Decision, Ledger
from services.rules.rulebook import RuleBook, RuleTimings
from shared import metrics
from shared.clock import Clock
from shared.directory import Directory
from shared.events import parse_event
from shared.kafka import RECEIVED_AT_HEADER, dead_letter_guard, dumps, read_to_end
from shared.obligations import NotificationRequest, Obligation
from shared.register import Register, RegisterEntry, RegisterError
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger("ppo.rules")


class RulesService:
    def __init__(self, settings: Settings, broker: KafkaBroker, clock: Clock,
                 timings: RuleTimings | None = None) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.topics = Topics(settings.topic_prefix)
        self.timings = timings or RuleTimings()
        self.ready = False
        self.ledger: Ledger | None = None
        broker.subscriber(
            self.topics.events, group_id="ppo-rules", auto_offset_reset="earliest",
            ack_policy=AckPolicy.ACK, max_records=100,
        )(dead_letter_guard("rules", broker, self.topics.dead_letter, self.on_event))

    async def load_state(self) -> None:
        """Materialise the register and the obligations from their compacted topics, then start timers."""
        directory = Directory.load(self.settings.directory_file)
        register = Register()
        for _, value in await read_to_end(self.settings, self.topics.register):
            if value:
                try:
                    register.put(RegisterEntry.from_dict(_loads(value)))
                except (ValueError, KeyError, TypeError, RegisterError):
                    metrics.EVENTS_IGNORED.labels(service="rules", reason="invalid-register-record").inc()
        imported: list[RegisterEntry] = []
        if len(register) == 0 and self.settings.register_file is not None:
            register = Register.load(self.settings.register_file)
            imported = register.entries()
        ledger = Ledger(RuleBook(register, directory, self.timings))
        for _, value in await read_to_end(self.settings, self.topics.obligations):
            if value:
                try:
                    ledger.load(Obligation.model_validate_json(value))
                except ValueError:  # a record no service wrote; the live consumer dead-letters it
                    metrics.EVENTS_IGNORED.labels(service="rules", reason="invalid-obligation-record").inc()
        self.ledger = ledger
        for entry in imported:
            await self._publish_register(entry)
        now = self.clock.now()
        for entry in register.entries():
            await self._publish(ledger.on_register_loaded(entry, now), now)
        for bcu in {p.home_bcu for e in register.entries() for p in e.periods if p.end is None}:
            metrics.REGISTER_SIZE.labels(bcu=bcu).set(
                sum(1 for e in register.entries() if (p := e.open_period()) and p.home_bcu == bcu))
        log.info("rules ready", extra={"register_entries": len(register), "obligations": len(ledger.obligations)})
        self.ready = True

    async def on_event(self, message: KafkaMessage) -> None:
        assert self.ledger is not None, "load_state() runs before the broker starts"
        received_at = _received_at(message) or self.clock.now()
        event = parse_event(message.body)  # invalid: dead-lettered by the guard, with the fields named
        decision = self.ledger.on_event(event, received_at)
        if decision.ignored:
            metrics.EVENTS_IGNORED.labels(service="rules", reason=decision.ignored.split(":")[0]).inc()
        await self._publish(decision, self.clock.now())
        log.info("event evaluated", extra={
            "event_id": event.id, "event_type": event.type,  # type: ignore[attr-defined]
            "raised": [o.obligation_id for o in decision.raised],
            "duplicates": len(decision.duplicates), "cancelled": [o.obligation_id for o in decision.cancelled],
        })

    async def _publish(self, decision: Decision, now: datetime) -> None:
        t = self.topics
        for entry in decision.register_changes:
            await self._publish_register(entry)
        for o in decision.cancelled:
            metrics.OBLIGATIONS_CANCELLED.labels(rule=o.rule).inc()
            await self.broker.publish(dumps(o), t.obligations, key=o.obligation_id.encode())
        for o in decision.raised:
            metrics.OBLIGATIONS_RAISED.labels(rule=o.rule).inc()
            await self.broker.publish(dumps(o), t.obligations, key=o.obligation_id.encode())
            if o.status == "pending" and o.send_at <= now:
                request = NotificationRequest(obligation=o, requested_at=now)
                await self.broker.publish(dumps(request), t.notifications, key=o.obligation_id.encode())
        for grade in decision.graded_warrants:
            await self.broker.publish(dumps(grade), t.graded_warrants, key=grade["warrant_id"].encode())

    async def _publish_register(self, entry: RegisterEntry) -> None:
        await self.broker.publish(dumps(entry.to_dict()), self.topics.register, key=entry.person_id.encode())


def _loads(value: bytes) -> Any:
    import json

    return json.loads(value)


def _received_at(message: KafkaMessage) -> datetime | None:
    raw = (message.headers or {}).get(RECEIVED_AT_HEADER)
    if raw:
        try:
            return datetime.fromisoformat(raw if isinstance(raw, str) else raw.decode()).astimezone(UTC)
        except ValueError:
            return None
    return None
