"""`ppo-alerts simulate` (contract §3): the live rule, timing and rendering code, driven by a virtual clock.

Intake's translation, the rules ledger and the notifier's templates run exactly as they do live; only
Kafka, SMTP and the wall clock are replaced: timers sit in a heap and fire as the clock passes them.
"""

from __future__ import annotations

import gc
import heapq
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from services.intake.translate import PART_NOT_TAKEN, not_taken, translate_many
from services.rules.ledger import Decision, Ledger
from services.rules.rulebook import RuleBook, RuleTimings
from shared import ack
from shared.directory import Directory
from shared.errors import InputRejected
from shared.obligations import HistoryEntry, Obligation
from shared.register import Register

PROGRESS_EVERY_LINES = 5000  # progress is reported on inputs longer than this...
PROGRESS_EVERY_SECONDS = 2.0  # ...at the first multiple of it, then at most this often


class SimulationError(Exception):
    """The simulation cannot run at all (bad arguments, unreadable files)."""


def parse_instant(text: Any, what: str) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be an ISO 8601 instant with an offset")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an ISO 8601 instant") from None
    if value.tzinfo is None:
        raise ValueError(f"{what} {text!r} has no offset (write e.g. 2026-03-02T10:15:00Z)")
    return value.astimezone(UTC)


@dataclass
class Rejection:
    line: int
    reason: str
    problems: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A recipient the message could not be produced for (permanent: the same input fails the same way)."""

    address: str
    reason: str


class MessageSink:
    """Where fired obligations go: nowhere (benchmarks) or an outbox of .eml files.

    `deliver` returns the recipients it refused; when that is every recipient, the obligation is `failed`."""

    def deliver(self, o: Obligation, at: datetime) -> list[Refusal]:
        return []


# The outbox's acknowledgement links: the base URL the services are configured with (as shared/ack.py
# ack_base_url: PPO_ACK_BASE_URL, else PPO_PUBLIC_BASE_URL), else this placeholder, which resolves nowhere (.invalid,
# RFC 2606). They are signed with a fixed, public key, never PPO_ACK_SECRET: obligation ids are deterministic, so a
# simulation of real events signed with the live key would write links that acknowledge live obligations.
PLACEHOLDER_ACK_BASE_URL = "https://ack.invalid"
SIMULATION_ACK_KEY = b"ppo-alerts simulate: links in an outbox acknowledge nothing"
ACK_BASE_URL_VARIABLES = ("PPO_ACK_BASE_URL", "PPO_PUBLIC_BASE_URL")


def configured_ack_base_url(environ: Mapping[str, str] | None = None) -> str:
    """The base URL for the outbox's links; SimulationError when the configured one would be refused live."""
    from shared.neutral_url import base_url_problem

    env = os.environ if environ is None else environ
    for name in ACK_BASE_URL_VARIABLES:
        if value := env.get(name, "").strip():
            if problem := base_url_problem(value):
                raise SimulationError(f"{name}: {problem}")
            return value
    return PLACEHOLDER_ACK_BASE_URL


class OutboxSink(MessageSink):
    """One RFC 5322 file per (obligation, recipient), rendered by the notifier's own templates, with the
    acknowledgement link the notifier would put in (its shape and base URL; see SIMULATION_ACK_KEY)."""

    def __init__(self, outbox: Path, sender: str = "ppo-alerts@localhost.invalid",
                 ack_base_url: str = PLACEHOLDER_ACK_BASE_URL, ack_ttl: timedelta | None = None) -> None:
        from services.notifier.render import Renderer, RenderError
        from shared.settings import Settings

        self.outbox = outbox
        self.sender = sender
        self.ack_base_url = ack_base_url
        self.ack_ttl = ack_ttl or timedelta(days=Settings.model_fields["ack_link_ttl_days"].default)
        self.renderer = Renderer()
        self._render_error = RenderError
        outbox.mkdir(parents=True, exist_ok=True)

    def deliver(self, o: Obligation, at: datetime) -> list[Refusal]:
        refused: list[Refusal] = []
        for address in o.recipients:
            role = o.recipient_roles.get(address, "")
            try:
                ack_url = ack.link(self.ack_base_url, SIMULATION_ACK_KEY, o.obligation_id, address,
                                   ack.expiry(at, self.ack_ttl))
                message = self.renderer.render(o, address, role, ack_url, at)
                data = bytes(message.to_email(self.sender))
            except self._render_error as exc:  # as live: a message that cannot be produced is refused for good
                refused.append(Refusal(address, f"{getattr(exc, 'reason', 'render-error')}: {exc}"))
                continue
            except Exception as exc:  # a rendering bug: same input, same failure (the live notifier agrees)
                refused.append(Refusal(address, f"render-error: {type(exc).__name__}: {exc}"))
                continue
            safe = address.replace("@", "_at_")
            (self.outbox / f"{o.obligation_id}__{safe}.eml").write_bytes(data)
        return refused


