"""Composition point of the notifier service."""

from __future__ import annotations

import logging
import sys
from datetime import timedelta

from services.notifier.pipeline import DeliveryPipeline, RetryPolicy
from services.notifier.render import COURT_FORBIDDEN, Renderer
from services.notifier.sendlog import SendLog, claim_timeout_for
from services.notifier.service import NotifierService
from services.notifier.smtp import SmtpSender, SmtpSettings
from shared.ack import AckLinks, AckSecretMissing, ack_base_url, ack_secret
from shared.clock import Clock
from shared.directory import Directory
from shared.http import HttpServer, build_app
from shared.kafka import make_broker
from shared.places import Places, PlacesError, default_places, load_places
from shared.service import RunningService
from shared.settings import Settings

log = logging.getLogger("ppo.notifier")


def places(settings: Settings) -> Places:
    """The prisons-and-courts reference data: PPO_PLACES_FILE, else the package's own file. A problem is one line
    naming the file (exit 2); Settings has checked it already, this covers a file changed since."""
    try:
        return load_places(settings.places_file) if settings.places_file else default_places()
    except PlacesError as exc:
        print(f"ppo-alerts: PPO_PLACES_FILE: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def renderer(settings: Settings) -> Renderer:
    """The renderer with this deployment's marking (PPO_MARKING, PPO_MARKING_BY_DOMAIN) and places."""
    reference = places(settings)
    log.info("places loaded", extra={"places_version": reference.version,
                                     "places_file": str(settings.places_file or "package"),
                                     "prisons": len(reference.prisons), "courts": len(reference.courts)})
    domains = message_id_domains(settings)
    return Renderer(max_message_bytes=settings.notifier_max_message_bytes, marking=settings.marking,
                    marking_by_domain=settings.marking_by_domain, places=reference,
                    message_id_domain=domains["message_id_domain"],
                    court_message_id_domain=domains["court_message_id_domain"])


def message_id_domains(settings: Settings) -> dict[str, str]:
    """Message-IDs end in the sender's own domain: filters score a Message-ID whose right-hand side is not a fully
    qualified domain (Rspamd's MID_RHS_NOT_FQDN). A court's comes from the court sender's domain, unless that names
    PPOs (the renderer refuses it), when a neutral `notices.invalid` stands in."""
    def domain(sender: str) -> str:
        return sender.rsplit("<", 1)[-1].rstrip(">").rsplit("@", 1)[-1].strip()

    court = domain(settings.smtp_court_sender or settings.smtp_sender)
    return {"message_id_domain": domain(settings.smtp_sender),
            "court_message_id_domain": "notices.invalid" if COURT_FORBIDDEN.search(court) else court}


def smtp_settings(settings: Settings) -> SmtpSettings:
    """The SMTP client's settings; a problem is one line naming the PPO_SMTP_* variable (exit 2), as for every
    other setting: SmtpSettings checks the sender addresses, which Settings does not."""
    from pydantic import ValidationError

    try:
        return SmtpSettings(
            host=settings.smtp_host, port=settings.smtp_port, tls_mode=settings.smtp_tls_mode,
            allow_plaintext=settings.smtp_allow_plaintext, username=settings.smtp_username,
            password=settings.smtp_password, timeout_s=settings.smtp_timeout_s, pool_size=settings.smtp_pool_size,
            sender=settings.smtp_sender, court_sender=settings.smtp_court_sender,
            validate_certs=settings.smtp_validate_certs,
        )
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            field = str(error["loc"][0]) if error["loc"] else "(smtp)"
            print(f"ppo-alerts: PPO_SMTP_{field.upper()}: {str(error['msg']).removeprefix('Value error, ')}",
                  file=sys.stderr)
        raise SystemExit(2) from None


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.notifier_retry_attempts, initial_backoff_s=settings.notifier_retry_backoff_s,
        give_up_after=timedelta(hours=settings.notifier_give_up_after_h),
        redeliver_initial_s=settings.notifier_redeliver_after_s,
        redeliver_max_s=max(settings.notifier_redeliver_max_s, settings.notifier_redeliver_after_s),
    )


def ack_links(settings: Settings, clock: Clock) -> AckLinks:
    """Signed, expiring acknowledgement links for every message (shared/ack.py); intake's GET /ack checks them.
    PPO_ACK_SECRET is required unless the links point at this machine."""
    try:
        secret = ack_secret(settings)
    except AckSecretMissing as exc:
        raise SystemExit(f"ppo-alerts: {exc}") from None
    return AckLinks(ack_base_url(settings), secret, timedelta(days=settings.ack_link_ttl_days), clock)


def open_sendlog(settings: Settings) -> SendLog:
    """The shared PostgreSQL of PPO_NOTIFIER_SENDLOG_URL (several instances), else the SQLite file in the state
    dir (one instance). A `queued` row keeps other instances off for twice the SMTP timeout (sendlog.py)."""
    claim = claim_timeout_for(settings.smtp_timeout_s)
    return SendLog(settings.notifier_sendlog_url or settings.state_dir / "notifier-sendlog.sqlite", claim_timeout=claim)


def build(settings: Settings, clock: Clock) -> tuple[RunningService, NotifierService]:
    directory = Directory.load(settings.directory_file)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    sendlog = open_sendlog(settings)
    sender = SmtpSender(smtp_settings(settings))
    pipeline = DeliveryPipeline(
        renderer(settings), sender, sendlog, clock,
        directory.recipient_domains, ack_url_builder=ack_links(settings, clock), retry=retry_policy(settings),
        from_address=settings.smtp_sender,
        court_from_address=settings.smtp_court_sender,
    )
    broker = make_broker(settings, "ppo-notifier")
    service = NotifierService(settings, broker, clock, pipeline)

    async def ready() -> None:
        service.start_redeliveries()
        service.ready = True

    async def close() -> None:
        await service.stop_redeliveries()
        # Stop consuming before the send log closes: the request in hand finishes (FastStream waits for it) and
        # records its outcome, so a clean stop never leaves an accepted message unrecorded.
        await broker.stop()
        await sender.close()
        sendlog.close()

    app = build_app("notifier", lambda: service.ready)
    running = RunningService("notifier", broker, HttpServer(app, settings.http_host, settings.notifier_port),
                             after_broker=ready, on_stop=[close])
    return running, service
