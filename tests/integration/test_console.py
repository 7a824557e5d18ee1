"""The console against a real broker and a real OpenID Connect provider (ppo_alerts/localoidc.py, Authlib's server
side): signing in with the code flow and PKCE, what each role sees, acknowledging through the page (an
Acknowledgement on the topic, naming who), CSRF, sessions that end, security headers on every answer.

Without a browser: httpx follows the redirects and posts the provider's form as a browser would
(tests/integration/test_console_browser.py drives Chromium through the same pages)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ppo_alerts.localoidc import LocalOidc, OidcClient, OidcUser
from ppo_alerts.render_examples import sample_obligation
from ppo_alerts.runner import build_service
from services.console.web import SECURITY_HEADERS
from shared.ack import Acknowledgement
from shared.clock import FixedClock
from shared.kafka import ensure_topics, make_broker, read_to_end
from shared.obligations import Obligation
from shared.settings import Settings
from shared.topics import Topics
from tests.faults.stack import free_port
from tests.integration.test_localoidc import _Form, _form

pytestmark = [pytest.mark.kafka]

USERS = [
    OidcUser("ann", "ann pw", "Ann Leeds", "ann.ppo@westyorkshire.police.uk", roles=["bcu"], bcus=["13-LD"]),
    OidcUser("cora", "cora pw", "Cora Ordinator", "cora@westyorkshire.police.uk", roles=["coordinator"],
             bcus=["13-LD"]),
    OidcUser("olu", "olu pw", "Olu Operator", "olu@justice.gov.uk", roles=["operator"], bcus=[]),
    OidcUser("nobody", "nobody pw", "No Roles", "nobody@justice.gov.uk", roles=[], bcus=[]),
]


def form_in(page: str) -> _Form:
    """The page's first form's action and every input's value (the provider's sign-in form; a page's CSRF field)."""
    return _form(page)


@dataclass
class Console:
    settings: Settings
    url: str
    clock: FixedClock
    oidc: LocalOidc

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)

    async def sign_in(self, client: httpx.AsyncClient, username: str, password: str | None = None) -> httpx.Response:
        """As a browser does it: the console sends us to the provider, we post its form, it sends us back."""
        to_provider = await client.get("/sign-in")
        assert to_provider.status_code in (302, 303, 307), to_provider.text
        async with httpx.AsyncClient(timeout=30) as browser:
            page = await browser.get(to_provider.headers["location"])
            form = form_in(page.text)
            assert form.fields.get("code_challenge_method") == "S256"  # PKCE, always
            user = next(u for u in USERS if u.username == username)
            back = await browser.post(str(page.url.join(form.action)), data={
                **form.fields, "username": username, "password": password or user.password})
        if back.status_code != 302:
            return back
        return await client.get(back.headers["location"], follow_redirects=True)


@pytest.fixture(scope="module")
def oidc_provider() -> Iterator[tuple[LocalOidc, int]]:
    port = free_port()
    provider = LocalOidc(users=USERS, clients=[OidcClient("console", "console-secret",
                                                          [f"http://127.0.0.1:{port}/auth/callback"])])
    provider.start()
    try:
        yield provider, port
    finally:
        provider.stop()


@pytest.fixture
async def console(kafka_bootstrap: str, tmp_path: Path,
                  oidc_provider: tuple[LocalOidc, int]) -> AsyncIterator[Console]:
    provider, port = oidc_provider
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"con{uuid.uuid4().hex[:8]}", state_dir=tmp_path / "state",
        console_port=port, console_public_url=f"http://127.0.0.1:{port}", console_oidc_issuer=provider.issuer,
        console_oidc_client_id="console", console_oidc_client_secret="console-secret",
        console_session_secret="s" * 40, console_session_hours=8)
    await ensure_topics(settings, Topics(settings.topic_prefix))
    clock = FixedClock(datetime.now(UTC))
    running, _ = build_service("console", settings, clock)
    await running.start()
    try:
        yield Console(settings, f"http://127.0.0.1:{port}", clock, provider)
    finally:
        await running.stop()


