"""Acknowledgements already recorded, as intake knows them: the first per (obligation, recipient).

A second press of the button (another tab, the link opened again next week, another intake instance) answers
"Already acknowledged at ..." and publishes nothing. So every intake instance follows the whole acknowledgements
topic (no consumer group) and, once per process, reads it to its end before answering a press: what another
instance or an earlier run recorded is known here too. A record this instance publishes is learnt at once.

The core is pure (`learn`, `first`); `catch_up` is the one adapter, and is given the reader.

Left open: two presses at the same moment on two instances, before either has read the other's record, give two
records; the scheduler records an acknowledgement once per recipient, so nothing changes but the count. A record
older than the topic's retention is forgotten here (the scheduler's obligation history still has it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from pydantic import ValidationError

from shared.ack import Acknowledgement
from shared.clock import LONDON

log = logging.getLogger("ppo.intake")

Key = tuple[str, str]  # (obligation id, recipient in lower case)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


def key_of(obligation_id: str, recipient: str) -> Key:
    return obligation_id, recipient.strip().lower()


def london_time(at: datetime) -> str:
    """'14:05 on Tuesday 3 March 2026' (London wall clock; names spelt out, not the process locale's)."""
    local = at.astimezone(LONDON)
    return f"{local:%H:%M} on {_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} {local.year}"


class AcksSeen:
    def __init__(self) -> None:
        self._first: dict[Key, datetime] = {}
        self._caught_up = False
        self._catching_up: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._first)

    def first(self, obligation_id: str, recipient: str) -> datetime | None:
        """When this recipient first acknowledged this obligation, or None."""
        return self._first.get(key_of(obligation_id, recipient))

    def learn(self, ack: Acknowledgement) -> bool:
        """Keep the earliest per key (records of two instances may be read in any order); True if it changed."""
        key = key_of(ack.obligation_id, ack.recipient)
        known = self._first.get(key)
        if known is not None and known <= ack.acknowledged_at:
            return False
        self._first[key] = ack.acknowledged_at
        return True

    def learn_record(self, value: bytes | None) -> bool:
        """One record of the topic. One no service wrote is skipped (the scheduler dead-letters it)."""
        if not value:
            return False
        try:
            return self.learn(Acknowledgement.model_validate_json(value))
        except ValidationError:
            return False

    def learn_all(self, values: Iterable[bytes | None]) -> None:
        for value in values:
            self.learn_record(value)

    @property
    def caught_up(self) -> bool:
        return self._caught_up

    async def catch_up(self, read: Callable[[], Awaitable[Iterable[bytes | None]]], timeout_s: float) -> bool:
        """Read the topic to its end, once per process (concurrent callers share the one read). False when it
        failed or took longer than `timeout_s`: the caller goes on without it (a press is recorded rather than
        refused; at worst a second record), and the next call tries again."""
        if self._caught_up:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self.start_catch_up(read)), timeout_s)
        except Exception:  # noqa: BLE001 - Kafka unreachable or slow: said once here, the press goes on
            log.warning("acknowledgements topic not read to its end; a repeated press may be recorded again")
            return False
        return True

    def start_catch_up(self, read: Callable[[], Awaitable[Iterable[bytes | None]]]) -> asyncio.Task[None]:
        """The read to the end, started if it is not running (a page shown starts it: the press finds it done)."""
        if self._catching_up is None or (self._catching_up.done() and not self._caught_up):
            self._catching_up = asyncio.create_task(self._read(read), name="ppo-intake-acks-catch-up")
            # a failure is seen by whoever awaits it, or by nobody (a page shown): never "never retrieved"
            self._catching_up.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._catching_up

    async def _read(self, read: Callable[[], Awaitable[Iterable[bytes | None]]]) -> None:
        self.learn_all(await read())
        self._caught_up = True
        log.info("acknowledgements read", extra={"acknowledged": len(self._first)})
