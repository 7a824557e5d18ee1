"""The coordinator's pages of the console against a real broker, a real OpenID Connect provider and the real rules
service: a change made on a page is checked, published as one `register.*` event naming who made it, recorded by
the rules service and shown on the person page from the register snapshot it publishes; a refused change
publishes nothing; the quarterly record, its CSV and the list review (C6) read the register as the topic has it.

One console and one rules service serve the whole module (each test uses its own people), so it stays fast."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml

from ppo_alerts.localoidc import LocalOidc, OidcClient, OidcUser
from ppo_alerts.runner import build_service
from shared import calendar as cal
from shared.ack import Acknowledgement
from shared.clock import FixedClock
from shared.identifiers import CHECK_LETTERS
from shared.kafka import RECEIVED_AT_HEADER, ensure_topics, read_to_end
from shared.settings import Settings
from shared.topics import Topics
from tests.faults.stack import free_port
from tests.integration.test_console import USERS, Console, form_in, obligation, publish_obligations, until_page_shows
from tests.rulebook_fixtures import DIRECTORY, REGISTER_CSV

pytestmark = [pytest.mark.kafka]

# cora (test_console.USERS) coordinates 13-LD; cole coordinates 21-ST (the other BCU of the rule-book directory)
COLE = OidcUser("cole", "cole pw", "Cole Stoke", "cole@staffordshire.police.uk", roles=["coordinator"],
                bcus=["21-ST"])
PASSWORDS = {u.username: u.password for u in [*USERS, COLE]}
SAM = "pnc:2022/0031337W"  # 21-ST, in REGISTER_CSV
ALEX = "pnc:2006/0777001G"  # 13-LD, in REGISTER_CSV


def pnc(year: int, serial: int) -> str:
    digits = f"{year % 100:02d}{serial:07d}"
    return f"{year}/{serial:07d}{CHECK_LETTERS[int(digits) % 23]}"


def date_fields(name: str, day: date) -> dict[str, str]:
    return {f"{name}-day": str(day.day), f"{name}-month": str(day.month), f"{name}-year": str(day.year)}


@dataclass
class Stack:
    console: Console
    topics: Topics

    @property
    def settings(self) -> Settings:
        return self.console.settings

    def today(self) -> date:
        return cal.london_date(self.console.clock.now())

    @asynccontextmanager
    async def signed_in(self, username: str) -> AsyncIterator[httpx.AsyncClient]:
        async with self.console.client() as client:
            home = await sign_in(client, username)
            assert home.status_code == 200 and "Signed in as" in home.text, home.text
            yield client

    async def events(self) -> list[tuple[dict[str, Any], dict[str, bytes], bytes | None]]:
        """Every record on the events topic: the event, its headers, its key."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from shared.kafka import client_kwargs

        consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(self.settings))
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self.topics.events)
            for _ in range(50):
                if partitions:
                    break
                await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
                partitions = consumer.partitions_for_topic(self.topics.events)
            assert partitions, "the events topic has no partitions"
            tps = [TopicPartition(self.topics.events, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out = []
            while True:
                behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                if not behind:
                    return out
                for records in (await consumer.getmany(*behind, timeout_ms=500)).values():
                    out += [(json.loads(r.value), dict(r.headers or ()), r.key) for r in records]
        finally:
            await consumer.stop()

    async def events_about(self, pnc_value: str) -> list[dict[str, Any]]:
        return [e for e, _, _ in await self.events() if e.get("person", {}).get("pnc") == pnc_value]


@pytest.fixture(scope="module")
def register_oidc() -> Iterator[tuple[LocalOidc, int]]:
    port = free_port()
    provider = LocalOidc(users=[*USERS, COLE], clients=[OidcClient("console", "console-secret",
                                                                   [f"http://127.0.0.1:{port}/auth/callback"])])
    provider.start()
    try:
        yield provider, port
    finally:
        provider.stop()


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
                register_oidc: tuple[LocalOidc, int]) -> AsyncIterator[Stack]:
    provider, port = register_oidc
    tmp = tmp_path_factory.mktemp("console-register")
    (tmp / "register.csv").write_text(REGISTER_CSV)
    (tmp / "directory.yaml").write_text(yaml.safe_dump(DIRECTORY))
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"reg{uuid.uuid4().hex[:8]}", state_dir=tmp / "state",
        register_file=tmp / "register.csv", directory_file=tmp / "directory.yaml", rules_port=0,
        console_port=port, console_public_url=f"http://127.0.0.1:{port}", console_oidc_issuer=provider.issuer,
        console_oidc_client_id="console", console_oidc_client_secret="console-secret",
        console_session_secret="s" * 40, console_session_hours=8)
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings, topics)
    clock = FixedClock(datetime.now(UTC))
    rules, _ = build_service("rules", settings, clock)
    await rules.start()  # imports the register file: the console's view then has Alex, Pat (13-LD) and Sam (21-ST)
    console, _ = build_service("console", settings, clock)
    await console.start()
    try:
        yield Stack(Console(settings, f"http://127.0.0.1:{port}", clock, provider), topics)
    finally:
        await console.stop()
        await rules.stop()