def obligation(bcu: str, n: int, now: datetime, rule: str = "A1") -> Obligation:
    o = sample_obligation(rule)
    return o.model_copy(update={"obligation_id": f"{rule}-{bcu}-{n:04d}", "bcu": bcu, "status": "pending",
                                "send_at": now - timedelta(minutes=5), "notify_by": now + timedelta(hours=3),
                                "raised_at": now - timedelta(minutes=5)})


async def publish_obligations(settings: Settings, obligations: list[Obligation]) -> None:
    broker = make_broker(settings, "console-test")
    await broker.connect()
    try:
        for o in obligations:
            await broker.publish(o.model_dump_json().encode(), Topics(settings.topic_prefix).obligations,
                                 key=o.obligation_id.encode())
    finally:
        await broker.stop()


async def until_page_shows(client: httpx.AsyncClient, path: str, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        page = (await client.get(path)).text
        if text in page or time.monotonic() > deadline:
            return page
        await asyncio.sleep(0.1)


async def test_a_bcu_contact_signs_in_sees_only_their_bcu_and_acknowledges(console: Console) -> None:
    now = console.clock.now()
    await publish_obligations(console.settings, [obligation("13-LD", 1, now), obligation("21-ST", 2, now)])
    async with console.client() as client:
        home = await console.sign_in(client, "ann")
        assert home.status_code == 200 and "Signed in as Ann Leeds" in home.text, home.text
        page = await until_page_shows(client, "/obligations", "A1-13-LD-0001")
        assert "A1-13-LD-0001" in page and "A1-21-ST-0002" not in page  # another BCU's: never shown
        assert (await client.get("/obligations/A1-21-ST-0002")).status_code == 404  # nor found by its id
        detail = await client.get("/obligations/A1-13-LD-0001")
        form = form_in(detail.text.split('action="/obligations/A1-13-LD-0001/acknowledge"', 1)[1])
        assert form.fields["csrf"]
        done = await client.post("/obligations/A1-13-LD-0001/acknowledge", data={"csrf": form.fields["csrf"]})
        assert done.status_code == 303
        after = await client.get(done.headers["location"])
        assert "Your acknowledgement is recorded" in after.text and "Acknowledged by ann.ppo@" in after.text
    acks = [Acknowledgement.model_validate_json(v) for _, v in
            await read_to_end(console.settings, Topics(console.settings.topic_prefix).acknowledgements) if v]
    assert [(a.obligation_id, a.recipient) for a in acks] == [("A1-13-LD-0001", "ann.ppo@westyorkshire.police.uk")]


async def test_a_post_without_the_sessions_csrf_token_changes_nothing(console: Console) -> None:
    now = console.clock.now()
    await publish_obligations(console.settings, [obligation("13-LD", 3, now)])
    async with console.client() as client:
        await console.sign_in(client, "ann")
        await until_page_shows(client, "/obligations", "A1-13-LD-0003")
        for data in ({}, {"csrf": "forged"}):
            refused = await client.post("/obligations/A1-13-LD-0003/acknowledge", data=data)
            assert refused.status_code == 400
        signed_out = await client.post("/sign-out", data={"csrf": "forged"})
        assert signed_out.status_code == 400
    assert not [v for _, v in await read_to_end(console.settings,
                                                Topics(console.settings.topic_prefix).acknowledgements) if v]


async def test_each_role_sees_what_it_needs_and_no_more(console: Console) -> None:
    now = console.clock.now()
    await publish_obligations(console.settings, [obligation("13-LD", 4, now), obligation("21-ST", 5, now)])
    async with console.client() as operator:
        await console.sign_in(operator, "olu")
        page = await until_page_shows(operator, "/obligations", "A1-21-ST-0005")
        assert "A1-13-LD-0004" in page and "A1-21-ST-0005" in page  # every BCU
        assert (await operator.get("/register")).status_code == 403  # no personal data it does not need
        detail = await operator.get("/obligations/A1-13-LD-0004")
        assert "Not acknowledged yet" in detail.text and "/acknowledge" not in detail.text
    async with console.client() as coordinator:
        await console.sign_in(coordinator, "cora")
        assert (await coordinator.get("/obligations")).status_code == 403
        assert (await coordinator.get("/register")).status_code == 200
    async with console.client() as nobody:
        home = await console.sign_in(nobody, "nobody")
        assert home.status_code == 200
        for path in ("/obligations", "/custody", "/register"):
            assert (await nobody.get(path)).status_code == 403, path


async def test_signed_out_visitors_reach_only_the_start_page(console: Console) -> None:
    async with console.client() as client:
        start = await client.get("/")
        assert start.status_code == 200 and 'href="/sign-in"' in start.text
        for path in ("/obligations", "/obligations/A1-x", "/custody", "/register", "/people/p1"):
            answer = await client.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/", path
        wrong = await console.sign_in(client, "ann", password="not it")
        assert wrong.status_code == 200 and "Signed in" not in wrong.text  # the provider's form again


async def test_a_session_ends_after_its_hours_however_active(console: Console) -> None:
    async with console.client() as client:
        await console.sign_in(client, "ann")
        assert (await client.get("/obligations")).status_code == 200
        console.clock.set(console.clock.now() + timedelta(hours=7, minutes=59))
        assert (await client.get("/obligations")).status_code == 200
        console.clock.set(console.clock.now() + timedelta(minutes=2))
        ended = await client.get("/obligations")
        assert ended.status_code == 303 and ended.headers["location"] == "/?ended=1"
        start = await client.get("/?ended=1")
        assert "Your session has ended" in start.text and "Signed in as" not in start.text
        assert (await client.get("/obligations")).headers["location"] == "/"  # cleared: signed out now


async def test_every_answer_carries_the_security_headers_and_pages_are_not_cached(console: Console) -> None:
    async with console.client() as client:
        answers = [await client.get(p) for p in ("/", "/obligations", "/nowhere", "/stylesheets/none.css")]
        await console.sign_in(client, "ann")
        answers.append(await client.get("/obligations"))
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.url, name)
    assert answers[-1].headers["cache-control"] == "no-store"
    cookie = answers[-1].request.headers.get("cookie", "")
    assert "ppo_console=" in cookie


