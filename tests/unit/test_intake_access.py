"""Per-agency credentials: scopes, constant-time token check, the rate limit, errors without internals."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import httpx
from starlette.applications import Starlette

from services.intake.access import RateLimiter, allowed
from services.intake.service import IntakeService
from shared.clock import FixedClock
from shared.settings import Settings
from tests.unit.test_intake_fuzz import CANONICAL, HEARING, HMPPS, RecordingBroker


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def app(**settings: object) -> tuple[Starlette, RecordingBroker]:
    broker = RecordingBroker()
    base = {"intake_tokens": {sha("court"): "HMCTS", sha("prison"): "HMP Leeds", sha("open"): "Trusted"},
            "intake_token_scopes": {"HMCTS": ["court.", "warrant."], "HMP Leeds": ["prison."]}}
    service = IntakeService(Settings(**{**base, **settings}), broker,  # type: ignore[arg-type]
                            FixedClock(datetime(2026, 3, 2, 12, tzinfo=UTC)))
    return Starlette(routes=service.routes()), broker


def post_all(application: Starlette, requests: list[tuple[str | None, object]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://i") as c:
            out = []
            for token, body in requests:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                out.append(await c.post("/v1/events", json=body, headers=headers))
            return out
    return asyncio.run(run())


RECEPTION, WARRANT = CANONICAL[0], CANONICAL[1]


def test_scopes_by_event_type_prefix() -> None:
    assert allowed("prison.reception", ["prison."], coordinator=False)
    assert not allowed("warrant.issued", ["prison."], coordinator=False)
    assert allowed("warrant.issued", ["court", "warrant"], coordinator=False)
    assert not allowed("register.selected", None, coordinator=False)
    assert allowed("register.selected", ["prison."], coordinator=True)


def test_a_courts_token_cannot_submit_prison_movements_and_a_prisons_cannot_submit_warrants() -> None:
    application, broker = app()
    codes = [r.status_code for r in post_all(application, [
        ("court", RECEPTION), ("court", HMPPS), ("court", WARRANT), ("court", HEARING),
        ("prison", WARRANT), ("prison", HEARING), ("prison", RECEPTION), ("prison", HMPPS),
        ("open", WARRANT), (None, WARRANT), ("forged", WARRANT),
    ])]
    assert codes == [403, 403, 202, 202, 403, 403, 202, 202, 202, 401, 401]
    # Only what was accepted was published: the court's warrant and hearing, the prison's two receptions
    # (the trusted agency's warrant repeats an id already published).
    events = [m for t, m in broker.published if t.endswith(".events")]
    assert len(events) == 4
    assert sum(b'"prison.reception"' in m for m in events) == 2


def test_a_mixed_array_is_refused_whole() -> None:
    application, broker = app()
    response = post_all(application, [("court", [WARRANT, RECEPTION])])[0]
    assert response.status_code == 403 and "prison.reception" in response.json()["error"]
    assert broker.published == []


def test_rate_limit_per_credential() -> None:
    application, _ = app(intake_rate_per_s=1.0, intake_rate_burst=3)
    responses = post_all(application, [("open", WARRANT)] * 5 + [("court", WARRANT)])
    assert [r.status_code for r in responses] == [202, 202, 202, 429, 429, 202]
    assert int(responses[3].headers["Retry-After"]) >= 1


def test_token_bucket_refills_with_time() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, monotonic=lambda: now[0])
    assert [limiter.take("a"), limiter.take("a")] == [0.0, 0.0]
    assert limiter.take("a") == 0.5
    now[0] = 0.5
    assert limiter.take("a") == 0.0


def test_errors_never_show_internals() -> None:
    application, _ = app(intake_max_body_bytes=2048)
    responses = post_all(application, [("open", {"x": "y" * 5000}), ("open", {"type": "nope", "data": {}})])
    assert [r.status_code for r in responses] == [413, 422]
    for r in responses:
        assert "Traceback" not in r.text and "/work/" not in r.text and ".py" not in r.text