class SimulationEngine:
    """Virtual time: `feed` one payload at its instant; timers due on the way fire first."""

    def __init__(self, register: Register, directory: Directory, start: datetime,
                 timings: RuleTimings | None = None, sink: MessageSink | None = None) -> None:
        self.book = RuleBook(register, directory, timings)
        self.ledger = Ledger(self.book)
        self.sink = sink or MessageSink()
        self.now = start
        self._heap: list[tuple[datetime, int, str]] = []
        self._seq = 0
        self._seen_events: set[str] = set()
        self.rejected: list[Rejection] = []
        self.ignored: Counter[str] = Counter()
        self._next_review, self._review_label = self.book.list_review_at(start)
        self._due = self._next_review  # the earliest of the next timer and the next review: one test per event
        for entry in register.entries():  # R for register timers is when the register was loaded
            self._apply(self.ledger.on_register_loaded(entry, start))

    @property
    def events_in(self) -> int:
        """Canonical events evaluated (each id once)."""
        return len(self._seen_events)

    def _apply(self, decision: Decision) -> None:
        for o in decision.raised:
            if o.status == "pending":
                self._seq += 1
                heapq.heappush(self._heap, (o.send_at, self._seq, o.obligation_id))
                if o.send_at < self._due:
                    self._due = o.send_at

    def advance(self, to: datetime) -> None:
        """Fire, in order, every timer (and calendar review) due up to `to`; the clock ends at `to`."""
        if self._due > to:  # nothing due: the usual case
            if to > self.now:
                self.now = to
            return
        while True:
            next_timer = self._heap[0][0] if self._heap else None
            if self._next_review <= to and (next_timer is None or self._next_review <= next_timer):
                self.now = self._next_review
                self._apply(self.ledger.list_reviews(self._next_review, self._review_label))
                self._next_review, self._review_label = self.book.list_review_at(self._next_review)
                continue
            if next_timer is None or next_timer > to:
                break
            at, _, oid = heapq.heappop(self._heap)
            o = self.ledger.get(oid)
            if o is None or o.status != "pending" or o.send_at != at:
                continue  # cancelled or moved since it was scheduled
            self.now = max(self.now, at)
            self._send(o)
        self.now = max(self.now, to)
        self._due = min(self._heap[0][0], self._next_review) if self._heap else self._next_review

    def _send(self, o: Obligation) -> None:
        """Render and 'send' (to the sink), then record the outcome as the notifier would."""
        now = self.now
        refused = self.sink.deliver(o, now)
        if refused and len(refused) >= len(o.recipients):
            o.record_failure(now, "every recipient refused permanently: "
                             + "; ".join(f"{r.address}: {r.reason}" for r in refused))
        else:
            self.ledger.mark_sent(o, now)
            for r in refused:
                o.history.append(HistoryEntry(at=now, what=f"not sent to {r.address}: {r.reason}"))
        self._apply(self.ledger.after_sent(o, now))

    def feed(self, at: datetime, body: Any, line: int) -> None:
        """One payload reaching intake at `at`: timers due before it fire first, then its events are
        translated and evaluated, then whatever they made due at `at` (immediate rules) fires."""
        if self._due <= at:
            self.advance(at)
        elif at > self.now:
            self.now = at
        try:
            translations = translate_many(body, at)
        except InputRejected as exc:
            self.rejected.append(Rejection(line, exc.reason, exc.problems))
            return
        except Exception as exc:  # an intake bug on odd input: report the line, as live intake would, and go on
            self.rejected.append(Rejection(line, f"could not be translated (internal error, please report): "
                                                 f"{type(exc).__name__}: {exc}"))
            return
        if parts := not_taken(translations, is_array=isinstance(body, list)):  # the rest is taken, as live
            self.rejected.append(Rejection(line, PART_NOT_TAKEN, parts))
        ignored = self.ignored
        seen = self._seen_events
        for t in translations:
            if t.ignored:
                ignored.update(t.ignored)
            for event in t.events:
                eid = event.id
                if eid in seen:
                    ignored["duplicate-event-id"] += 1
                    continue
                seen.add(eid)
                decision = self.ledger.on_event(event, at)
                if decision.ignored:
                    ignored[decision.ignored] += 1
                if decision.raised:
                    self._apply(decision)
        if self._due <= at:
            self.advance(at)

    def obligations(self) -> list[Obligation]:
        return sorted(self.ledger.obligations.values(), key=lambda o: (o.raised_at, o.send_at, o.obligation_id))


