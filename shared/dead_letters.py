"""Dead letters: read them, filter them, show them without personal data, and replay them to where they came from.

One core for `ppo-alerts dead-letters list|show|replay` and intake's `/v1/dead-letters` routes: the functions that
decide (parse, filter, describe, plan a replay) are pure; `read_dead_letters` and `replay` do the Kafka I/O.

A dead letter is named by its place on the dead-letter topic, `<partition>-<offset>`. Each replay is recorded on the
dead-letter topic itself (key `dead-letter-replay`; dead letters are keyless): who, when, which dead letter and the
target topic. Kept there, a replay record lives exactly as long as the dead letter it names (same retention), and
one read of the topic says both what is parked and what was replayed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.kafka import Positioned, read_positioned
from shared.settings import Settings
from shared.topics import Topics

REPLAY_KEY = b"dead-letter-replay"
REPLAY_OF_HEADER = "ppo-replay-of"  # on the republished record: which dead letter it is (tracing only)
MAX_REASON_CHARS = 120

Publish = Callable[[str, bytes, bytes | None, list[tuple[str, bytes]]], Awaitable[None]]


@dataclass(frozen=True)
class Replay:
    of: str  # the dead letter's id
    by: str
    at: datetime
    target_topic: str
    mended: bool

    def as_dict(self) -> dict[str, Any]:
        return {"replay_of": self.of, "by": self.by, "at": self.at.isoformat(), "target_topic": self.target_topic,
                "mended": self.mended}


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    at: datetime  # when it was parked (the record's timestamp)
    record: dict[str, Any]  # as the service parked it
    origin: str | None  # the topic it came from, if it came from one
    mend_to: str | None = None  # where a mended body goes: its origin, or intake's raw topic for what came over HTTP

    @property
    def id(self) -> str:
        return f"{self.partition}-{self.offset}"

    @property
    def service(self) -> str:
        return str(self.record.get("service") or "?")

    @property
    def reason(self) -> str:
        """The parked reason, printable and short: reasons are our own words, but the record is input to us."""
        text = "".join(c if c.isprintable() else "?" for c in str(self.record.get("reason") or "?"))
        return text[:MAX_REASON_CHARS]

    @property
    def source(self) -> str:
        return self.origin or str(self.record.get("channel") or "?")


@dataclass
class DeadLetters:
    """The dead-letter topic as read: dead letters in (partition, offset) order, and the replays of each."""

    letters: list[DeadLetter] = field(default_factory=list)
    replays: dict[str, list[Replay]] = field(default_factory=dict)
    unreadable: int = 0  # records that are not JSON objects: counted, never shown

    def get(self, letter_id: str) -> DeadLetter | None:
        return next((d for d in self.letters if d.id == letter_id), None)


@dataclass(frozen=True)
class Filter:
    service: str | None = None
    reason: str | None = None  # a substring, any case
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    topic: str | None = None  # the topic it came from

    def matches(self, d: DeadLetter) -> bool:
        return ((self.service is None or d.service == self.service)
                and (self.reason is None or self.reason.casefold() in d.reason.casefold())
                and (self.since is None or d.at >= self.since)
                and (self.until is None or d.at < self.until)
                and (self.topic is None or d.origin == self.topic))


def parse_instant(text: str) -> datetime:
    """An ISO instant with its offset (`Z` allowed); a naive one is refused, as intake refuses them."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no offset (write e.g. 2026-03-02T10:15:00+00:00)")
    return value.astimezone(UTC)


def parse_id(text: str) -> str:
    partition, sep, offset = text.strip().partition("-")
    if not (sep and partition.isdigit() and offset.isdigit()):
        raise ValueError(f"{text!r} is not a dead-letter id (PARTITION-OFFSET, e.g. 0-12)")
    return f"{int(partition)}-{int(offset)}"


# --- what the topic holds ----------------------------------------------------------------------------------------

