"""The console's operator pages and the timeliness report against a real broker and a real OpenID Connect provider:
dead letters listed and shown without their personal data, replayed from the page (one, or a selection) to the
topic each came from and recorded as `console:<sub>`, a second replay refused with why, CSRF and roles enforced;
consumer lag and each service's health; the timeliness report (table, chart, CSV) for the member's BCUs only, and
hostile query values answered clearly.

The console is started here with PPO_CONSOLE_SERVICE_URLS naming a service that is up (a real /healthz) and one
whose address does not answer; everything else is tests/integration/test_console.py's."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from ppo_alerts.localoidc import LocalOidc
from ppo_alerts.runner import build_service
from services.console.operator_pages import service_groups
from shared.calendar import london_date
from shared.clock import FixedClock
from shared.dead_letters import REPLAY_KEY, REPLAY_OF_HEADER, read_dead_letters, read_positioned
from shared.http import HttpServer, build_app
from shared.kafka import client_kwargs, ensure_topics
from shared.settings import Settings
from shared.topics import Topics
from tests.faults.stack import free_port
from tests.integration.test_console import (  # noqa: F401
    Console,
    console,
    form_in,
    obligation,
    oidc_provider,
    publish_obligations,
    until_page_shows,
)

pytestmark = [pytest.mark.kafka]

NAME = "Quexley"  # a family name in a parked payload: never on any page


@pytest.fixture
async def ops(kafka_bootstrap: str, tmp_path: Path, oidc_provider: tuple[LocalOidc, int]  # noqa: F811
              ) -> AsyncIterator[Console]:
    """test_console's console, with one service up (a real /healthz on a free port) and one that does not answer."""
    provider, port = oidc_provider
    up = HttpServer(build_app("rules", lambda: True), "127.0.0.1", 0)
    await up.start()
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"ops{uuid.uuid4().hex[:8]}", state_dir=tmp_path / "state",
        console_port=port, console_public_url=f"http://127.0.0.1:{port}", console_oidc_issuer=provider.issuer,
        console_oidc_client_id="console", console_oidc_client_secret="console-secret",
        console_session_secret="s" * 40, console_session_hours=8,
        console_service_urls={"rules": f"http://127.0.0.1:{up.port}", "notifier": f"http://127.0.0.1:{free_port()}"})
    await ensure_topics(settings, Topics(settings.topic_prefix))
    clock = FixedClock(datetime.now(UTC))
    running, _ = build_service("console", settings, clock)
    await running.start()
    try:
        yield Console(settings, f"http://127.0.0.1:{port}", clock, provider)
    finally:
        await running.stop()
        await up.stop()


# --- helpers ----------------------------------------------------------------------------------------------------

async def park(settings: Settings, *records: dict[str, Any]) -> list[str]:
    """Put records on the dead-letter topic as the services park them; their ids, in order."""
    topics = Topics(settings.topic_prefix)
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(topics.dead_letter, json.dumps(record).encode(), partition=0)
    finally:
        await producer.stop()
    letters = await read_dead_letters(settings)
    return [d.id for d in letters.letters][-len(records):]


def parked_event(topics: Topics, n: int) -> dict[str, Any]:
    payload = json.dumps({"id": f"ev-{n}", "type": "prison.reception", "person": {"family_name": NAME}})
    return {"service": "rules", "reason": "ValidationError", "problems": [{"field": "occurred_at", "problem": "x"}],
            "topic": topics.events, "offset": n, "payload": payload}


def parked_raw(n: int) -> dict[str, Any]:
    return {"service": "intake", "channel": "kafka", "reason": "not JSON", "problems": [],
            "payload": f"{NAME} raw line {n}"}


def parked_http() -> dict[str, Any]:
    return {"service": "intake", "channel": "http", "agency": "HMCTS", "reason": "invalid event", "problems": [],
            "payload": f'{{"family_name": "{NAME}"}}'}


