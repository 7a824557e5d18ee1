"""The scheduler service: timed obligations, deadlines, acknowledgements, escalation, and the C6 list review.

Timers survive restarts: APScheduler 3 (AsyncIOScheduler) with a persistent SQLAlchemy job store (SQLite file by
default, PostgreSQL by PPO_SCHEDULER_JOBSTORE_URL; see store.py). One job per obligation that owes something, job
id = obligation id, `replace_existing`; a job stores the id only. What the obligation owes next and when is a pure
function of its state (watch.py): send at send_at, breach at notify_by, escalate a failure at once, escalate an
immediate notice nobody acknowledged. A job missed while the service was down fires on start-up (misfire grace,
30 days by default; later still, it fires anyway) and is recorded as late (`ppo_timers_fired_total{lateness}` and
the obligation's history).

Inputs: the obligations topic (every state any service publishes; group `ppo-scheduler`), the acknowledgements
topic (intake, when a signed link is followed; group `ppo-scheduler-acks`), the register topic (for C6 and D2, read
in full by every instance) and the canonical events topic (for D2: the custody book, read from the beginning on
becoming active, then followed with group `ppo-scheduler-custody`). Outputs: NotificationRequests (timed
obligations, C6, D2), obligation states (fired, breached, escalated, acknowledged, C6 and D2 raised) and
EscalationRequests for the notifier. Offsets are committed after the
store is written and the resulting records are on Kafka.

One active instance: a lease row in the job store's database (store.Lease). A standby keeps the register current
and tries the lease every ttl/3; it takes over — rebuilds the store if missing, reconciles the jobs with it,
starts APScheduler and the consumers — once the active instance has stopped renewing for the ttl.

Kafka is the source of truth: `rebuild()` (and `ppo-alerts scheduler rebuild`) recreates the store from the
compacted obligations topic, and runs by itself when the store is missing.

D2, the weekly custody digest (shared/custody.py, services/scheduler/digest.py): 09:00 London on
PPO_SCHEDULER_DIGEST_WEEKDAY (the next working day when a bank holiday), one obligation per BCU with PPOs, to its
`coordinator` and `ppo` contacts, raised and sent like C6. Who is in custody comes from a `CustodyBook` folded from
the canonical events topic. That topic is not compacted: its retention bounds what the digest knows (a person
received before the oldest retained event, and named by no prison event since, is not listed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
import weakref
from contextlib import AsyncExitStack, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

# C6 is built by the rule book's pure core (no I/O, no Kafka), the very code `simulate` runs; the scheduler never
# imports the rules *service*.
from services.rules.ledger import Ledger
from services.rules.rulebook import RuleBook, RuleTimings
from services.scheduler.catchup import forward_group, read_since_committed, read_with_end_offsets
from services.scheduler.digest import digest_at, ppos_by_bcu
from services.scheduler.registerview import RegisterView
from services.scheduler.store import (
    DIGEST_JOB,
    JOBS_TABLE,
    LIST_REVIEW_JOB,
    BulkJobStore,
    Lease,
    WatchStore,
    make_engine,
)
from services.scheduler.watch import (
    Step,
    WatchPolicy,
    escalation_reason,
    merge,
    next_step,
    record_acknowledgement,
    record_breach,
    record_escalation,
    record_fired,
)
from shared import calendar as cal
from shared import metrics
from shared.ack import Acknowledgement, EscalationRequest
from shared.clock import Clock
from shared.consumer_watch import WATCH
from shared.custody import DIGEST, CustodyBook, digest_obligation, rows_for
from shared.directory import DirectoryError, DirectoryHolder
from shared.events import parse_event
from shared.kafka import dead_letter_guard, dumps, records_as_they_are
from shared.obligations import HistoryEntry, NotificationRequest, Obligation
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger("ppo.scheduler")

ACTIVE = Gauge("ppo_scheduler_active", "1 while this scheduler instance holds the lease and runs the timers")
ESCALATIONS = Counter("ppo_escalations_total", "Escalations the scheduler asked the notifier to send",
                      ["rule", "reason"])  # reason: breached, late, failed, unacknowledged
ACKNOWLEDGEMENTS = Counter("ppo_acknowledgements_recorded_total", "Acknowledgements recorded in obligation state",
                           ["rule"])
_ESCALATION_LABEL = {"breach": "breached", "escalate-late": "late", "escalate-failed": "failed",
                     "escalate-unacknowledged": "unacknowledged"}

META_BUILT = "built_at"  # when the store was (re)built from the obligations topic
META_LIST_REVIEW_AFTER = "list_review_after"  # the next C6 occurrence is the first one strictly after this
META_DIGEST_AFTER = "digest_after"  # the next D2 occurrence is the first one strictly after this
EARLY_TOLERANCE = timedelta(seconds=1)
OBLIGATIONS_GROUP = "ppo-scheduler"  # also written out where it subscribes (ppo_alerts/apidocs.py reads it there)
CUSTODY_GROUP = "ppo-scheduler-custody"  # likewise
DIGEST_ROLES = ("coordinator", "ppo")
# A job re-added while its run is finishing must not be skipped as "already running" (and so dropped, being a date
# job): runs of one obligation are serialised by the service's own lock instead.
JOB_MAX_INSTANCES = 100
RETRY_AFTER = timedelta(seconds=30)
ACK_WAIT_ROUNDS, ACK_WAIT_S = 15, 2.0

_ACTIVE: dict[str, SchedulerService] = {}  # jobs reach the active service by name, never by pickling it


async def fire_timer(obligation_id: str) -> None:
    """The job function for an obligation (referenced by text in the job store)."""
    service = _ACTIVE.get("scheduler")
    if service is not None:
        await service.fire(obligation_id)


async def fire_list_review(at: str, period: str) -> None:
    """The job function for C6 (referenced by text in the job store)."""
    service = _ACTIVE.get("scheduler")
    if service is not None:
        await service.fire_list_review(datetime.fromisoformat(at), period)


async def fire_digest(at: str) -> None:
    """The job function for D2 (referenced by text in the job store)."""
    service = _ACTIVE.get("scheduler")
    if service is not None:
        await service.fire_digest(datetime.fromisoformat(at))


def policy_from(settings: Settings) -> WatchPolicy:
    return WatchPolicy(
        deadline_grace=timedelta(seconds=settings.scheduler_deadline_grace_s),
        ack_working_hours=settings.ack_escalate_after_working_hours,
        link_ttl=timedelta(days=settings.ack_link_ttl_days),
    )


def jobstore_url(settings: Settings) -> str:
    return settings.scheduler_jobstore_url or f"sqlite:///{settings.state_dir / 'scheduler-jobs.sqlite'}"


class SchedulerService:
    def __init__(self, settings: Settings, broker: KafkaBroker, clock: Clock, timings: RuleTimings | None = None,
                 policy: WatchPolicy | None = None, instance: str | None = None) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.topics = Topics(settings.topic_prefix)
        self.timings = timings or RuleTimings(list_review_every_months=settings.scheduler_list_review_every_months)
        self.policy = policy or policy_from(settings)
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(jobstore_url(settings))  # ours: durable commits
        self.jobs_engine = make_engine(jobstore_url(settings), durable=False)  # APScheduler's: see make_engine
        self.store = WatchStore(self.engine)
        self.lease = Lease(self.engine, self.instance, settings.scheduler_lease_ttl_s)
        self.directory = DirectoryHolder(settings.directory_file)  # escalation and coordinator contacts
        self.register_view = RegisterView(settings, self.topics.register)
        self.custody = CustodyBook()  # D2: read in full on becoming active, then followed
        self.scheduler: AsyncIOScheduler | None = None
        self.role: Literal["standby", "activating", "active"] = "standby"
        self.ready = False
        metrics.initialise("scheduler")
        self.open_obligations = metrics.OpenObligations()  # exports ppo_obligations_at_risk{rule}
        self._subscribers: list[Any] = []
        self._background: set[asyncio.Task[None]] = set()
        self._consuming = False
        self._lease_task: asyncio.Task[None] | None = None
        self._activation: asyncio.Task[None] | None = None
        self._first_round = asyncio.Event()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._list_review_lock = asyncio.Lock()
        self._digest_lock = asyncio.Lock()
        self._housekeeping_at = self._directory_checked_at = datetime.min.replace(tzinfo=UTC)

    # --- life cycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the register and contend for the lease; returns once this instance is active or standing by."""
        await self.register_view.start()
        self._lease_task = asyncio.create_task(self._lease_loop(), name="scheduler-lease")
        await self._first_round.wait()
        if self._activation is not None:
            await asyncio.shield(self._activation)
        self.ready = True
        log.info("scheduler started", extra={"role": self.role, "instance": self.instance})

    async def stop(self) -> None:
        self.ready = False
        if self._lease_task is not None:
            self._lease_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._lease_task
            self._lease_task = None
        held = self.role != "standby"
        await self._step_down()
        if held:
            with suppress(Exception):
                await asyncio.to_thread(self.lease.release)  # a standby takes over at its next try
        await self.register_view.stop()
        self.close_database()

    def close_database(self) -> None:
        self.engine.dispose()
        self.jobs_engine.dispose()

    async def _lease_loop(self) -> None:
        while True:
            try:
                got: bool | None = await asyncio.to_thread(self.lease.try_acquire)
            except Exception:  # the database is unreachable: act only while the lease is still ours
                log.warning("lease: database unavailable", exc_info=True)
                got = None
            if got and self.role == "standby":
                log.info("lease acquired: this instance is now the active scheduler", extra={"instance": self.instance})
                self._activation = asyncio.create_task(self._become_active(), name="scheduler-activation")
            elif self.role != "standby" and (got is False or not self.lease.held()):
                holder = await asyncio.to_thread(self._lease_holder)
                log.error("lease lost: standing by", extra={"instance": self.instance, "holder": holder})
                await self._step_down()
            if self.role == "active":
                self._housekeeping()
            self._first_round.set()
            await asyncio.sleep(self.lease.renew_every_s)

    def _lease_holder(self) -> str | None:
        with suppress(Exception):
            current = self.lease.current()
            return current[0] if current else None
        return None

    async def _become_active(self) -> None:
        self.role = "activating"
        try:
            await self.register_view.caught_up.wait()
            rebuilt = self.store.meta_get(META_BUILT) is None
            if rebuilt:
                await self.rebuild()  # also shows every state to the at-risk gauge
            await self.load_custody()
            scheduler = AsyncIOScheduler(
                jobstores={"default": BulkJobStore(engine=self.jobs_engine, tablename=JOBS_TABLE)},
                job_defaults={"misfire_grace_time": self.settings.scheduler_misfire_grace_s, "coalesce": True,
                              "max_instances": JOB_MAX_INSTANCES},
                timezone=UTC,
            )
            scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
            scheduler.start(paused=True)
            self.scheduler = scheduler
            _ACTIVE["scheduler"] = self
            await self._reconcile()
            if not rebuilt:
                # States published after the group's last commit (an instance killed between publishing "sent
                # for delivery" and storing it) are taken before any job runs: else the timer fires again.
                await self._catch_up_obligations()
            if not rebuilt:  # the store has every obligation's latest state: no need to read the topic again
                after = ""
                while page := await asyncio.to_thread(self.store.pending_page, after):
                    for o in page:
                        self.open_obligations.observe(o)
                    after = page[-1].obligation_id
            self.open_obligations.start(self.clock.now)
            scheduler.resume()
            await self._start_consuming()
            self.role = "active"
            ACTIVE.set(1)
            metrics.TIMERS_PENDING.set(self.store.count("send"))
            log.info("scheduler active", extra={"instance": self.instance, "watched": self.store.count()})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not become active; standing by")
            await self._step_down()
            with suppress(Exception):
                await asyncio.to_thread(self.lease.release)

    async def _step_down(self) -> None:
        if self.role == "standby" and self.scheduler is None:
            return
        self.role = "standby"
        ACTIVE.set(0)
        activation, self._activation = self._activation, None
        if activation is not None and activation is not asyncio.current_task() and not activation.done():
            activation.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await activation
        for sub in self._subscribers:
            with suppress(Exception):
                await sub.stop()
        self._consuming = False
        await self.open_obligations.stop()
        if self.scheduler is not None:
            with suppress(Exception):
                self.scheduler.shutdown(wait=False)
            self.scheduler = None
        if _ACTIVE.get("scheduler") is self:
            _ACTIVE.pop("scheduler", None)

    async def _start_consuming(self) -> None:
        if not self._subscribers:
            obligations = self.broker.subscriber(
                self.topics.obligations, group_id="ppo-scheduler", auto_offset_reset="earliest", batch=True,
                max_records=500, ack_policy=AckPolicy.NACK_ON_ERROR, persistent=False, decoder=records_as_they_are)
            obligations(WATCH.watched("scheduler", self.topics.obligations,
                                      self.on_obligations))  # dead-letters bad records itself, one by one
            acks = self.broker.subscriber(
                self.topics.acknowledgements, group_id="ppo-scheduler-acks", auto_offset_reset="earliest",
                ack_policy=AckPolicy.NACK_ON_ERROR, persistent=False,
                decoder=records_as_they_are)
            acks(WATCH.watched("scheduler", self.topics.acknowledgements, dead_letter_guard(
                "scheduler", self.broker, self.topics.dead_letter, self.on_acknowledgement)))
            custody = self.broker.subscriber(
                self.topics.events, group_id="ppo-scheduler-custody", auto_offset_reset="earliest", batch=True,
                max_records=500, ack_policy=AckPolicy.NACK_ON_ERROR, persistent=False, decoder=records_as_they_are)
            custody(WATCH.watched("scheduler", self.topics.events, self.on_custody_events))
            self._subscribers += [obligations, acks, custody]
        self._consuming = True
        for sub in self._subscribers:
            await sub.start()

    def _may_act(self) -> bool:
        """Fencing: fire, escalate or raise only with a running scheduler and a lease valid by our own clock."""
        return self.scheduler is not None and self.lease.held()

    def _housekeeping(self) -> None:
        now = self.clock.now()
        metrics.TIMERS_PENDING.set(self.store.count("send"))
        every = self.settings.directory_reload_s
        if every and now - self._directory_checked_at >= timedelta(seconds=every):
            self._directory_checked_at = now
            try:
                if self.directory.reload_if_changed() is not None:
                    metrics.DIRECTORY_RELOADS.labels(result="loaded").inc()
                    log.info("directory reloaded", extra={"file": str(self.directory.path)})
            except DirectoryError as exc:
                metrics.DIRECTORY_RELOADS.labels(result="refused").inc()
                log.error("directory file refused; the directory in force stays",
                          extra={"file": str(self.directory.path), "error": str(exc)})
        if now - self._housekeeping_at >= timedelta(hours=1):
            self._housekeeping_at = now
            forgotten = self.store.expire(now)
            if forgotten:
                log.info("forgot obligations that owe nothing more", extra={"count": forgotten})

    # --- the store and its jobs --------------------------------------------------------------------------------

    async def rebuild(self, clear: bool = False) -> int:
        """Re-create the store from the obligations topic (the source of truth) and move the consumer group past
        what was read; the jobs follow from the store at the next reconciliation (at once when active). Returns
        how many obligations it holds."""
        if clear:
            self._clear_jobs()
            self.store.clear()
        seen: set[str] = set()
        reviews: list[datetime] = []
        digests: list[datetime] = []

        async def take(values: list[bytes]) -> None:
            batch: list[Obligation] = []
            for value in values:
                try:
                    batch.append(Obligation.model_validate_json(value))
                except ValueError:  # not an obligation (poison): the live consumer dead-letters it
                    continue
            for o in batch:
                self.open_obligations.observe(o)
                seen.add(o.obligation_id)
                if o.rule == "C6":
                    reviews.append(o.send_at)
                elif o.rule == DIGEST:
                    digests.append(o.send_at)
            await asyncio.to_thread(self.store.put_many, batch, self.policy)  # a later state of an id replaces it

        ends = await read_with_end_offsets(self.settings, self.topics.obligations, take)
        now = self.clock.now()
        self.store.meta_set(META_LIST_REVIEW_AFTER, max(reviews, default=now).isoformat())
        self.store.meta_set(META_DIGEST_AFTER, max(digests, default=now).isoformat())
        self.store.meta_set(META_BUILT, now.isoformat())
        if not self._consuming:
            await forward_group(self.settings, OBLIGATIONS_GROUP, ends)
        if self.scheduler is not None:
            await self._reconcile()
        log.info("store rebuilt from the obligations topic", extra={"obligations": len(seen)})
        return len(seen)

    def _clear_jobs(self) -> None:
        if self.scheduler is not None:
            self.scheduler.remove_all_jobs()
            return
        scheduler = AsyncIOScheduler(
            jobstores={"default": BulkJobStore(engine=self.jobs_engine, tablename=JOBS_TABLE)}, timezone=UTC)
        scheduler.start(paused=True)
        try:
            scheduler.remove_all_jobs()
        finally:
            scheduler.shutdown(wait=False)

    async def _catch_up_obligations(self) -> None:
        async def take(values: list[bytes]) -> None:
            incoming = []
            for value in values:
                with suppress(ValidationError):  # the live consumer dead-letters it
                    incoming.append(Obligation.model_validate_json(value))
            if incoming:
                self.track(incoming)  # in the loop, as the live consumer does: it moves jobs

        taken = await read_since_committed(self.settings, self.topics.obligations, OBLIGATIONS_GROUP, take)
        if taken:
            log.info("obligation states taken before the timers start", extra={"records": taken})

    async def _reconcile(self) -> None:
        """Make the jobs match the store: add what is missing or moved, drop what has nothing to do, and keep the
        C6 calendar going. Yields to the loop between batches so the lease keeps being renewed."""
        assert self.scheduler is not None
        jobstore = self.scheduler._lookup_jobstore("default")  # noqa: SLF001 - ours (BulkJobStore)
        assert isinstance(jobstore, BulkJobStore)
        wanted, orphans = self.store.jobs_to_reconcile(jobstore.jobs_t)
        for i in range(0, len(wanted), 2000):
            jobs = [Job(self.scheduler, id=oid, func=fire_timer, trigger=DateTrigger(run_date=at, timezone=UTC),
                        executor="default", args=(oid,), kwargs={}, name="fire_timer", next_run_time=at,
                        misfire_grace_time=self.settings.scheduler_misfire_grace_s, coalesce=True,
                        max_instances=JOB_MAX_INSTANCES)
                    for oid, at in wanted[i:i + 2000]]
            await asyncio.to_thread(jobstore.put_many, jobs)
        self.scheduler.wakeup()
        for job_id in orphans:
            with suppress(JobLookupError):
                self.scheduler.remove_job(job_id)
        if self.store.meta_get(META_LIST_REVIEW_AFTER) is None:  # the calendar begins when the system starts
            self.store.meta_set(META_LIST_REVIEW_AFTER, self.clock.now().isoformat())
        if self.scheduler.get_job(LIST_REVIEW_JOB) is None:
            self._schedule_list_review()
        if self.store.meta_get(META_DIGEST_AFTER) is None:  # likewise for D2
            self.store.meta_set(META_DIGEST_AFTER, self.clock.now().isoformat())
        if self.scheduler.get_job(DIGEST_JOB) is None:
            self._schedule_digest()
        if wanted or orphans:
            log.info("jobs reconciled with the store", extra={"added": len(wanted), "removed": len(orphans)})

    def _add_job(self, obligation_id: str, at: datetime) -> None:
        if self.scheduler is not None:
            self.scheduler.add_job(fire_timer, "date", run_date=at, id=obligation_id, args=[obligation_id],
                                   replace_existing=True)

    def _schedule(self, obligation_id: str, before: Step | None, after: Step | None) -> None:
        """The job after a change of next step (`before` None: there is no job now)."""
        if self.scheduler is None:
            return  # standing by, or rebuilding: reconciliation makes the jobs
        if after is None:
            if before is not None:
                with suppress(JobLookupError):
                    self.scheduler.remove_job(obligation_id)
        elif before is None or before != after:
            self._add_job(obligation_id, after.at)

    def _lock(self, obligation_id: str) -> asyncio.Lock:
        lock = self._locks.get(obligation_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[obligation_id] = lock
        return lock

    async def _publish_state(self, o: Obligation) -> None:
        self.open_obligations.observe(o)
        await self.broker.publish(dumps(o), self.topics.obligations, key=o.obligation_id.encode())

    # --- consumers ---------------------------------------------------------------------------------------------

    async def on_obligations(self, message: KafkaMessage) -> None:
        """A batch of obligation states (up to 500): each record parsed on its own (a bad one is dead-lettered with
        its reason), all stored in one transaction, their jobs moved, then the offsets committed. A record that
        says less than is known (a writer with an older copy) is answered with the whole state."""
        incoming: list[Obligation] = []
        for raw, record in zip(message.body, message.raw_message, strict=True):
            try:
                incoming.append(Obligation.model_validate_json(raw))
            except ValidationError as exc:
                await self._dead_letter(raw, record, exc)
        if not incoming:
            return
        locks = [self._lock(oid) for oid in sorted({o.obligation_id for o in incoming})]
        async with AsyncExitStack() as stack:
            for lock in locks:
                await stack.enter_async_context(lock)
            richer = self.track(incoming)
            for o in richer:
                await self._publish_state(o)

    def track(self, incoming: list[Obligation]) -> list[Obligation]:
        """Take obligation states: store each merged with what is known, and move its job. Returns the merged
        states that say more than their last record did."""
        known = self.store.get_many(o.obligation_id for o in incoming)
        before = {oid: next_step(o, self.policy) for oid, o in known.items()}
        current: dict[str, Obligation] = dict(known)
        richer: dict[str, Obligation] = {}
        for o in incoming:
            previous = current.get(o.obligation_id)
            merged = current[o.obligation_id] = merge(previous, o)
            self.open_obligations.observe(merged)
            if previous is not None and merged != o:
                richer[o.obligation_id] = merged
            else:
                richer.pop(o.obligation_id, None)
        changed = {oid: o for oid, o in ((o.obligation_id, current[o.obligation_id]) for o in incoming)
                   if known.get(oid) != o}  # an echo of our own record, or a replay: nothing to write
        for oid, after in self.store.put_many(changed.values(), self.policy).items():
            self._schedule(oid, before.get(oid), after)
        return list(richer.values())

    async def _dead_letter(self, raw: bytes, record: Any, exc: ValidationError) -> None:
        """As shared.kafka.dead_letter_guard does for one message, for one record of a batch."""
        from shared.errors import problems_of

        problems = problems_of(exc)
        metrics.DEAD_LETTERS.labels(service="scheduler", reason=type(exc).__name__).inc()
        entry = {"service": "scheduler", "reason": type(exc).__name__, "problems": problems,
                 "topic": getattr(record, "topic", None), "offset": getattr(record, "offset", None),
                 "payload": raw.decode("utf-8", "replace")}
        await self.broker.publish(dumps(entry), self.topics.dead_letter)
        log.warning("message dead-lettered", extra={"reason": type(exc).__name__,
                                                    "fields": [p["field"] for p in problems][:10]})

    async def on_acknowledgement(self, message: KafkaMessage) -> None:
        ack = Acknowledgement.model_validate_json(message.body)
        for _ in range(ACK_WAIT_ROUNDS):  # the obligation's own record may still be on its way (a backlog)
            if self.store.get(ack.obligation_id) is not None:
                break
            await asyncio.sleep(ACK_WAIT_S)
        async with self._lock(ack.obligation_id):
            o = self.store.get(ack.obligation_id)
            if o is None:
                log.warning("acknowledgement of an obligation not watched; not recorded",
                            extra={"obligation_id": ack.obligation_id})
                return
            before = next_step(o, self.policy)
            if not record_acknowledgement(o, ack):
                return
            await self._publish_state(o)
            after = self.store.put(o, self.policy)
            self._schedule(o.obligation_id, before, after)
            ACKNOWLEDGEMENTS.labels(rule=o.rule).inc()
            log.info("acknowledged", extra={"obligation_id": o.obligation_id, "rule": o.rule})

    # --- timers ------------------------------------------------------------------------------------------------

    async def fire(self, obligation_id: str) -> None:
        """An obligation's job ran: do its next step if it is due, then schedule the one after."""
        async with self._lock(obligation_id):
            if not self._may_act():
                log.warning("timer not fired: this instance no longer holds the lease",
                            extra={"obligation_id": obligation_id})
                return
            o = await asyncio.to_thread(self.store.get, obligation_id)
            step = next_step(o, self.policy) if o is not None else None
            if o is None or step is None:
                return
            now = self.clock.now()
            if step.at - now > EARLY_TOLERANCE:  # moved since the job was set
                self._add_job(obligation_id, step.at)
                return
            try:
                if step.name == "send":
                    await self._send(o, now)
                else:
                    await self._escalate(o, step, now)
            except Exception:
                log.exception("timer failed; trying again", extra={"obligation_id": obligation_id,
                                                                    "step": step.name})
                self._add_job(obligation_id, now + RETRY_AFTER)
                return
            self._schedule(obligation_id, None, await asyncio.to_thread(self.store.put, o, self.policy))

    async def _send(self, o: Obligation, now: datetime) -> None:
        late = record_fired(o, now, self.policy)
        await self._publish_state(o)
        request = NotificationRequest(obligation=o, requested_at=now)
        await self.broker.publish(dumps(request), self.topics.notifications, key=o.obligation_id.encode())
        metrics.TIMERS_FIRED.labels(rule=o.rule, lateness="late" if late else "on_time").inc()
        log.info("timer fired", extra={"obligation_id": o.obligation_id, "rule": o.rule, "late": late,
                                       "due": o.send_at.isoformat()})

    async def _escalate(self, o: Obligation, step: Step, now: datetime) -> None:
        reason = escalation_reason(step, o, self.policy)
        if step.name == "breach":
            record_breach(o, now)
        contacts = self.directory.contacts(o.bcu, "escalation")
        record_escalation(o, now, reason, contacts)
        await self._publish_state(o)
        if not contacts:
            log.error("cannot escalate: no escalation contact", extra={"obligation_id": o.obligation_id,
                                                                       "rule": o.rule, "bcu": o.bcu})
            return
        request = EscalationRequest(obligation=o, reason=reason, recipients={a: "escalation" for a in contacts},
                                    requested_at=now)
        await self.broker.publish(dumps(request), self.topics.escalations, key=o.obligation_id.encode())
        ESCALATIONS.labels(rule=o.rule, reason=_ESCALATION_LABEL[step.name]).inc()
        log.warning("escalated", extra={"obligation_id": o.obligation_id, "rule": o.rule, "step": step.name})

    def _on_missed(self, event: JobExecutionEvent) -> None:
        """Missed beyond the misfire grace (down for longer than that): fire anyway, late, rather than never."""
        log.warning("job missed its misfire grace; firing it late", extra={"job": event.job_id})
        if event.job_id == LIST_REVIEW_JOB:
            at = event.scheduled_run_time.astimezone(UTC)
            task = self.fire_list_review(at, cal.london_date(at).strftime("%Y-%m"))
        elif event.job_id == DIGEST_JOB:
            task = self.fire_digest(event.scheduled_run_time.astimezone(UTC))
        else:
            task = self.fire(event.job_id)
        running = asyncio.get_running_loop().create_task(task)
        self._background.add(running)
        running.add_done_callback(self._background.discard)

    # --- C6: the list review -------------------------------------------------------------------------------------

    def _rulebook(self) -> RuleBook:
        return RuleBook(self.register_view.register, self.directory, self.timings)  # type: ignore[arg-type]

    def _schedule_list_review(self) -> None:
        after = datetime.fromisoformat(self.store.meta_get(META_LIST_REVIEW_AFTER) or self.clock.now().isoformat())
        at, period = self._rulebook().list_review_at(after)
        if self.scheduler is not None:
            self.scheduler.add_job(fire_list_review, "date", run_date=at, id=LIST_REVIEW_JOB,
                                   args=[at.isoformat(), period], replace_existing=True)
            log.info("next list review", extra={"at": at.isoformat(), "period": period})

    async def fire_list_review(self, at: datetime, period: str) -> None:
        """C6 (002 §28, §36; 004 §4.2, §5.1): every BCU's coordinator gets the list of that BCU's PPOs, built by the
        rule book's own `Ledger.list_reviews`; then the next occurrence is scheduled."""
        async with self._list_review_lock:
            if not self._may_act():
                log.warning("list review not fired: this instance no longer holds the lease")
                return
            now = self.clock.now()
            try:
                raised = await self._raise_list_reviews(at, period, now)
            except Exception:
                log.exception("list review failed; trying again")
                if self.scheduler is not None:
                    self.scheduler.add_job(fire_list_review, "date", run_date=now + RETRY_AFTER, id=LIST_REVIEW_JOB,
                                           args=[at.isoformat(), period], replace_existing=True)
                return
            self.store.meta_set(META_LIST_REVIEW_AFTER, at.isoformat())
            self._schedule_list_review()
            log.info("list review raised", extra={"period": period, "obligations": raised})

    async def _raise_list_reviews(self, at: datetime, period: str, now: datetime) -> int:
        decision = Ledger(self._rulebook()).list_reviews(at, period)
        raised = 0
        for o in decision.raised:
            raised += await self._raise_calendar_obligation(o, now)
        return raised

    async def _raise_calendar_obligation(self, o: Obligation, now: datetime) -> int:
        """Publish a C6 or D2 occurrence's obligation and its NotificationRequest, and watch it; 0 when this
        occurrence was raised already (it fired before a crash)."""
        async with self._lock(o.obligation_id):
            if self.store.get(o.obligation_id) is not None:
                return 0
            if o.status == "pending":
                late = record_fired(o, now, self.policy)
                await self._publish_state(o)
                request = NotificationRequest(obligation=o, requested_at=now)
                await self.broker.publish(dumps(request), self.topics.notifications, key=o.obligation_id.encode())
                metrics.TIMERS_FIRED.labels(rule=o.rule, lateness="late" if late else "on_time").inc()
            else:  # no contact in the directory: failed, escalated by its own watch
                await self._publish_state(o)
            metrics.OBLIGATIONS_RAISED.labels(rule=o.rule).inc()
            self._schedule(o.obligation_id, None, self.store.put(o, self.policy))
            return 1

    # --- D2: the weekly custody digest ----------------------------------------------------------------------------

    async def load_custody(self) -> int:
        """Read the canonical events topic from the beginning into a new custody book and move the custody consumer
        group past what was read (the live consumer then follows from there). Folding is idempotent and
        order-independent, so records read twice change nothing. Returns how many people the book knows."""
        book = CustodyBook()

        async def take(values: list[bytes]) -> None:
            for value in values:
                self._apply_custody(book, value)
            await asyncio.sleep(0)  # keep the lease renewing

        ends = await read_with_end_offsets(self.settings, self.topics.events, take)
        self.custody = book
        if not self._consuming:
            await forward_group(self.settings, CUSTODY_GROUP, ends)
        log.info("custody book loaded from the events topic", extra={"people": len(book),
                                                                     "in_custody": len(book.in_custody())})
        return len(book)

    @staticmethod
    def _apply_custody(book: CustodyBook, value: bytes | None) -> None:
        if not value:
            return
        try:
            event = parse_event(value)
        except ValueError:  # ValidationError too; the rules service dead-letters these, not us
            metrics.EVENTS_IGNORED.labels(service="scheduler", reason="invalid-event").inc()
            return
        book.apply(event)

    async def on_custody_events(self, message: KafkaMessage) -> None:
        """A batch of canonical events: the prison ones are folded into the custody book; the rest say nothing."""
        # A batch subscriber: FastStream types `body` as bytes, but it is the batch's raw record values.
        for raw in cast("list[bytes | None]", message.body):
            self._apply_custody(self.custody, raw)

    def _schedule_digest(self) -> None:
        after = datetime.fromisoformat(self.store.meta_get(META_DIGEST_AFTER) or self.clock.now().isoformat())
        at = digest_at(after, self.settings.scheduler_digest_weekday)
        if self.scheduler is not None:
            self.scheduler.add_job(fire_digest, "date", run_date=at, id=DIGEST_JOB, args=[at.isoformat()],
                                   replace_existing=True)
            log.info("next custody digest", extra={"at": at.isoformat()})

    async def fire_digest(self, at: datetime) -> None:
        """D2 (rule book D; 001 §7.5): every BCU with PPOs gets its PPOs in custody with the days to release, to its
        coordinator and PPO contacts; then the next occurrence is scheduled."""
        async with self._digest_lock:
            if not self._may_act():
                log.warning("custody digest not fired: this instance no longer holds the lease")
                return
            now = self.clock.now()
            try:
                raised = await self._raise_digests(at, now)
            except Exception:
                log.exception("custody digest failed; trying again")
                if self.scheduler is not None:
                    self.scheduler.add_job(fire_digest, "date", run_date=now + RETRY_AFTER, id=DIGEST_JOB,
                                           args=[at.isoformat()], replace_existing=True)
                return
            self.store.meta_set(META_DIGEST_AFTER, at.isoformat())
            self._schedule_digest()
            log.info("custody digest raised", extra={"at": at.isoformat(), "obligations": raised})

    def digests(self, at: datetime) -> list[Obligation]:
        """The D2 obligations of the occurrence at `at`: one per BCU with PPOs on that London date."""
        today = cal.london_date(at)
        out = []
        for bcu, people in sorted(ppos_by_bcu(self.register_view.register, today).items()):
            recipients: dict[str, str] = {}
            for role in DIGEST_ROLES:
                for address in self.directory.contacts(bcu, role):
                    recipients.setdefault(address, role)
            o = digest_obligation(bcu, rows_for(self.custody, people), today, recipients, at)
            o.history.append(HistoryEntry(at=at, what="raised"))
            if not recipients:
                o.status = "failed"
                o.history.append(HistoryEntry(
                    at=at, what=f"no contact for role(s) {', '.join(DIGEST_ROLES)} in BCU {bcu}"))
            out.append(o)
        return out

    async def _raise_digests(self, at: datetime, now: datetime) -> int:
        raised = 0
        for o in self.digests(at):
            raised += await self._raise_calendar_obligation(o, now)
        return raised
