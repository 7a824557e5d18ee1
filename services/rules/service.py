"""The rules service: consumes canonical events, keeps the ledger, publishes obligations.

Two stages, as a Kafka Streams repartition: the resolve stage (group `ppo-rules-resolve`) reads `<prefix>.events`,
keyed by whatever identifier each event carries, looks the person up in its view of the register and republishes
the record unchanged (value and headers) to `<prefix>.events.by-person`, keyed `person:<register person id>` (or,
for someone on no register, by their best identifier, as intake keys them); its offsets are committed once Kafka
has acknowledged the republished records. The rule-book stage (group `ppo-rules`) reads `events.by-person`: all of
one person's events reach one instance, in order, whichever agency reported them.

Every instance also follows `<prefix>.register` and `<prefix>.obligations` live, without a group: what another
instance wrote (a header names the writer) goes into this one's ledger, so a person whose partition moves at a
rebalance, or an event keyed before their selection reached the resolver, meets the register and the obligations
as they are. Known race: an event resolved before the person's selection reached this resolver's view is keyed
by its identifier, not the person id; a `register.*` event updates the view of the resolver that reads it at once,
another instance's resolver learns it from the register topic (tens of milliseconds later, typically).

Events are taken in batches (up to `RULES_BATCH` records): each is evaluated in order, every resulting record
is handed to the producer without waiting, and the batch's offsets are committed only after Kafka has
acknowledged all of them. At-least-once: a crash or a Kafka error replays the batch, and a replayed event
finds its obligations already in the ledger (same identity) and publishes nothing. A record that cannot be
evaluated is dead-lettered on its own; the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from services.rules.ledger import Decision, Ledger
from services.rules.resolve import People
from services.rules.rulebook import RuleBook, RuleTimings
from shared import calendar as cal
from shared import metrics
from shared.clock import Clock
from shared.consumer_watch import WATCH
from shared.directory import DirectoryError, DirectoryHolder, missing_contacts
from shared.events import parse_event
from shared.kafka import (
    RECEIVED_AT_HEADER,
    RecordSink,
    batch_as_it_is,
    dead_letter,
    dumps,
    read_positioned,
    records_as_they_are,
)
from shared.obligations import NotificationRequest, Obligation
from shared.register import Register, RegisterEntry, RegisterError
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger("ppo.rules")

RULES_BATCH = 5000  # records per batch at most: large enough to amortise the wait for acknowledgements
INSTANCE_HEADER = "ppo-rules-instance"  # on register and obligation records: which rules instance wrote them


class RulesService:
    def __init__(self, settings: Settings, broker: KafkaBroker, clock: Clock,
                 timings: RuleTimings | None = None, instance_id: str | None = None) -> None:
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self._mine = [(INSTANCE_HEADER, self.instance_id.encode())]
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.topics = Topics(settings.topic_prefix)
        self.timings = timings or RuleTimings()
        self.ready = False
        self.ledger: Ledger | None = None
        self.sink = RecordSink(settings, "ppo-rules-out")
        self.resolve_sink = RecordSink(settings, "ppo-rules-resolve-out")  # its own: flushed by its own stage
        self.people = People()  # the resolve stage's view of the register: identifiers -> person id
        self._register_read: dict[int, int] = {}  # partition -> offset materialised up to (the follower skips it)
        self.directory: DirectoryHolder | None = None  # read through by the rule book; reloaded when the file changes
        self._gaps: set[tuple[str, str]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._metrics_due: asyncio.TimerHandle | None = None
        metrics.initialise("rules")
        broker.subscriber(
            self.topics.events, group_id="ppo-rules-resolve", auto_offset_reset="earliest", batch=True,
            max_records=RULES_BATCH, batch_timeout_ms=50, ack_policy=AckPolicy.NACK_ON_ERROR,
            parser=batch_as_it_is, decoder=records_as_they_are,
        )(WATCH.watched("rules", self.topics.events, self.on_resolve))
        broker.subscriber(
            self.topics.events_by_person, group_id="ppo-rules", auto_offset_reset="earliest", batch=True,
            max_records=RULES_BATCH, batch_timeout_ms=50, ack_policy=AckPolicy.NACK_ON_ERROR,
            parser=batch_as_it_is, decoder=records_as_they_are,
        )(WATCH.watched("rules", self.topics.events_by_person, self.on_events))
        # Every instance follows the register, without a group: other instances' changes, and keys for the resolver.
        broker.subscriber(
            self.topics.register, auto_offset_reset="earliest", ack_policy=AckPolicy.ACK_FIRST,
            decoder=records_as_they_are,
        )(WATCH.watched("rules", self.topics.register, self.on_register_entry))
        # Every instance follows every obligation's state, without a group: a send that failed for good makes
        # the next report of its fact try again (the ledger would otherwise take it for a duplicate); what
        # another rules instance raised or cancelled is known here too (a replay there is a duplicate here).
        broker.subscriber(
            self.topics.obligations, auto_offset_reset="earliest", ack_policy=AckPolicy.ACK_FIRST,
            decoder=records_as_they_are,
        )(WATCH.watched("rules", self.topics.obligations, self.on_obligation_state))
        self._stale = False  # a publish failed: the ledger knows more than Kafka does

    async def load_state(self) -> None:
        """Materialise the register and the obligations from their compacted topics, then start timers."""
        await self.sink.start()
        await self.resolve_sink.start()
        self.directory = DirectoryHolder(self.settings.directory_file)
        ledger, imported = await self._materialise()
        self.ledger = ledger
        for entry in imported:
            await self._publish_register(entry)
        now = self.clock.now()
        register = ledger.register
        for entry in register.entries():
            await self._publish(ledger.on_register_loaded(entry, now), now)
        await asyncio.gather(*await self.sink.flush())
        self._register_metrics()
        if self.settings.directory_reload_s > 0 and self._watch is None:
            self._watch = asyncio.create_task(self._watch_directory(), name="ppo-rules-directory-watch")
        for entry in register.entries():
            self.people.learn_entry(entry)
        log.info("rules ready", extra={"register_entries": len(register), "obligations": len(ledger.obligations),
                                       "instance": self.instance_id})
        self.ready = True

    async def _materialise(self) -> tuple[Ledger, list[RegisterEntry]]:
        """A ledger holding what Kafka holds: the register and obligations topics read to their ends (the
        register file imported when the topic is empty: those entries are returned, to be published)."""
        register = Register()
        for partition, offset, _, _, value in await read_positioned(self.settings, self.topics.register):
            self._register_read[partition] = max(self._register_read.get(partition, 0), offset + 1)
            if value:
                try:
                    register.put(RegisterEntry.from_dict(_loads(value)))
                except (ValueError, KeyError, TypeError, RegisterError):
                    metrics.EVENTS_IGNORED.labels(service="rules", reason="invalid-register-record").inc()
        imported: list[RegisterEntry] = []
        if len(register) == 0 and self.settings.register_file is not None:
            register = Register.load(self.settings.register_file)
            imported = register.entries()
        ledger = Ledger(RuleBook(register, self.directory, self.timings))  # type: ignore[arg-type]  # reads through
        for *_, value in await read_positioned(self.settings, self.topics.obligations):
            if value:
                try:
                    ledger.load(Obligation.model_validate_json(value))
                except ValueError:  # a record no service wrote; the live consumer dead-letters it
                    metrics.EVENTS_IGNORED.labels(service="rules", reason="invalid-obligation-record").inc()
        return ledger, imported

    async def on_resolve(self, message: KafkaMessage) -> None:
        """The resolve stage: one batch of `events`, each record republished unchanged on `events.by-person` under
        its person's key; the batch is committed (by returning) only once Kafka has acknowledged them all."""
        records: tuple[Any, ...] = message.raw_message  # type: ignore[assignment]
        try:
            for record in records:
                key = self.resolve(record.value or b"") or record.key or b"-"
                await self.resolve_sink.add(self.topics.events_by_person, record.value or b"", key,
                                            list(record.headers or ()))
            await asyncio.gather(*await self.resolve_sink.flush())
        except Exception:
            self.resolve_sink.discard()
            raise

    def resolve(self, body: bytes) -> bytes | None:
        """The key of an event on `events.by-person`; None for a record that is no event (the rule-book stage
        dead-letters it, with the reason: one place for that, so it travels under the key it came with)."""
        try:
            raw = json.loads(body)
            person, etype = raw["person"], raw["type"]
            ids = {k: v for k in ("pnc", "cro", "noms", "crn") if isinstance(v := person.get(k), str) and v}
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if not ids or not isinstance(etype, str):
            return None
        return self.people.key_for(etype, ids)

    async def on_register_entry(self, message: KafkaMessage) -> None:
        """A register entry as some rules instance published it: the resolver learns its identifiers (its own
        writes too: keys only grow); another instance's change goes into this ledger's register. Records read at
        start-up already are skipped: replayed, an older snapshot would stand until the newer one came again."""
        record: Any = message.raw_message
        if self.ledger is None or not record.value or record.offset < self._register_read.get(record.partition, 0):
            return
        try:
            entry = RegisterEntry.from_dict(_loads(record.value))
        except (ValueError, KeyError, TypeError, RegisterError):
            metrics.EVENTS_IGNORED.labels(service="rules", reason="invalid-register-record").inc()
            return
        self.people.learn_entry(entry)
        if _header(record.headers, INSTANCE_HEADER) == self.instance_id:
            return  # this instance's own change: its register holds it already, or a newer one
        try:
            self.ledger.learn_register_entry(entry)
        except RegisterError as exc:
            metrics.EVENTS_IGNORED.labels(service="rules", reason="register-conflict").inc()
            log.warning("register entry from another rules instance refused", extra={
                "person_id": entry.person_id, "error": str(exc)})
            return
        self._register_metrics_soon()

    async def on_events(self, message: KafkaMessage) -> None:
        """One batch: evaluate each record, publish without waiting, then wait for every acknowledgement."""
        assert self.ledger is not None, "load_state() runs before the broker starts"
        if self._stale:
            # The last batch's records were not all acknowledged, but its events are in the ledger: read again,
            # they would be duplicates and their obligations never published. Start again from what Kafka has.
            self.ledger, _ = await self._materialise()
            self._stale = False
            log.warning("ledger rebuilt from Kafka after a failed publish",
                        extra={"obligations": len(self.ledger.obligations)})
        records: tuple[Any, ...] = message.raw_message  # type: ignore[assignment]
        try:
            for record in records:
                try:
                    decision = self.evaluate(record.value or b"", _received_at_of(record.headers) or self.clock.now())
                    if decision.raised or decision.cancelled or decision.register_changes or decision.graded_warrants:
                        await self._publish(decision, self.clock.now())  # most events publish nothing: no await
                except KafkaError:
                    raise
                except Exception as exc:  # noqa: BLE001 - about this record only: park it with its reason
                    await dead_letter(self.broker, self.topics.dead_letter, "rules", record, exc)
            await asyncio.gather(*await self.sink.flush())  # a failed send raises: the batch is read again
        except Exception:
            self.sink.discard()
            self._stale = True
            raise

    async def on_obligation_state(self, message: KafkaMessage) -> None:
        """A state another service published: only a failure matters here. What cannot be read is the
        scheduler's to dead-letter (it consumes the topic in a group); here it is skipped and counted."""
        if self.ledger is None:
            return
        try:
            o = Obligation.model_validate_json(message.body)
        except ValueError:
            metrics.EVENTS_IGNORED.labels(service="rules", reason="invalid-obligation-record").inc()
            return
        writer = _header(getattr(message.raw_message, "headers", None), INSTANCE_HEADER)
        if writer == self.instance_id:
            return  # this instance's own write: its ledger holds it, or a later state
        if self.ledger.learn_failure(o):
            log.info("obligation failed; a new report of its fact will try again",
                     extra={"obligation_id": o.obligation_id, "rule": o.rule})
        elif writer is not None:
            self.ledger.learn(o)  # another rules instance's raise or cancel

    def evaluate(self, body: bytes, received_at: datetime) -> Decision:
        """One event through the ledger; what it decided, to publish. Invalid: raises, the caller dead-letters."""
        assert self.ledger is not None
        event = parse_event(body)  # invalid: dead-lettered by the caller, with the fields named
        decision = self.ledger.on_event(event, received_at)
        if decision.ignored:
            _ignored(decision.ignored.split(":")[0]).inc()
        if decision.register_changes:
            self._register_metrics_soon()
        if decision.raised or decision.cancelled:
            log.info("event evaluated", extra={
                "instance": self.instance_id, "event_id": event.id, "event_type": event.type,  # type: ignore[attr-defined]
                "raised": [o.obligation_id for o in decision.raised],
                "duplicates": len(decision.duplicates), "cancelled": [o.obligation_id for o in decision.cancelled],
            })
        return decision

    async def _send(self, value: bytes, topic: str, key: bytes) -> None:
        """Queue a record; the batch's records are handed over together and acknowledged at the batch's end."""
        await self.sink.add(topic, value, key, self._mine)

    async def _publish(self, decision: Decision, now: datetime) -> None:
        t = self.topics
        for entry in decision.register_changes:
            await self._publish_register(entry)
        for o in decision.cancelled:
            metrics.OBLIGATIONS_CANCELLED.labels(rule=o.rule).inc()
            await self._send(dumps(o), t.obligations, key=o.obligation_id.encode())
        for o in decision.raised:
            metrics.OBLIGATIONS_RAISED.labels(rule=o.rule).inc()
            if o.status == "failed":  # nobody to address it to: failed at once (and escalated)
                metrics.DEADLINES.labels(rule=o.rule, result="failed").inc()
            await self._send(dumps(o), t.obligations, key=o.obligation_id.encode())
            if o.status == "pending" and o.send_at <= now:
                request = NotificationRequest(obligation=o, requested_at=now)
                await self._send(dumps(request), t.notifications, key=o.obligation_id.encode())
        for grade in decision.graded_warrants:
            await self._send(dumps(grade), t.graded_warrants, key=grade["warrant_id"].encode())

    async def _publish_register(self, entry: RegisterEntry) -> None:
        await self._send(dumps(entry.to_dict()), self.topics.register, key=entry.person_id.encode())

    # --- the register's size, the directory's gaps, directory reload ----------------------------------------

    def _register_metrics_soon(self) -> None:
        """Recount at most twice a second: an import of thousands of rows is thousands of register events."""
        if self._metrics_due is None:
            def run() -> None:
                self._metrics_due = None
                self._register_metrics()

            self._metrics_due = asyncio.get_running_loop().call_later(0.5, run)

    def _register_metrics(self) -> None:
        """ppo_register_people{bcu,strand} and ppo_directory_missing_contacts{bcu,role}, from the live register;
        a BCU with PPOs that lacks a contact a rule needs is logged when that becomes so."""
        assert self.ledger is not None and self.directory is not None
        day = cal.london_date(self.clock.now())
        counts: dict[tuple[str, str], int] = {}
        for entry in self.ledger.register.entries():
            if (p := entry.period_at(day)) is not None:
                key = (p.home_bcu, (p.strand or "none")[:40])
                counts[key] = counts.get(key, 0) + 1
        metrics.REGISTER_SIZE.clear()
        for (bcu, strand), n in counts.items():
            metrics.REGISTER_SIZE.labels(bcu=bcu, strand=strand).set(n)
        gaps = set(missing_contacts(self.directory, {bcu for bcu, _ in counts}))
        metrics.DIRECTORY_MISSING_CONTACTS.clear()
        for bcu, role in sorted(gaps):
            metrics.DIRECTORY_MISSING_CONTACTS.labels(bcu=bcu, role=role).set(1)
        for bcu in sorted({b for b, _ in gaps - self._gaps}):
            log.warning("BCU with PPOs lacks contacts the rules need", extra={
                "bcu": bcu, "roles": sorted(r for b, r in gaps if b == bcu), "file": str(self.directory.path)})
        self._gaps = gaps

    def reload_directory(self) -> bool | None:
        """Load the directory file again if it changed: True when the new one is in force, False when it was
        refused (the one in force stays), None when unchanged."""
        assert self.directory is not None
        try:
            new = self.directory.reload_if_changed()
        except DirectoryError as exc:
            metrics.DIRECTORY_RELOADS.labels(result="refused").inc()
            log.error("directory file refused; the directory in force stays", extra={
                "file": str(self.directory.path), "error": str(exc)})
            return False
        if new is None:
            return None
        metrics.DIRECTORY_RELOADS.labels(result="loaded").inc()
        log.info("directory reloaded", extra={"file": str(self.directory.path), "bcus": len(new.bcu_codes)})
        if self.ledger is not None:
            self._register_metrics()
        return True

    async def _watch_directory(self) -> None:
        """Every PPO_DIRECTORY_RELOAD_S seconds, reload the directory file if it changed; ends with the broker."""
        seen_running = False
        every = self.settings.directory_reload_s
        waited = 0.0
        while True:
            step = min(1.0, every)  # look at the broker every second, so the watch ends soon after the service
            await asyncio.sleep(step)
            running = bool(getattr(self.broker, "running", True))
            if seen_running and not running:
                self._watch = None
                return
            seen_running = seen_running or running
            waited += step
            if waited < every:
                continue
            waited = 0.0
            try:
                self.reload_directory()
            except Exception:  # never let the watch die quietly
                log.exception("directory reload failed")


@functools.cache
def _ignored(reason: str) -> Any:
    """The ignored-events counter for a reason (a bounded vocabulary): `labels()` costs more than the event."""
    return metrics.EVENTS_IGNORED.labels(service="rules", reason=reason)


def _loads(value: bytes) -> Any:
    return json.loads(value)


def _header(headers: Any, name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value:
            return bytes(value).decode(errors="replace")
    return None



def _received_at_of(headers: Any) -> datetime | None:
    """R, as intake stamped it on the record (Kafka headers: (name, bytes) pairs)."""
    for name, value in headers or ():
        if name == RECEIVED_AT_HEADER and value:
            try:
                return datetime.fromisoformat(value.decode()).astimezone(UTC)
            except ValueError:
                return None
    return None
