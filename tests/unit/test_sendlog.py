"""The send log (services.notifier.sendlog): the pure dedup and claim decisions, and the log itself on a real
SQLite file and on a real PostgreSQL (each test on a schema of its own), through the same tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.notifier.sendlog import (
    InProgressElsewhere,
    SendLog,
    SendLogEntry,
    claim_timeout_for,
    decide,
    in_progress_elsewhere,
)
from tests.pgschema import fresh_schema

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CLAIM = timedelta(seconds=60)
DEADLINE = T0 + timedelta(hours=24)


def entry(state: str, **changes: object) -> SendLogEntry:
    base = SendLogEntry(
        obligation_id="A1-abc",
        recipient="leeds.ppo@westyorkshire.police.uk",
        state=state,  # type: ignore[arg-type]
        attempts=1,
        rule="A1",
        last_error="",
        last_code=None,
        message_id="<x@ppo-alerts>",
        template_version="0123456789ab",
        created_at=T0,
        updated_at=T0,
        sent_at=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# --- decide: a pure function of (previous entry, now, deadline) ----------------------------------------


@pytest.mark.parametrize(
    ("previous", "now", "expected"),
    [
        (None, T0, "send"),
        (None, DEADLINE + timedelta(days=1), "send"),  # nothing recorded: the deadline is not ours to judge
        (entry("sent", sent_at=T0), T0 + timedelta(minutes=1), "skip-already-sent"),
        (entry("sent", sent_at=T0), DEADLINE + timedelta(days=30), "skip-already-sent"),
        (entry("permanent-failure", last_code=550), T0, "skip-permanent"),
        (entry("temporary-failure", last_code=451), T0 + timedelta(minutes=5), "retry"),
        (entry("temporary-failure", last_code=451), DEADLINE - timedelta(seconds=1), "retry"),
        (entry("temporary-failure", last_code=451), DEADLINE, "skip-permanent"),
        (entry("queued"), T0 + timedelta(seconds=1), "retry"),  # crashed mid-transaction: at least once
        (entry("queued"), DEADLINE + timedelta(hours=1), "skip-permanent"),
    ],
)
def test_decide(previous: SendLogEntry | None, now: datetime, expected: str) -> None:
    assert decide(previous, now, DEADLINE) == expected


def test_decide_is_pure() -> None:
    previous = entry("temporary-failure")
    assert [decide(previous, T0, DEADLINE) for _ in range(3)] == ["retry"] * 3
    assert previous.state == "temporary-failure"


# --- in_progress_elsewhere: the claim rule, pure ---------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "now", "expected"),
    [
        (None, T0, False),  # nothing recorded: ours to take
        (entry("queued", claimed_by="b"), T0 + timedelta(seconds=5), True),  # b is sending right now
        (entry("queued", claimed_by="b"), T0 + CLAIM - timedelta(microseconds=1), True),
        (entry("queued", claimed_by="b"), T0 + CLAIM, False),  # b's claim lapsed: b died (or gave up)
        (entry("queued", claimed_by="a"), T0 + timedelta(seconds=5), False),  # our own (an outcome not recorded)
        (entry("sent", claimed_by="b", sent_at=T0), T0 + timedelta(seconds=5), False),  # decide() skips it
        (entry("temporary-failure", claimed_by="b"), T0 + timedelta(seconds=1), False),  # between b's attempts
        (entry("permanent-failure", claimed_by="b"), T0, False),
        (entry("queued", claimed_by=""), T0 + timedelta(seconds=5), True),  # a row from before claims: wait it out
    ],
)
def test_in_progress_elsewhere(previous: SendLogEntry | None, now: datetime, expected: bool) -> None:
    assert in_progress_elsewhere(previous, "a", now, CLAIM) is expected


def test_claim_timeout_is_twice_the_smtp_timeout() -> None:
    assert claim_timeout_for(30.0) == timedelta(seconds=60)
    assert claim_timeout_for(2.5) == timedelta(seconds=5)


# --- the log, on SQLite and on PostgreSQL -------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's send log lives: a fresh SQLite file, or a fresh schema of the session's PostgreSQL."""
    if request.param == "sqlite":
        return tmp_path / "state" / "sendlog.sqlite3"
    return fresh_schema(request.getfixturevalue("postgres_url"), "sendlog")


