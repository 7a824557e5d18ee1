"""A repeated press, on the real broker: intake instances follow the acknowledgements topic, so a second press on
another instance, or after a restart, answers "Already acknowledged at ..." and the topic keeps one record."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ppo_alerts.runner import build_service
from services.intake.service import IntakeService
from shared.ack import AckLinks, Acknowledgement, ack_base_url, ack_secret
from shared.clock import SystemClock
from shared.kafka import ensure_topics, read_to_end
from shared.obligations import obligation_id
from shared.settings import Settings
from shared.topics import Topics

pytestmark = [pytest.mark.kafka]

RECIPIENT = "leeds.ppo@westyorkshire.police.uk"
ALREADY = re.compile(r"already acknowledged at \d\d:\d\d on [A-Z][a-z]+day \d{1,2} [A-Z][a-z]+ \d{4}")


def ack_settings(kafka_bootstrap: str, tmp_path: Path, **more: Any) -> Settings:
    return Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"ack{uuid.uuid4().hex[:8]}",
                    state_dir=tmp_path / "state", intake_port=0, ack_secret="a" * 40, **more)


@asynccontextmanager
async def intake_running(settings: Settings) -> AsyncIterator[tuple[IntakeService, httpx.AsyncClient]]:
    """An intake service as `ppo-alerts run intake` builds it, on a free port, and a client for it."""
    await ensure_topics(settings, Topics(settings.topic_prefix))
    running, service = build_service("intake", settings, SystemClock())
    await running.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http.port}", timeout=30) as client:
            yield service, client
    finally:
        await running.stop()


def signed_link(settings: Settings, oid: str, recipient: str = RECIPIENT) -> str:
    """The link the notifier puts in the message (services/notifier/main.py `ack_links`), for this intake."""
    return AckLinks(ack_base_url(settings), ack_secret(settings), timedelta(days=settings.ack_link_ttl_days),
                    SystemClock())(oid, recipient)


def form_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def acknowledgements(settings: Settings) -> list[Acknowledgement]:
    return [Acknowledgement.model_validate_json(v)
            for _, v in await read_to_end(settings, Topics(settings.topic_prefix).acknowledgements) if v]


async def until(ok: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not ok() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return ok()


async def test_a_press_on_one_instance_is_already_acknowledged_on_another_and_after_a_restart(
        kafka_bootstrap: str, tmp_path: Path):
    settings = ack_settings(kafka_bootstrap, tmp_path)
    oid = obligation_id("A1", "person", f"fact-{uuid.uuid4().hex}")
    url = signed_link(settings, oid)
    path = urlsplit(url).path + "?" + urlsplit(url).query
    async with intake_running(settings) as (one, to_one), intake_running(settings) as (two, to_two):
        for client in (to_one, to_two):  # a page shown: both have read the (empty) topic before the press
            assert (await client.get(path)).status_code == 200
        assert await until(lambda: one.acks_seen.caught_up and two.acks_seen.caught_up)
        pressed_at = datetime.now(UTC)
        first = await to_one.post("/ack", data=form_of(url))
        assert first.status_code == 200 and "<h1>Acknowledged</h1>" in first.text
        # two learns it by following the topic (not by the catch-up read, done before the press)
        assert await until(lambda: two.acks_seen.first(oid, RECIPIENT) is not None)
        again = await to_two.post("/ack", data=form_of(url))
        assert again.status_code == 200 and "<h1>Already acknowledged</h1>" in again.text
        assert ALREADY.search(again.text), again.text
    acks = await acknowledgements(settings)
    assert [(a.obligation_id, a.recipient) for a in acks] == [(oid, RECIPIENT)]
    assert abs(acks[0].acknowledged_at - pressed_at) < timedelta(seconds=5)
    async with intake_running(settings) as (_, restarted):  # a new process reads the topic before answering
        answer = await restarted.post("/ack", data=form_of(url))
        assert "<h1>Already acknowledged</h1>" in answer.text and ALREADY.search(answer.text)
    assert len(await acknowledgements(settings)) == 1
