"""Intake's operator routes for dead letters (the HTTP face of `ppo-alerts dead-letters`; the logic is
`shared.dead_letters`):

- `GET /v1/dead-letters?service=&reason=&since=&until=&topic=`: one summary per dead letter, no personal data;
- `GET /v1/dead-letters/{partition}-{offset}`: one record, its payload only with `?personal_data=true`;
- `POST /v1/dead-letters/replay`: `{"ids": [...]}` or `{"all": true, <filters>}`, `"again"`, and for one id a
  mended `"payload"`; each replay is recorded with the operator's name.

Only a bearer token in `PPO_OPERATOR_TOKENS` (sha256 hex -> operator name) may use them: 401 without a known
token, 403 for an agency's or a coordinator's token.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.dead_letters import (
    Filter,
    Publish,
    detail,
    parse_id,
    parse_instant,
    plan_replay,
    read_dead_letters,
    replay,
    summary,
)
from shared.errors import problems_of
from shared.topics import Topics

if TYPE_CHECKING:
    from services.intake.service import IntakeService

log = logging.getLogger("ppo.intake")

FILTERS = ("service", "reason", "since", "until", "topic")


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    all: bool = False
    service: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    topic: str | None = None
    again: bool = False
    payload: str | None = None  # a mended body, for one id

    @field_validator("ids")
    @classmethod
    def _ids(cls, ids: list[str] | None) -> list[str] | None:
        return None if ids is None else [parse_id(i) for i in ids]

    @field_validator("since", "until", mode="before")
    @classmethod
    def _instant(cls, value: Any) -> Any:
        return parse_instant(value) if isinstance(value, str) else value


def _filter(params: dict[str, Any]) -> Filter:
    """Filters from query parameters or a body; ValueError names the one that is wrong."""
    values: dict[str, Any] = {k: params.get(k) or None for k in FILTERS}
    for k in ("since", "until"):
        if isinstance(values[k], str):
            try:
                values[k] = parse_instant(values[k])
            except ValueError as exc:
                raise ValueError(k, str(exc)) from None
    return Filter(**values)


def dead_letter_routes(intake: IntakeService) -> list[Route]:
    from services.intake.service import _bearer, _error, _holder  # here: service.py imports this module

    settings = intake.settings
    topics = Topics(settings.topic_prefix)

    def operator(request: Request) -> str | JSONResponse:
        name = _holder(request, settings.operator_tokens)
        if name is not None:
            return name
        if _bearer(request) and (intake.coordinator(request) or _holder(request, settings.intake_tokens)):
            return _error(403, "dead letters need an operator token (PPO_OPERATOR_TOKENS)")
        return _error(401, "missing or unknown bearer token")

    def unavailable() -> JSONResponse:
        return JSONResponse({"error": "Kafka unavailable, try again", "problems": []}, status_code=503,
                            headers={"Retry-After": "5"})

    async def list_letters(request: Request) -> JSONResponse:
        if isinstance(who := operator(request), JSONResponse):
            return who
        try:
            where = _filter(dict(request.query_params))
        except ValueError as exc:
            return JSONResponse({"error": "invalid filter", "problems": [{"field": exc.args[0], "problem":
                                                                           exc.args[1]}]}, status_code=422)
        try:
            letters = await read_dead_letters(settings)
        except KafkaError:
            return unavailable()
        return JSONResponse({"dead_letters": [summary(d, letters.replays.get(d.id, []))
                                              for d in letters.letters if where.matches(d)],
                             "unreadable": letters.unreadable})

    async def show_letter(request: Request) -> JSONResponse:
        if isinstance(who := operator(request), JSONResponse):
            return who
        try:
            letter_id = parse_id(f"{request.path_params['partition']}-{request.path_params['offset']}")
        except ValueError:
            return _error(404, "not a dead-letter id (PARTITION-OFFSET, e.g. 0-12)")
        personal_data = request.query_params.get("personal_data", "").lower() in ("1", "true", "yes")
        try:
            letters = await read_dead_letters(settings)
        except KafkaError:
            return unavailable()
        d = letters.get(letter_id)
        if d is None:
            return _error(404, f"no dead letter {letter_id}")
        if personal_data:  # who read a payload is worth knowing later; the log line names no one else
            log.info("dead-letter payload shown", extra={"dead_letter": letter_id, "operator": who})
        return JSONResponse(detail(d, letters.replays.get(d.id, []), personal_data))

    async def replay_letters(request: Request) -> JSONResponse:
        if isinstance(who := operator(request), JSONResponse):
            return who
        raw = await request.body()
        if len(raw) > settings.intake_max_body_bytes:
            return _error(413, f"body larger than {settings.intake_max_body_bytes} bytes")
        try:
            ask = ReplayRequest.model_validate_json(raw)
        except ValidationError as exc:
            return JSONResponse({"error": "invalid replay request", "problems": problems_of(exc)}, status_code=422)
        if (ask.ids is None) != ask.all:
            return _error(422, 'give "ids", or "all": true (with filters), not both')
        where = Filter(service=ask.service, reason=ask.reason, since=ask.since, until=ask.until, topic=ask.topic)
        try:
            letters = await read_dead_letters(settings)
            decisions = plan_replay(letters, ask.ids, where, again=ask.again,
                                    mended=None if ask.payload is None else ask.payload.encode())
            done = await replay(decisions, topics, who, intake.clock.now(), _publish(intake))
        except KafkaError:
            return unavailable()
        log.info("dead letters replayed", extra={"dead_letters": [d.id for d in done][:50], "operator": who})
        refused = [{"id": d.id, "reason": d.refused} for d in decisions if d.refused]
        body = {"replayed": [{"id": d.id, "target_topic": d.target_topic, "mended": d.mended} for d in done],
                "refused": refused}
        # 409 when something was asked and nothing could be done: the caller must look at the reasons
        return JSONResponse(body, status_code=409 if refused and not done else 200)

    return [Route("/v1/dead-letters", list_letters, methods=["GET"]),
            Route("/v1/dead-letters/replay", replay_letters, methods=["POST"]),
            Route("/v1/dead-letters/{partition}-{offset}", show_letter, methods=["GET"])]


def _publish(intake: IntakeService) -> Publish:
    """`shared.dead_letters.Publish` over intake's broker (acks=all, idempotent)."""

    async def publish(topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        await intake.broker.publish(value, topic, key=key, headers={k: v.decode() for k, v in headers})

    return publish

