"""What every running service is: a broker, an HTTP server for /metrics and /healthz, start and stop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from faststream.kafka import KafkaBroker

from shared.http import HttpServer


@dataclass
class RunningService:
    name: str
    broker: KafkaBroker
    http: HttpServer
    before_broker: Callable[[], Awaitable[None]] | None = None  # e.g. load state before consuming
    after_broker: Callable[[], Awaitable[None]] | None = None  # e.g. start timers that publish
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # before the broker stops
    after_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # once consuming has ended

    async def start(self) -> None:
        await self.broker.connect()
        if self.before_broker is not None:
            await self.before_broker()
        await self.broker.start()
        if self.after_broker is not None:
            await self.after_broker()
        await self.http.start()

    async def stop(self) -> None:
        await self.http.stop()
        for hook in self.on_stop:
            await hook()
        await self.broker.stop()
        for hook in self.after_stop:
            await hook()
