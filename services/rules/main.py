"""Composition point of the rules service."""

from __future__ import annotations

from services.rules.service import RulesService
from shared.clock import Clock
from shared.http import HttpServer, build_app
from shared.kafka import make_broker
from shared.service import RunningService
from shared.settings import Settings


def build(settings: Settings, clock: Clock) -> tuple[RunningService, RulesService]:
    broker = make_broker(settings, "ppo-rules")
    service = RulesService(settings, broker, clock)
    app = build_app("rules", lambda: service.ready)
    running = RunningService("rules", broker, HttpServer(app, settings.http_host, settings.rules_port),
                             before_broker=service.load_state,
                             after_stop=[service.sink.stop, service.resolve_sink.stop])
    return running, service
