"""The send log (services.notifier.sendlog): the pure dedup decision, and durability on a real SQLite file."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.notifier.sendlog import SendLog, SendLogEntry, decide

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
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


# --- the SQLite log ------------------------------------------------------------------------------------


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sendlog.sqlite3"


def test_wal_and_full_sync(log_path: Path) -> None:
    with SendLog(log_path) as log:
        assert log._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert log._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_lifecycle_queued_then_sent(log_path: Path) -> None:
    with SendLog(log_path) as log:
        assert log.get("A1-abc", "leeds.ppo@westyorkshire.police.uk") is None
        q = log.record_queued(
            "A1-abc",
            "leeds.ppo@westyorkshire.police.uk",
            rule="A1",
            message_id="<m@ppo-alerts>",
            template_version="v1",
            now=T0,
        )
        assert (q.state, q.attempts, q.created_at, q.sent_at) == ("queued", 1, T0, None)
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


def test_retries_count_attempts_and_keep_first_seen(log_path: Path) -> None:
    with SendLog(log_path) as log:
        args = {"rule": "A1", "message_id": "<m@ppo-alerts>", "template_version": "v1"}
        log.record_queued("A1-abc", "a@police.uk", now=T0, **args)
        log.record_failure("A1-abc", "a@police.uk", permanent=False, error="451 try later", code=451, now=T0)
        log.record_queued("A1-abc", "a@police.uk", now=T0 + timedelta(seconds=1), **args)
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


def test_failure_without_an_earlier_entry(log_path: Path) -> None:
    with SendLog(log_path) as log:
        e = log.record_failure(
            "A1-abc", "x@gmail.com", permanent=True, error="domain-not-allowed", code=None, now=T0, rule="A1"
        )
        assert (e.state, e.attempts, e.rule) == ("permanent-failure", 0, "A1")


def test_keyed_by_obligation_and_recipient_case_insensitively(log_path: Path) -> None:
    with SendLog(log_path) as log:
        log.record_sent("A1-abc", "Leeds.PPO@WestYorkshire.Police.uk", now=T0)
        assert log.get("A1-abc", "leeds.ppo@westyorkshire.police.uk") is not None
        assert log.get("A1-abc", "other@westyorkshire.police.uk") is None
        assert log.get("A1-abc#escalation", "leeds.ppo@westyorkshire.police.uk") is None
        assert [e.recipient for e in log.entries("A1-abc")] == ["leeds.ppo@westyorkshire.police.uk"]


def test_survives_a_restart(log_path: Path) -> None:
    log = SendLog(log_path)
    log.record_queued(
        "A1-abc", "a@police.uk", rule="A1", message_id="<m@ppo-alerts>", template_version="v1", now=T0
    )
    log.record_sent("A1-abc", "a@police.uk", now=T0)
    log.close()
    # A separate connection (another process after a restart) sees the committed row.
    raw = sqlite3.connect(log_path)
    assert raw.execute("SELECT state FROM send_log").fetchall() == [("sent",)]
    raw.close()
    with SendLog(log_path) as again:
        previous = again.get("A1-abc", "a@police.uk")
        assert previous is not None and previous.state == "sent"
        assert decide(previous, T0 + timedelta(hours=1), previous.created_at + timedelta(hours=24)) == (
            "skip-already-sent"
        )


def test_refuses_naive_instants(log_path: Path) -> None:
    with SendLog(log_path) as log, pytest.raises(ValueError):
        log.record_sent("A1-abc", "a@police.uk", now=datetime(2026, 3, 2, 10, 0))
