"""Intake: HTTP `POST /v1/events` and the raw Kafka intake topic -> validated canonical events.

Bad input gets a 4xx with what, where and why, and is kept on the dead-letter topic with its reason so it
can be fixed and replayed. Accepted payloads are published before the HTTP 202 (or the offset commit).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from services.intake.access import RateLimiter, ScopeRefused, check_scopes
from services.intake.acks_seen import AcksSeen, Key, key_of, london_time
from services.intake.feeds import decode_json
from services.intake.plausibility import InstantWindow
from services.intake.translate import PART_NOT_TAKEN, Translation, not_taken, translate_many
from shared import metrics
from shared.ack import Acknowledgement, AckSecretMissing, LinkCheck, ack_secret, reference, verify
from shared.clock import Clock
from shared.consumer_watch import WATCH
from shared.errors import InputRejected
from shared.events import EventBase
from shared.kafka import (
    MAX_PARKED_PAYLOAD_BYTES,
    RECEIVED_AT_HEADER,
    dead_letter_guard,
    dumps,
    parked_payload,
    read_to_end,
    records_as_they_are,
)
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger("ppo.intake")
LOG_EACH_EVENT_UP_TO = 1_000  # a larger batch logs one line with its size and first ids (the topic has them all)


def person_key(event: EventBase) -> bytes:
    """The key on `events`: the best identifier the event carries. One person known to a court by PNC and to a
    prison by NOMS has two keys here; the rules' resolve stage re-keys every event by the register's person id
    (`<prefix>.events.by-person`), so one instance sees all of a person's events, in order."""
    ids = event.person.identifiers()
    for kind in ("pnc", "noms", "crn", "cro"):
        if kind in ids:
            return f"{kind}:{ids[kind]}".encode()
    return b"-"


