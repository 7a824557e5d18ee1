"""A large batch over HTTP on the real broker (issue 14, item 3): every event of a body at the size limit is on
the events topic before the 202, handed to Kafka at once rather than one acknowledged send at a time, and a
Common Platform hearing with one bad defendant is taken for the other and parked for mending."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.intake.translate import PART_NOT_TAKEN
from shared.dead_letters import read_dead_letters
from shared.kafka import read_to_end
from shared.topics import Topics
from tests.hostile.test_partial_payloads import two_defendants
from tests.integration.test_dead_letters import cli, intake, settings_for, until

pytestmark = [pytest.mark.kafka]


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def warrant(i: int, run: str) -> dict[str, Any]:
    return {"id": f"{run}-{i}", "type": "warrant.issued", "occurred_at": "2026-03-02T10:15:00Z", "source": "court",
            "person": {"cro": "065656/91H"}, "data": {"warrant_id": f"W{i}", "court_code": "B01AA00", "kind": "fta"}}


def batch_at_the_limit(limit: int, run: str) -> bytes:
    one = len(json.dumps(warrant(99_999, run))) + 2  # the longest item, and its separator
    return json.dumps([warrant(i, run) for i in range(limit // one)]).encode()


async def test_a_body_at_the_size_limit_is_all_on_the_topic_before_the_202(kafka_bootstrap: str,
                                                                          tmp_path: Path) -> None:
    settings = settings_for(kafka_bootstrap, tmp_path, intake_tokens={sha("t"): "HMCTS"}, intake_rate_per_s=0)
    run = uuid.uuid4().hex[:8]
    body = batch_at_the_limit(settings.intake_max_body_bytes, run)
    count = len(json.loads(body))
    async with intake(settings) as service:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}", timeout=120) as client:
            started = time.monotonic()
            answer = await client.post("/v1/events", content=body, headers={"Authorization": "Bearer t",
                                                                           "content-type": "application/json"})
            took = time.monotonic() - started
    assert answer.status_code == 202, answer.text[:300]
    assert len(answer.json()["accepted"]) == count
    on_topic = {json.loads(v)["id"] for _, v in await read_to_end(settings, Topics(settings.topic_prefix).events)
                if v}
    assert on_topic == {f"{run}-{i}" for i in range(count)}  # read after the 202 returned: all there already
    print(f"\n{count} events, {len(body)} bytes: 202 after {took:.2f} s")  # the figure the README quotes


async def test_a_hearing_with_one_bad_defendant_is_taken_parked_and_mended(kafka_bootstrap: str,
                                                                           tmp_path: Path) -> None:
    settings = settings_for(kafka_bootstrap, tmp_path, intake_tokens={sha("t"): "HMCTS"})
    topics = Topics(settings.topic_prefix)

    async def on_topic() -> list[dict[str, Any]]:
        return [json.loads(v) for _, v in await read_to_end(settings, topics.events) if v]

    async with intake(settings) as service:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}", timeout=30) as client:
            answer = await client.post("/v1/events", json=two_defendants("2004/0012345H"),
                                       headers={"Authorization": "Bearer t"})
        assert answer.status_code == 202 and answer.json()["not_taken"], answer.text
        [letter] = (await read_dead_letters(settings)).letters
        assert letter.reason == PART_NOT_TAKEN and letter.source == "http"
        assert letter.record["problems"] == answer.json()["not_taken"]
        assert [e["id"] for e in await on_topic()] == answer.json()["accepted"]

        # the check character put right, the whole hearing replayed: the second defendant's warrant arrives,
        # the first's is recognised as already taken
        code, _ = await cli(settings, "replay", letter.id, "--by", "Jo Bloggs")
        assert code == 1  # as it is, an HTTP body has nowhere to go back to
        mended = tmp_path / "mended.json"
        mended.write_text(json.dumps(two_defendants("2004/0012346E")))
        code, said = await cli(settings, "replay", letter.id, "--payload-file", str(mended), "--by", "Jo Bloggs")
        assert code == 0 and f"replayed to {topics.intake_raw} (mended)" in said
        events = await until(on_topic, lambda es: len(es) > 1)
    pncs = sorted(e["person"].get("pnc") for e in events)  # keyed by person: two partitions, any order
    assert pncs == ["2004/0012345D", "2004/0012346E"], pncs