def read_lines(stream: BinaryIO) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their numbers; a line that is not UTF-8 is passed on as None (rejected later)."""
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield number, _NotText(f"not UTF-8 text ({exc.reason} at byte {exc.start})")
            continue
        if text.strip():
            yield number, text.rstrip("\r\n")


class _NotText(str):
    """Stands for a line that could not be decoded; its text is the reason."""


def run(register_path: Path, directory_path: Path, events_path: Path, until: datetime, out: Path,
        start: datetime | None = None, timings: RuleTimings | None = None, progress: TextIO | None = None,
        write_outbox: bool = True, ack_base_url: str = PLACEHOLDER_ACK_BASE_URL) -> SimulationEngine:
    from shared.directory import DirectoryError
    from shared.register import RegisterError

    try:
        register = Register.load(register_path)
        directory = Directory.load(directory_path)
    except (RegisterError, DirectoryError) as exc:
        raise SimulationError(str(exc)) from None
    try:
        stream = open(events_path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise SimulationError(f"cannot read events {events_path}: {exc.strerror}") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        stream.close()
        raise SimulationError(f"cannot write to {out}: {exc.strerror}") from None
    with stream, long_batch():
        lines = read_lines(stream)
        first = _peek_start(lines, start)
        if first is None:
            raise SimulationError("no start: the events file has no line with a valid `at` and --start was not given")
        clock_start, pending = first
        sink: MessageSink = OutboxSink(out / "outbox", ack_base_url=ack_base_url) if write_outbox else MessageSink()
        engine = SimulationEngine(register, directory, clock_start, timings, sink)
        _drive(engine, pending, lines, progress)
        engine.advance(until)
    _write_results(engine, out)
    return engine


@contextmanager
def long_batch() -> Iterator[None]:
    """A run allocates millions of long-lived, acyclic objects (events seen, obligations); the cyclic
    collector would traverse them again and again (a third of the time on a national-scale year). Objects
    already loaded (the register) are frozen out of its view and it runs less often; restored after."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], 50_000), thresholds[1], max(thresholds[2], 50))
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _peek_start(lines: Iterator[tuple[int, str]], start: datetime | None
                ) -> tuple[datetime, list[tuple[int, str]]] | None:
    """The virtual clock starts at --start, else at the first line's `at` (bad leading lines are kept)."""
    if start is not None:
        return start, []
    held: list[tuple[int, str]] = []
    for number, text in lines:
        held.append((number, text))
        try:
            return parse_instant(json.loads(text).get("at"), "at"), held
        except (ValueError, AttributeError, RecursionError):  # reported when the line is read in turn
            continue
    return None