@pytest.fixture
def log(target: str | Path) -> Iterator[SendLog]:
    with SendLog(target, holder="a", claim_timeout=CLAIM) as opened:
        yield opened


@pytest.fixture
def other(target: str | Path, log: SendLog) -> Iterator[SendLog]:
    """A second notifier instance on the same database."""
    with SendLog(target, holder="b", claim_timeout=CLAIM) as opened:
        yield opened


ARGS = {"rule": "A1", "message_id": "<m@ppo-alerts>", "template_version": "v1"}


def test_sqlite_wal_and_full_sync(tmp_path: Path) -> None:
    with SendLog(tmp_path / "sendlog.sqlite3") as opened, opened.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_postgresql_commits_synchronously(postgres_url: str) -> None:
    with SendLog(fresh_schema(postgres_url, "sendlog")) as opened, opened.engine.connect() as c:
        assert c.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


def test_lifecycle_queued_then_sent(log: SendLog) -> None:
    assert log.get("A1-abc", "leeds.ppo@westyorkshire.police.uk") is None
    q = log.record_queued(
        "A1-abc",
        "leeds.ppo@westyorkshire.police.uk",
        rule="A1",
        message_id="<m@ppo-alerts>",
        template_version="v1",
        now=T0,
    )
    assert (q.state, q.attempts, q.created_at, q.sent_at, q.claimed_by) == ("queued", 1, T0, None, "a")
    s = log.record_sent(
        "A1-abc", "leeds.ppo@westyorkshire.police.uk", now=T0 + timedelta(seconds=2), response="2.0.0 OK"
    )
    assert (s.state, s.attempts, s.last_code, s.message_id, s.template_version) == (
        "sent",
        1,
        250,
        "<m@ppo-alerts>",
        "v1",
    )
    assert s.created_at == T0 and s.sent_at == T0 + timedelta(seconds=2)


def test_retries_count_attempts_and_keep_first_seen(log: SendLog) -> None:
    log.record_queued("A1-abc", "a@police.uk", now=T0, **ARGS)
    log.record_failure("A1-abc", "a@police.uk", permanent=False, error="451 try later", code=451, now=T0)
    log.record_queued("A1-abc", "a@police.uk", now=T0 + timedelta(seconds=1), **ARGS)
    e = log.get("A1-abc", "a@police.uk")
    assert e is not None
    assert (e.state, e.attempts, e.last_code, e.last_error) == ("queued", 2, 451, "451 try later")
    f = log.record_failure(
        "A1-abc",
        "a@police.uk",
        permanent=True,
        error="550 no such user",
        code=550,
        now=T0 + timedelta(seconds=2),
    )
    assert (f.state, f.attempts, f.created_at) == ("permanent-failure", 2, T0)


def test_failure_without_an_earlier_entry(log: SendLog) -> None:
    e = log.record_failure(
        "A1-abc", "x@gmail.com", permanent=True, error="domain-not-allowed", code=None, now=T0, rule="A1"
    )
    assert (e.state, e.attempts, e.rule) == ("permanent-failure", 0, "A1")


def test_keyed_by_obligation_and_recipient_case_insensitively(log: SendLog) -> None:
    log.record_sent("A1-abc", "Leeds.PPO@WestYorkshire.Police.uk", now=T0)
    assert log.get("A1-abc", "leeds.ppo@westyorkshire.police.uk") is not None
    assert log.get("A1-abc", "other@westyorkshire.police.uk") is None
    assert log.get("A1-abc#escalation", "leeds.ppo@westyorkshire.police.uk") is None
    assert [e.recipient for e in log.entries("A1-abc")] == ["leeds.ppo@westyorkshire.police.uk"]


