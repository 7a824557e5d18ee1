"""The durable send log: one row per (delivery key, recipient), the pure dedup and claim decisions.

What it is for
--------------
Kafka delivers a notification request at least once: after a crash, or a rebalance, the same request comes
again. What makes the *email* happen once is a record of what has already been handed to the mail server. That
record must be

- durable before the offset is committed: every write is its own committed transaction, on disk when the call
  returns. The pipeline records the outcome before `deliver()` returns, and the caller commits the Kafka offset
  only after that, so a request whose offset was committed always has its outcome recorded;
- written before the mail is: `record_queued` commits before the SMTP transaction starts (insert-before-send);
- keyed exactly like the duty: (obligation id, recipient) is the primary key; a replay, a second feed or a
  restart finds the row and the decision (`decide`) says skip.

Where it lives
--------------
One SQLAlchemy Core implementation, two databases (the upsert with a condition, `INSERT ... ON CONFLICT ... DO
UPDATE ... WHERE ... RETURNING`, is the same SQL in both; only the engine set-up differs, so the one claim rule is
the one tested against both):

- a SQLite file in the state dir (default; one node): WAL mode, `synchronous=FULL` (every COMMIT fsync'd),
  every transaction `BEGIN IMMEDIATE` (one writer at a time, no lock upgrade races);
- PostgreSQL, shared by every notifier instance (PPO_NOTIFIER_SENDLOG_URL), as GOV.UK Notify keeps its
  notification state: when Kafka moves a partition, the new owner sees every send the old one made. Sessions
  run with `synchronous_commit=on`, so a COMMIT has reached the server's WAL on disk when it returns.

Claims: two instances, one request
----------------------------------
When a partition moves, its new owner can be handed a request that the previous owner, still alive, is in the
middle of sending: its row says `queued`, written seconds ago. Sending again would be a duplicate. So
`record_queued` is a claim: it takes the row only when it is not `queued`, or is this instance's own, or its
`queued` is older than the claim timeout (`claim_timeout_for`: twice the SMTP timeout, 60 s by default). An
instance that does not get it raises `InProgressElsewhere`; the pipeline reports a temporary failure ("in
progress at another instance") and the request is parked for a later redelivery, which then finds `sent`, or an
expired claim of an instance that died (sent again: at least once). The claim is honoured from the other side
too: the pipeline starts an SMTP transaction only while its claim has time left, and abandons one that would
outlast it (`DeliveryPipeline`); failure rows never overwrite another instance's live claim. Instants are those
of the instances' own clocks: keep them in NTP sync, well within the pipeline's margin (5 s by default).
On the single-node SQLite file every process is the same holder ("local"): the file has one owner, so a restart
after a crash retries its `queued` rows at once, as before claims. On PostgreSQL each process is its own holder
(host:pid:random), so a crashed instance's `queued` rows wait for its claim to lapse, whoever picks them up.

States: `queued` (written just before the SMTP transaction starts), `sent` (the server accepted the message),
`temporary-failure` (4xx or connection trouble: retried until the deadline), `permanent-failure` (5xx, a refused
address, a message that cannot be rendered, or the retry deadline passed).

Redeliveries
------------
A request whose recipients are still failing temporarily after the pipeline's short in-call retries is parked
in a second table of the same database (`redelivery`: the request as it came from Kafka, its topic, when it is
due, the how-manieth redelivery it is) before the Kafka offset is committed. A notifier republishes it when it is
due and marks it published; a request that ends (sent or failed for good) is cleared. With several instances,
any of them republishes any park (one that parked and died is covered by the others): `claim_redeliveries`
takes due rows for a short while (`SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL, the write lock on SQLite),
so two instances do not publish the same one; a claimer that dies leaves it to the next once the claim lapses.
A crash between republishing and marking republishes once more, which the send log makes harmless.

Residual duplicate window
-------------------------
Exactly once per recipient holds across crashes, restarts and rebalances except in one window: the mail server has
accepted the message (its 250 reply to the end of DATA) and the `sent` row is not committed, because the instance
died first (kill -9, power loss, out of memory; not a clean stop), or, with several instances, because it was
paused past its claim with the message already written (a frozen VM, a clock jump beyond the margin). The row still
says `queued`; the redelivered request is sent again (on SQLite by the restarted process, on PostgreSQL by any
instance once the claim timeout has passed since the row was written) and the recipient receives the message twice,
with the same Message-ID (mail systems and people can recognise it as a repeat). The window is one database commit
after the server's reply: milliseconds on a local disk, one round trip more to a shared PostgreSQL. Closing it
would mean never retrying a `queued` row, which turns the same crash into a message that may never have been sent:
a silent loss, which the rule book forbids, so the notifier chooses the rare duplicate. The other ambiguous case, a
connection dropped (or a transaction abandoned at the end of its claim) after the whole message was sent but before
the server's reply, is treated the same way (temporary failure, retried) for the same reason.
`tests/integration/test_notifier_restart.py` kills the notifier (SIGKILL) twice mid-batch, outside this window,
and asserts exactly once per recipient; `tests/integration/test_notifier_cluster.py` does it with two instances
sharing PostgreSQL and a consumer group, one killed so its partitions move to the other.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    TIMESTAMP,
    CheckConstraint,
    Column,
    Connection,
    Dialect,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "CLAIM_FACTOR",
    "Decision",
    "InProgressElsewhere",
    "Redelivery",
    "SendLog",
    "SendLogEntry",
    "SendState",
    "claim_timeout_for",
    "decide",
    "in_progress_elsewhere",
]

SendState = Literal["queued", "sent", "temporary-failure", "permanent-failure"]
Decision = Literal["send", "skip-already-sent", "skip-permanent", "retry"]
SEND_STATES: tuple[str, ...] = ("queued", "sent", "temporary-failure", "permanent-failure")
CLAIM_FACTOR = 2.0  # claim timeout = this x the SMTP timeout (module docstring)
DEFAULT_CLAIM_TIMEOUT = timedelta(seconds=CLAIM_FACTOR * 30.0)  # the SMTP timeout's default is 30 s
SQLITE_HOLDER = "local"  # every process on a SQLite send log (see SendLog.__init__)
REDELIVERY_HOLD = timedelta(seconds=30)  # a republisher's claim on a due park: one Kafka publish, with room


def claim_timeout_for(smtp_timeout_s: float) -> timedelta:
    """How long a `queued` row keeps other instances off: `CLAIM_FACTOR` x the SMTP timeout (per step). The
    pipeline abandons a transaction that would outlast it, so it is a bound by construction, not a guess."""
    return timedelta(seconds=CLAIM_FACTOR * smtp_timeout_s)


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
    updated_at: datetime  # for a `queued` row: when its claim was taken
    sent_at: datetime | None
    claimed_by: str = ""  # the instance that wrote the row last (for `queued`: the claim's holder)


@dataclass(frozen=True)
class Redelivery:
    """A parked request: republish `request` on `topic` (key `delivery_key`) at `due_at`."""

    delivery_key: str
    topic: str
    request: bytes
    due_at: datetime
    round: int  # 1 for the first redelivery of this key, then 2, ...


class InProgressElsewhere(Exception):  # noqa: N818 - a verdict, not a fault
    """`record_queued` found a live claim of another instance: that one is sending; do not."""

    def __init__(self, entry: SendLogEntry, claim_timeout: timedelta) -> None:
        self.entry = entry
        self.expires_at = entry.updated_at + claim_timeout
        super().__init__(
            f"in progress at another notifier instance ({entry.claimed_by or 'unknown'}, queued at "
            f"{entry.updated_at.isoformat()}; its claim lapses at {self.expires_at.isoformat()})"
        )


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


def in_progress_elsewhere(
    previous: SendLogEntry | None, holder: str, now: datetime, claim_timeout: timedelta
) -> bool:
    """True when another instance holds a live claim on the row: it says `queued`, written by someone else, less
    than `claim_timeout` before `now`. The send log's conditional writes apply exactly this rule, atomically."""
    return (
        previous is not None
        and previous.state == "queued"
        and previous.claimed_by != holder
        and previous.updated_at > now - claim_timeout
    )


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("send log instants must be aware")
    return instant.astimezone(UTC)


