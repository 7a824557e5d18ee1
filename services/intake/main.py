"""Composition point of the intake service."""

from __future__ import annotations

from services.intake.service import IntakeService
from shared.clock import Clock
from shared.http import HttpServer, build_app
from shared.kafka import make_broker
from shared.service import RunningService
from shared.settings import Settings


def build(settings: Settings, clock: Clock) -> tuple[RunningService, IntakeService]:
    broker = make_broker(settings, "ppo-intake")
    service = IntakeService(settings, broker, clock)

    async def ready() -> None:
        service.ready = True

    app = build_app("intake", lambda: service.ready, service.routes())
    running = RunningService("intake", broker, HttpServer(app, settings.http_host, settings.intake_port),
                             after_broker=ready)
    return running, service