def test_survives_a_restart(target: str | Path) -> None:
    log = SendLog(target)
    log.record_queued("A1-abc", "a@police.uk", now=T0, **ARGS)
    log.record_sent("A1-abc", "a@police.uk", now=T0)
    log.close()
    if isinstance(target, Path):
        # A separate connection (another process after a restart) sees the committed row.
        raw = sqlite3.connect(target)
        assert raw.execute("SELECT state FROM send_log").fetchall() == [("sent",)]
        raw.close()
    with SendLog(target) as again:  # another process, another holder
        previous = again.get("A1-abc", "a@police.uk")
        assert previous is not None and previous.state == "sent"
        assert decide(previous, T0 + timedelta(hours=1), previous.created_at + timedelta(hours=24)) == (
            "skip-already-sent"
        )


def test_refuses_naive_instants(log: SendLog) -> None:
    with pytest.raises(ValueError):
        log.record_sent("A1-abc", "a@police.uk", now=datetime(2026, 3, 2, 10, 0))


# --- claims: two instances on one database --------------------------------------------------------------


def test_a_live_claim_of_another_instance_is_not_taken(log: SendLog, other: SendLog) -> None:
    log.record_queued("A1-abc", "a@police.uk", now=T0, **ARGS)
    with pytest.raises(InProgressElsewhere) as busy:
        other.record_queued("A1-abc", "a@police.uk", now=T0 + timedelta(seconds=5), **ARGS)
    assert busy.value.entry.claimed_by == "a" and busy.value.expires_at == T0 + CLAIM
    assert "in progress at another notifier instance (a" in str(busy.value)
    e = log.get("A1-abc", "a@police.uk")
    assert e is not None and (e.state, e.attempts, e.claimed_by) == ("queued", 1, "a")  # nothing written
    # a's outcome lands as usual, and b's redelivery then finds it sent.
    log.record_sent("A1-abc", "a@police.uk", now=T0 + timedelta(seconds=6))
    assert decide(other.get("A1-abc", "a@police.uk"), T0 + timedelta(seconds=30), T0 + timedelta(hours=24)) == (
        "skip-already-sent"
    )


def test_an_expired_claim_is_taken_over(log: SendLog, other: SendLog) -> None:
    log.record_queued("A1-abc", "a@police.uk", now=T0, **ARGS)  # then a dies mid-transaction
    with pytest.raises(InProgressElsewhere):
        other.record_queued("A1-abc", "a@police.uk", now=T0 + CLAIM - timedelta(seconds=1), **ARGS)
    taken = other.record_queued("A1-abc", "a@police.uk", now=T0 + CLAIM, **ARGS)
    assert (taken.state, taken.attempts, taken.claimed_by, taken.created_at) == ("queued", 2, "b", T0)
    # a, if it was only slow, now finds b's claim and records nothing over it.
    late = log.record_failure("A1-abc", "a@police.uk", permanent=False, error="451", code=451,
                              now=T0 + CLAIM + timedelta(seconds=1))
    assert (late.state, late.claimed_by, late.last_error) == ("queued", "b", "")
    with pytest.raises(InProgressElsewhere):
        log.record_queued("A1-abc", "a@police.uk", now=T0 + CLAIM + timedelta(seconds=2), **ARGS)


def test_an_instance_retakes_its_own_claim_at_once(log: SendLog) -> None:
    log.record_queued("A1-abc", "a@police.uk", now=T0, **ARGS)  # the outcome was never recorded
    again = log.record_queued("A1-abc", "a@police.uk", now=T0 + timedelta(seconds=1), **ARGS)
    assert (again.attempts, again.claimed_by) == (2, "a")


def test_a_claim_between_attempts_is_free(log: SendLog, other: SendLog) -> None:
    log.record_queued("A1-abc", "a@police.uk", now=T0, **ARGS)
    log.record_failure("A1-abc", "a@police.uk", permanent=False, error="451", code=451, now=T0)
    taken = other.record_queued("A1-abc", "a@police.uk", now=T0 + timedelta(seconds=1), **ARGS)
    assert (taken.claimed_by, taken.attempts) == ("b", 2)


def test_sent_is_recorded_whoever_holds_the_claim(log: SendLog, other: SendLog) -> None:
    other.record_queued("A1-abc", "a@police.uk", now=T0, **ARGS)
    s = log.record_sent("A1-abc", "a@police.uk", now=T0 + timedelta(seconds=1))
    assert s.state == "sent"


