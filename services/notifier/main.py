"""Composition point of the notifier service."""

from __future__ import annotations

from services.notifier.pipeline import DeliveryPipeline
from services.notifier.render import Renderer
from services.notifier.sendlog import SendLog
from services.notifier.service import NotifierService
from services.notifier.smtp import SmtpSender, SmtpSettings
from shared.clock import Clock
from shared.directory import Directory
from shared.http import HttpServer, build_app
from shared.kafka import make_broker
from shared.service import RunningService
from shared.settings import Settings


def smtp_settings(settings: Settings) -> SmtpSettings:
    return SmtpSettings(
        host=settings.smtp_host, port=settings.smtp_port, tls_mode=settings.smtp_tls_mode,
        allow_plaintext=settings.smtp_allow_plaintext, username=settings.smtp_username,
        password=settings.smtp_password, timeout_s=settings.smtp_timeout_s, pool_size=settings.smtp_pool_size,
        sender=settings.smtp_sender,
    )


def build(settings: Settings, clock: Clock) -> tuple[RunningService, NotifierService]:
    directory = Directory.load(settings.directory_file)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    sendlog = SendLog(settings.state_dir / "notifier-sendlog.sqlite")
    sender = SmtpSender(smtp_settings(settings))
    pipeline = DeliveryPipeline(
        Renderer(), sender, sendlog, clock, directory.recipient_domains, from_address=settings.smtp_sender,
    )
    broker = make_broker(settings, "ppo-notifier")
    service = NotifierService(settings, broker, clock, pipeline)

    async def ready() -> None:
        service.ready = True

    async def close() -> None:
        await sender.close()
        sendlog.close()

    app = build_app("notifier", lambda: service.ready)
    running = RunningService("notifier", broker, HttpServer(app, settings.http_host, settings.notifier_port),
                             after_broker=ready, on_stop=[close])
    return running, service
