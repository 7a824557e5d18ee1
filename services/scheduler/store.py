"""The scheduler's database: APScheduler's job store plus three small tables of ours, in one database.

- `ppo_scheduler_jobs` (APScheduler's SQLAlchemyJobStore): one job per obligation that owes something, id =
  obligation id, holding nothing but that id; and the C6 list-review job.
- `ppo_scheduler_watches`: the latest state of every obligation the scheduler watches (what a job needs when it
  fires), with its next step. Written before the Kafka offset is committed. Jobs are derived from it: at each
  take-over the jobs are reconciled with it, so a job APScheduler dropped (it removes a date job as it starts
  it) is not lost if the process died before the job finished.
- `ppo_scheduler_meta`: when the store was built, and where the C6 calendar is.
- `ppo_scheduler_lease`: one row; the instance holding it is the active scheduler (see `Lease`).

SQLite file by default (`<state_dir>/scheduler-jobs.sqlite`); PostgreSQL by PPO_SCHEDULER_JOBSTORE_URL
(`postgresql+psycopg://user:password@host/db`, with the psycopg package installed) — needed when instances run
on different machines, since a standby must see the same store to take over. That path is tested as two hosts
(separate state dirs, one PostgreSQL; tests/integration/test_scheduler_failover.py, test_scheduler_store_postgres.py).
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import (
    Column,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from services.scheduler.watch import Step, WatchPolicy, keep_until, next_step
from shared.obligations import Obligation

log = logging.getLogger("ppo.scheduler")

JOBS_TABLE = "ppo_scheduler_jobs"
LIST_REVIEW_JOB = "C6#list-review"  # not an obligation id (those are <rule>-<hex>)
DIGEST_JOB = "D2#custody-digest"  # the weekly custody digest (likewise)
SCHEMA_LOCK = 0x5050_5343  # PostgreSQL advisory lock key: table creation, one instance at a time

metadata = MetaData()
watches = Table(
    "ppo_scheduler_watches", metadata,
    Column("obligation_id", String(100), primary_key=True),
    Column("rule", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("next_step", String(32), nullable=True, index=True),
    Column("next_at", Float, nullable=True),  # Unix seconds, as APScheduler stores next_run_time
    Column("keep_until", Float, nullable=True, index=True),
    Column("body", Text, nullable=False),
)
meta = Table(
    "ppo_scheduler_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
lease_table = Table(
    "ppo_scheduler_lease", metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),  # Unix seconds (wall clock of the holder)
    Column("since", Float, nullable=False),
)


class BulkJobStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy job store, plus one bulk write for reconciling many jobs at once: rows in the store's
    own format (as `add_job` writes them), one transaction per chunk instead of one per job — a cold start with
    100,000 timers takes seconds, not minutes."""

    def put_many(self, jobs: list[Job]) -> None:
        for i in range(0, len(jobs), 500):
            chunk = jobs[i:i + 500]
            rows = [{"id": job.id, "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
                     "job_state": pickle.dumps(job.__getstate__(), self.pickle_protocol)} for job in chunk]
            with self.engine.begin() as c:
                c.execute(delete(self.jobs_t).where(self.jobs_t.c.id.in_([job.id for job in chunk])))
                c.execute(insert(self.jobs_t), rows)


