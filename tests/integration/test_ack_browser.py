"""The acknowledgement link in a real browser: headless Chromium (Debian's, driven by Playwright) with JavaScript
off, against intake on the real broker. Opening the link records nothing; the button records one
Acknowledgement; opening and pressing again says "Already acknowledged at ..." and records nothing more.

A screenshot of each page is written to test-artifacts/ack/ (gitignored) for a person to look at.
Needs the Debian package `chromium` (/usr/bin/chromium); skipped with that reason when it is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, Response, async_playwright

from ppo_alerts.render_examples import CHROMIUM
from services.intake.service import ACK_PAGE_HEADERS
from shared.ack import reference
from shared.obligations import obligation_id
from tests.integration.test_ack_repeat import ALREADY, ack_settings, acknowledgements, intake_running, signed_link

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install the Debian package `chromium` "
                                                     "(apt-get install -y chromium) to open the page in a browser"),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ack"


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    """A page in a context without JavaScript: the button must work as a plain HTML form."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = await browser.new_context(java_script_enabled=False, viewport={"width": 800, "height": 600})
            context.set_default_timeout(10_000)
            yield await context.new_page()
        finally:
            await browser.close()


def secure(response: Response | None) -> Response:
    assert response is not None
    for name, value in ACK_PAGE_HEADERS.items():
        assert response.headers.get(name.lower()) == value, name
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"
    return response


async def press(page: Page) -> Response:
    button = page.get_by_role("button", name="Acknowledge")
    assert await button.is_visible()
    async with page.expect_navigation() as navigation:
        await button.click()
    return secure(await navigation.value)


async def test_open_press_open_again_press_again(kafka_bootstrap: str, tmp_path: Path, page: Page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    settings = ack_settings(kafka_bootstrap, tmp_path)
    oid = obligation_id("A4", "person", f"fact-{tmp_path.name}")
    async with intake_running(settings) as (_, client):
        url = signed_link(settings, oid).replace(settings.public_base_url, str(client.base_url).rstrip("/"))
        opened = secure(await page.goto(url))
        assert opened.status == 200 and await page.title() == "Acknowledge this message"
        text = await page.inner_text("main")
        assert f"Ref {reference(oid)}" in text and reference(oid).startswith("A4-")  # the ref and the rule
        assert "Nothing is recorded until you press it" in text
        assert "<script" not in await page.content() and "PPO" not in text
        await page.screenshot(path=ARTIFACTS / "1-link-opened.png", full_page=True)
        await page.set_viewport_size({"width": 360, "height": 640})  # a phone: the mail was opened there
        await page.screenshot(path=ARTIFACTS / "1-link-opened-phone.png", full_page=True)
        await page.set_viewport_size({"width": 800, "height": 600})
        assert await acknowledgements(settings) == []  # opening the link records nothing

        pressed = await press(page)
        assert pressed.status == 200 and pressed.request.method == "POST"
        assert urlsplit(pressed.url).path == "/ack" and not urlsplit(pressed.url).query  # nothing in the URL
        assert await page.inner_text("h1") == "Acknowledged"
        await page.screenshot(path=ARTIFACTS / "2-acknowledged.png", full_page=True)
        acks = await acknowledgements(settings)
        assert [(a.obligation_id, a.recipient) for a in acks] == [(oid, "leeds.ppo@westyorkshire.police.uk")]

        secure(await page.goto(url))  # the link again, days later or from another tab: the button again
        again = await press(page)
        assert again.status == 200 and await page.inner_text("h1") == "Already acknowledged"
        assert ALREADY.search(await page.inner_text("main"))
        await page.screenshot(path=ARTIFACTS / "3-already-acknowledged.png", full_page=True)
        assert len(await acknowledgements(settings)) == 1

        refused = secure(await page.goto(url[:-10]))  # a link cut short by a mail client
        assert refused.status == 400 and await page.inner_text("h1") == "Link not recognised"
        await page.screenshot(path=ARTIFACTS / "4-link-damaged.png", full_page=True)
