"""Mail scanners fetch every link in a message before a person sees it, and must never acknowledge it.

An immediate notice, accepted by the mail server, goes through the real scheduler with a 6-second window for an
acknowledgement (wall clock). Before the window ends its link is fetched as Microsoft Safe Links, Proofpoint and
Mimecast do: GET and HEAD, with their kinds of User-Agent, following redirects, directly and through a rewriting
wrapper (a tiny local server standing in for the gateway's redirector), several times. Nothing may reach the
acknowledgements topic, and the escalation must still go out on time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from services.intake.service import ACK_PAGE_HEADERS
from services.scheduler.service import SchedulerService
from services.scheduler.watch import ESCALATED, WatchPolicy
from shared.ack import EscalationRequest
from shared.clock import SystemClock
from shared.http import HttpServer, build_app
from shared.kafka import dumps, make_broker, read_to_end
from shared.obligations import Obligation, obligation_id
from shared.service import RunningService
from shared.settings import Settings
from shared.topics import Topics
from tests.integration.test_ack_repeat import RECIPIENT, ack_settings, acknowledgements, intake_running, signed_link
from tests.rulebook_fixtures import DIRECTORY

pytestmark = [pytest.mark.kafka]

WINDOW = timedelta(seconds=6)  # notified -> escalated when nobody acknowledged
ON_TIME = timedelta(seconds=3)  # the margin: APScheduler's wake-up and the publish
SCANNERS = {  # User-Agents of the kinds these gateways send (their sandboxes also pose as ordinary browsers)
    "safe-links": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0 Microsoft-Defender-SafeLinks",
    "proofpoint": "Mozilla/5.0 (compatible; Proofpoint URL Defense/3.0; +https://www.proofpoint.com)",
    "mimecast": "Mimecast-Url-Protect/1.0 (compatible; link scan)",
}


class Rewriter:
    """The gateway's redirector: Safe Links' `/?url=<link>&data=...`, and a Mimecast-like `/s/<token>`; each
    answers GET and HEAD with a 302 to the original link."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.hits = 0
        self.http = HttpServer(Starlette(routes=[Route("/", self.safe_links, methods=["GET", "HEAD"]),
                                                 Route("/s/{token}", self.mimecast, methods=["GET", "HEAD"])]),
                               "127.0.0.1", 0)

    def wrap(self, url: str) -> list[str]:
        token = uuid.uuid4().hex
        self.tokens[token] = url
        base = f"http://127.0.0.1:{self.http.port}"
        return [f"{base}/?url={quote(url, safe='')}&data=05%7C02%7C&reserved=0", f"{base}/s/{token}"]

    async def safe_links(self, request: Request) -> Response:
        self.hits += 1
        return RedirectResponse(request.query_params["url"], status_code=302)

    async def mimecast(self, request: Request) -> Response:
        self.hits += 1
        target = self.tokens.get(request.path_params["token"])
        return RedirectResponse(target, status_code=302) if target else PlainTextResponse("", status_code=404)


@pytest.fixture
async def rewriter() -> AsyncIterator[Rewriter]:
    r = Rewriter()
    await r.http.start()
    try:
        yield r
    finally:
        await r.http.stop()


def notified_now(oid: str) -> Obligation:
    """An immediate A1 notice the mail server has just accepted: watched for an acknowledgement."""
    now = datetime.now(UTC)
    return Obligation(obligation_id=oid, rule="A1", source_paragraph="001 §7.2", person=None, bcu="13-LD",
                      recipients=[RECIPIENT], recipient_roles={RECIPIENT: "ppo"}, send_at=now, raised_at=now,
                      notify_by=now + timedelta(minutes=15), status="notified", notified_at=now,
                      facts={"rule_title": "test"})


async def escalations(settings: Settings, oid: str) -> list[EscalationRequest]:
    return [r for r in (EscalationRequest.model_validate_json(v) for _, v in await read_to_end(
        settings, Topics(settings.topic_prefix).escalations) if v) if r.obligation.obligation_id == oid]