def make_engine(url: str, durable: bool = True) -> Engine:
    """`durable`: every commit is on disk before it returns (our tables: a Kafka offset is committed only after
    them). Not durable: APScheduler's job store, whose every add and remove is a commit of its own — a commit lost
    in a power cut loses nothing that matters, since the jobs are reconciled with the watches table at take-over.
    (A process killed at any point loses nothing either way.)"""
    engine = create_engine(url, pool_pre_ping=url.startswith("postgresql"))  # a restarted server: fresh connections
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            cursor.execute("PRAGMA busy_timeout=10000")  # a standby and the active instance share the file
            cursor.close()
    elif engine.dialect.name == "postgresql":
        mode = "on" if durable else "off"  # on: whatever the server's default, a commit is in its WAL on disk

        @event.listens_for(engine, "connect")
        def _commit_mode(dbapi_connection: Any, _: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET synchronous_commit TO {mode}")
            dbapi_connection.commit()  # else the pool's rollback when the connection is first returned undoes it
    return engine


def _ts(instant: datetime | None) -> float | None:
    return instant.timestamp() if instant is not None else None


@dataclass(frozen=True)
class WatchRow:
    obligation: Obligation
    step: Step | None


class WatchStore:
    """The watches and meta tables (sync SQLAlchemy Core, like APScheduler's own job store)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        if engine.dialect.name == "postgresql":
            # Two instances starting together: one creates the tables, the other waits, then finds them (DDL is
            # transactional; without the lock the second CREATE fails on the catalogue's unique index).
            with engine.begin() as c:
                c.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
                metadata.create_all(c)
            return
        # Two instances starting together on one SQLite file: the other creates a table between our check and our
        # create, table by table (three of them), so one retry is not enough; each try finds more of them made.
        for attempt in range(20):
            try:
                metadata.create_all(engine)
                return
            except OperationalError:
                if attempt == 19:
                    raise
                time.sleep(0.05)

    # --- watches ---

    def get(self, obligation_id: str) -> Obligation | None:
        with self.engine.connect() as c:
            row = c.execute(select(watches.c.body).where(watches.c.obligation_id == obligation_id)).first()
        return Obligation.model_validate_json(row[0]) if row else None

    def get_many(self, obligation_ids: Iterable[str]) -> dict[str, Obligation]:
        ids = list(set(obligation_ids))
        out: dict[str, Obligation] = {}
        with self.engine.connect() as c:
            for i in range(0, len(ids), 500):
                for body, in c.execute(select(watches.c.body).where(watches.c.obligation_id.in_(ids[i:i + 500]))):
                    o = Obligation.model_validate_json(body)
                    out[o.obligation_id] = o
        return out

    def pending_page(self, after: str = "", limit: int = 2000) -> list[Obligation]:
        """Obligations still pending, by id, the first `limit` after id `after` (for the at-risk gauge at take-over,
        a page at a time)."""
        q = (select(watches.c.body).where(watches.c.status == "pending").where(watches.c.obligation_id > after)
             .order_by(watches.c.obligation_id).limit(limit))
        with self.engine.connect() as c:
            return [Obligation.model_validate_json(body) for body in c.execute(q).scalars()]

    def put(self, o: Obligation, policy: WatchPolicy) -> Step | None:
        return self.put_many([o], policy)[o.obligation_id]

    def put_many(self, obligations: Iterable[Obligation], policy: WatchPolicy,
                 chunk: int = 2000) -> dict[str, Step | None]:
        """Write states and their next steps; one transaction per chunk. Returns each one's next step."""
        steps: dict[str, Step | None] = {}
        batch: dict[str, dict[str, Any]] = {}  # the last state of an id given twice wins
        for o in obligations:
            step = steps[o.obligation_id] = next_step(o, policy)
            batch[o.obligation_id] = self._values(o, step, policy)
            if len(batch) >= chunk:
                with self.engine.begin() as c:
                    self._upsert(c, list(batch.values()))
                batch = {}
        if batch:
            with self.engine.begin() as c:
                self._upsert(c, list(batch.values()))
        return steps

    @staticmethod
    def _values(o: Obligation, step: Step | None, policy: WatchPolicy) -> dict[str, Any]:
        return {"obligation_id": o.obligation_id, "rule": o.rule, "status": o.status,
                "next_step": step.name if step else None, "next_at": _ts(step.at) if step else None,
                "keep_until": _ts(keep_until(o, policy)), "body": o.model_dump_json()}

    @staticmethod
    def _upsert(c: Any, rows: list[dict[str, Any]]) -> None:
        ids = [r["obligation_id"] for r in rows]
        c.execute(delete(watches).where(watches.c.obligation_id.in_(ids)))
        c.execute(insert(watches), rows)

    def delete(self, obligation_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(delete(watches).where(watches.c.obligation_id == obligation_id))

    def clear(self) -> None:
        with self.engine.begin() as c:
            c.execute(delete(watches))
            c.execute(delete(meta))

    def count(self, step: str | None = None) -> int:
        q = select(func.count()).select_from(watches)
        if step is not None:
            q = q.where(watches.c.next_step == step)
        with self.engine.connect() as c:
            return int(c.execute(q).scalar_one())

    def latest_send_at(self, rule: str) -> datetime | None:
        """The newest send_at of a rule's obligations (for C6: where the calendar had got to)."""
        with self.engine.connect() as c:
            bodies = [r[0] for r in c.execute(select(watches.c.body).where(watches.c.rule == rule))]
        instants = [Obligation.model_validate_json(b).send_at for b in bodies]
        return max(instants) if instants else None

    def expire(self, now: datetime) -> int:
        """Forget obligations that owe nothing and whose links can no longer be followed."""
        with self.engine.begin() as c:
            result = c.execute(delete(watches).where(and_(
                watches.c.next_step.is_(None), watches.c.keep_until.is_not(None),
                watches.c.keep_until < now.timestamp(),
            )))
        return int(result.rowcount or 0)

    def jobs_to_reconcile(self, jobs: Table) -> tuple[list[tuple[str, datetime]], list[str]]:
        """(obligation ids whose job is missing or at another time, with when it should run; job ids that no
        longer have anything to do)."""
        j = jobs
        with self.engine.connect() as c:
            wanted = c.execute(
                select(watches.c.obligation_id, watches.c.next_at)
                .select_from(watches.outerjoin(j, j.c.id == watches.c.obligation_id))
                .where(watches.c.next_at.is_not(None))
                .where(or_(j.c.id.is_(None), j.c.next_run_time.is_(None),
                           func.abs(j.c.next_run_time - watches.c.next_at) > 0.5))
            ).all()
            orphans = c.execute(
                select(j.c.id)
                .select_from(j.outerjoin(watches, j.c.id == watches.c.obligation_id))
                .where(j.c.id.not_in((LIST_REVIEW_JOB, DIGEST_JOB)))
                .where(watches.c.next_at.is_(None))
            ).all()
        return ([(oid, datetime.fromtimestamp(at, UTC)) for oid, at in wanted], [r[0] for r in orphans])

    # --- meta ---

    def meta_get(self, key: str) -> str | None:
        with self.engine.connect() as c:
            row = c.execute(select(meta.c.value).where(meta.c.key == key)).first()
        return row[0] if row else None

    def meta_set(self, key: str, value: str) -> None:
        with self.engine.begin() as c:
            c.execute(delete(meta).where(meta.c.key == key))
            c.execute(insert(meta).values(key=key, value=value))

    def close(self) -> None:
        self.engine.dispose()


class Lease:
    """One active scheduler: a lock row with a holder and an expiry, in the job store's own database.

    The active instance renews it every ttl/3. A standby tries to take it at the same pace and succeeds only once
    it has expired (the holder died, hung, or lost the database). The holder acts — fires a job, escalates —
    only while its lease is valid by its *own* monotonic clock: from the moment it sent a renewal that succeeded,
    for ttl minus a safety margin, so it stops before anyone else may start even with some clock skew between
    machines (keep them in NTP sync: skew must stay well under the margin).
    """

    def __init__(self, engine: Engine, holder: str, ttl_s: float, name: str = "scheduler") -> None:
        self.engine = engine
        self.holder = holder
        self.ttl_s = ttl_s
        self.name = name
        self.margin_s = min(ttl_s / 3, 5.0)
        self._valid_until = 0.0  # monotonic

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 3

    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    def try_acquire(self) -> bool:
        """Take or renew the lease; True when this instance holds it now."""
        started = time.monotonic()
        now = time.time()
        values = {"holder": self.holder, "expires_at": now + self.ttl_s}
        t = lease_table
        with self.engine.begin() as c:
            renewed = c.execute(
                update(t).where(t.c.name == self.name).where(t.c.holder == self.holder).values(**values))
            got = bool(renewed.rowcount)
            if not got:
                taken = c.execute(
                    update(t).where(t.c.name == self.name).where(t.c.expires_at < now).values(**values, since=now))
                got = bool(taken.rowcount)
            exists = got or c.execute(select(t.c.name).where(t.c.name == self.name)).first() is not None
        if not exists:
            try:
                with self.engine.begin() as c:
                    c.execute(insert(t).values(name=self.name, since=now, **values))
                got = True
            except IntegrityError:  # another instance inserted it first
                got = False
        if got:
            self._valid_until = started + self.ttl_s - self.margin_s
        else:
            self._valid_until = 0.0
        return got

    def release(self) -> None:
        """Give it up at once (a clean stop): a standby takes over at its next try, not after the ttl."""
        self._valid_until = 0.0
        t = lease_table
        with self.engine.begin() as c:
            c.execute(update(t).where(t.c.name == self.name).where(t.c.holder == self.holder)
                      .values(expires_at=0.0))

    def current(self) -> tuple[str, datetime] | None:
        t = lease_table
        with self.engine.connect() as c:
            row = c.execute(select(t.c.holder, t.c.expires_at).where(t.c.name == self.name)).first()
        return (row[0], datetime.fromtimestamp(row[1], UTC)) if row else None


@contextmanager
def timed(what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    log.info(what, extra={"seconds": round(time.monotonic() - started, 3)})
