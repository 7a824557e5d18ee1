"""`ppo-alerts simulate` (contract §3): the live rule, timing and rendering code, driven by a virtual clock.

Intake's translation, the rules ledger and the notifier's templates run exactly as they do live; only
Kafka, SMTP and the wall clock are replaced: timers sit in a heap and fire as the clock passes them.
"""

from __future__ import annotations

import heapq
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from services.intake.translate import translate_many
from services.rules.ledger import Decision, Ledger
from services.rules.rulebook import RuleBook, RuleTimings
from shared.directory import Directory
from shared.errors import InputRejected
from shared.obligations import Obligation
from shared.register import Register


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


class MessageSink:
    """Where fired obligations go: nowhere (benchmarks) or an outbox of .eml files."""

    def deliver(self, o: Obligation, at: datetime) -> None:  # pragma: no cover - interface
        return None


class OutboxSink(MessageSink):
    def __init__(self, outbox: Path, sender: str = "ppo-alerts@localhost.invalid") -> None:
        from services.notifier.render import Renderer

        self.outbox = outbox
        self.sender = sender
        self.renderer = Renderer()
        outbox.mkdir(parents=True, exist_ok=True)

    def deliver(self, o: Obligation, at: datetime) -> None:
        for address in o.recipients:
            role = o.recipient_roles.get(address, "")
            message = self.renderer.render(o, address, role, None, at)
            email = message.to_email(self.sender)
            safe = address.replace("@", "_at_")
            (self.outbox / f"{o.obligation_id}__{safe}.eml").write_bytes(bytes(email))


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
        self.events_in = 0
        self.rejected: list[Rejection] = []
        self.ignored: dict[str, int] = {}
        self._next_review, self._review_label = self.book.list_review_at(start)
        for entry in register.entries():  # R for register timers is when the register was loaded
            self._apply(self.ledger.on_register_loaded(entry, start))

    def _apply(self, decision: Decision) -> None:
        for o in decision.raised:
            if o.status == "pending":
                self._seq += 1
                heapq.heappush(self._heap, (o.send_at, self._seq, o.obligation_id))

    def advance(self, to: datetime) -> None:
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
            self.ledger.mark_sent(o, self.now)
            self.sink.deliver(o, self.now)
            self._apply(self.ledger.after_sent(o, self.now))
        self.now = max(self.now, to)

    def feed(self, at: datetime, body: Any, line: int) -> None:
        self.advance(at)
        try:
            translations = translate_many(body, at)
        except InputRejected as exc:
            self.rejected.append(Rejection(line, exc.reason, exc.problems))
            return
        for t in translations:
            for reason in t.ignored:
                self.ignored[reason] = self.ignored.get(reason, 0) + 1
            for event in t.events:
                if event.id in self._seen_events:
                    self.ignored["duplicate-event-id"] = self.ignored.get("duplicate-event-id", 0) + 1
                    continue
                self._seen_events.add(event.id)
                self.events_in += 1
                decision = self.ledger.on_event(event, at)
                if decision.ignored:
                    self.ignored[decision.ignored] = self.ignored.get(decision.ignored, 0) + 1
                self._apply(decision)
        self.advance(at)

    def obligations(self) -> list[Obligation]:
        return sorted(self.ledger.obligations.values(), key=lambda o: (o.raised_at, o.send_at, o.obligation_id))


def read_lines(stream: TextIO) -> Iterator[tuple[int, str]]:
    for number, text in enumerate(stream, start=1):
        if text.strip():
            yield number, text


def run(register_path: Path, directory_path: Path, events_path: Path, until: datetime, out: Path,
        start: datetime | None = None, timings: RuleTimings | None = None, progress: TextIO | None = None,
        write_outbox: bool = True) -> SimulationEngine:
    from shared.directory import DirectoryError
    from shared.register import RegisterError

    try:
        register = Register.load(register_path)
        directory = Directory.load(directory_path)
    except (RegisterError, DirectoryError) as exc:
        raise SimulationError(str(exc)) from None
    try:
        stream = open(events_path, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise SimulationError(f"cannot read events {events_path}: {exc.strerror}") from None
    out.mkdir(parents=True, exist_ok=True)
    with stream:
        lines = read_lines(stream)
        first = _peek_start(lines, start)
        if first is None:
            raise SimulationError("no start: the events file is empty and --start was not given")
        clock_start, pending = first
        sink: MessageSink = OutboxSink(out / "outbox") if write_outbox else MessageSink()
        engine = SimulationEngine(register, directory, clock_start, timings, sink)
        _drive(engine, pending, lines, progress)
    engine.advance(until)
    _write_results(engine, out)
    return engine


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
        except (ValueError, AttributeError):
            continue
    return None


def _drive(engine: SimulationEngine, held: list[tuple[int, str]], lines: Iterable[tuple[int, str]],
           progress: TextIO | None) -> None:
    started = last = time.monotonic()
    count = 0
    for number, text in _chain(held, lines):
        count += 1
        try:
            record = json.loads(text)
            if not isinstance(record, dict) or "body" not in record:
                raise ValueError("each line must be an object with 'at' and 'body'")
            at = parse_instant(record.get("at"), "at")
        except ValueError as exc:
            engine.rejected.append(Rejection(number, str(exc)))
            continue
        if at < engine.now:
            engine.rejected.append(Rejection(number, f"at {at.isoformat()} goes back before {engine.now.isoformat()}"))
            continue
        engine.feed(at, record["body"], number)
        if progress is not None and count % 5000 == 0 and time.monotonic() - last > 2:
            last = time.monotonic()
            rate = count / (last - started)
            progress.write(f"\r{count:,} lines, {rate:,.0f} lines/s, virtual time {engine.now:%Y-%m-%d %H:%M}Z")
            progress.flush()
    if progress is not None and count >= 5000:
        progress.write("\n")


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
                     progress=sys.stderr)
    except (SimulationError, ValueError) as exc:
        print(f"ppo-alerts simulate: {exc}", file=sys.stderr)
        return 2
    print(summary(engine, Path(args.out)))
    return 0