async def values_on(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    return [(key, value) for _, _, _, key, value in await read_positioned(settings, topic)]


async def replay_records(settings: Settings) -> list[dict[str, Any]]:
    return [json.loads(v or b"") for k, v in await values_on(settings, Topics(settings.topic_prefix).dead_letter)
            if k == REPLAY_KEY]


async def headers_on(settings: Settings, topic: str) -> list[dict[str, bytes]]:
    """The headers of every record on a topic (read_positioned's way of reading, keeping the headers)."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[dict[str, bytes]] = []
        remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            out += [dict(r.headers) for records in batch.values() for r in records]
            remaining = {tp for tp in remaining if await consumer.position(tp) < end[tp]}
        return out
    finally:
        await consumer.stop()


async def csrf_of(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def main_of(page: str) -> str:
    """The page below its header and navigation (the parts a page's own content is in)."""
    return page.split('id="main-content"', 1)[1]


# --- dead letters -----------------------------------------------------------------------------------------------

async def test_dead_letters_are_listed_without_personal_data_and_replayed_once_recording_who(ops: Console) -> None:
    settings, topics = ops.settings, Topics(ops.settings.topic_prefix)
    event_id, raw_id, http_id = await park(settings, parked_event(topics, 1), parked_raw(2), parked_http())
    async with ops.client() as client:
        await ops.sign_in(client, "olu")
        listing = await client.get("/operations/dead-letters")
        assert listing.status_code == 200
        for letter_id in (event_id, raw_id, http_id):
            assert f'name="id" type="checkbox" value="{letter_id}"' in listing.text
        assert "ValidationError" in listing.text and "not JSON" in listing.text and topics.events in listing.text
        assert NAME not in listing.text and "Not replayed" in listing.text
        assert re.search(r'<legend class="govuk-fieldset__legend[^"]*">Dead letters to replay</legend>', listing.text)

        shown = await client.get(f"/operations/dead-letters/{event_id}")
        assert shown.status_code == 200 and NAME not in shown.text and "[redacted: personal data" in shown.text
        form = form_in(shown.text.split('action="/operations/dead-letters/replay"', 1)[1])
        assert form.fields["id"] == event_id

        for data in ({"id": event_id}, {"id": event_id, "csrf": "forged"}):  # no replay without the session's token
            refused = await client.post("/operations/dead-letters/replay", data=data)
            assert refused.status_code == 400 and "Nothing was replayed" in refused.text
        assert await values_on(settings, topics.events) == [] and await replay_records(settings) == []

        one = await client.post("/operations/dead-letters/replay", data={"csrf": form.fields["csrf"], "id": event_id})
        assert one.status_code == 200 and "Replayed 1 dead letter" in one.text and topics.events in one.text

        csrf = form.fields["csrf"]
        selection = await client.post("/operations/dead-letters/replay",
                                      data={"csrf": csrf, "id": [event_id, raw_id, http_id, "nonsense"]})
        assert selection.status_code == 200 and "Replayed 1 dead letter" in selection.text
        refusals = main_of(selection.text).split("Not replayed", 1)[1]
        assert "already replayed by console:olu" in refusals and "came over HTTP" in refusals
        assert "not a dead-letter id" in refusals and NAME not in selection.text

        again = await client.get("/operations/dead-letters")
        assert again.text.count("<strong class=\"govuk-tag govuk-tag--green\">Replayed") == 2
        after = await client.get(f"/operations/dead-letters/{event_id}")
        assert "Replayed by console:olu" in after.text

    events = await values_on(settings, topics.events)
    assert [v for _, v in events] == [parked_event(topics, 1)["payload"].encode()]  # once, the body as parked
    assert [v for _, v in await values_on(settings, topics.intake_raw)] == [parked_raw(2)["payload"].encode()]
    replayed_from = (await headers_on(settings, topics.events))[0][REPLAY_OF_HEADER]
    assert replayed_from == f"{topics.dead_letter}/{event_id}".encode()
    replays = await replay_records(settings)
    assert sorted((r["replay_of"], r["by"], r["target_topic"]) for r in replays) == sorted([
        (event_id, "console:olu", topics.events), (raw_id, "console:olu", topics.intake_raw)])


async def test_only_operators_reach_the_operator_pages_and_nothing_is_replayed_for_others(ops: Console) -> None:
    settings, topics = ops.settings, Topics(ops.settings.topic_prefix)
    (letter_id,) = await park(settings, parked_event(topics, 7))
    for user in ("ann", "cora"):
        async with ops.client() as client:
            await ops.sign_in(client, user)
            for path in ("/operations/dead-letters", f"/operations/dead-letters/{letter_id}", "/operations/health"):
                assert (await client.get(path)).status_code == 403, (user, path)
            csrf = await csrf_of(client, "/reports/timeliness")
            posted = await client.post("/operations/dead-letters/replay", data={"csrf": csrf, "id": letter_id})
            assert posted.status_code == 403
    async with ops.client() as client:  # signed out: to the start page
        for path in ("/operations/dead-letters", "/operations/health", "/reports/timeliness"):
            answer = await client.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/", path
    assert await values_on(settings, topics.events) == [] and await replay_records(settings) == []


async def test_hostile_filters_and_ids_are_refused_clearly(ops: Console) -> None:
    async with ops.client() as client:
        await ops.sign_in(client, "olu")
        for params, field in (({"since": "yesterday"}, "since"), ({"until": "9999-12-31"}, "until"),
                              ({"since": "2026-03-02", "until": "2026-03-01"}, "until"),
                              ({"reason": "\x00\x1b[31m"}, "reason"), ({"service": "\u202eevil"}, "service"),
                              ({"topic": "t" * 10_000}, "topic"), ({"since": "2026-03-02T10:00:00"}, "since")):
            page = await client.get("/operations/dead-letters", params=params)
            assert page.status_code == 400 and "There is a problem" in page.text, params
            assert f'href="#{field}"' in page.text and "\x1b" not in page.text and "\u202e" not in page.text
        ok = await client.get("/operations/dead-letters", params={"since": "2026-03-02", "reason": "<b>x</b>",
                                                                  "page": "99999999999999999999"})
        assert ok.status_code == 200 and "<b>x</b>" not in ok.text and "No dead letter matches" in ok.text
        for letter_id in ("0-999999", "x", "1-2-3", "9" * 5000):
            assert (await client.get(f"/operations/dead-letters/{letter_id}")).status_code == 404, letter_id[:20]
        csrf = await csrf_of(client, "/operations/dead-letters")
        nothing = await client.post("/operations/dead-letters/replay", data={"csrf": csrf})
        assert nothing.status_code == 400 and "Select at least one" in nothing.text
        unknown = await client.post("/operations/dead-letters/replay", data={"csrf": csrf, "id": "0-999999"})
        assert unknown.status_code == 200 and "no such dead letter" in unknown.text
        assert (await client.get("/operations/dead-letters/replay")).status_code == 303


# --- health -----------------------------------------------------------------------------------------------------

async def commit(settings: Settings, group: str, tp: TopicPartition, offset: int, timeout: float = 20) -> None:
    """Commit as the group would, retrying while an earlier test's member of the group is still known."""
    deadline = time.monotonic() + timeout
    while True:
        consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **client_kwargs(settings))
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.commit({tp: offset})
            return
        except KafkaError:
            if time.monotonic() > deadline:
                raise
        finally:
            await consumer.stop()
        await asyncio.sleep(0.5)


async def test_health_shows_a_groups_lag_and_which_services_answer(ops: Console) -> None:
    settings, topics = ops.settings, Topics(ops.settings.topic_prefix)
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        for n in range(5):
            await producer.send_and_wait(topics.escalations, f"e{n}".encode(), key=b"o1", partition=1)
    finally:
        await producer.stop()
    await commit(settings, topics.group("ppo-notifier-escalations"), TopicPartition(topics.escalations, 1), 2)
    async with ops.client() as client:
        await ops.sign_in(client, "olu")
        page = await client.get("/operations/health")
    assert page.status_code == 200
    row = page.text.split(f'id="lag-{topics.group("ppo-notifier-escalations")}"', 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[1:] == [topics.group("ppo-notifier-escalations"), topics.escalations, "2", "5", "3"], cells
    intake = page.text.split(f'id="lag-{topics.group("ppo-intake")}"', 1)[1].split("</tr>", 1)[0]
    assert "nothing yet" in intake and topics.intake_raw in intake
    services = page.text.split("Each service's health check", 1)[1].split("</table>", 1)[0]
    rules = services.split("<td class=\"govuk-table__cell\">rules</td>", 1)[1].split("</tr>", 1)[0]
    notifier = services.split("<td class=\"govuk-table__cell\">notifier</td>", 1)[1].split("</tr>", 1)[0]
    assert "Up" in rules and "HTTP 200: ok" in rules
    assert "Down" in notifier and "did not answer" in notifier
    assert "intake" not in services  # only the services the setting names


def test_the_groups_shown_are_the_groups_the_services_commit() -> None:
    """Group ids are fixed names in the services' subscriptions (not derived from the topic prefix)."""
    root = Path(__file__).resolve().parents[2] / "services"
    written = {g for f in root.glob("*/service.py") for g in re.findall(r'group_id="([^"]+)"', f.read_text())}
    assert {g for _, g, _ in service_groups(Topics())} == written
    assert {g for _, g, _ in service_groups(Topics("staging"))} == {"staging" + g.removeprefix("ppo") for g in written}


# --- timeliness -------------------------------------------------------------------------------------------------

async def test_timeliness_counts_the_members_bcus_draws_a_chart_and_downloads_csv(ops: Console) -> None:
    now = datetime.now(UTC)
    on_time = obligation("13-LD", 1, now, rule="A2").model_copy(update={"status": "notified", "notified_at": now})
    await publish_obligations(ops.settings, [obligation("13-LD", 2, now), on_time, obligation("21-ST", 3, now),
                                             obligation("21-ST", 4, now), obligation("21-ST", 5, now)])
    period = {"from": london_date(now - timedelta(days=1)).isoformat(), "to": london_date(now).isoformat()}
    async with ops.client() as client:
        await ops.sign_in(client, "olu")
        await until_page_shows(client, "/obligations", "A1-21-ST-0005")  # the view has them all
        everyone = await client.get("/reports/timeliness", params=period)
        assert everyone.status_code == 200 and "every BCU" in everyone.text
        assert _count(everyone.text, "all", "Total") == 5
    for user in ("ann", "cora"):
        async with ops.client() as client:
            await ops.sign_in(client, user)
            page = await client.get("/reports/timeliness", params=period)
            assert page.status_code == 200, user
            assert _count(page.text, "A1", "Total") == 1 and _count(page.text, "A1", "Open") == 1
            assert _count(page.text, "A2", "On time") == 1 and _count(page.text, "all", "Total") == 2
            assert "13-LD" in page.text and "21-ST" not in main_of(page.text)
            chart = page.text.split("<svg", 1)[1].split("</svg>", 1)[0]
            assert 'role="img"' in chart and "A1, open: 1" in chart and "A2, on time: 1" in chart
            assert " style=" not in page.text and "<style" not in page.text and "<script" not in page.text
            download = await client.get("/reports/timeliness", params={**period, "format": "csv"})
            assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
            assert "attachment" in download.headers["content-disposition"]
            rows = {r["rule"]: r for r in csv.DictReader(io.StringIO(download.text))}
            assert rows["A1"]["open"] == "1" and rows["A2"]["on_time"] == "1" and rows["all"]["total"] == "2"
            default = await client.get("/reports/timeliness")  # the London quarter so far
            today = london_date(ops.clock.now())
            start = today.replace(month=3 * ((today.month - 1) // 3) + 1, day=1)
            assert default.status_code == 200 and f'value="{start.isoformat()}"' in default.text
            assert f'value="{today.isoformat()}"' in default.text


async def test_timeliness_refuses_hostile_query_values_clearly(ops: Console) -> None:
    async with ops.client() as client:
        await ops.sign_in(client, "ann")
        for params in ({"from": "2026-02-30"}, {"from": "0001-01-01"}, {"to": "99999-01-01"},
                       {"from": "2026-03-02", "to": "2026-03-01"}, {"from": "2000-01-01", "to": "2100-01-01"},
                       {"from": "\x00\x1b[31m"}, {"from": "\u202e2026-01-01"}, {"to": "9" * 10_000},
                       {"from": "<b>2026</b>"}, {"format": "xlsx"}, {"from": "2026-01-01", "format": "csv\r\n"}):
            page = await client.get("/reports/timeliness", params=params)
            assert page.status_code == 400 and "There is a problem" in page.text, params
            assert "\x1b" not in page.text and "\u202e" not in page.text and "<b>2026" not in page.text
        nobody = httpx.AsyncClient(base_url=ops.url, timeout=30)
        async with nobody:
            await ops.sign_in(nobody, "nobody")
            assert (await nobody.get("/reports/timeliness")).status_code == 403


def _count(page: str, rule: str, column: str) -> int:
    """A number from the report's table: the row of `rule` ("all": every rule), the column headed `column`."""
    table = page.split("Obligations per rule</caption>", 1)[1].split("</table>", 1)[0]
    headers = re.findall(r'<th scope="col"[^>]*>(.*?)</th>', table)
    for row in re.findall(r"<tr class=\"govuk-table__row\">(.*?)</tr>", table, re.S):
        head = re.search(r'<th scope="row"[^>]*>(.*?)</th>', row, re.S)
        if head is None:
            continue
        name = "all" if head.group(1).startswith("Every rule") else re.sub(r"<.*", "", head.group(1), flags=re.S)
        if name == rule:
            cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
            return int(cells[headers.index(column) - 1])
    raise AssertionError(f"no row {rule}")


async def test_kafka_that_does_not_answer_is_said_on_the_page_not_an_error(ops: Console,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from services.console import operator_pages

    async def hangs(*_: Any) -> Any:
        await asyncio.sleep(3600)

    monkeypatch.setattr(operator_pages, "KAFKA_TIMEOUT_S", 0.5)
    monkeypatch.setattr(operator_pages, "read_lag", hangs)
    monkeypatch.setattr(operator_pages, "read_dead_letters", hangs)
    async with ops.client() as client:
        await ops.sign_in(client, "olu")
        health = await client.get("/operations/health")
        assert health.status_code == 200 and "Kafka did not answer within 0.5 seconds" in health.text
        assert "HTTP 200: ok" in health.text  # the services are still read
        listing = await client.get("/operations/dead-letters")
        assert listing.status_code == 503 and "Kafka did not answer" in listing.text
        csrf = await csrf_of(client, "/operations/health")
        replay = await client.post("/operations/dead-letters/replay", data={"csrf": csrf, "id": "0-0"})
        assert replay.status_code == 503 and "Nothing was changed" in replay.text
