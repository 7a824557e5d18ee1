"""Composition point of the scheduler service."""

from __future__ import annotations

from services.scheduler.service import SchedulerService
from shared.clock import Clock
from shared.http import HttpServer, build_app
from shared.kafka import make_broker
from shared.service import RunningService
from shared.settings import Settings


def build(settings: Settings, clock: Clock) -> tuple[RunningService, SchedulerService]:
    broker = make_broker(settings, "ppo-scheduler")
    service = SchedulerService(settings, broker, clock)
    app = build_app("scheduler", lambda: service.ready)
    running = RunningService("scheduler", broker, HttpServer(app, settings.http_host, settings.scheduler_port),
                             after_broker=service.start, on_stop=[service.stop])
    return running, service
