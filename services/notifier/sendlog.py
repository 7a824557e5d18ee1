"""The durable send log: one row per (delivery key, recipient), and the pure dedup decision.

Why SQLite
----------
Kafka delivers a notification request at least once: after a crash, or a rebalance, the same request comes
again. What makes the *email* happen once is a record, kept by the notifier itself, of what it has already
handed to the mail server. That record must be

- local and synchronous: the handler writes it between the SMTP reply and the commit of the Kafka offset, so
  a network store would add a second failure mode to every message; a file next to the process has none;
- durable before the offset is committed: the database runs in WAL mode with `synchronous=FULL`, so every
  `COMMIT` has been fsync'd to disk when the call returns. The pipeline records the outcome before
  `deliver()` returns, and the caller commits the Kafka offset only after that, so a request whose offset
  was committed always has its outcome on disk;
- keyed exactly like the duty: (obligation id, recipient) is the primary key; a replay, a second feed or a
  restart finds the row and the decision (`decide`) says skip.

SQLite gives all of that in the standard library with one file; a notifier instance owns its file (one
consumer per partition; partitions are keyed by obligation id, so a given obligation is only ever handled by
the owner of its partition). When partitions move between instances, the file must move with them (or sit on
shared storage) for the dedup to hold across instances; the Message-ID is deterministic either way, so
receiving mail systems can also recognise a re-send.

States: `queued` (written, and fsync'd, just before the SMTP transaction starts), `sent` (the server accepted
the message), `temporary-failure` (4xx or connection trouble: retried until the deadline), `permanent-failure`
(5xx, a refused address, a message that cannot be rendered, or the retry deadline passed).

Redeliveries
------------
A request whose recipients are still failing temporarily after the pipeline's short in-call retries is parked
in a second table of the same file (`redelivery`: the request as it came from Kafka, its topic, when it is due,
the how-manieth redelivery it is) before the Kafka offset is committed. The notifier republishes it when it is
due and marks it published; a request that ends (sent or failed for good) is cleared. A park survives a crash
like the send log does; a crash between republishing and marking republishes once more, which the send log
makes harmless.

Residual duplicate window
-------------------------
Exactly once per recipient holds across crashes and restarts except in one window: the mail server has accepted
the message (its 250 reply to the end of DATA) and the notifier dies before the `sent` row is on disk. The row
still says `queued`, so the redelivered request sends again and the recipient receives the message twice, with
the same Message-ID (mail systems and people can recognise it as a repeat). The window is one SQLite commit
after the server's reply, a few milliseconds per message; only a crash (kill -9, power loss, out of memory), not
a clean stop, can fall into it. Closing it would mean skipping a `queued` row, which turns the same crash into a
message that may never have been sent: a silent loss, which the rule book forbids, so the notifier chooses the
rare duplicate. The other ambiguous case, a connection dropped after the whole message was sent but before the
server's reply, is treated the same way (temporary failure, retried) for the same reason.
`tests/integration/test_notifier_restart.py` kills the notifier (SIGKILL) twice mid-batch, outside this window,
and asserts exactly once per recipient.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

__all__ = ["Decision", "Redelivery", "SendLog", "SendLogEntry", "SendState", "decide"]

SendState = Literal["queued", "sent", "temporary-failure", "permanent-failure"]
Decision = Literal["send", "skip-already-sent", "skip-permanent", "retry"]
SEND_STATES: tuple[str, ...] = ("queued", "sent", "temporary-failure", "permanent-failure")


@dataclass(frozen=True)
class SendLogEntry:
    obligation_id: str  # the delivery key: the obligation id, or "<id>#escalation"
    recipient: str  # lower case
    state: SendState
    attempts: int  # SMTP transactions started
    rule: str
    last_error: str
    last_code: int | None
    message_id: str
    template_version: str
    created_at: datetime  # first time this (key, recipient) was seen: the retry deadline counts from here
    updated_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True)
class Redelivery:
    """A parked request: republish `request` on `topic` (key `delivery_key`) at `due_at`."""

    delivery_key: str
    topic: str
    request: bytes
    due_at: datetime
    round: int  # 1 for the first redelivery of this key, then 2, ...


def decide(previous: SendLogEntry | None, now: datetime, retry_deadline: datetime) -> Decision:
    """What to do with a request to send, given what the log says about the same (key, recipient).

    - nothing recorded: `send`;
    - already accepted by the server: `skip-already-sent` (a replay or a second feed, never a second email);
    - refused for good: `skip-permanent`;
    - a temporary failure, or `queued` (a crash between the start of the SMTP transaction and the outcome):
      `retry` while `now` is before `retry_deadline`, else `skip-permanent` (the caller records why).
    """
    if previous is None:
        return "send"
    if previous.state == "sent":
        return "skip-already-sent"
    if previous.state == "permanent-failure":
        return "skip-permanent"
    return "retry" if now < retry_deadline else "skip-permanent"


def _ts(instant: datetime) -> str:
    if instant.tzinfo is None:
        raise ValueError("send log instants must be aware")
    return instant.astimezone(UTC).isoformat()


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS send_log (
    obligation_id    TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state IN ('queued', 'sent', 'temporary-failure', 'permanent-failure')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    rule             TEXT NOT NULL DEFAULT '',
    last_error       TEXT NOT NULL DEFAULT '',
    last_code        INTEGER,
    message_id       TEXT NOT NULL DEFAULT '',
    template_version TEXT NOT NULL DEFAULT '',
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    sent_at          TEXT,
    PRIMARY KEY (obligation_id, recipient)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS send_log_state ON send_log (state, updated_at);
CREATE TABLE IF NOT EXISTS redelivery (
    delivery_key TEXT PRIMARY KEY,
    topic        TEXT NOT NULL,
    request      BLOB NOT NULL,
    due_at       TEXT NOT NULL,
    round        INTEGER NOT NULL,
    published    INTEGER NOT NULL DEFAULT 0,
    updated_at   TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS redelivery_due ON redelivery (published, due_at);
"""

