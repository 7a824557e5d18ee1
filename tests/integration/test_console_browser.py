"""The console in a real browser: Debian's Chromium (Playwright, JavaScript off, as the pages must work without it)
signs in through the local OpenID Connect provider's form, sees an obligation published on the topic appear,
acknowledges it, looks at the custody countdown, and as a coordinator searches the register and opens a person's
trail. axe-core (WCAG 2.2 AA, tests/accessibility.py) checks every console page: zero violations. A screenshot of
each page goes to test-artifacts/console/ (gitignored), and to docs/console/ too when CONSOLE_SCREENSHOTS_TO_DOCS=1
(how the committed ones were made, and looked at)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from ppo_alerts.render_examples import CHROMIUM
from shared.kafka import make_broker
from shared.obligations import Obligation
from shared.register import Period, RegisterEntry
from shared.topics import Topics
from tests.accessibility import axe_check_page, describe
from tests.integration.test_console import Console, console, obligation, oidc_provider  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install the Debian package `chromium`"),
]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / ("docs" if os.environ.get("CONSOLE_SCREENSHOTS_TO_DOCS") == "1" else "test-artifacts") / "console"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


async def without_js(browser: Browser) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(java_script_enabled=False, viewport={"width": 1100, "height": 800})
    context.set_default_timeout(15_000)
    return context, await context.new_page()


async def accessible(page: Page, browser: Browser, name: str) -> None:
    """axe-core on what the page shows now, and its screenshot for docs/console/."""
    checker = await browser.new_context(java_script_enabled=True)
    try:
        violations = await axe_check_page(page, checker)
    finally:
        await checker.close()
    assert violations == [], f"{name}: {describe(violations)}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, c: Console, username: str, password: str) -> None:
    await page.goto(c.url + "/")
    await page.get_by_role("button", name="Sign in").click()  # the start button (a link styled as a button)
    await page.fill("#username", username)
    await page.fill("#password", password)
    async with page.expect_navigation(url=c.url + "/"):
        await page.get_by_role("button", name="Sign in").click()


async def publish(c: Console, obligations: list[Obligation], entries: list[RegisterEntry]) -> None:
    topics = Topics(c.settings.topic_prefix)
    broker = make_broker(c.settings, "console-browser-test")
    await broker.connect()
    try:
        for o in obligations:
            await broker.publish(o.model_dump_json().encode(), topics.obligations, key=o.obligation_id.encode())
        for e in entries:
            await broker.publish(json.dumps(e.to_dict()).encode(), topics.register, key=e.person_id.encode())
    finally:
        await broker.stop()


async def reload_until(page: Page, text: str, tries: int = 50) -> None:
    for _ in range(tries):
        if text in await page.content():
            return
        await page.wait_for_timeout(200)
        await page.reload()
    raise AssertionError(f"{text!r} never appeared on {page.url}")


async def test_a_bcu_contact_and_a_coordinator_do_their_jobs_in_the_browser(console: Console,  # noqa: F811
                                                                           browser: Browser) -> None:
    c = console
    now = c.clock.now()
    due = obligation("13-LD", 11, now)
    at_risk = obligation("13-LD", 12, now).model_copy(update={"notify_by": now + timedelta(minutes=20)})
    release = obligation("13-LD", 13, now, rule="A4").model_copy(update={
        "facts": {**obligation("13-LD", 13, now, rule="A4").facts,
                  "release_date": (now + timedelta(days=12)).date().isoformat(), "prison_id": "LEI"}})
    person = due.person
    assert person is not None
    entry = RegisterEntry(person_id=person.person_id, identifiers={"pnc": person.pnc or "", "noms": person.noms or ""},
                          given_name=person.given_name, family_name=person.family_name,
                          date_of_birth=person.date_of_birth,
                          periods=[Period(start=now.date() - timedelta(days=40), end=None, home_bcu="13-LD",
                                          strand="deter", reason="selected at the panel")])
    await publish(c, [due, at_risk, release], [entry])

    context, page = await without_js(browser)
    try:
        await page.goto(c.url + "/")
        await accessible(page, browser, "start")
        await sign_in(page, c, "ann", "ann pw")
        await accessible(page, browser, "bcu-overview")

        await page.goto(c.url + "/obligations")
        await reload_until(page, due.obligation_id)
        assert "at risk" in await page.content()
        await accessible(page, browser, "bcu-open-obligations")

        await page.get_by_role("link", name=due.obligation_id).click()
        await accessible(page, browser, "bcu-obligation")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Acknowledge").click()
        assert "Your acknowledgement is recorded" in await page.content()
        await accessible(page, browser, "bcu-acknowledged")

        await page.goto(c.url + "/custody")
        await reload_until(page, release.obligation_id)
        await accessible(page, browser, "bcu-custody-countdown")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Sign out").click()
        assert "You have signed out" in await page.content()
        await accessible(page, browser, "signed-out")
    finally:
        await context.close()

    context, page = await without_js(browser)
    try:
        await sign_in(page, c, "cora", "cora pw")
        await page.goto(c.url + "/register")
        await page.fill("#q", person.pnc or "")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Search").click()
        await reload_until(page, "1 found")
        await accessible(page, browser, "coordinator-register-search")
        await page.get_by_role("link", name=f"{person.given_name} {person.family_name}").click()
        assert due.obligation_id in await page.content()
        await accessible(page, browser, "coordinator-person-trail")
        await page.goto(c.url + "/obligations")
        assert "You cannot see this page" in await page.content()
        await accessible(page, browser, "refused")
    finally:
        await context.close()
