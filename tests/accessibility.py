"""axe-core (WCAG 2.2 AA) checks for the console's pages in the browser tests.

JavaScript disabled (`new_context(java_script_enabled=False)`, how the tests browse: the pages must work without
it): `page.evaluate` still runs, and evaluating axe.min.js's text defines `window.axe`, but `add_script_tag`'s
script never runs and timers never fire, so `axe.run` (which schedules work with setTimeout) never settles.
So axe runs in a second page of a JavaScript-enabled context (`axe_check`, `axe_check_page`): it opens the same
URL with the same cookies, or is given the very HTML the no-JS page shows (after a form post, say), and answers
the main document with an added `Content-Security-Policy: script-src 'none'`, so none of the page's own scripts
run and the DOM checked is the no-JavaScript one (only `<noscript>` content differs: it is not rendered).

`axe_violations(page)` is for a page whose context has JavaScript on; it raises if it finds timers dead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from playwright.async_api import BrowserContext, Page, Route

from services.console.assets import axe_source

TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")

_RUN = """async ([context, tags]) => {
  const result = await window.axe.run(context ?? document, {runOnly: {type: "tag", values: tags}});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map(n => ({target: n.target, html: n.html, summary: n.failureSummary}))}));
}"""


async def axe_violations(page: Page, *, context: str | None = None) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.0/2.1/2.2 A and AA violations on `page` (or within the CSS selector `context`):
    [{"id", "impact", "help", "helpUrl", "nodes": [{"target", "html", "summary"}]}]. An empty list is a pass."""
    try:
        await asyncio.wait_for(page.evaluate("new Promise(r => setTimeout(() => r(true), 0))"), 2)
    except TimeoutError:
        raise RuntimeError("timers do not fire in this page: its context has JavaScript disabled; "
                           "use axe_check / axe_check_page with a JavaScript-enabled context") from None
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.evaluate(axe_source() + "\n;void 0")
    violations: list[dict[str, Any]] = await page.evaluate(_RUN, [context, list(TAGS)])
    return violations


async def axe_check(context_with_js: BrowserContext, url: str, *, cookies: Sequence[Any] = (),
                    html: str | None = None, context: str | None = None) -> list[dict[str, Any]]:
    """Run axe on `url` in a new page of `context_with_js` with the page's own scripts blocked (see the module
    docstring). `cookies` (e.g. `await no_js_context.cookies()`) are added first, so a signed-in page stays so;
    `html`, when given, is served as the document instead of fetching `url` again."""
    if cookies:
        await context_with_js.add_cookies(list(cookies))
    page = await context_with_js.new_page()
    try:
        async def document(route: Route) -> None:
            if route.request.resource_type != "document":
                await route.fallback()
                return
            if html is None:
                response = await route.fetch()
                headers, body, status = dict(response.headers), await response.body(), response.status
            else:
                headers, body, status = {"content-type": "text/html; charset=utf-8"}, html.encode(), 200
            csp = headers.get("content-security-policy", "")
            headers["content-security-policy"] = f"{csp}, script-src 'none'" if csp else "script-src 'none'"
            await route.fulfill(status=status, headers=headers, body=body)

        await page.route(url, document)
        await page.goto(url)
        return await axe_violations(page, context=context)
    finally:
        await page.close()


async def axe_check_page(page_without_js: Page, context_with_js: BrowserContext, *,
                         context: str | None = None) -> list[dict[str, Any]]:
    """axe on exactly what `page_without_js` shows now: its URL, cookies and current HTML."""
    return await axe_check(context_with_js, page_without_js.url, cookies=await page_without_js.context.cookies(),
                           html=await page_without_js.content(), context=context)


def describe(violations: Sequence[dict[str, Any]]) -> str:
    """A readable assertion message: one line per violation, then its nodes' targets."""
    if not violations:
        return "no axe violations"
    lines = [f"{len(violations)} axe violation(s):"]
    for v in violations:
        lines.append(f"- {v['id']} ({v.get('impact')}): {v.get('help')} {v.get('helpUrl', '')}".rstrip())
        for node in v.get("nodes", []):
            lines.append(f"    {' '.join(map(str, node.get('target', [])))}: {node.get('summary', '')}".rstrip()[:300])
    return "\n".join(lines)