def test_pages_escape_what_the_payload_says() -> None:
    """A person's name from an agency's payload is text on the page, never markup."""
    from services.console.web import ConsolePages

    pages: Callable[..., ConsolePages] = ConsolePages
    env = pages(Settings(), None, FixedClock(datetime.now(UTC)), None, None, Topics("t"), None).templates  # type: ignore[arg-type]
    html = env.get_template("_macros.html").module.person_name(  # type: ignore[attr-defined]
        sample_obligation("A1").person.model_copy(update={"given_name": "<script>alert(1)</script>"}))
    assert "<script>" not in str(html) and re.search(r"&lt;script&gt;", str(html))


async def test_hostile_input_on_every_form_and_query_is_refused_or_shown_as_text(console: Console) -> None:
    """Control characters, a huge body, the wrong content type, an absurd page number: a clear answer, never a
    500, and nothing published."""
    async with console.client() as client:
        await console.sign_in(client, "cora")
        for q in ("\x00\x1b[31m<b>", "9" * 10_000, "2026/0000001Z", "\u202eevil"):
            page = await client.get("/register", params={"q": q})
            assert page.status_code == 200 and "<b>" not in page.text.split("</header>", 1)[1], q
    async with console.client() as client:
        await console.sign_in(client, "ann")
        for page_number in ("-5", "99999999999999999999", "x"):
            assert (await client.get("/obligations", params={"page": page_number})).status_code == 200
        huge = await client.post("/obligations/A1-x/acknowledge", content=b"csrf=" + b"a" * 100_000,
                                 headers={"content-type": "application/x-www-form-urlencoded"})
        wrong_type = await client.post("/obligations/A1-x/acknowledge", content=b'{"csrf": "x"}',
                                       headers={"content-type": "application/json"})
        assert huge.status_code == 400 and wrong_type.status_code == 400
    assert not [v for _, v in await read_to_end(console.settings,
                                                Topics(console.settings.topic_prefix).acknowledgements) if v]
