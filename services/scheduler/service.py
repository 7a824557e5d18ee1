"""Timed obligations survive restarts: APScheduler 3 with a persistent SQLAlchemy job store.

A job stores the obligation id only; the obligation itself is kept in a small SQLite table beside the job
store, written before the Kafka offset is committed. A job missed while the service was down fires on
start-up (misfire grace of 30 days by default) and is counted as late. If the store is missing, it is
rebuilt from the compacted obligations topic.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import timedelta
from pathlib import Path

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from shared import metrics
from shared.clock import Clock
from shared.kafka import dead_letter_guard, dumps, read_to_end
from shared.obligations import NotificationRequest, Obligation
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger("ppo.scheduler")

_ACTIVE: dict[str, SchedulerService] = {}  # jobs reference the running service by name, never pickle it


async def fire_timer(obligation_id: str) -> None:
    """The job function (referenced by text in the job store)."""
    service = _ACTIVE.get("scheduler")
    if service is not None:
        await service.fire(obligation_id)


class TimerTable:
    """Pending timed obligations, by id: what a job needs when it fires."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS timers (obligation_id TEXT PRIMARY KEY, body TEXT NOT NULL)")

    def put(self, o: Obligation) -> None:
        self.db.execute("INSERT OR REPLACE INTO timers VALUES (?, ?)", (o.obligation_id, o.model_dump_json()))

    def get(self, obligation_id: str) -> Obligation | None:
        row = self.db.execute("SELECT body FROM timers WHERE obligation_id = ?", (obligation_id,)).fetchone()
        return Obligation.model_validate_json(row[0]) if row else None

    def delete(self, obligation_id: str) -> None:
        self.db.execute("DELETE FROM timers WHERE obligation_id = ?", (obligation_id,))

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM timers").fetchone()[0])


class SchedulerService:
    def __init__(self, settings: Settings, broker: KafkaBroker, clock: Clock) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.topics = Topics(settings.topic_prefix)
        state = settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        self.jobstore_path = state / "scheduler-jobs.sqlite"
        self._store_was_missing = settings.scheduler_jobstore_url is None and not self.jobstore_path.exists()
        url = settings.scheduler_jobstore_url or f"sqlite:///{self.jobstore_path}"
        self.timers = TimerTable(state / "scheduler-timers.sqlite")
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(url=url)},
            job_defaults={"misfire_grace_time": settings.scheduler_misfire_grace_s, "coalesce": True},
            timezone="UTC",
        )
        self.ready = False
        broker.subscriber(
            self.topics.obligations, group_id="ppo-scheduler", auto_offset_reset="earliest",
            ack_policy=AckPolicy.ACK,
        )(dead_letter_guard("scheduler", broker, self.topics.dead_letter, self.on_obligation))

    async def start(self) -> None:
        _ACTIVE["scheduler"] = self
        self.scheduler.start()
        if self._store_was_missing:
            await self.rebuild()
        metrics.TIMERS_PENDING.set(self.timers.count())
        self.ready = True

    async def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        _ACTIVE.pop("scheduler", None)

    async def rebuild(self) -> int:
        """Re-create every job from the obligations topic (the source of truth)."""
        latest: dict[str, Obligation] = {}
        for _, value in await read_to_end(self.settings, self.topics.obligations):
            if value:
                try:
                    o = Obligation.model_validate_json(value)
                except ValueError:  # not an obligation (poison): the live consumer dead-letters it
                    continue
                latest[o.obligation_id] = o
        for o in latest.values():
            self.track(o)
        log.info("job store rebuilt", extra={"obligations": len(latest)})
        return len(latest)

    async def on_obligation(self, message: KafkaMessage) -> None:
        self.track(Obligation.model_validate_json(message.body))

    def track(self, o: Obligation) -> None:
        now = self.clock.now()
        if o.status == "pending" and o.send_at > now:
            self.timers.put(o)  # before the job, so a job never fires without its obligation
            self.scheduler.add_job(
                fire_timer, "date", run_date=o.send_at, id=o.obligation_id, args=[o.obligation_id],
                replace_existing=True,
            )
        elif o.status != "pending":
            if self.scheduler.get_job(o.obligation_id) is not None:
                self.scheduler.remove_job(o.obligation_id)
            self.timers.delete(o.obligation_id)
        metrics.TIMERS_PENDING.set(self.timers.count())

    async def fire(self, obligation_id: str) -> None:
        o = self.timers.get(obligation_id)
        if o is None:
            return
        now = self.clock.now()
        late = now - o.send_at > timedelta(minutes=1)
        metrics.TIMERS_FIRED.labels(rule=o.rule, lateness="late" if late else "on_time").inc()
        request = NotificationRequest(obligation=o, requested_at=now)
        await self.broker.publish(dumps(request), self.topics.notifications, key=o.obligation_id.encode())
        self.timers.delete(obligation_id)
        metrics.TIMERS_PENDING.set(self.timers.count())
        log.info("timer fired", extra={"obligation_id": o.obligation_id, "rule": o.rule, "late": late,
                                       "due": o.send_at.isoformat()})