class _Instant(TypeDecorator[datetime]):
    """An aware instant: `timestamptz` on PostgreSQL; on SQLite the ISO text the file has always held (UTC, so
    text order is time order)."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(TIMESTAMP(timezone=True))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = _aware(value)
        return value if dialect.name == "postgresql" else value.isoformat(timespec="microseconds")

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        found = datetime.fromisoformat(value) if isinstance(value, str) else value
        return _aware(found)


metadata = MetaData()
send_log = Table(
    "send_log", metadata,
    Column("obligation_id", Text, primary_key=True),
    Column("recipient", Text, primary_key=True),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("rule", Text, nullable=False, server_default=""),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("last_code", Integer, nullable=True),
    Column("message_id", Text, nullable=False, server_default=""),
    Column("template_version", Text, nullable=False, server_default=""),
    Column("created_at", _Instant, nullable=False),
    Column("updated_at", _Instant, nullable=False),
    Column("sent_at", _Instant, nullable=True),
    Column("claimed_by", Text, nullable=False, server_default=""),
    CheckConstraint("state IN ('queued', 'sent', 'temporary-failure', 'permanent-failure')", name="send_log_state_ok"),
    Index("send_log_state", "state", "updated_at"),
    sqlite_with_rowid=False,
)
redelivery = Table(
    "redelivery", metadata,
    Column("delivery_key", Text, primary_key=True),
    Column("topic", Text, nullable=False),
    Column("request", LargeBinary, nullable=False),
    Column("due_at", _Instant, nullable=False),
    Column("round", Integer, nullable=False),
    Column("published", Integer, nullable=False, server_default="0"),
    Column("updated_at", _Instant, nullable=False),
    Column("claimed_by", Text, nullable=False, server_default=""),  # the instance republishing it ...
    Column("claimed_until", _Instant, nullable=True),  # ... until then (NULL: nobody)
    Index("redelivery_due", "published", "due_at"),
    sqlite_with_rowid=False,
)
# Columns added since the first SQLite send logs: an older file gets them at start-up (ALTER TABLE ADD COLUMN).
_ADDED = {
    "send_log": {"claimed_by": "TEXT NOT NULL DEFAULT ''"},
    "redelivery": {"claimed_by": "TEXT NOT NULL DEFAULT ''", "claimed_until": "TEXT"},
}
_SCHEMA_LOCK = 0x5050_4F53  # PostgreSQL advisory lock: instances starting together create the tables once
_ENTRY_COLUMNS = (
    send_log.c.obligation_id, send_log.c.recipient, send_log.c.state, send_log.c.attempts, send_log.c.rule,
    send_log.c.last_error, send_log.c.last_code, send_log.c.message_id, send_log.c.template_version,
    send_log.c.created_at, send_log.c.updated_at, send_log.c.sent_at, send_log.c.claimed_by,
)


def default_holder() -> str:
    """This process's name in claims: host, pid and a random part (a restarted process is a new holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _engine(target: str | Path) -> Engine:
    url = str(target)
    if "://" not in url:  # a file path: the single-node SQLite file
        if url != ":memory:":
            Path(url).parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{url}"
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 10.0},
            poolclass=StaticPool if memory else None,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.isolation_level = None  # transactions are ours (BEGIN IMMEDIATE below)
            mode = dbapi_connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if not memory and str(mode).lower() != "wal":
                raise RuntimeError(f"send log {url}: could not switch to WAL mode (got {mode!r})")
            dbapi_connection.execute("PRAGMA synchronous=FULL")  # every COMMIT fsync'd
            dbapi_connection.execute("PRAGMA busy_timeout=10000")

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock from the start: no upgrade deadlock

        return engine
    if not url.startswith("postgresql"):
        raise ValueError(f"send log: unsupported database URL {url.split(':', 1)[0]}:... (sqlite or postgresql)")
    engine = create_engine(url, pool_pre_ping=True)

    @event.listens_for(engine, "connect")
    def _durable(dbapi_connection: Any, _: Any) -> None:
        # Whatever the server's default: a commit returns once it is in the WAL on disk. Committed, so the pool's
        # rollback on check-in does not undo it.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO on")
        dbapi_connection.commit()

    return engine


