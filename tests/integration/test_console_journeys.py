"""The console's jobs done end to end, in Chromium with JavaScript off, against the whole pipeline on the real broker:
intake (HTTP and its raw topic), rules, the scheduler (with a 20-second acknowledgement window instead of four
working hours), the notifier (a loopback SMTP server), the console and the local OpenID Connect provider.

- A coordinator selects a person from the register page; the next event about that person, posted to intake,
  raises an A1 that the BCU contact sees appear.
- The BCU contact acknowledges one A1 from the page: its escalation never fires, while the one left alone is
  escalated once its window ends.
- An operator replays a dead letter, choosing it on the dead-letter page.

axe-core checks each page it passes (zero WCAG 2.2 AA violations); screenshots go where
test_console_browser.py puts them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.async_api import Browser

from ppo_alerts.localoidc import LocalOidc
from ppo_alerts.runner import build_service, start_services, stop_services
from services.scheduler.watch import WatchPolicy
from shared.ack import EscalationRequest
from shared.clock import SystemClock
from shared.dead_letters import DeadLetter, read_dead_letters
from shared.kafka import ensure_topics, make_broker, read_to_end
from shared.obligations import Obligation
from shared.service import RunningService
from shared.settings import Settings
from shared.topics import Topics
from tests.integration.test_console import Console, oidc_provider  # noqa: F401 - fixture
from tests.integration.test_console_browser import accessible, browser, reload_until, sign_in, without_js  # noqa: F401
from tests.integration.test_scheduler import start_scheduler
from tests.rulebook_fixtures import DIRECTORY, REGISTER_CSV
from tests.smtp_server import LoopbackSmtpServer

pytestmark = [pytest.mark.kafka, pytest.mark.smtp]

WINDOW = timedelta(seconds=20)  # from a notice's sending to its escalation, when nobody acknowledges it
ALEX_NOMS = "G1234HJ"  # on the register, Leeds (13-LD)
NEW_PNC, NEW_NOMS = "2011/0042424E", "K4567LM"  # selected during the test, into Leeds


@dataclass
class Pipeline:
    settings: Settings
    console: Console
    intake: httpx.AsyncClient
    smtp: LoopbackSmtpServer


def reception(noms: str) -> dict[str, Any]:
    return {"id": f"journey-{uuid.uuid4().hex}", "type": "prison.reception",
            "occurred_at": datetime.now(UTC).isoformat(), "source": "HMPPS",
            "person": {"noms": noms}, "data": {"prison_id": "LEI", "reason": "new"}}


@pytest.fixture
async def pipeline(kafka_bootstrap: str, tmp_path: Path,
                   oidc_provider: tuple[LocalOidc, int]) -> AsyncIterator[Pipeline]:  # noqa: F811
    provider, port = oidc_provider
    register, directory = tmp_path / "register.csv", tmp_path / "directory.yaml"
    register.write_text(REGISTER_CSV)
    directory.write_text(yaml.safe_dump(DIRECTORY))
    smtp = LoopbackSmtpServer().start()
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"jour{uuid.uuid4().hex[:8]}", directory_file=directory,
        register_file=register, state_dir=tmp_path / "state", intake_allow_anonymous=True,
        intake_port=0, rules_port=0, scheduler_port=0, notifier_port=0,
        smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_tls_mode="plain", smtp_allow_plaintext=True,
        scheduler_lease_ttl_s=3.0, scheduler_deadline_grace_s=1.0,
        console_port=port, console_public_url=f"http://127.0.0.1:{port}", console_oidc_issuer=provider.issuer,
        console_oidc_client_id="console", console_oidc_client_secret="console-secret",
        console_session_secret="j" * 40)
    await ensure_topics(settings, Topics(settings.topic_prefix))
    running = await start_services(["intake", "rules", "notifier"], settings, SystemClock())
    scheduler_running, _ = await start_scheduler(settings, WatchPolicy(
        deadline_grace=timedelta(seconds=1), acknowledge_by=lambda t, _: t + WINDOW))
    console_running: RunningService | None = None
    intake = next(s for s in running if s.name == "intake")
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{intake.http.port}", timeout=30)
    try:
        # the operator's health page asks each service where it really listens (the tests' ports are free ones)
        urls = {s.name: f"http://127.0.0.1:{s.http.port}" for s in [*running, scheduler_running]}
        console_running, _ = build_service("console", settings.model_copy(update={"console_service_urls": urls}),
                                           SystemClock())
        await console_running.start()
        console = Console(settings, f"http://127.0.0.1:{port}", SystemClock(), provider)  # type: ignore[arg-type]
        yield Pipeline(settings, console, client, smtp)
    finally:
        await client.aclose()
        if console_running is not None:
            await console_running.stop()
        await scheduler_running.stop()
        await stop_services(running)
        smtp.stop()


async def escalations(settings: Settings) -> list[EscalationRequest]:
    return [EscalationRequest.model_validate_json(v) for _, v in await read_to_end(
        settings, Topics(settings.topic_prefix).escalations) if v]


async def a1_about(settings: Settings, noms: str) -> Obligation | None:
    """The latest state of the A1 about this person, from the obligations topic."""
    found: dict[str, Obligation] = {}
    for _, v in await read_to_end(settings, Topics(settings.topic_prefix).obligations):
        if v:
            o = Obligation.model_validate_json(v)
            if o.rule == "A1" and o.person is not None and o.person.noms == noms:
                found[o.obligation_id] = o
    return next(iter(found.values()), None)


async def until(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := await check()) is not None and found is not False:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"not seen in {timeout} s: {what}")


async def test_select_then_alert_then_acknowledge_stops_the_escalation_and_replay_a_dead_letter(
        pipeline: Pipeline, browser: Browser) -> None:  # noqa: F811
    p, c = pipeline, pipeline.console
    topics = Topics(p.settings.topic_prefix)
    # 1. The coordinator selects a new person into Leeds from the register page, and looks at the other pages.
    context, page = await without_js(browser)
    try:
        await sign_in(page, c, "cora", "cora pw")
        await page.goto(c.url + "/register/select")
        await accessible(page, browser, "coordinator-select")
        await page.fill("#pnc", NEW_PNC)
        await page.fill("#noms", NEW_NOMS)
        await page.fill("#given_name", "Jo")
        await page.fill("#family_name", "Newly")
        await page.check("#home_bcu")  # her one BCU, 13-LD
        await page.fill("#reason", "Core nominal: 14 offences in 12 months")
        await page.fill("#authority", "Leeds IOM panel")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Select onto the register").click()
        assert "Your selection was sent" in await page.content()
        await reload_until(page, "Yes, BCU 13-LD")  # the rules service recorded it; the view has its snapshot
        await accessible(page, browser, "coordinator-person")
        for path, name in (("/deselect", "coordinator-deselect"), ("/move", "coordinator-move"),
                           ("/identifiers", "coordinator-identifiers")):
            await page.goto(page.url.split("?")[0] + path)
            await accessible(page, browser, name)
        for path, name in (("/register/review", "coordinator-list-review"),
                           ("/register/quarterly", "coordinator-quarterly-record"),
                           ("/reports/timeliness", "timeliness")):
            await page.goto(c.url + path)
            await accessible(page, browser, name)
    finally:
        await context.close()

    # 2. The next event about them (and one about Alex) raises an A1 each, which the BCU contact sees appear.
    for noms in (NEW_NOMS, ALEX_NOMS):
        assert (await p.intake.post("/v1/events", json=reception(noms))).status_code == 202
    new_a1 = await until("the new person's A1", lambda: a1_about(p.settings, NEW_NOMS))
    alex_a1 = await until("Alex's A1", lambda: a1_about(p.settings, ALEX_NOMS))
    context, page = await without_js(browser)
    try:
        await sign_in(page, c, "ann", "ann pw")
        await page.goto(c.url + "/obligations")
        await reload_until(page, new_a1.obligation_id)
        assert alex_a1.obligation_id in await page.content()
        # 3. She acknowledges the new person's from the page, within its window; Alex's is left alone.
        await page.get_by_role("link", name=new_a1.obligation_id).click()
        async with page.expect_navigation():
            await page.get_by_role("button", name="Acknowledge").click()
        assert "Your acknowledgement is recorded" in await page.content()
    finally:
        await context.close()

    # 4. Meanwhile a poison record arrives on intake's raw topic; the operator replays it from the page.
    broker = make_broker(p.settings, "journey-agency")
    await broker.connect()
    try:
        await broker.publish(b'{"id": "journey-poison", "type": "prison.reception"}', topics.intake_raw,
                             key=b"agency")
    finally:
        await broker.stop()

    async def parked() -> list[DeadLetter]:
        return [d for d in (await read_dead_letters(p.settings)).letters if d.origin == topics.intake_raw]

    [letter] = await until("the poison record parked", parked)
    context, page = await without_js(browser)
    try:
        await sign_in(page, c, "olu", "olu pw")
        await page.goto(c.url + "/operations/dead-letters")
        await accessible(page, browser, "operator-dead-letters")
        await page.check(f"#letter-{letter.id}")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Replay the selected dead letters").click()
        assert "Replayed 1 dead letter" in await page.content()
        await accessible(page, browser, "operator-replayed")
        await page.goto(c.url + f"/operations/dead-letters/{letter.id}")
        await accessible(page, browser, "operator-dead-letter")
        await page.goto(c.url + "/operations/health")
        health = await page.content()
        assert health.count(">Up<") == 4 and ">Down<" not in health, health
        await accessible(page, browser, "operator-health")
    finally:
        await context.close()
    replays = (await read_dead_letters(p.settings)).replays.get(letter.id, [])
    assert [(r.by, r.target_topic) for r in replays] == [("console:olu", topics.intake_raw)]

    # 5. Alex's A1 is escalated when its window ends; the acknowledged one never is.
    async def alex_escalated() -> list[EscalationRequest]:
        return [e for e in await escalations(p.settings) if e.obligation.obligation_id == alex_a1.obligation_id]

    await until("Alex's escalation", alex_escalated, timeout=WINDOW.total_seconds() + 30)
    await asyncio.sleep(3)  # both windows have ended now: the acknowledged one's escalation would be out too
    assert [e for e in await escalations(p.settings) if e.obligation.obligation_id == new_a1.obligation_id] == []
    state = await a1_about(p.settings, NEW_NOMS)
    assert state is not None and state.status == "acknowledged"
