"""The console's front-end assets: govuk-frontend and axe-core are installed from the lockfile, a small GOV.UK
template page styled by the vended CSS passes axe-core's WCAG 2.2 AA rules in Chromium with JavaScript off, and a
broken page fails with the expected rule ids (so the harness in tests/accessibility.py does find problems).

A screenshot of the good page is written to test-artifacts/console/assets-check.png (gitignored).
Needs the Debian package `chromium` (/usr/bin/chromium) for the browser tests; skipped with that reason without.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from ppo_alerts.render_examples import CHROMIUM
from services.console.assets import axe_source, govuk_dist, govuk_version
from tests.accessibility import axe_check_page, axe_violations, describe

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
browser_only = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install the Debian package "
                                  "`chromium` (apt-get install -y chromium) to check pages in a browser")

CROWN = ('<svg focusable="false" role="img" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 324 60" height="30" '
         'width="162" fill="currentcolor" class="govuk-header__logotype" aria-label="GOV.UK"><title>GOV.UK</title>'
         '<path d="M22.6 10.4c-1 .4-2-.1-2.4-1-.4-.9.1-2 1-2.4.9-.4 2 .1 2.4 1s-.1 2-1 2.4m-5.9 6.7c-.9.4-2-.1-2.4-1'
         '-.4-.9.1-2 1-2.4.9-.4 2 .1 2.4 1s-.1 2-1 2.4m10.8-3.7c-1 .4-2-.1-2.4-1-.4-.9.1-2 1-2.4.9-.4 2 .1 2.4 1s0 2-1 '
         '2.4m3.3 4.8c-1 .4-2-.1-2.4-1-.4-.9.1-2 1-2.4.9-.4 2 .1 2.4 1s-.1 2-1 2.4"></path></svg>')

GOOD = f"""<!DOCTYPE html>
<html lang="en" class="govuk-template">
<head>
  <meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Find a person – PPO alerts</title>
  <link rel="icon" sizes="48x48" href="/assets/images/favicon.ico">
  <link rel="icon" sizes="any" href="/assets/images/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/govuk-frontend.min.css">
</head>
<body class="govuk-template__body">
  <a href="#main-content" class="govuk-skip-link">Skip to main content</a>
  <header class="govuk-header" data-module="govuk-header">
    <div class="govuk-header__container govuk-width-container">
      <div class="govuk-header__logo">
        <a href="/" class="govuk-header__link govuk-header__link--homepage">{CROWN}</a>
      </div>
      <div class="govuk-header__content">
        <a href="/" class="govuk-header__link govuk-header__service-name">PPO alerts</a>
      </div>
    </div>
  </header>
  <div class="govuk-width-container">
    <main class="govuk-main-wrapper" id="main-content">
      <h1 class="govuk-heading-l">Find a person on the register</h1>
      <form method="get" action="/search" novalidate>
        <div class="govuk-form-group">
          <label class="govuk-label" for="identifier">PNC ID, CRO number or name</label>
          <div id="identifier-hint" class="govuk-hint">For example, 2001/0123456X</div>
          <input class="govuk-input govuk-input--width-20" id="identifier" name="identifier" type="text"
                 aria-describedby="identifier-hint">
        </div>
        <button type="submit" class="govuk-button" data-module="govuk-button">Search</button>
      </form>
    </main>
  </div>
  <footer class="govuk-footer">
    <div class="govuk-width-container">
      <div class="govuk-footer__meta">
        <div class="govuk-footer__meta-item govuk-footer__meta-item--grow">
          <h2 class="govuk-visually-hidden">Support links</h2>
          <ul class="govuk-footer__inline-list">
            <li class="govuk-footer__inline-list-item"><a class="govuk-footer__link" href="/accessibility">
              Accessibility statement</a></li>
          </ul>
        </div>
      </div>
    </div>
  </footer>
</body>
</html>
"""

BAD = """<!DOCTYPE html>
<html lang="en" class="govuk-template">
<head><meta charset="utf-8"><title>Broken</title><link rel="stylesheet" href="/govuk-frontend.min.css"></head>
<body class="govuk-template__body">
  <main class="govuk-main-wrapper">
    <h1 class="govuk-heading-l">Broken</h1>
    <p style="color:#c8c8c8;background:#ffffff">Grey on white, too faint to read</p>
    <img src="/assets/images/govuk-icon-180.png" width="40" height="40">
    <form><input class="govuk-input" type="text" name="q"><button class="govuk-button">Go</button></form>
  </main>
</body>
</html>
"""
PAGES = {"/good.html": GOOD, "/bad.html": BAD}


class Handler(SimpleHTTPRequestHandler):
    """govuk_dist() at the root (the CSS asks for /assets/...), and the two test pages."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path in PAGES:
            body = PAGES[self.path].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(govuk_dist())))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            await browser.close()


def test_assets_are_installed():
    dist = govuk_dist()
    assert govuk_version().startswith("5.")
    for name in ("govuk-frontend.min.css", "govuk-frontend.min.js", "assets/images/favicon.ico",
                 "assets/images/favicon.svg", "assets/images/govuk-crest.svg", "assets/images/govuk-icon-180.png"):
        assert (dist / name).is_file(), name
    assert list((dist / "assets" / "fonts").glob("*.woff2"))
    assert "/assets/fonts/" in (dist / "govuk-frontend.min.css").read_text(encoding="utf-8")
    assert "axe.run" in axe_source() or "axe" in axe_source()[:2000]


@browser_only
async def test_good_page_has_no_violations_without_javascript(browser: Browser, base_url: str):
    no_js = await browser.new_context(java_script_enabled=False, viewport={"width": 1000, "height": 700})
    with_js = await browser.new_context(viewport={"width": 1000, "height": 700})
    no_js.set_default_timeout(10_000)
    with_js.set_default_timeout(10_000)
    page = await no_js.new_page()
    response = await page.goto(f"{base_url}/good.html")
    assert response is not None and response.ok
    font = await page.evaluate("getComputedStyle(document.querySelector('h1')).fontFamily")
    assert "GDS Transport" in font
    await page.wait_for_load_state("networkidle")
    assert await page.evaluate("document.fonts.check('bold 36px \"GDS Transport\"')")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "assets-check.png", full_page=True)
    violations = await axe_check_page(page, with_js)
    assert violations == [], describe(violations)


@browser_only
async def test_broken_page_gives_the_expected_violations(browser: Browser, base_url: str):
    context = await browser.new_context()
    context.set_default_timeout(10_000)
    page = await context.new_page()
    await page.goto(f"{base_url}/bad.html")
    violations = await axe_violations(page)
    ids = {v["id"] for v in violations}
    assert {"label", "image-alt", "color-contrast"} <= ids, describe(violations)
    assert "color-contrast" in describe(violations)
    scoped = await axe_violations(page, context="form")
    assert {v["id"] for v in scoped} == {"label"}, describe(scoped)


@browser_only
async def test_axe_in_a_javascript_disabled_page_says_why(browser: Browser, base_url: str):
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await page.goto(f"{base_url}/bad.html")
    with pytest.raises(RuntimeError, match="JavaScript disabled"):
        await axe_violations(page)
