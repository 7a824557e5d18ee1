"""Mending dead letters on the real broker (issue 14, item 9): `ppo-alerts dead-letters list|show|replay` and intake's
`/v1/dead-letters` routes list and show parked input without personal data, put a parked (or mended) payload back
on the topic it came from, record who did it, and do not replay one twice unless asked."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from ppo_alerts import deadletters
from ppo_alerts.cli import build_parser
from ppo_alerts.runner import build_service
from shared.clock import SystemClock
from shared.dead_letters import REPLAY_KEY, DeadLetters, read_dead_letters, read_positioned
from shared.kafka import client_kwargs, ensure_topics, read_to_end
from shared.service import RunningService
from shared.settings import Settings
from shared.topics import Topics

pytestmark = [pytest.mark.kafka]

NAME = "Quexley"  # a family name in the payload: it must never show without asking for personal data


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def reception(event_id: str, occurred_at: str) -> dict[str, Any]:
    return {"id": event_id, "type": "prison.reception", "occurred_at": occurred_at, "source": "HMP-LEI",
            "person": {"noms": "G1234HJ", "given_name": "Winifred", "family_name": NAME},
            "data": {"prison_id": "LEI", "reason": "new"}}


def naive_now() -> str:  # intake refuses an instant without an offset: this parks the event
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def settings_for(kafka_bootstrap: str, tmp_path: Path, **more: Any) -> Settings:
    return Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"dl{uuid.uuid4().hex[:8]}",
                    state_dir=tmp_path / "state", intake_port=0, **more)


@asynccontextmanager
async def intake(settings: Settings) -> AsyncIterator[RunningService]:
    await ensure_topics(settings, Topics(settings.topic_prefix))
    service, _ = build_service("intake", settings, SystemClock())
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def publish_raw(settings: Settings, *values: bytes) -> None:
    producer = AIOKafkaProducer(max_request_size=2_000_000, **client_kwargs(settings))
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(Topics(settings.topic_prefix).intake_raw, value)
    finally:
        await producer.stop()


async def until(read: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.3)


async def letters_when(settings: Settings, count: int) -> DeadLetters:
    letters = await until(lambda: read_dead_letters(settings), lambda ls: len(ls.letters) >= count)
    assert len(letters.letters) == count, [d.reason for d in letters.letters]
    return letters


async def raw_values(settings: Settings) -> list[bytes]:
    return [v for _, v in await read_to_end(settings, Topics(settings.topic_prefix).intake_raw) if v]


async def replay_records(settings: Settings) -> list[dict[str, Any]]:
    records = await read_positioned(settings, Topics(settings.topic_prefix).dead_letter)
    return [json.loads(value or b"") for _, _, _, key, value in records if key == REPLAY_KEY]


async def cli(settings: Settings, *argv: str) -> tuple[int, str]:
    out: list[str] = []
    args = build_parser().parse_args(["dead-letters", *argv])
    code = await deadletters.run_dead_letters(args, settings, out=out.append)
    return code, "\n".join(out)


async def test_cli_lists_and_shows_without_personal_data_and_replays_once_recording_who(
        kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(kafka_bootstrap, tmp_path, register_operator="Olive Operator",
                            intake_tokens={sha("agency-token"): "HMP Leeds"})
    topics = Topics(settings.topic_prefix)
    bad = json.dumps(reception(f"dl-{uuid.uuid4().hex}", naive_now())).encode()
    huge = json.dumps({"notes": NAME * 40_000}).encode()  # over 256 KiB: parked truncated
    async with intake(settings) as service:
        await publish_raw(settings, bad, huge)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}", timeout=30) as client:
            answer = await client.post("/v1/events", content=bad, headers={"Authorization": "Bearer agency-token"})
            assert answer.status_code == 422
        letters = await letters_when(settings, 3)
        by_kind = {("truncated" if d.record.get("payload_truncated") else d.source): d.id for d in letters.letters}
        assert set(by_kind) == {topics.intake_raw, "http", "truncated"}, by_kind
        parked = by_kind[topics.intake_raw]

        # list: one line each, where it came from, no personal data
        code, listed = await cli(settings, "list")
        assert code == 0 and len(listed.splitlines()) == 3
        assert NAME not in listed and "Winifred" not in listed and "G1234HJ" not in listed
        assert topics.intake_raw in listed and "http" in listed and "intake" in listed
        code, filtered = await cli(settings, "list", "--topic", topics.intake_raw, "--json")
        assert {json.loads(line)["id"] for line in filtered.splitlines()} == {parked, by_kind["truncated"]}
        code, none = await cli(settings, "list", "--service", "rules")
        assert code == 0 and none == ""

        # show: the payload only when asked for
        code, shown = await cli(settings, "show", parked)
        assert code == 0 and NAME not in shown and "redacted" in shown
        assert json.loads(shown)["origin_topic"] == topics.intake_raw
        code, shown = await cli(settings, "show", parked, "--show-personal-data")
        assert code == 0 and NAME in shown

        # replay, unchanged: back on intake's raw topic, read again by intake and parked again (still invalid)
        capsys.readouterr()
        code, said = await cli(settings, "replay", parked)
        assert code == 0 and f"{parked}: replayed to {topics.intake_raw}" in said
        assert (await raw_values(settings)).count(bad) == 2
        letters = await letters_when(settings, 4)
        reparked = [d for d in letters.letters if d.id not in by_kind.values()]
        assert reparked[0].record["payload"] == bad.decode() and reparked[0].origin == topics.intake_raw
        [record] = await replay_records(settings)
        assert record["replay_of"] == parked and record["by"] == "Olive Operator"
        assert record["target_topic"] == topics.intake_raw and record["at"] and record["mended"] is False

        # not twice without --again; no origin topic or a truncated copy: refused, each with its reason
        code, said = await cli(settings, "replay", parked, by_kind["http"], by_kind["truncated"])
        err = capsys.readouterr().err
        assert code == 1 and said == ""
        assert f"{parked}: not replayed: already replayed by Olive Operator" in err
        assert f"{by_kind['http']}: not replayed: came over HTTP" in err
        assert f"{by_kind['truncated']}: not replayed: only the first 256 KiB" in err
        assert (await raw_values(settings)).count(bad) == 2
        assert len(await replay_records(settings)) == 1
        code, _ = await cli(settings, "replay", parked, "--again", "--dry-run")
        assert code == 0 and (await raw_values(settings)).count(bad) == 2

        # mended: the re-parked copy with its offset put right is accepted as an event this time
        event = reception(json.loads(bad)["id"], datetime.now(UTC).isoformat())
        mended = tmp_path / "mended.json"
        mended.write_text(json.dumps(event))
        code, said = await cli(settings, "replay", reparked[0].id, "--payload-file", str(mended), "--by", "Jo Bloggs")
        assert code == 0 and "(mended)" in said
        events = await until(lambda: read_to_end(settings, topics.events),
                             lambda rs: any(json.loads(v)["id"] == event["id"] for _, v in rs if v))
        assert any(json.loads(v)["id"] == event["id"] for _, v in events if v)
        assert [r["by"] for r in await replay_records(settings)] == ["Olive Operator", "Jo Bloggs"]
        assert len((await read_dead_letters(settings)).letters) == 4  # nothing parked this time


async def test_http_routes_need_an_operator_token_and_replay_records_the_operator(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = settings_for(kafka_bootstrap, tmp_path, operator_tokens={sha("op-token"): "Omar Operator"},
                            intake_tokens={sha("agency-token"): "HMP Leeds"})
    topics = Topics(settings.topic_prefix)
    bad = json.dumps(reception(f"dl-{uuid.uuid4().hex}", naive_now())).encode()
    operator = {"Authorization": "Bearer op-token"}
    async with intake(settings) as service:
        await publish_raw(settings, bad)
        [parked] = (await letters_when(settings, 1)).letters
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http.port}", timeout=30) as client:
            assert (await client.get("/v1/dead-letters")).status_code == 401
            assert (await client.get("/v1/dead-letters", headers={"Authorization": "Bearer nope"})).status_code == 401
            agency = {"Authorization": "Bearer agency-token"}
            assert (await client.get("/v1/dead-letters", headers=agency)).status_code == 403
            assert (await client.post("/v1/dead-letters/replay", json={"ids": [parked.id]},
                                      headers=agency)).status_code == 403

            listed = await client.get("/v1/dead-letters", headers=operator)
            assert listed.status_code == 200 and NAME not in listed.text and "G1234HJ" not in listed.text
            assert [(d["id"], d["source"]) for d in listed.json()["dead_letters"]] == [(parked.id, topics.intake_raw)]
            later = await client.get("/v1/dead-letters", params={"since": "2999-01-01T00:00:00Z"}, headers=operator)
            assert later.status_code == 200 and later.json()["dead_letters"] == []
            wrong = await client.get("/v1/dead-letters", params={"since": "yesterday"}, headers=operator)
            assert wrong.status_code == 422 and wrong.json()["problems"][0]["field"] == "since"

            shown = await client.get(f"/v1/dead-letters/{parked.id}", headers=operator)
            assert shown.status_code == 200 and NAME not in shown.text
            shown = await client.get(f"/v1/dead-letters/{parked.id}", params={"personal_data": "true"},
                                     headers=operator)
            assert shown.status_code == 200 and json.loads(shown.json()["record"]["payload"]) == json.loads(bad)
            assert (await client.get("/v1/dead-letters/9-999", headers=operator)).status_code == 404
            assert (await client.get("/v1/dead-letters/a-b", headers=operator)).status_code == 404

            replayed = await client.post("/v1/dead-letters/replay", json={"ids": [parked.id]}, headers=operator)
            assert replayed.status_code == 200, replayed.text
            assert replayed.json() == {"replayed": [{"id": parked.id, "target_topic": topics.intake_raw,
                                                     "mended": False}], "refused": []}
            assert (await raw_values(settings)).count(bad) == 2
            [record] = await replay_records(settings)
            assert record["by"] == "Omar Operator" and record["replay_of"] == parked.id

            # by filter: the copy intake parked again goes, the one already replayed does not
            reparked = [d.id for d in (await letters_when(settings, 2)).letters if d.id != parked.id]
            again = await client.post("/v1/dead-letters/replay", json={"all": True, "topic": topics.intake_raw},
                                      headers=operator)
            assert again.status_code == 200, again.text
            assert [r["id"] for r in again.json()["replayed"]] == reparked
            [refused] = again.json()["refused"]
            assert refused["id"] == parked.id and refused["reason"].startswith("already replayed by Omar Operator")
            assert (await raw_values(settings)).count(bad) == 3
            assert (await client.post("/v1/dead-letters/replay", json={"ids": ["x"]},
                                      headers=operator)).status_code == 422