async def test_scanners_fetching_the_link_acknowledge_nothing_and_the_escalation_fires_on_time(
        kafka_bootstrap: str, tmp_path: Path, rewriter: Rewriter):
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    settings = ack_settings(kafka_bootstrap, tmp_path, directory_file=directory, scheduler_lease_ttl_s=3.0)
    policy = WatchPolicy(deadline_grace=timedelta(seconds=1), acknowledge_by=lambda t, _: t + WINDOW)
    broker = make_broker(settings, "ppo-scheduler")
    scheduler = SchedulerService(settings, broker, SystemClock(), policy=policy)
    running = RunningService("scheduler", broker, HttpServer(build_app("scheduler", lambda: scheduler.ready),
                                                             "127.0.0.1", 0),
                             after_broker=scheduler.start, on_stop=[scheduler.stop])
    async with intake_running(settings) as (intake, client):
        await running.start()
        try:
            deadline = time.monotonic() + 15
            while scheduler.role != "active" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert scheduler.role == "active"
            # The window starts once the scheduler is reading its topic (a new group's first assignment can take
            # seconds): a notice due next week, seen by it, says so.
            later = notified_now(obligation_id("A4", "person", f"fact-{uuid.uuid4().hex}"))
            later.status, later.notified_at = "pending", None
            later.send_at = later.raised_at + timedelta(days=7)
            later.notify_by = later.send_at + timedelta(minutes=15)
            await broker.publish(dumps(later), Topics(settings.topic_prefix).obligations,
                                 key=later.obligation_id.encode())
            while scheduler.store.get(later.obligation_id) is None and time.monotonic() < deadline + 15:
                await asyncio.sleep(0.1)
            assert scheduler.store.get(later.obligation_id) is not None
            o = notified_now(obligation_id("A1", "person", f"fact-{uuid.uuid4().hex}"))
            due = o.notified_at + WINDOW  # type: ignore[operator]
            await broker.publish(dumps(o), Topics(settings.topic_prefix).obligations, key=o.obligation_id.encode())
            link = signed_link(settings, o.obligation_id).replace(settings.public_base_url,
                                                                  str(client.base_url).rstrip("/"))
            fetched = 0
            for agent in SCANNERS.values():
                async with httpx.AsyncClient(headers={"User-Agent": agent}, follow_redirects=True,
                                             timeout=10) as scanner:
                    for _ in range(2):
                        for url in (link, *rewriter.wrap(link)):
                            page = await scanner.get(url)
                            head = await scanner.head(url)
                            fetched += 2
                            assert page.status_code == 200 and '<form method="post"' in page.text
                            assert urlsplit(str(page.url)).path == "/ack"  # followed to the link itself
                            assert head.status_code == 200 and head.content == b""  # like GET, no body
                            assert head.headers["content-type"] == page.headers["content-type"]
                            for name, value in ACK_PAGE_HEADERS.items():
                                assert head.headers[name] == page.headers[name] == value
            assert fetched == 36 and rewriter.hits == 24
            assert datetime.now(UTC) < due, "the scans took longer than the window: make WINDOW longer"
            assert await acknowledgements(settings) == []
            assert len(intake.acks_seen) == 0

            found: list[EscalationRequest] = []
            while not found and datetime.now(UTC) < due + ON_TIME:
                await asyncio.sleep(0.2)
                found = await escalations(settings, o.obligation_id)
            assert len(found) == 1, f"not escalated within the window and its margin ({datetime.now(UTC) - due})"
            assert due <= found[0].requested_at < due + ON_TIME, found[0].requested_at - due
            assert found[0].reason.startswith("not acknowledged")
            assert found[0].recipients == {"leeds.duty@westyorkshire.police.uk": "escalation"}
            state = scheduler.store.get(o.obligation_id)
            assert state is not None and state.status == "notified"
            assert any(h.what.startswith(f"{ESCALATED}: not acknowledged") for h in state.history)
            assert await acknowledgements(settings) == []
        finally:
            await running.stop()
