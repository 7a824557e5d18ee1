"""Is any consumer of this process stuck? A handler that has not returned for minutes, or one failing on every try
(a Kafka error re-raised, so the same record is read again and again), holds its whole partition: every record
behind it waits. Lag says something is behind; this says which consumer, here, is not moving.

Each subscriber's handler is wrapped by `ConsumerWatch.watched`; `/healthz` answers 503 `stuck` while `stuck()`
names a topic, and `ppo_consumer_stuck{service,topic}` is 1 (alert `PPOConsumerWedged`).
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.metrics import CONSUMER_STUCK, HANDLER_ERRORS

STUCK_AFTER_S = 300.0  # longer than any handler's own retries (SMTP in-call retries, Kafka reconnects) take

M = TypeVar("M")


@dataclass(frozen=True)
class Stuck:
    service: str
    topic: str
    for_s: float
    why: str  # "running" (a call has not returned) or "failing" (every call since raised)

    def as_dict(self) -> dict[str, Any]:
        return {"service": self.service, "topic": self.topic, "for_s": round(self.for_s, 1), "why": self.why}


class ConsumerWatch:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic, after_s: float = STUCK_AFTER_S) -> None:
        self.monotonic = monotonic
        self.after_s = after_s
        self._calls = itertools.count()
        self._running: dict[tuple[str, str], dict[int, float]] = {}  # (service, topic) -> call -> started
        self._failing_since: dict[tuple[str, str], float] = {}

    def watched(self, service: str, topic: str,
                handler: Callable[[M], Awaitable[None]]) -> Callable[[M], Awaitable[None]]:
        key = (service, topic)
        running = self._running.setdefault(key, {})
        CONSUMER_STUCK.labels(service=service, topic=topic).set_function(lambda: float(self._stuck(key) is not None))
        HANDLER_ERRORS.labels(service=service, topic=topic)

        @functools.wraps(handler)
        async def watched(message: M) -> None:
            call = next(self._calls)
            running[call] = self.monotonic()
            try:
                await handler(message)
            except BaseException:
                HANDLER_ERRORS.labels(service=service, topic=topic).inc()
                self._failing_since.setdefault(key, self.monotonic())
                raise
            else:
                self._failing_since.pop(key, None)
            finally:
                running.pop(call, None)

        return watched

    def _stuck(self, key: tuple[str, str]) -> Stuck | None:
        now = self.monotonic()
        started = min(self._running.get(key, {}).values(), default=None)
        if started is not None and now - started > self.after_s:
            return Stuck(*key, now - started, "running")
        since = self._failing_since.get(key)
        if since is not None and now - since > self.after_s:
            return Stuck(*key, now - since, "failing")
        return None

    def stuck(self) -> list[Stuck]:
        return [s for key in list(self._running) if (s := self._stuck(key)) is not None]


WATCH = ConsumerWatch()  # one per process: every subscriber of every service in it, read by /healthz