def _drive(engine: SimulationEngine, held: list[tuple[int, str]], lines: Iterable[tuple[int, str]],
           progress: TextIO | None) -> None:
    meter = _Progress(progress, engine)
    for number, text in _chain(held, lines):
        meter.tick()
        if isinstance(text, _NotText):
            engine.rejected.append(Rejection(number, str(text)))
            continue
        try:
            record = json.loads(text)
        except ValueError as exc:
            engine.rejected.append(Rejection(number, f"not JSON: {exc}"))
            continue
        except RecursionError:  # a line nested thousands deep: reported like any bad line, the run goes on
            engine.rejected.append(Rejection(number, "not JSON: nested too deeply"))
            continue
        try:
            if not isinstance(record, dict) or "body" not in record:
                raise ValueError("each line must be a JSON object with 'at' and 'body'")
            at = parse_instant(record.get("at"), "at")
        except ValueError as exc:
            engine.rejected.append(Rejection(number, str(exc)))
            continue
        if at < engine.now:
            engine.rejected.append(Rejection(
                number, f"at {at.isoformat()} goes back before {engine.now.isoformat()} (lines must be in order)"))
            continue
        engine.feed(at, record["body"], number)
    meter.done()


class _Progress:
    """Progress on stderr for long inputs: at line 5,000, then every 5,000 lines at most every 2 seconds."""

    def __init__(self, out: TextIO | None, engine: SimulationEngine) -> None:
        self.out = out
        self.engine = engine
        self.count = 0
        self.started = self.last = time.monotonic()
        self.reported = False
        self.end = "\r" if out is not None and _isatty(out) else "\n"

    def tick(self) -> None:
        self.count += 1
        if self.out is None or self.count % PROGRESS_EVERY_LINES:
            return
        now = time.monotonic()
        if self.reported and now - self.last < PROGRESS_EVERY_SECONDS:
            return
        self.last = now
        self._write(now, "")

    def done(self) -> None:
        if self.out is None or self.count < PROGRESS_EVERY_LINES:
            return
        self._write(time.monotonic(), "done: ")
        if self.end == "\r":
            self.out.write("\n")
        self.out.flush()

    def _write(self, now: float, prefix: str) -> None:
        assert self.out is not None
        rate = self.count / max(now - self.started, 1e-9)
        self.out.write(f"{prefix}{self.count:,} lines, {rate:,.0f} lines/s, {len(self.engine.rejected):,} rejected, "
                       f"virtual time {self.engine.now:%Y-%m-%d %H:%M}Z{self.end}")
        self.out.flush()
        self.reported = True


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _chain(a: list[tuple[int, str]], b: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    yield from a
    yield from b


def _write_results(engine: SimulationEngine, out: Path) -> None:
    with open(out / "obligations.jsonl", "w", encoding="utf-8") as f:
        for o in engine.obligations():
            row = o.model_dump(mode="json")
            row["late"] = o.late
            f.write(json.dumps(row) + "\n")
    with open(out / "rejected.jsonl", "w", encoding="utf-8") as f:
        for r in engine.rejected:
            f.write(json.dumps({"line": r.line, "reason": r.reason, "problems": r.problems}) + "\n")


def summary(engine: SimulationEngine, out: Path) -> str:
    obligations = engine.obligations()
    by_status: dict[str, int] = {}
    for o in obligations:
        by_status[o.status] = by_status.get(o.status, 0) + 1
    parts = ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())) or "none"
    return (f"simulated to {engine.now.isoformat()}: {engine.events_in} events, {len(obligations)} obligations "
            f"({parts}), {len(engine.rejected)} rejected lines -> {out}")


def main_simulate(args: Any) -> int:
    try:
        until = parse_instant(args.until, "--until")
        start = parse_instant(args.start, "--start") if args.start else None
        engine = run(Path(args.register), Path(args.directory), Path(args.events), until, Path(args.out), start,
                     progress=sys.stderr, ack_base_url=configured_ack_base_url())
    except (SimulationError, ValueError) as exc:
        print(f"ppo-alerts simulate: {exc}", file=sys.stderr)
        return 2
    print(summary(engine, Path(args.out)))
    return 0