class RecentIds:
    """Event ids published lately, by this process: a cheap first line of de-duplication, never relied on.

    Another intake instance, or this one after a restart, publishes the same event again; the rules ledger is
    the real de-duplication (an event whose obligations it holds, by their identity from the fact, publishes
    nothing; one reported again after a failed send is told apart by its event id), and a replay reaches the
    instance that holds the person (same key) or one that learnt the obligations from the obligations topic."""

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

    def forget(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            self._ids.pop(event_id, None)


class Accepted(NamedTuple):
    ids: list[str]  # every event of the body, published now or before (a duplicate id)
    not_taken: list[dict[str, str]]  # parts of the body not taken (a Common Platform defendant...), field by field


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
        self.acks_seen = AcksSeen()  # "Already acknowledged at ...": what every instance has recorded

        async def read_acks() -> list[bytes | None]:
            return [value for _, value in await read_to_end(settings, self.topics.acknowledgements)]

        self.read_acks = read_acks  # the catch-up read (a test gives its own)
        self._ack_locks: weakref.WeakValueDictionary[Key, asyncio.Lock] = weakref.WeakValueDictionary()
        self.ready = False
        metrics.initialise("intake")
        broker.subscriber(
            self.topics.intake_raw, group_id="ppo-intake", auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR, decoder=records_as_they_are,
        )(WATCH.watched("intake", self.topics.intake_raw,
                        dead_letter_guard("intake", broker, self.topics.dead_letter, self.on_raw)))
        # Every instance follows every acknowledgement, without a group: a press on another instance is known
        # here a moment later. What cannot be read is the scheduler's to dead-letter; here it is skipped.
        broker.subscriber(
            self.topics.acknowledgements, auto_offset_reset="earliest", ack_policy=AckPolicy.ACK_FIRST,
            decoder=records_as_they_are,
        )(WATCH.watched("intake", self.topics.acknowledgements, self.on_acknowledgement))

    # --- core: one body in, canonical events out ---------------------------------------------------------

    async def accept(self, body: Any, channel: str, received_at: datetime, agency: str = "kafka",
                     scopes: list[str] | None = None, coordinator: bool = True,
                     admit: Callable[[int], None] | None = None) -> Accepted:
        """Translate, check the sender may send every event in it (nothing is published if not), publish.

        `admit(n)` is asked before anything is published (HTTP: the rate limit, counted in events; it raises
        to refuse). A batch is handed to Kafka at once and acknowledged with one wait: an await per event
        would hold a 100,000-event body for minutes."""
        translations: list[Translation] = translate_many(body, received_at, self.window)  # raises InputRejected
        check_scopes((e.type for t in translations for e in t.events), agency, scopes,  # type: ignore[attr-defined]
                     coordinator)  # raises ScopeRefused
        if admit is not None:
            admit(sum(len(t.events) for t in translations))
        accepted: list[str] = []
        fresh: list[EventBase] = []
        for t in translations:
            metrics.EVENTS_RECEIVED.labels(format=t.format, channel=channel).inc()
            for reason in t.ignored:
                metrics.EVENTS_IGNORED.labels(service="intake", reason=reason).inc()
            for event in t.events:
                accepted.append(event.id)
                if self.recent.seen(event.id):
                    metrics.EVENTS_IGNORED.labels(service="intake", reason="duplicate-event-id").inc()
                    continue
                fresh.append(event)
        await self._publish(fresh, received_at)
        for event in fresh:
            metrics.EVENTS_ACCEPTED.labels(event_type=event.type).inc()  # type: ignore[attr-defined]
        if len(fresh) <= LOG_EACH_EVENT_UP_TO:
            for event in fresh:
                log.info("event accepted", extra={"event_id": event.id, "event_type": event.type,  # type: ignore[attr-defined]
                                                  "channel": channel})
        elif fresh:
            log.info("events accepted", extra={"events": len(fresh), "event_ids": [e.id for e in fresh[:20]],
                                               "channel": channel})
        return Accepted(accepted, not_taken(translations, is_array=isinstance(body, list)))

    async def _publish(self, events: list[EventBase], received_at: datetime) -> None:
        """Every event handed to the producer, then one wait for all acknowledgements. On failure the ids are
        forgotten by the de-duplication, so the sender's retry is published, not taken for a duplicate."""
        headers = {RECEIVED_AT_HEADER: received_at.isoformat()}
        try:
            pending = [await self.broker.publish(dumps(event), self.topics.events, key=person_key(event),
                                                 headers=headers, no_confirm=True)
                       for event in events]
            await asyncio.gather(*pending)
        except BaseException:
            self.recent.forget(e.id for e in events)
            raise

    async def dead_letter(self, raw: bytes, channel: str, rejection: InputRejected, agency: str | None,
                          parts: int = 1) -> None:
        """Keep a payload, or the `parts` of one that were not taken, with the reason (counted per part)."""
        reason = rejection.reason
        metrics.EVENTS_REJECTED.labels(channel=channel, reason=_reason_label(reason)).inc(parts)
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
            result = await self.accept(payload, "kafka", now)
        except InputRejected as exc:
            await self.dead_letter(body, "kafka", exc, None)
            return
        if result.not_taken:
            await self.dead_letter(body, "kafka", InputRejected(PART_NOT_TAKEN, result.not_taken), None,
                                   parts=len(result.not_taken))

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
        wait = self.rate_limiter.take(agency)  # every request costs one event, even one refused
        if wait:
            return _too_many(wait)
        limit = self.settings.intake_max_body_bytes
        length = request.headers.get("content-length")
        declared_too_large = length is not None and length.isdigit() and int(length) > limit
        # A body declared too large is read only as far as a dead letter keeps (its head, to recognise it by)
        raw, too_large = await _read_body(request, MAX_PARKED_PAYLOAD_BYTES if declared_too_large else limit)
        if too_large or declared_too_large:
            refused = InputRejected("body too large", [{"field": "(body)", "problem": (
                f"larger than PPO_INTAKE_MAX_BODY_BYTES ({limit} bytes): send it in smaller arrays; its first "
                f"bytes are kept")}])
            await self.dead_letter(raw, "http", refused, agency)
            return JSONResponse(refused.as_dict() | {"error": f"body larger than {limit} bytes"}, status_code=413)
        now = self.clock.now()
        if problem := content_type_problem(request.headers.get("content-type")):
            refused = InputRejected("unsupported content type", [{"field": "content-type", "problem": problem}])
            await self.dead_letter(raw, "http", refused, agency)
            return JSONResponse(refused.as_dict(), status_code=415)
        try:
            payload = decode_json(raw, "(body)")  # never a JSON, Unicode or recursion error: InputRejected
        except InputRejected as rejection:
            await self.dead_letter(raw, "http", rejection, agency)
            return JSONResponse(rejection.as_dict(), status_code=400)

        def admit(events: int) -> None:  # the rest of the body's events (the request paid for one)
            if events > 1 and (wait := self.rate_limiter.take(agency, events - 1)):
                raise RateLimited(wait)

        try:
            result = await self.accept(payload, "http", now, agency,
                                       self.settings.intake_token_scopes.get(agency) if not coordinator else None,
                                       coordinator=coordinator is not None, admit=admit)
        except RateLimited as exc:
            return _too_many(exc.wait)
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
        answer: dict[str, Any] = {"accepted": result.ids}
        if result.not_taken:  # the rest was taken; these parts are kept on the dead-letter topic to be mended
            answer["not_taken"] = result.not_taken
            await self.dead_letter(raw, "http", InputRejected(PART_NOT_TAKEN, result.not_taken), agency,
                                   parts=len(result.not_taken))
        return JSONResponse(answer, status_code=202)

    def routes(self) -> list[Route]:
        from services.intake.dead_letters_http import dead_letter_routes  # operators: list, show, replay

        return [Route("/v1/events", self.post_events, methods=["POST"]),
                Route("/v1/register/{action}", self.post_register, methods=["POST"]),
                *dead_letter_routes(self),
                Route("/ack", self.get_ack, methods=["GET"]),
                Route("/ack", self.post_ack, methods=["POST"])]

    async def get_ack(self, request: Request) -> HTMLResponse:
        """GET (and HEAD) /ack?o=&r=&e=&s=: the signed link in a message. Mail gateways and link scanners fetch
        every link before a person sees it, so a GET records nothing: a valid link shows a page with one button,
        which POSTs the same four values (`post_ack`). A tampered, expired or malformed link gets a 4xx page. The
        pages are neutral (court recipients get links too), name no one and echo nothing of the query string."""
        check = verify(self.ack_key, request.query_params, self.clock.now())
        if not check.ok:
            metrics.ACK_LINKS.labels(result=check.verdict).inc()
            return _ack_page(check.http_status, *_ACK_REFUSED[check.verdict])
        metrics.ACK_LINKS.labels(result="shown").inc()
        self.acks_seen.start_catch_up(self.read_acks)  # the press that may follow finds it read
        return _ack_page(200, "Acknowledge this message", "Press the button to record that you have received "
                         "this message and are dealing with it. Nothing is recorded until you press it.",
                         _ack_form(check, request.query_params["s"], "Acknowledge"), about=_about(check))

    async def post_ack(self, request: Request) -> HTMLResponse:
        """POST /ack (the page's button): the four signed values as a form. The first press by a recipient
        publishes an Acknowledgement (the scheduler records it and stops the escalation); a later one, here or
        on another instance, answers when it was first recorded and publishes nothing."""
        body = await _small_body(request, ACK_BODY_LIMIT)
        values = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace") if body else "").items() if v}
        check = verify(self.ack_key, values, self.clock.now())
        if not check.ok:
            metrics.ACK_LINKS.labels(result=check.verdict).inc()
            return _ack_page(check.http_status, *_ACK_REFUSED[check.verdict])
        assert check.expires_at is not None
        key = key_of(check.obligation_id, check.recipient)
        async with self._ack_lock(key):  # a double click on this instance: one record
            await self.acks_seen.catch_up(self.read_acks, ACK_CATCH_UP_S)
            first = self.acks_seen.first(*key)
            if first is not None:
                metrics.ACK_LINKS.labels(result="already").inc()
                return _ack_page(200, "Already acknowledged", f"This message was already acknowledged at "
                                 f"{london_time(first)}. Nothing more is needed.", about=_about(check))
            now = self.clock.now()
            ack = Acknowledgement(obligation_id=check.obligation_id, recipient=check.recipient,
                                  acknowledged_at=now, link_expires_at=check.expires_at)
            try:
                await self.broker.publish(dumps(ack), self.topics.acknowledgements,
                                          key=check.obligation_id.encode())
            except KafkaError:
                metrics.ACK_LINKS.labels(result="unavailable").inc()
                log.warning("acknowledgement not published; asked to press again",
                            extra={"obligation_id": check.obligation_id, "channel": "link"})
                return _ack_page(503, "Not recorded yet", "Your acknowledgement could not be recorded just now. "
                                 "Please press the button again in a few minutes.",
                                 _ack_form(check, values["s"], "Try again"), about=_about(check))
            self.acks_seen.learn(ack)  # known here at once; other instances read it from the topic
        metrics.ACK_LINKS.labels(result="ok").inc()
        log.info("acknowledged", extra={"obligation_id": check.obligation_id, "channel": "link"})
        return _ack_page(200, "Acknowledged", f"Thank you. Your acknowledgement was recorded at {london_time(now)}. "
                         "Nothing more is needed.", about=_about(check))

    def _ack_lock(self, key: Key) -> asyncio.Lock:
        lock = self._ack_locks.get(key)
        if lock is None:
            lock = self._ack_locks[key] = asyncio.Lock()
        return lock

    async def on_acknowledgement(self, message: KafkaMessage) -> None:
        """An acknowledgement any instance published (this one's too, already known)."""
        self.acks_seen.learn_record(message.body)


ACK_FIELDS = ("o", "r", "e", "s")
ACK_BODY_LIMIT = 4096  # four short signed values
ACK_CATCH_UP_S = 10.0  # a press waits this long, at most once per process, for the topic to be read to its end


async def _read_body(request: Request, limit: int) -> tuple[bytes, bool]:
    """The body, or as much as was read before it passed `limit` (then True: it is too large). Chunks joined
    once: adding bytes to bytes per chunk is quadratic in a 2 MB body."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), True
    return b"".join(chunks), False


async def _small_body(request: Request, limit: int) -> bytes:
    """At most `limit` bytes of the body (more is not a form of ours: what fits is checked, and fails)."""
    body, _ = await _read_body(request, limit)
    return body[:limit]


_ACK_REFUSED = {
    "malformed": ("Link not recognised", "This link is incomplete or damaged, so nothing has been recorded. Copy the "
                  "whole link from the message into your browser, or reply to the message instead."),
    "bad-signature": ("Link not valid", "This link was changed, or it was meant for someone else, so nothing has "
                      "been recorded. Use the link in the message you received, or reply to the message instead."),
    "expired": ("Link expired", "This link has expired, so nothing has been recorded. Reply to the message "
                "instead."),
}


def _about(check: LinkCheck) -> str:
    """Which message this is, as the message itself says it ("Ref A1-3f9a1c2e"): from the verified id only, and
    naming nobody (court recipients see it too)."""
    return f"Ref {reference(check.obligation_id)}"


def _ack_form(check: LinkCheck, signature_hex: str, label: str) -> str:
    """The button: the four values as verified (the recipient in lower case, the 64 hex digits checked), never
    the query string as it came. Posts to `ack` beside the page, which the CSP's form-action allows."""
    assert check.expires_at is not None
    values = {"o": check.obligation_id, "r": check.recipient, "e": str(int(check.expires_at.timestamp())),
              "s": signature_hex.strip()}
    fields = "".join(f'<input type="hidden" name="{name}" value="{html.escape(values[name])}">'
                     for name in ACK_FIELDS)
    return f'<form method="post" action="ack">{fields}<button type="submit">{html.escape(label)}</button></form>'


def _ack_key(settings: Settings) -> bytes:
    try:
        return ack_secret(settings)
    except AckSecretMissing as exc:
        raise SystemExit(f"ppo-alerts: {exc}") from None


# The pages load nothing, run nothing, may not be framed (clickjacking a button that records) and post only here.
ACK_PAGE_HEADERS = {
    "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}


# Inline, as the CSP allows (nothing is loaded); without it the page is still plain, readable HTML. The green
# button and the yellow focus ring are GOV.UK's.
_ACK_STYLE = ("body{font-family:Arial,'Liberation Sans',Helvetica,sans-serif;font-size:19px;line-height:1.4;"
              "color:#0b0c0c;background:#fff;max-width:38em;margin:0 auto;padding:2em 1em}"
              "h1{font-size:1.9em;line-height:1.1;margin:0 0 .5em}.about{color:#505a5f;margin:0 0 1em}"
              "button{font:inherit;font-weight:bold;margin-top:.5em;padding:.45em 1.2em;color:#fff;"
              "background:#00703c;border:0;border-bottom:3px solid #002d18;cursor:pointer}"
              "button:hover{background:#005a30}button:focus{outline:3px solid #fd0;outline-offset:0;"
              "box-shadow:inset 0 0 0 1px #fd0}")


def _ack_page(status: int, title: str, text: str, form: str = "", about: str = "") -> HTMLResponse:
    about_line = f'<p class="about">{html.escape(about)}</p>' if about else ""
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}'
            f'</title><style>{_ACK_STYLE}</style></head><body><main><h1>{html.escape(title)}</h1>{about_line}'
            f'<p>{html.escape(text)}</p>{form}</main></body></html>')
    return HTMLResponse(body, status_code=status, headers=ACK_PAGE_HEADERS)


def content_type_problem(content_type: str | None) -> str | None:
    """JSON, or no content type at all (some feeds send none); a form or text body is refused, not guessed at."""
    if content_type is None:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return None
    return f"{media[:60]!r} is not accepted; send JSON with Content-Type: application/json"


class RateLimited(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__(f"retry after {wait:.1f} s")
        self.wait = wait


def _too_many(wait: float) -> JSONResponse:
    return JSONResponse({"error": "too many events from this credential", "problems": []},
                        status_code=429, headers={"Retry-After": RateLimiter.retry_after(wait)})


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
