"""Intake: HTTP `POST /v1/events` and the raw Kafka intake topic -> validated canonical events.

Bad input gets a 4xx with what, where and why, and is kept on the dead-letter topic with its reason so it
can be fixed and replayed. Accepted payloads are published before the HTTP 202 (or the offset commit).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import time
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from services.intake.access import RateLimiter, ScopeRefused, check_scopes
from services.intake.feeds import decode_json
from services.intake.plausibility import InstantWindow
from services.intake.translate import Translation, translate_many
from shared import metrics
from shared.ack import Acknowledgement, AckSecretMissing, ack_secret, verify
from shared.clock import Clock
from shared.errors import InputRejected
from shared.events import EventBase
from shared.kafka import RECEIVED_AT_HEADER, dead_letter_guard, dumps, parked_payload, records_as_they_are
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger("ppo.intake")


def person_key(event: EventBase) -> bytes:
    """Partition by person so one person's events stay in order (best identifier first)."""
    ids = event.person.identifiers()
    for kind in ("pnc", "noms", "crn", "cro"):
        if kind in ids:
            return f"{kind}:{ids[kind]}".encode()
    return b"-"


class RecentIds:
    """Event ids published lately: a cheap first line of de-duplication (the rules ledger is the real one)."""

    def __init__(self, size: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def seen(self, event_id: str) -> bool:
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return False


class IntakeService:
    def __init__(self, settings: Settings, broker: KafkaBroker, clock: Clock) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.topics = Topics(settings.topic_prefix)
        self.recent = RecentIds()
        self.window = InstantWindow(max_past=timedelta(days=settings.intake_max_past_days),
                                    max_future=timedelta(seconds=settings.intake_max_future_s))
        self.rate_limiter = RateLimiter(settings.intake_rate_per_s, settings.intake_rate_burst, time.monotonic)
        self.ack_key = _ack_key(settings)  # checks GET /ack links (shared/ack.py)
        self.ready = False
        metrics.initialise("intake")
        broker.subscriber(
            self.topics.intake_raw, group_id="ppo-intake", auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR, decoder=records_as_they_are,
        )(dead_letter_guard("intake", broker, self.topics.dead_letter, self.on_raw))

    # --- core: one body in, canonical events out ---------------------------------------------------------

    async def accept(self, body: Any, channel: str, received_at: datetime, agency: str = "kafka",
                     scopes: list[str] | None = None, coordinator: bool = True) -> list[str]:
        """Translate, check the sender may send every event in it (nothing is published if not), publish."""
        translations: list[Translation] = translate_many(body, received_at, self.window)  # raises InputRejected
        check_scopes((e.type for t in translations for e in t.events), agency, scopes,  # type: ignore[attr-defined]
                     coordinator)  # raises ScopeRefused
        accepted: list[str] = []
        for t in translations:
            metrics.EVENTS_RECEIVED.labels(format=t.format, channel=channel).inc()
            for reason in t.ignored:
                metrics.EVENTS_IGNORED.labels(service="intake", reason=reason).inc()
            for event in t.events:
                accepted.append(event.id)
                if self.recent.seen(event.id):
                    metrics.EVENTS_IGNORED.labels(service="intake", reason="duplicate-event-id").inc()
                    continue
                await self.broker.publish(
                    dumps(event), self.topics.events, key=person_key(event),
                    headers={RECEIVED_AT_HEADER: received_at.isoformat()},
                )
                metrics.EVENTS_ACCEPTED.labels(event_type=event.type).inc()  # type: ignore[attr-defined]
                log.info("event accepted", extra={"event_id": event.id, "event_type": event.type,  # type: ignore[attr-defined]
                                                  "channel": channel})
        return accepted

    async def dead_letter(self, raw: bytes, channel: str, rejection: InputRejected, agency: str | None) -> None:
        reason = rejection.reason
        metrics.EVENTS_REJECTED.labels(channel=channel, reason=_reason_label(reason)).inc()
        metrics.DEAD_LETTERS.labels(service="intake", reason=_reason_label(reason)).inc()
        record = {
            "service": "intake", "channel": channel, "agency": agency, "reason": reason,
            "problems": rejection.problems, "at": self.clock.now().isoformat(),
            **parked_payload(raw),
        }
        await self.broker.publish(dumps(record), self.topics.dead_letter)
        log.warning("payload rejected", extra={"channel": channel, "reason": reason,
                                               "fields": [p["field"] for p in rejection.problems][:10]})

    # --- Kafka intake --------------------------------------------------------------------------------------

    async def on_raw(self, message: KafkaMessage) -> None:
        body: bytes = message.body
        now = self.clock.now()
        try:
            payload = decode_json(body, "(body)")  # never a JSON, Unicode or recursion error: InputRejected
            await self.accept(payload, "kafka", now)
        except InputRejected as exc:
            await self.dead_letter(body, "kafka", exc, None)

    # --- HTTP intake -----------------------------------------------------------------------------------------

    def authenticate(self, request: Request) -> str | None:
        """The agency behind a bearer token; tokens are configured as sha256 hex, compared in constant time."""
        if not _bearer(request):
            return "anonymous" if self.settings.intake_allow_anonymous else None
        return _holder(request, self.settings.intake_tokens)

    def coordinator(self, request: Request) -> str | None:
        """The coordinator behind a bearer token in PPO_INTAKE_COORDINATOR_TOKENS (sha256 hex -> name), or None."""
        return _holder(request, self.settings.intake_coordinator_tokens)

    async def post_register(self, request: Request) -> JSONResponse:
        """POST /v1/register/{select|deselect|move|update|import}: a coordinator's change to the register,
        checked against the register topic and published as a register.* event (docs/coordinators.md)."""
        from shared.register_admin import http_register

        coordinator = self.coordinator(request)
        if coordinator is None:
            if self.authenticate(request) is None:
                return _error(401, "missing or unknown bearer token")
            return _error(403, "register changes need a coordinator token (PPO_INTAKE_COORDINATOR_TOKENS)")
        raw = await request.body()
        if len(raw) > self.settings.intake_max_body_bytes:
            return _error(413, f"body larger than {self.settings.intake_max_body_bytes} bytes")
        now = self.clock.now()

        async def publish(changes: list[Any]) -> None:
            for c in changes:
                await self.broker.publish(json.dumps(c.event).encode(), self.topics.events, key=c.key,
                                          headers={RECEIVED_AT_HEADER: now.isoformat()})
                metrics.EVENTS_ACCEPTED.labels(event_type=c.event["type"]).inc()
            log.info("register change accepted", extra={"channel": "http", "changes": len(changes),
                                                        "event_ids": [c.event["id"] for c in changes][:20]})

        dry_run = request.query_params.get("dry_run", "").lower() in ("1", "true", "yes")
        try:
            status, body = await http_register(self.settings, request.path_params["action"], raw, coordinator, now,
                                               publish, dry_run=dry_run)
        except KafkaError:
            return JSONResponse({"error": "temporarily unavailable, send again", "problems": []},
                                status_code=503, headers={"Retry-After": "5"})
        return JSONResponse(body, status_code=status)

    async def post_events(self, request: Request) -> JSONResponse:
        coordinator = self.coordinator(request)
        agency = coordinator or self.authenticate(request)
        if agency is None:
            return _error(401, "missing or unknown bearer token")
        wait = self.rate_limiter.take(agency)
        if wait:
            return JSONResponse({"error": "too many requests from this credential", "problems": []},
                                status_code=429, headers={"Retry-After": RateLimiter.retry_after(wait)})
        length = request.headers.get("content-length")
        limit = self.settings.intake_max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            return _error(413, f"body larger than {limit} bytes")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                return _error(413, f"body larger than {limit} bytes")
        now = self.clock.now()
        try:
            payload = decode_json(raw, "(body)")  # never a JSON, Unicode or recursion error: InputRejected
        except InputRejected as rejection:
            await self.dead_letter(raw, "http", rejection, agency)
            return JSONResponse(rejection.as_dict(), status_code=400)
        try:
            accepted = await self.accept(payload, "http", now, agency,
                                         self.settings.intake_token_scopes.get(agency) if not coordinator else None,
                                         coordinator=coordinator is not None)
        except ScopeRefused as exc:
            return _error(403, str(exc))
        except InputRejected as exc:
            await self.dead_letter(raw, "http", exc, agency)
            return JSONResponse(exc.as_dict(), status_code=422)
        except KafkaError:
            # Not the sender's fault and nothing was acknowledged: ask them to send it again.
            log.warning("kafka unavailable; asked the sender to retry", extra={"channel": "http"})
            return JSONResponse({"error": "temporarily unavailable, send again", "problems": []},
                                status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"accepted": accepted}, status_code=202)

    def routes(self) -> list[Route]:
        return [Route("/v1/events", self.post_events, methods=["POST"]),
                Route("/v1/register/{action}", self.post_register, methods=["POST"]),
                Route("/ack", self.get_ack, methods=["GET"])]

    async def get_ack(self, request: Request) -> HTMLResponse:
        """GET /ack?o=&r=&e=&s=: a recipient followed the signed link in a message. A valid link publishes an
        Acknowledgement (the scheduler records it in the obligation's state and stops its escalation) and shows a
        plain confirmation; a tampered, expired or malformed link changes nothing and gets a 4xx page. The pages
        are neutral (court recipients get links too) and name no one. A HEAD request (link scanners) records
        nothing."""
        now = self.clock.now()
        check = verify(self.ack_key, request.query_params, now)
        ACK_LINKS.labels(result=check.verdict).inc()
        if not check.ok:
            return _ack_page(check.http_status, *_ACK_REFUSED[check.verdict])
        if request.method == "GET":
            assert check.expires_at is not None
            ack = Acknowledgement(obligation_id=check.obligation_id, recipient=check.recipient, acknowledged_at=now,
                                  link_expires_at=check.expires_at)
            try:
                await self.broker.publish(dumps(ack), self.topics.acknowledgements,
                                          key=check.obligation_id.encode())
            except KafkaError:
                return _ack_page(503, "Not recorded yet", "The service is busy. Please follow the link again in a "
                                 "few minutes.")
            log.info("acknowledged", extra={"obligation_id": check.obligation_id, "channel": "link"})
        return _ack_page(200, "Acknowledged", "Thank you. Your acknowledgement has been recorded.")


