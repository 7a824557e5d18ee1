"""The scheduler's database (services/scheduler/store.py): the lease, the watches table, the jobs reconciliation."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from services.scheduler.store import JOBS_TABLE, Lease, WatchStore, make_engine
from services.scheduler.watch import WatchPolicy
from shared.obligations import Obligation

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'scheduler-jobs.sqlite'}"


def obligation(n: int, send_in: timedelta, status: str = "pending") -> Obligation:
    return Obligation(obligation_id=f"A4-{n:024x}", rule="A4", source_paragraph="001 §7.5", person=None, bcu="13-LD",
                      recipients=["leeds.ppo@westyorkshire.police.uk"], send_at=NOW + send_in,
                      notify_by=NOW + send_in + timedelta(minutes=15), raised_at=NOW, status=status)


def test_one_holder_at_a_time_and_a_standby_takes_over_after_the_ttl(tmp_path: Path):
    engine = make_engine(url(tmp_path))
    WatchStore(engine)  # creates the tables
    active = Lease(engine, "a", ttl_s=2.0)
    standby = Lease(make_engine(url(tmp_path)), "b", ttl_s=2.0)
    assert active.try_acquire() and active.held()
    assert not standby.try_acquire() and not standby.held()
    assert active.try_acquire()  # renewal
    time.sleep(2.1)  # the active instance stops renewing (hung, killed)
    assert not active.held()  # by its own clock it stopped acting before the standby may start
    assert standby.try_acquire() and standby.held()
    assert not active.try_acquire() and not active.held()  # it lost it: no renewal
    current = standby.current()
    assert current is not None and current[0] == "b"


def test_release_hands_over_at_once(tmp_path: Path):
    engine = make_engine(url(tmp_path))
    WatchStore(engine)
    a, b = Lease(engine, "a", ttl_s=30.0), Lease(engine, "b", ttl_s=30.0)
    assert a.try_acquire() and not b.try_acquire()
    a.release()
    assert not a.held() and b.try_acquire()


def test_the_lease_is_valid_for_less_than_its_ttl_by_the_holders_clock(tmp_path: Path):
    engine = make_engine(url(tmp_path))
    WatchStore(engine)
    lease = Lease(engine, "a", ttl_s=6.0)
    assert lease.margin_s == 2.0 and lease.renew_every_s == 2.0
    before = time.monotonic()
    assert lease.try_acquire()
    assert before + 6.0 - 2.0 <= lease._valid_until <= time.monotonic() + 6.0 - 2.0  # noqa: SLF001


def test_watches_keep_the_latest_state_and_the_next_step(tmp_path: Path):
    store = WatchStore(make_engine(url(tmp_path)))
    policy = WatchPolicy()
    o = obligation(1, timedelta(days=1))
    step = store.put(o, policy)
    assert step is not None and step.name == "send"
    assert store.get(o.obligation_id) == o
    o.record_acceptance(o.send_at)
    assert store.put(o, policy) is None
    assert store.get(o.obligation_id).status == "notified"  # type: ignore[union-attr]
    assert store.count() == 1 and store.count("send") == 0
    steps = store.put_many((obligation(n, timedelta(hours=n)) for n in range(2, 5003)), policy, chunk=1000)
    assert len(steps) == 5001 and {s.name for s in steps.values() if s} == {"send"}
    assert len(store.get_many([o.obligation_id, "A4-" + "f" * 24, *steps][:700])) == 699  # all but the unknown one
    assert store.count("send") == 5001
    assert store.expire(NOW + timedelta(days=60)) == 1  # the notified one: its links have expired


async def test_reconciliation_finds_missing_moved_and_orphan_jobs(tmp_path: Path):
    engine = make_engine(url(tmp_path))
    store = WatchStore(engine)
    policy = WatchPolicy()
    future = datetime.now(UTC) + timedelta(days=1)
    a, b, c = (obligation(n, future - NOW + timedelta(hours=n)) for n in (1, 2, 3))
    for o in (a, b, c):
        store.put(o, policy)
    scheduler = AsyncIOScheduler(jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE)},
                                 timezone=UTC)
    scheduler.start(paused=True)
    try:
        jobs = scheduler._lookup_jobstore("default").jobs_t  # noqa: SLF001
        noop = asyncio.sleep
        scheduler.add_job(noop, "date", run_date=b.send_at, id=b.obligation_id, args=[0])  # in place
        scheduler.add_job(noop, "date", run_date=c.send_at + timedelta(hours=1), id=c.obligation_id, args=[0])
        scheduler.add_job(noop, "date", run_date=future, id="A4-gone", args=[0])  # nothing to do any more
        wanted, orphans = store.jobs_to_reconcile(jobs)
        assert sorted(oid for oid, _ in wanted) == sorted([a.obligation_id, c.obligation_id])
        assert dict(wanted)[c.obligation_id] == c.send_at
        assert orphans == ["A4-gone"]
    finally:
        scheduler.shutdown(wait=False)