def test_parks_are_republished_by_one_instance_at_a_time(log: SendLog, other: SendLog) -> None:
    def delay(_: int) -> float:
        return 10.0

    log.park("A1-1", "p.notifications", b"one", now=T0, delay_s=delay)
    log.park("A1-2", "p.notifications", b"two", now=T0 + timedelta(seconds=1), delay_s=delay)
    due = T0 + timedelta(seconds=20)
    assert [r.delivery_key for r in other.claim_redeliveries(due, limit=1)] == ["A1-1"]
    assert [r.delivery_key for r in log.claim_redeliveries(due)] == ["A1-2"]  # A1-1 is b's for now
    assert log.claim_redeliveries(due) == [] and other.claim_redeliveries(due) == []
    # b publishes A1-1 and marks it; a dies before marking A1-2: b takes it once a's hold has run out.
    other.mark_redelivered("A1-1", 1, now=due)
    assert log.next_redelivery_at() == due + timedelta(seconds=30)
    assert other.claim_redeliveries(due + timedelta(seconds=29)) == []
    assert [r.request for r in other.claim_redeliveries(due + timedelta(seconds=30))] == [b"two"]
    # A new park of the key is free for anyone again.
    again = log.park("A1-2", "p.notifications", b"two", now=due + timedelta(seconds=31), delay_s=delay)
    assert again.round == 2
    assert [r.round for r in log.claim_redeliveries(again.due_at)] == [2]


def test_old_sqlite_file_gains_the_claim_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    raw = sqlite3.connect(path)
    raw.executescript("""
        CREATE TABLE send_log (obligation_id TEXT NOT NULL, recipient TEXT NOT NULL, state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, rule TEXT NOT NULL DEFAULT '', last_error TEXT NOT NULL DEFAULT '',
            last_code INTEGER, message_id TEXT NOT NULL DEFAULT '', template_version TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, sent_at TEXT,
            PRIMARY KEY (obligation_id, recipient)) WITHOUT ROWID;
        CREATE TABLE redelivery (delivery_key TEXT PRIMARY KEY, topic TEXT NOT NULL, request BLOB NOT NULL,
            due_at TEXT NOT NULL, round INTEGER NOT NULL, published INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL) WITHOUT ROWID;
        INSERT INTO send_log VALUES ('A1-abc', 'a@police.uk', 'sent', 1, 'A1', '', 250, '<m@x>', 'v0',
            '2026-03-02T10:00:00+00:00', '2026-03-02T10:00:00+00:00', '2026-03-02T10:00:00+00:00');
        INSERT INTO redelivery VALUES ('A1-9', 'p.notifications', X'01', '2026-03-02T10:00:00+00:00', 1, 0,
            '2026-03-02T10:00:00+00:00');
    """)
    raw.close()
    with SendLog(path) as log:
        e = log.get("A1-abc", "a@police.uk")
        assert e is not None and (e.state, e.sent_at, e.claimed_by) == ("sent", T0, "")
        assert [r.delivery_key for r in log.claim_redeliveries(T0 + timedelta(microseconds=1))] == ["A1-9"]


def test_default_holders_sqlite_one_owner_postgresql_one_per_process(tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "log.sqlite"
    with SendLog(path) as before_the_crash:
        before_the_crash.record_queued("A1-abc", "a@police.uk", now=T0, **ARGS)
    with SendLog(path) as restarted:  # the file's one owner again: its own row, retried at once
        assert restarted.record_queued("A1-abc", "a@police.uk", now=T0 + timedelta(seconds=1), **ARGS).attempts == 2
    url = fresh_schema(postgres_url, "sendlog")
    with SendLog(url) as first, SendLog(url) as second:
        assert first.holder != second.holder
        first.record_queued("A1-abc", "a@police.uk", now=T0, **ARGS)
        with pytest.raises(InProgressElsewhere):
            second.record_queued("A1-abc", "a@police.uk", now=T0 + timedelta(seconds=1), **ARGS)