ACK_LINKS = Counter("ppo_ack_links_total", "Acknowledgement links followed, by result", ["result"])
_ACK_REFUSED = {
    "malformed": ("Link not recognised", "This link is incomplete or damaged. Copy the whole link from the message, "
                  "or reply to the message instead."),
    "bad-signature": ("Link not valid", "This link is not valid: it was changed, or it was meant for someone else. "
                      "Nothing has been recorded."),
    "expired": ("Link expired", "This link has expired. Nothing has been recorded; reply to the message instead."),
}


def _ack_key(settings: Settings) -> bytes:
    try:
        return ack_secret(settings)
    except AckSecretMissing as exc:
        raise SystemExit(f"ppo-alerts: {exc}") from None


def _ack_page(status: int, title: str, text: str) -> HTMLResponse:
    body = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"robots\" "
            f"content=\"noindex\"><title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(text)}</p></body></html>")
    return HTMLResponse(body, status_code=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})





def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "problems": []}, status_code=status)


def _reason_label(reason: str) -> str:
    """Bounded label values: the reason's first words, no input echoed."""
    return reason.split(":")[0][:40]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def _holder(request: Request, tokens: dict[str, str]) -> str | None:
    """Who holds the request's bearer token: every stored hash is compared, in constant time, so the answer's
    timing says nothing about which (if any) matched."""
    token = _bearer(request)
    if not token:
        return None
    digest = hashlib.sha256(token.encode()).hexdigest()
    holder = None
    for stored, name in tokens.items():
        if hmac.compare_digest(stored.lower(), digest):
            holder = name
    return holder