def origin_of(record: dict[str, Any], topics: Topics) -> str | None:
    """The topic a dead letter came from: consumers' guards write it down (`topic`); intake parks what it read from
    its raw topic as channel `kafka`. Input that came over HTTP has no topic to go back to."""
    topic = record.get("topic")
    if isinstance(topic, str) and topic:
        return topic
    if record.get("service") == "intake" and record.get("channel") == "kafka":
        return topics.intake_raw
    return None


def parse_dead_letters(records: Iterable[Positioned], topics: Topics) -> DeadLetters:
    out = DeadLetters()
    for partition, offset, timestamp_ms, key, value in records:
        try:
            body = json.loads(value or b"")
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            out.unreadable += 1
            continue
        if key == REPLAY_KEY:
            try:
                replay = Replay(of=str(body["replay_of"]), by=str(body["by"]), at=parse_instant(body["at"]),
                                target_topic=str(body["target_topic"]), mended=bool(body.get("mended")))
            except (KeyError, TypeError, ValueError):
                out.unreadable += 1
                continue
            out.replays.setdefault(replay.of, []).append(replay)
            continue
        at = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
        origin = origin_of(body, topics)
        mend_to = origin or (topics.intake_raw if body.get("service") == "intake" else None)
        out.letters.append(DeadLetter(partition, offset, at, body, origin, mend_to))
    out.letters.sort(key=lambda d: (d.partition, d.offset))
    return out


# --- what an operator sees -------------------------------------------------------------------------------------

def summary(d: DeadLetter, replays: Sequence[Replay] = ()) -> dict[str, Any]:
    """One dead letter without personal data: where it is, when, which service, where from, why."""
    return {"id": d.id, "at": d.at.isoformat(), "service": d.service, "source": d.source, "reason": d.reason,
            "replays": len(replays)}


def summary_line(d: DeadLetter, replays: Sequence[Replay] = ()) -> str:
    replayed = f"  (replayed {len(replays)}x)" if replays else ""
    return f"{d.id:>8}  {d.at.isoformat(timespec='seconds')}  {d.service:<9}  {d.source:<28}  {d.reason}{replayed}"


def detail(d: DeadLetter, replays: Sequence[Replay] = (), personal_data: bool = False) -> dict[str, Any]:
    """The whole record; its payload (the input as it came: names, dates of birth, identifiers) only when asked."""
    record = dict(d.record)
    if not personal_data and "payload" in record:
        payload = str(record["payload"])
        record["payload"] = "[redacted: personal data; ask for it explicitly to see it]"
        record.setdefault("payload_bytes", len(payload.encode()))
        record.setdefault("payload_sha256", hashlib.sha256(payload.encode()).hexdigest())
    return {"id": d.id, "at": d.at.isoformat(), "origin_topic": d.origin, "record": record,
            "replays": [r.as_dict() for r in replays]}


# --- replay ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    id: str
    target_topic: str | None = None
    body: bytes = b""
    mended: bool = False
    refused: str | None = None  # why not, in words an operator can act on


def why_not(d: DeadLetter) -> str | None:
    """Why the parked copy cannot be replayed as it is, or None."""
    if d.origin is None:
        if d.record.get("channel") == "http":
            return ("came over HTTP, not from a topic: nowhere to put it back as it is (the sender was answered; "
                    "they send it again, mended, or replay it as a mended payload)")
        return "the record does not say which topic it came from"
    if d.record.get("payload_truncated"):
        return (f"only the first 256 KiB of its {d.record.get('payload_bytes')} bytes were kept (sha256 "
                f"{d.record.get('payload_sha256')}): replay the whole body as a mended payload")
    payload = d.record.get("payload")
    if not isinstance(payload, str) or not payload:
        return "nothing was parked to replay"
    if "\ufffd" in payload:  # parked with errors="replace": the bytes that came are gone
        return "it was not UTF-8 when parked, so the copy is not what came: replay a mended payload"
    return None