_COLUMNS = (
    "obligation_id, recipient, state, attempts, rule, last_error, last_code, message_id, "
    "template_version, created_at, updated_at, sent_at"
)


class SendLog:
    """A SQLite file in WAL mode with synchronous=FULL. Every write is its own fsync'd transaction.

    Methods are synchronous and thread-safe (one connection behind a lock), so the async pipeline can call
    them through `asyncio.to_thread` without blocking the event loop on an fsync.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(path) != ":memory:" and str(mode).lower() != "wal":
            raise RuntimeError(f"send log {path}: could not switch to WAL mode (got {mode!r})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    # --- reads -------------------------------------------------------------------------------------------

    def get(self, obligation_id: str, recipient: str) -> SendLogEntry | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM send_log WHERE obligation_id = ? AND recipient = ?",
                (obligation_id, recipient.strip().lower()),
            ).fetchone()
        return None if row is None else self._entry(row)

    def entries(self, obligation_id: str | None = None) -> list[SendLogEntry]:
        with self._lock:
            if obligation_id is None:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM send_log ORDER BY created_at").fetchall()
            else:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM send_log WHERE obligation_id = ? ORDER BY recipient",
                    (obligation_id,),
                ).fetchall()
        return [self._entry(r) for r in rows]

    # --- writes (each one fsync'd before it returns) -----------------------------------------------------

    def record_queued(
        self,
        obligation_id: str,
        recipient: str,
        *,
        rule: str,
        message_id: str,
        template_version: str,
        now: datetime,
    ) -> SendLogEntry:
        """An SMTP transaction is about to start: attempts + 1, state `queued`."""
        return self._upsert(
            obligation_id,
            recipient,
            "queued",
            now,
            rule=rule,
            message_id=message_id,
            template_version=template_version,
            attempt=True,
        )

    def record_sent(
        self, obligation_id: str, recipient: str, *, now: datetime, response: str = ""
    ) -> SendLogEntry:
        return self._upsert(obligation_id, recipient, "sent", now, error=response, code=250, sent=True)

    def record_failure(
        self,
        obligation_id: str,
        recipient: str,
        *,
        permanent: bool,
        error: str,
        code: int | None,
        now: datetime,
        rule: str = "",
        message_id: str = "",
        template_version: str = "",
    ) -> SendLogEntry:
        state: SendState = "permanent-failure" if permanent else "temporary-failure"
        return self._upsert(
            obligation_id,
            recipient,
            state,
            now,
            error=error,
            code=code,
            rule=rule,
            message_id=message_id,
            template_version=template_version,
        )

    # --- redeliveries (each write fsync'd before it returns) -----------------------------------------------

    def park(
        self, delivery_key: str, topic: str, request: bytes, *, now: datetime, delay_s: Callable[[int], float]
    ) -> Redelivery:
        """Park `request` for a later redelivery: round = previous round + 1, due `delay_s(round)` from now."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT round FROM redelivery WHERE delivery_key = ?", (delivery_key,)
                ).fetchone()
                round_number = 1 if row is None else int(row[0]) + 1
                due = now + timedelta(seconds=delay_s(round_number))
                self._db.execute(
                    """
                    INSERT INTO redelivery (delivery_key, topic, request, due_at, round, published, updated_at)
                    VALUES (?, ?, ?, ?, ?, 0, ?)
                    ON CONFLICT (delivery_key) DO UPDATE SET
                        topic = excluded.topic, request = excluded.request, due_at = excluded.due_at,
                        round = excluded.round, published = 0, updated_at = excluded.updated_at
                    """,
                    (delivery_key, topic, request, _ts(due), round_number, _ts(now)),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Redelivery(delivery_key, topic, request, due.astimezone(UTC), round_number)

    def due_redeliveries(self, now: datetime, limit: int = 100) -> list[Redelivery]:
        """Parked requests due at `now` and not yet republished, earliest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT delivery_key, topic, request, due_at, round FROM redelivery "
                "WHERE published = 0 AND due_at <= ? ORDER BY due_at LIMIT ?",
                (_ts(now), limit),
            ).fetchall()
        return [Redelivery(str(k), str(t), bytes(r), datetime.fromisoformat(d), int(n)) for k, t, r, d, n in rows]

    def next_redelivery_at(self) -> datetime | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(due_at) FROM redelivery WHERE published = 0").fetchone()
        return None if row is None or row[0] is None else datetime.fromisoformat(row[0])

    def mark_redelivered(self, delivery_key: str, round_number: int, *, now: datetime) -> None:
        """The request of that round is back on its topic (a newer park of the same key is left alone)."""
        with self._lock:
            self._db.execute(
                "UPDATE redelivery SET published = 1, updated_at = ? WHERE delivery_key = ? AND round = ?",
                (_ts(now), delivery_key, round_number),
            )

    def clear_redelivery(self, delivery_key: str) -> None:
        """The request has ended (sent, or failed for good): nothing more to redeliver."""
        with self._lock:
            self._db.execute("DELETE FROM redelivery WHERE delivery_key = ?", (delivery_key,))

    def redeliveries(self) -> list[tuple[str, int, bool]]:
        """(delivery key, round, published) of every parked request: for tests and operators."""
        with self._lock:
            rows = self._db.execute(
                "SELECT delivery_key, round, published FROM redelivery ORDER BY delivery_key"
            ).fetchall()
        return [(str(k), int(n), bool(p)) for k, n, p in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SendLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------------------------

    def _upsert(
        self,
        obligation_id: str,
        recipient: str,
        state: SendState,
        now: datetime,
        *,
        error: str = "",
        code: int | None = None,
        rule: str = "",
        message_id: str = "",
        template_version: str = "",
        attempt: bool = False,
        sent: bool = False,
    ) -> SendLogEntry:
        key = (obligation_id, recipient.strip().lower())
        stamp = _ts(now)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    """
                    INSERT INTO send_log (obligation_id, recipient, state, attempts, rule, last_error,
                                          last_code, message_id, template_version, created_at, updated_at,
                                          sent_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (obligation_id, recipient) DO UPDATE SET
                        state = excluded.state,
                        attempts = send_log.attempts + ?,
                        rule = CASE WHEN excluded.rule != '' THEN excluded.rule ELSE send_log.rule END,
                        last_error = CASE WHEN ? THEN send_log.last_error ELSE excluded.last_error END,
                        last_code = CASE WHEN ? THEN send_log.last_code ELSE excluded.last_code END,
                        message_id = CASE WHEN excluded.message_id != '' THEN excluded.message_id
                                          ELSE send_log.message_id END,
                        template_version = CASE WHEN excluded.template_version != ''
                                                THEN excluded.template_version
                                                ELSE send_log.template_version END,
                        updated_at = excluded.updated_at,
                        sent_at = COALESCE(excluded.sent_at, send_log.sent_at)
                    """,
                    (
                        *key,
                        state,
                        1 if attempt else 0,
                        rule,
                        error,
                        code,
                        message_id,
                        template_version,
                        stamp,
                        stamp,
                        stamp if sent else None,
                        1 if attempt else 0,
                        attempt,
                        attempt,
                    ),
                )
                row = self._db.execute(
                    f"SELECT {_COLUMNS} FROM send_log WHERE obligation_id = ? AND recipient = ?", key
                ).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self._entry(row)

    @staticmethod
    def _entry(row: tuple[object, ...]) -> SendLogEntry:
        (
            obligation_id,
            recipient,
            state,
            attempts,
            rule,
            last_error,
            last_code,
            message_id,
            template_version,
            created_at,
            updated_at,
            sent_at,
        ) = row
        return SendLogEntry(
            obligation_id=str(obligation_id),
            recipient=str(recipient),
            state=state,  # type: ignore[arg-type]
            attempts=int(attempts),  # type: ignore[call-overload]
            rule=str(rule),
            last_error=str(last_error),
            last_code=None if last_code is None else int(last_code),  # type: ignore[call-overload]
            message_id=str(message_id),
            template_version=str(template_version),
            created_at=_parse(created_at),  # type: ignore[arg-type]
            updated_at=_parse(updated_at),  # type: ignore[arg-type]
            sent_at=_parse(sent_at),  # type: ignore[arg-type]
        )
