"""The scheduler's database on PostgreSQL (services/scheduler/store.py), each test on a schema of its own of the
session's server: what the multi-host path needs of it beyond what the SQLite tests show."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from services.scheduler.store import JOBS_TABLE, BulkJobStore, Lease, WatchStore, make_engine
from services.scheduler.watch import WatchPolicy
from shared.obligations import Obligation
from tests.pgschema import fresh_schema

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def obligation(n: int, send_in: timedelta) -> Obligation:
    return Obligation(obligation_id=f"A4-{n:024x}", rule="A4", source_paragraph="001 §7.5", person=None, bcu="13-LD",
                      recipients=["leeds.ppo@westyorkshire.police.uk"], send_at=NOW + send_in,
                      notify_by=NOW + send_in + timedelta(minutes=15), raised_at=NOW)


def test_instances_starting_together_create_the_tables_once(postgres_url: str):
    url = fresh_schema(postgres_url, "sched")
    errors: list[BaseException] = []
    go = threading.Barrier(4)

    def start() -> None:
        try:
            go.wait()
            WatchStore(make_engine(url)).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_commits_are_synchronous_except_apschedulers(postgres_url: str):
    url = fresh_schema(postgres_url, "sched")
    for durable, expected in ((True, "on"), (False, "off")):
        engine = make_engine(url, durable=durable)
        for _ in range(2):  # still so after the pool has had the connection back
            with engine.connect() as c:
                assert c.exec_driver_sql("SHOW synchronous_commit").scalar() == expected
        engine.dispose()


def test_lease_watches_and_jobs_round_trip(postgres_url: str):
    url = fresh_schema(postgres_url, "sched")
    store = WatchStore(make_engine(url))
    a, b = Lease(store.engine, "host-a:1:x", ttl_s=30.0), Lease(make_engine(url), "host-b:2:y", ttl_s=30.0)
    assert a.try_acquire() and not b.try_acquire() and a.try_acquire()
    a.release()
    assert b.try_acquire() and not a.try_acquire()

    policy = WatchPolicy()
    timers = [obligation(n, timedelta(minutes=n + 1)) for n in range(3)]
    store.put_many(timers, policy)
    store.put_many(timers[:1], policy)  # written again: replaced, not doubled
    assert store.count() == 3 and store.get(timers[0].obligation_id) == timers[0]

    jobs = BulkJobStore(engine=make_engine(url, durable=False), tablename=JOBS_TABLE)
    scheduler = AsyncIOScheduler(jobstores={"default": jobs}, timezone=UTC)
    jobs.start(scheduler, "default")  # creates APScheduler's table, on psycopg
    wanted, orphans = store.jobs_to_reconcile(jobs.jobs_t)
    assert sorted(oid for oid, _ in wanted) == sorted(o.obligation_id for o in timers) and orphans == []
    jobs.put_many([Job(scheduler, id=oid, func="builtins:print", args=(), kwargs={}, trigger=scheduler._create_trigger(
        "date", {"run_date": at}), executor="default", misfire_grace_time=60, coalesce=True, max_instances=1,
        next_run_time=at, name=oid) for oid, at in wanted])
    assert store.jobs_to_reconcile(jobs.jobs_t) == ([], [])
    store.close()