def plan_replay(letters: DeadLetters, ids: Sequence[str] | None, where: Filter | None = None, again: bool = False,
                mended: bytes | None = None) -> list[Decision]:
    """What a replay would do, dead letter by dead letter: the given ids, or (ids None) every one matching `where`.
    A mended payload replaces the parked one and is for one dead letter only."""
    if mended is not None and (ids is None or len(ids) != 1):
        return [Decision(i, refused="a mended payload is for exactly one dead letter") for i in (ids or ["-"])]
    chosen: list[tuple[str, DeadLetter | None]] = (
        [(i, letters.get(i)) for i in ids] if ids is not None
        else [(d.id, d) for d in letters.letters if (where or Filter()).matches(d)])
    out: list[Decision] = []
    for letter_id, d in chosen:
        if d is None:
            out.append(Decision(letter_id, refused="no such dead letter"))
            continue
        done = letters.replays.get(d.id, [])
        if done and not again:
            last = done[-1]
            out.append(Decision(d.id, refused=f"already replayed by {last.by} at {last.at.isoformat()} to "
                                              f"{last.target_topic} (again: --again / \"again\": true)"))
            continue
        if mended is not None and d.mend_to is not None:  # HTTP input, mended, is read again from intake's raw topic
            out.append(Decision(d.id, d.mend_to, mended, mended=True))
            continue
        refused = why_not(d)
        if refused:
            out.append(Decision(d.id, refused=refused))
        else:
            assert d.origin is not None
            out.append(Decision(d.id, d.origin, str(d.record["payload"]).encode()))
    return out


def replay_record(dead_letter_topic: str, decision: Decision, by: str, now: datetime) -> bytes:
    assert decision.target_topic is not None
    return json.dumps({
        **Replay(decision.id, by, now, decision.target_topic, decision.mended).as_dict(),
        "dead_letter_topic": dead_letter_topic,
        "payload_sha256": hashlib.sha256(decision.body).hexdigest(),  # which body went, without the body
    }).encode()


async def replay(decisions: Sequence[Decision], topics: Topics, by: str, now: datetime,
                 publish: Publish) -> list[Decision]:
    """Republish each accepted decision's body to its topic, then record the replay; the decisions done.
    The body goes first: a failure between the two replays once more next time, which the consumers' idempotence
    (event ids, obligation ids) absorbs; recording first could claim a replay that never happened."""
    done: list[Decision] = []
    for decision in decisions:
        if decision.refused is not None or decision.target_topic is None:
            continue
        await publish(decision.target_topic, decision.body, None,
                      [(REPLAY_OF_HEADER, f"{topics.dead_letter}/{decision.id}".encode())])
        await publish(topics.dead_letter, replay_record(topics.dead_letter, decision, by, now), REPLAY_KEY, [])
        done.append(decision)
    return done


# --- Kafka -------------------------------------------------------------------------------------------------------

async def read_dead_letters(settings: Settings) -> DeadLetters:
    topics = Topics(settings.topic_prefix)
    return parse_dead_letters(await read_positioned(settings, topics.dead_letter), topics)


def producer_publish(producer: Any) -> Publish:
    """`Publish` over a started AIOKafkaProducer (the CLI's; intake passes its broker's)."""

    async def publish(topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        await producer.send_and_wait(topic, value, key=key, headers=headers)

    return publish


async def replay_with_producer(settings: Settings, decisions: Sequence[Decision], by: str,
                               now: datetime) -> list[Decision]:
    """`replay` with a producer of its own (acks=all, idempotent), for callers without a broker."""
    from aiokafka import AIOKafkaProducer

    from shared.kafka import client_kwargs

    if not any(d.refused is None for d in decisions):
        return []
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **client_kwargs(settings))
    await producer.start()
    try:
        return await replay(decisions, Topics(settings.topic_prefix), by, now, producer_publish(producer))
    finally:
        await producer.stop()