class SendLog:
    """The send log on SQLite (a path) or PostgreSQL (a `postgresql+psycopg://` URL). Every write is its own
    committed transaction.

    Methods are synchronous and thread-safe (a connection per call from the engine's pool), so the async pipeline
    calls them through `asyncio.to_thread` without blocking the event loop on a commit.
    """

    def __init__(
        self,
        target: str | Path,
        *,
        holder: str | None = None,
        claim_timeout: timedelta = DEFAULT_CLAIM_TIMEOUT,
    ) -> None:
        if claim_timeout <= timedelta(0):
            raise ValueError("claim_timeout must be positive")
        self.target = target
        self.path = Path(target) if "://" not in str(target) else None
        self.claim_timeout = claim_timeout
        self.engine = _engine(target)
        self.dialect = self.engine.dialect.name
        self._statements: dict[tuple[bool, bool], Any] = {}
        # A SQLite file has one owner (one instance per state dir), so a restarted process is the same holder and
        # retries its own `queued` rows at once, as before claims; on a shared database, every process is its own.
        self.holder = holder or (SQLITE_HOLDER if self.dialect == "sqlite" else default_holder())
        self._create_schema()

    def _create_schema(self) -> None:
        with self.engine.begin() as c:
            if self.dialect == "postgresql":
                c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})  # DDL is transactional
            metadata.create_all(c)
            found = inspect(c)
            for table, added in _ADDED.items():
                have = {col["name"] for col in found.get_columns(table)}
                for name, ddl in added.items():
                    if name not in have:
                        c.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}")

    # --- reads -------------------------------------------------------------------------------------------

    def get(self, obligation_id: str, recipient: str) -> SendLogEntry | None:
        with self.engine.begin() as c:
            return self._get(c, obligation_id, recipient.strip().lower())

    def entries(self, obligation_id: str | None = None) -> list[SendLogEntry]:
        q = select(*_ENTRY_COLUMNS)
        if obligation_id is None:
            q = q.order_by(send_log.c.created_at, send_log.c.obligation_id, send_log.c.recipient)
        else:
            q = q.where(send_log.c.obligation_id == obligation_id).order_by(send_log.c.recipient)
        with self.engine.begin() as c:
            return [self._entry(r) for r in c.execute(q)]

    # --- writes (each one committed before it returns) ---------------------------------------------------

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
        """Claim the row, an SMTP transaction is about to start: attempts + 1, state `queued`, this holder.
        Raises `InProgressElsewhere` (nothing written) when another instance's claim is still live."""
        entry, written = self._upsert(
            obligation_id, recipient, "queued", now, rule=rule, message_id=message_id,
            template_version=template_version, attempt=True, only_if_free=True,
        )
        if not written:
            raise InProgressElsewhere(entry, self.claim_timeout)
        return entry

    def record_sent(
        self, obligation_id: str, recipient: str, *, now: datetime, response: str = ""
    ) -> SendLogEntry:
        # Unconditional: the server accepted it, whoever holds the row now; `sent` stops every later send.
        return self._upsert(obligation_id, recipient, "sent", now, error=response, code=250, sent=True)[0]

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
        """Record a failure, unless another instance holds a live claim (it is sending: its outcome will be the
        one that counts); returns the row as it now is."""
        state: SendState = "permanent-failure" if permanent else "temporary-failure"
        return self._upsert(
            obligation_id, recipient, state, now, error=error, code=code, rule=rule, message_id=message_id,
            template_version=template_version, only_if_free=True,
        )[0]

    # --- redeliveries (each write committed before it returns) -------------------------------------------

    def park(
        self, delivery_key: str, topic: str, request: bytes, *, now: datetime, delay_s: Callable[[int], float]
    ) -> Redelivery:
        """Park `request` for a later redelivery: round = previous round + 1, due `delay_s(round)` from now."""
        now = _aware(now)
        r = redelivery
        with self.engine.begin() as c:
            previous = c.execute(
                select(r.c.round).where(r.c.delivery_key == delivery_key).with_for_update()
            ).scalar()
            round_number = 1 if previous is None else int(previous) + 1
            due = now + timedelta(seconds=delay_s(round_number))
            values = {"delivery_key": delivery_key, "topic": topic, "request": request, "due_at": due,
                      "round": round_number, "published": 0, "updated_at": now, "claimed_by": "",
                      "claimed_until": None}
            stmt = self._insert(r).values(**values)
            c.execute(stmt.on_conflict_do_update(
                index_elements=[r.c.delivery_key],
                set_={k: stmt.excluded[k] for k in values if k != "delivery_key"},
            ))
        return Redelivery(delivery_key, topic, request, due, round_number)

    def due_redeliveries(self, now: datetime, limit: int = 100) -> list[Redelivery]:
        """Parked requests due at `now` and not yet republished, earliest first (a read: see
        `claim_redeliveries` to republish them)."""
        r = redelivery
        q = (select(r.c.delivery_key, r.c.topic, r.c.request, r.c.due_at, r.c.round)
             .where(r.c.published == 0, r.c.due_at <= _aware(now)).order_by(r.c.due_at, r.c.delivery_key)
             .limit(limit))
        with self.engine.begin() as c:
            return [Redelivery(str(k), str(t), bytes(b), d, int(n)) for k, t, b, d, n in c.execute(q)]

    def claim_redeliveries(
        self, now: datetime, limit: int = 100, hold: timedelta = REDELIVERY_HOLD
    ) -> list[Redelivery]:
        """Due parks nobody else is republishing, taken by this instance for `hold` (earliest first): publish
        each, then `mark_redelivered`. Rows another instance is taking at the same moment are skipped, not
        waited for."""
        now = _aware(now)
        r = redelivery
        free = or_(r.c.claimed_until.is_(None), r.c.claimed_until <= now)
        q = (select(r.c.delivery_key, r.c.topic, r.c.request, r.c.due_at, r.c.round)
             .where(r.c.published == 0, r.c.due_at <= now, free).order_by(r.c.due_at, r.c.delivery_key)
             .limit(limit).with_for_update(skip_locked=True))
        with self.engine.begin() as c:
            rows = [Redelivery(str(k), str(t), bytes(b), d, int(n)) for k, t, b, d, n in c.execute(q)]
            if rows:
                c.execute(update(r).where(r.c.delivery_key.in_([x.delivery_key for x in rows]))
                          .values(claimed_by=self.holder, claimed_until=now + hold))
        return rows

    def next_redelivery_at(self) -> datetime | None:
        """When the next park can be republished: its due time, or the end of another instance's claim on it."""
        r = redelivery
        ready = case((r.c.claimed_until > r.c.due_at, r.c.claimed_until), else_=r.c.due_at)
        with self.engine.begin() as c:
            found = c.execute(select(func.min(ready)).where(r.c.published == 0)).scalar()
        return None if found is None else _aware(found)

    def mark_redelivered(self, delivery_key: str, round_number: int, *, now: datetime) -> None:
        """The request of that round is back on its topic (a newer park of the same key is left alone)."""
        r = redelivery
        with self.engine.begin() as c:
            c.execute(update(r).where(r.c.delivery_key == delivery_key, r.c.round == round_number)
                      .values(published=1, updated_at=_aware(now), claimed_until=None))

    def clear_redelivery(self, delivery_key: str) -> None:
        """The request has ended (sent, or failed for good): nothing more to redeliver."""
        with self.engine.begin() as c:
            c.execute(delete(redelivery).where(redelivery.c.delivery_key == delivery_key))

    def redeliveries(self) -> list[tuple[str, int, bool]]:
        """(delivery key, round, published) of every parked request: for tests and operators."""
        r = redelivery
        with self.engine.begin() as c:
            rows = c.execute(select(r.c.delivery_key, r.c.round, r.c.published).order_by(r.c.delivery_key))
            return [(str(k), int(n), bool(p)) for k, n, p in rows]

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> SendLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------------------------

    def _insert(self, table: Table) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

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
        only_if_free: bool = False,
    ) -> tuple[SendLogEntry, bool]:
        """Insert or update the row in one statement; with `only_if_free`, an existing row is changed only when
        no other instance holds a live claim on it (`in_progress_elsewhere`, as SQL). Returns the row as it now is,
        and whether this call wrote it."""
        now = _aware(now)
        key = (obligation_id, recipient.strip().lower())
        params = {
            "p_obligation_id": key[0], "p_recipient": key[1], "p_state": state, "p_attempts": 1 if attempt else 0,
            "p_rule": rule, "p_error": error, "p_code": code, "p_message_id": message_id,
            "p_template_version": template_version, "p_now": now, "p_sent_at": now if sent else None,
            "p_holder": self.holder, "p_cutoff": now - self.claim_timeout,
        }
        with self.engine.begin() as c:
            row = c.execute(self._upsert_statement(attempt, only_if_free), params).first()
            if row is None:  # the condition kept the row as it was: say what it is
                current = self._get(c, *key)
                assert current is not None
                return current, False
        return self._entry(row), True

    def _upsert_statement(self, attempt: bool, only_if_free: bool) -> Any:
        """The upsert, built once per shape with bound parameters (building it per call cost more than the
        commit)."""
        found = self._statements.get((attempt, only_if_free))
        if found is not None:
            return found
        t = send_log
        instant = _Instant()
        now = bindparam("p_now", type_=instant)
        holder = bindparam("p_holder", type_=Text())
        stmt = self._insert(t).values(
            obligation_id=bindparam("p_obligation_id"), recipient=bindparam("p_recipient"),
            state=bindparam("p_state"), attempts=bindparam("p_attempts"), rule=bindparam("p_rule"),
            last_error=bindparam("p_error"), last_code=bindparam("p_code", type_=Integer()),
            message_id=bindparam("p_message_id"), template_version=bindparam("p_template_version"),
            created_at=now, updated_at=now, sent_at=bindparam("p_sent_at", type_=instant), claimed_by=holder,
        )
        x = stmt.excluded
        free: ColumnElement[bool] | None = None
        if only_if_free:
            free = or_(t.c.state != "queued", t.c.claimed_by == holder,
                       t.c.updated_at <= bindparam("p_cutoff", type_=instant))
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.obligation_id, t.c.recipient],
            set_={
                "state": x.state,
                "attempts": t.c.attempts + x.attempts,
                "rule": case((x.rule != "", x.rule), else_=t.c.rule),
                # An attempt starting keeps the last error on record (what the retry is about).
                "last_error": t.c.last_error if attempt else x.last_error,
                "last_code": t.c.last_code if attempt else x.last_code,
                "message_id": case((x.message_id != "", x.message_id), else_=t.c.message_id),
                "template_version": case((x.template_version != "", x.template_version),
                                         else_=t.c.template_version),
                "updated_at": x.updated_at,
                "sent_at": func.coalesce(x.sent_at, t.c.sent_at),
                "claimed_by": x.claimed_by,
            },
            where=free,
        ).returning(*_ENTRY_COLUMNS)
        self._statements[(attempt, only_if_free)] = stmt
        return stmt

    def _get(self, c: Connection, obligation_id: str, recipient: str) -> SendLogEntry | None:
        row = c.execute(select(*_ENTRY_COLUMNS).where(
            send_log.c.obligation_id == obligation_id, send_log.c.recipient == recipient)).first()
        return None if row is None else self._entry(row)

    @staticmethod
    def _entry(row: Any) -> SendLogEntry:
        return SendLogEntry(
            obligation_id=str(row.obligation_id),
            recipient=str(row.recipient),
            state=row.state,
            attempts=int(row.attempts),
            rule=str(row.rule),
            last_error=str(row.last_error),
            last_code=None if row.last_code is None else int(row.last_code),
            message_id=str(row.message_id),
            template_version=str(row.template_version),
            created_at=row.created_at,
            updated_at=row.updated_at,
            sent_at=row.sent_at,
            claimed_by=str(row.claimed_by),
        )