async def sign_in(client: httpx.AsyncClient, username: str) -> httpx.Response:
    """As test_console.Console.sign_in does it, for this module's users too."""
    to_provider = await client.get("/sign-in")
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(to_provider.headers["location"])
        form = form_in(page.text)
        back = await browser.post(str(page.url.join(form.action)), data={
            **form.fields, "username": username, "password": PASSWORDS[username]})
    assert back.status_code == 302, back.text
    return await client.get(back.headers["location"], follow_redirects=True)


async def csrf_of(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, (path, page.status_code, page.text[:500])
    return form_in(page.text.split("</header>", 1)[1]).fields["csrf"]


async def post(client: httpx.AsyncClient, path: str, data: dict[str, str], form_on: str | None = None) \
        -> httpx.Response:
    return await client.post(path, data={"csrf": await csrf_of(client, form_on or path), **data})


async def select(client: httpx.AsyncClient, who: str, on: date, home_bcu: str = "13-LD",
                 **extra: str) -> httpx.Response:
    return await post(client, "/register/select", {
        "pnc": who, "given_name": "Robin", "family_name": f"Test{who[-3:]}", **date_fields("date_of_birth",
                                                                                          date(1990, 2, 3)),
        "home_bcu": home_bcu, "strand": "deter", "reason": "NIM core nominal", "authority": "Supt Example",
        **date_fields("on", on), **extra})


def person_path(person_pnc: str) -> str:
    return f"/people/pnc:{person_pnc}"


async def test_each_change_publishes_one_event_naming_who_and_the_person_page_then_shows_it(stack: Stack) -> None:
    who = pnc(2019, 4100001)
    started = stack.today() - timedelta(days=100)
    async with stack.signed_in("cora") as cora:
        sent = await select(cora, who, started)
        assert sent.status_code == 303, sent.text
        assert sent.headers["location"].startswith("/people/pnc%3A2019/") and "sent=select" in sent.headers["location"]
        page = await cora.get(sent.headers["location"])
        assert "Your selection was sent" in page.text and "once the rules service records it" in page.text
        page = await until_page_shows(cora, person_path(who), "Yes, BCU 13-LD")
        assert f"Yes, BCU 13-LD, since {started}" in page
        assert "Robin" in page and "NIM core nominal" in page and "/deselect" in page

        updated = await post(cora, f"{person_path(who)}/identifiers", {"crn": "X123456", "reason": "from nDelius"})
        assert updated.status_code == 303, updated.text
        assert "X123456" in await until_page_shows(cora, person_path(who), "X123456")

        moved = await post(cora, f"{person_path(who)}/move", {"to_bcu": "21-ST", "reason": "moved house",
                                                              "authority": "Supt Example"})
        assert moved.status_code == 303, moved.text
        page = await until_page_shows(cora, person_path(who), "Yes, BCU 21-ST")
        assert "Yes, BCU 21-ST" in page and "/deselect" not in page  # no longer cora's to change
        assert (await cora.get(f"{person_path(who)}/deselect")).status_code == 404

    events = await stack.events_about(who)
    assert [e["type"] for e in events] == ["register.selected", "register.updated", "register.moved_area"]
    assert {e["source"] for e in events} == {"console:cora"}
    selected, updated_event, moved_event = events
    assert selected["data"] == {"home_bcu": "13-LD", "strand": "deter", "reason": "NIM core nominal",
                                "authority": "Supt Example"}
    assert selected["person"]["date_of_birth"] == "1990-02-03" and selected["person"]["given_name"] == "Robin"
    assert selected["id"].startswith("register-console-")
    assert updated_event["person"]["crn"] == "X123456" and updated_event["data"] == {"reason": "from nDelius"}
    assert moved_event["data"] == {"from_bcu": "13-LD", "to_bcu": "21-ST", "reason": "moved house",
                                   "authority": "Supt Example"}
    records = [(h, k) for e, h, k in await stack.events() if e.get("person", {}).get("pnc") == who]
    assert len(records) == 3 and all(h.get(RECEIVED_AT_HEADER) and k == f"pnc:{who}".encode() for h, k in records)


async def test_every_form_input_has_a_label_and_radios_sit_in_a_fieldset(stack: Stack) -> None:
    async with stack.signed_in("cora") as cora:
        for path in ("/register/select", f"/people/{ALEX}/deselect", f"/people/{ALEX}/move",
                     f"/people/{ALEX}/identifiers", "/register/quarterly"):
            page = (await cora.get(path)).text
            main = page.split('id="main-content"', 1)[1].split("</main>", 1)[0]
            ids = re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', main)
            assert ids, path
            for field_id in ids:
                assert '<label class="govuk-label' in main and f'for="{field_id}"' in main, (path, field_id)
            assert main.count('type="radio"') == 0 or "<legend" in main, path
            assert "style=" not in page and "<script" not in page, path


async def test_a_deselection_names_the_reason_and_authority_and_the_page_shows_it(stack: Stack) -> None:
    who = pnc(2018, 4200002)
    async with stack.signed_in("cora") as cora:
        assert (await select(cora, who, stack.today() - timedelta(days=30))).status_code == 303
        await until_page_shows(cora, person_path(who), "Yes, BCU 13-LD")
        form = await cora.get(f"{person_path(who)}/deselect")
        assert 'type="radio"' in form.text and "<legend" in form.text and 'value="two_year_review"' in form.text
        missing = await post(cora, f"{person_path(who)}/deselect", {"reason": "stopped_offending"})
        assert missing.status_code == 422 and "govuk-error-summary" in missing.text
        assert 'href="#authority"' in missing.text and 'id="authority-error"' in missing.text
        done = await post(cora, f"{person_path(who)}/deselect", {"reason": "stopped_offending",
                                                                 "authority": "BCU Commander"})
        assert done.status_code == 303, done.text
        page = await until_page_shows(cora, person_path(who), "Stopped offending")
        assert "Stopped offending" in page and "BCU Commander" in page and ">No</dd>" in page
    events = await stack.events_about(who)
    assert [e["type"] for e in events] == ["register.selected", "register.deselected"]
    assert events[1]["data"] == {"reason": "stopped_offending", "authority": "BCU Commander"}
    assert events[1]["source"] == "console:cora"


async def test_refused_changes_publish_nothing(stack: Stack) -> None:
    before = len(await stack.events())
    today = stack.today()
    async with stack.signed_in("cora") as cora:
        await until_page_shows(cora, f"/people/{ALEX}", "Yes, BCU 13-LD")
        refusals: list[tuple[httpx.Response, int, str]] = []

        async def expect(answer: httpx.Response, status: int, text: str) -> None:
            refusals.append((answer, status, text))

        # the planner's refusals, re-rendered on the form
        await expect(await post(cora, f"/people/{ALEX}/move", {"to_bcu": "99-XX"}), 422, "is not in the directory")
        await expect(await select(cora, pnc(2017, 4300003), today + timedelta(days=10)), 422, "in the future")
        await expect(await post(cora, "/register/select", {"pnc": "2006/0777001G", "noms": "J3456KL",
                                                           "home_bcu": "13-LD"}), 409, "identity refused")
        await expect(await post(cora, f"/people/{ALEX}/identifiers", {"noms": "H2345JK"}), 409,
                     "belongs to someone on another BCU")  # Sam's NOMS: who he is is not shown
        await expect(await post(cora, "/register/select", {"pnc": "2022/0031337W", "home_bcu": "13-LD"}), 409,
                     "another BCU&#39;s register")
        await expect(await post(cora, "/register/select", {"pnc": "2006/0777001G", "home_bcu": "13-LD"}), 200,
                     "Nothing to change")
        await expect(await post(cora, f"/people/{ALEX}/move", {"to_bcu": "13-LD"}), 200, "Nothing to change")
        # another BCU's people, and BCUs, are not cora's: not found, as an unknown person is
        for path in (f"/people/{SAM}/deselect", f"/people/{SAM}/move", f"/people/{SAM}/identifiers",
                     "/people/pnc:2000/0000001B/deselect"):
            await expect(await cora.get(path), 404, "Person not found")
            await expect(await cora.post(path, data={"csrf": await csrf_of(cora, "/register/select"),
                                                     "reason": "other", "authority": "x", "to_bcu": "13-LD"}),
                         404, "Person not found")
        await expect(await select(cora, pnc(2017, 4300004), today, home_bcu="21-ST"), 422, "one of your BCUs")
        # CSRF: missing, forged, another form's content type
        for data in ({"reason": "other", "authority": "x"}, {"csrf": "forged", "reason": "other", "authority": "x"}):
            await expect(await cora.post(f"/people/{ALEX}/deselect", data=data), 400, "expired")
        await expect(await cora.post("/register/select", data={"pnc": "2017/4300005X", "home_bcu": "13-LD"}), 400,
                     "expired")
        await expect(await cora.post(f"/people/{ALEX}/deselect", content=b'{"reason": "other"}',
                                     headers={"content-type": "application/json"}), 400, "expired")
        await expect(await cora.post("/register/review/C6-x/reviewed", data={"csrf": "forged"}), 400, "expired")
        # hostile input: a clear refusal on the form, never a 500
        hostile = {"given_name": "Ro\x00bin\x1b[31m", "family_name": "\u202eevil", "reason": "r" * 10_000}
        answer = await select(cora, pnc(2017, 4300006), today, **hostile)
        await expect(answer, 422, "must not contain control")
        assert "500 characters or fewer" in answer.text and "\x00" not in answer.text and "\u202e" not in answer.text
        await expect(await select(cora, pnc(2017, 4300007), today, **{"date_of_birth-year": "99999"}), 422,
                     "real date")
        await expect(await select(cora, pnc(2017, 4300008), today, **{"on-month": "13"}), 422, "real date")
        await expect(await select(cora, pnc(2017, 4300009), today, **{"on-day": ""}), 422, "must include a day")
        await expect(await select(cora, pnc(2017, 4300010), today, **date_fields("date_of_birth", today + timedelta(
            days=1))), 422, "must be in the past")
        await expect(await select(cora, "2017/4300011", today), 422, "PNC number")  # no check character
        await expect(await select(cora, pnc(2017, 4300012), today, is_admin="1"), 400, "fields this page does not")
        await expect(await post(cora, f"/people/{ALEX}/deselect", {"reason": "bored", "authority": "x"}), 422,
                     "Choose one of the reasons")
        await expect(await post(cora, "/register/select", {}), 422, "at least one identifier")
        for q in ({"year": "99999999999999999999", "quarter": "1"}, {"year": "2026", "quarter": "5"},
                  {"year": "\x00<b>"}):
            await expect(await cora.get("/register/quarterly", params=q), 400, "There is a problem")
    for answer, status, text in refusals:
        assert answer.status_code == status and text in answer.text, (answer.request.url, answer.status_code,
                                                                       status, text, answer.text[-3000:])
        assert "<b>" not in answer.text.split("</header>", 1)[-1]
    # nothing was published: the one change accepted afterwards is the only new event
    async with stack.signed_in("cora") as cora:
        assert (await select(cora, pnc(2017, 4300099), today)).status_code == 303
    after = await stack.events()
    assert len(after) == before + 1 and [e["person"]["pnc"] for e, _, _ in after].count(pnc(2017, 4300099)) == 1


async def test_quarterly_record_shows_a_move_as_moved_out_and_moved_in_and_downloads_as_csv(stack: Stack) -> None:
    out_of_leeds, into_leeds = pnc(2016, 4400001), pnc(2016, 4400002)
    started = stack.today() - timedelta(days=100)  # an earlier quarter: only the moves are this quarter's
    async with stack.signed_in("cora") as cora, stack.signed_in("cole") as cole:
        assert (await select(cora, out_of_leeds, started)).status_code == 303
        assert (await select(cole, into_leeds, started, home_bcu="21-ST")).status_code == 303
        await until_page_shows(cora, person_path(out_of_leeds), "Yes, BCU 13-LD")
        await until_page_shows(cole, person_path(into_leeds), "Yes, BCU 21-ST")
        assert (await post(cora, f"{person_path(out_of_leeds)}/move", {"to_bcu": "21-ST"})).status_code == 303
        assert (await post(cole, f"{person_path(into_leeds)}/move", {"to_bcu": "13-LD"})).status_code == 303
        await until_page_shows(cora, person_path(out_of_leeds), "Yes, BCU 21-ST")
        await until_page_shows(cora, person_path(into_leeds), "Yes, BCU 13-LD")
        before = len(await stack.events())  # a change dated when the person was on another BCU's register
        back = await post(cora, f"{person_path(into_leeds)}/deselect", {"reason": "other", "authority": "x",
                                                                        **date_fields("on", started)})
        assert back.status_code == 422 and "BCU 21-ST&#39;s register, not one of yours" in back.text, back.text
        assert len(await stack.events()) == before
        page = await cora.get("/register/quarterly")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        rows = re.findall(r'data-change="(\w+)">[^<]*</td>\s*<td class="govuk-table__cell">([\d-]+)</td>\s*'
                          r'<td class="govuk-table__cell">([^<]*)</td>', page.text)
        today = stack.today().isoformat()
        assert ("moved_out", today, f"Robin Test{out_of_leeds[-3:]}") in rows, rows
        assert ("moved_in", today, f"Robin Test{into_leeds[-3:]}") in rows, rows
        year, quarter = stack.today().year, (stack.today().month - 1) // 3 + 1
        csv = await cora.get("/register/quarterly", params={"year": year, "quarter": quarter, "format": "csv"})
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        assert csv.headers["content-disposition"] == f'attachment; filename="ppo-quarterly-{year}-Q{quarter}.csv"'
        assert csv.headers["cache-control"] == "no-store"
        lines = csv.text.splitlines()
        assert lines[0] == "bcu,change,date,pnc,cro,noms,crn,given_name,family_name,strand,reason,authority"
        assert f"13-LD,moved_out,{today},{out_of_leeds}," in csv.text and f"13-LD,moved_in,{today},{into_leeds},"\
            in csv.text
        assert all(line.startswith("13-LD,") for line in lines[1:])  # cora's BCU only
        earlier = await cora.get("/register/quarterly", params={"year": started.year,
                                                                 "quarter": (started.month - 1) // 3 + 1})
        assert f"Robin Test{out_of_leeds[-3:]}" in earlier.text and 'data-change="added"' in earlier.text
        assert f"Robin Test{into_leeds[-3:]}" not in earlier.text  # added to 21-ST: cole's record, not cora's


async def test_list_review_lists_the_bcus_people_and_marking_it_reviewed_acknowledges_once(stack: Stack) -> None:
    now = stack.console.clock.now()
    await publish_obligations(stack.settings, [obligation("13-LD", 1, now, rule="C6"),
                                               obligation("21-ST", 2, now, rule="C6")])
    async with stack.signed_in("cora") as cora:
        page = await until_page_shows(cora, "/register/review", "C6-13-LD-0001")
        assert "Alex Sample" in page and "Sam Junior" not in page and "Pat Former" not in page  # today, 13-LD
        assert f'href="/people/{ALEX.replace(":", "%3A")}/deselect"' in page
        assert f'href="/people/{ALEX.replace(":", "%3A")}/move"' in page
        assert "C6-21-ST-0002" not in page
        assert (await cora.post("/register/review/C6-21-ST-0002/reviewed",
                                data={"csrf": await csrf_of(cora, "/register/review")})).status_code == 404
        for _ in range(2):
            done = await post(cora, "/register/review/C6-13-LD-0001/reviewed", {}, form_on="/register/review")
            assert done.status_code == 303 and done.headers["location"] == "/register/review?done=reviewed"
        after = await cora.get(done.headers["location"])
        assert "The list review is recorded as done" in after.text and "By cora@westyorkshire.police.uk" in after.text
    acks = [Acknowledgement.model_validate_json(v) for _, v in
            await read_to_end(stack.settings, stack.topics.acknowledgements) if v]
    assert [(a.obligation_id, a.recipient) for a in acks] == [("C6-13-LD-0001", "cora@westyorkshire.police.uk")]


async def test_only_coordinators_reach_the_register_pages(stack: Stack) -> None:
    async with stack.signed_in("ann") as ann:
        for path in ("/register", "/register/select", "/register/quarterly", "/register/review",
                     f"/people/{ALEX}/deselect", f"/people/{ALEX}/move", f"/people/{ALEX}/identifiers"):
            assert (await ann.get(path)).status_code == 403, path
        for path in ("/register/select", f"/people/{ALEX}/deselect", "/register/review/C6-13-LD-0001/reviewed"):
            assert (await ann.post(path, data={"csrf": "x"})).status_code == 403, path
        trail = await ann.get(f"/people/{ALEX}")
        assert trail.status_code == 200 and "Every obligation about this person" in trail.text
        assert "1988-08-08" not in trail.text  # the entry is for coordinators
    async with stack.console.client() as anonymous:
        for path in ("/register/select", "/register/quarterly", "/register/review", f"/people/{ALEX}/move"):
            answer = await anonymous.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/", path
