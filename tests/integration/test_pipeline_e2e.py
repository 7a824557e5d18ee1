"""The slice, end to end on the real stack: HTTP intake -> Kafka -> rules -> Kafka -> notifier -> SMTP.

A real Apache Kafka broker (local KRaft node) and a real SMTP server on loopback (aiosmtpd); all four
services run in this process, each with its own Kafka clients, as `ppo-alerts run all` runs them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from ppo_alerts.runner import SERVICES, start_services, stop_services
from shared.clock import SystemClock
from shared.kafka import read_to_end
from shared.settings import Settings
from tests.rulebook_fixtures import DIRECTORY, REGISTER_CSV
from tests.smtp_server import LoopbackSmtpServer

pytestmark = [pytest.mark.kafka, pytest.mark.smtp]

LEEDS_PPO = "leeds.ppo@westyorkshire.police.uk"
LEEDS_PROBATION = "leeds.iom@justice.gov.uk"


def received(noms: str = "G1234HJ", reason: str = "NEW_ADMISSION", at: str = "2026-11-23T09:00:00Z") -> dict:
    return {
        "eventType": "prisoner-offender-search.prisoner.received", "version": 1,
        "description": "A prisoner has been received into a prison", "occurredAt": at, "publishedAt": at,
        "additionalInformation": {"nomsNumber": noms, "prisonId": "LEI", "reason": reason},
        "personReference": {"identifiers": [{"type": "NOMS", "value": noms}]},
    }


def sns(event: dict) -> dict:
    import json

    return {"Type": "Notification", "MessageId": str(uuid.uuid4()), "Message": json.dumps(event),
            "MessageAttributes": {"eventType": {"Type": "String", "Value": event["eventType"]}}}


async def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def reference_files(tmp_path: Path) -> tuple[Path, Path]:
    import yaml

    register = tmp_path / "register.csv"
    register.write_text(REGISTER_CSV)
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    return register, directory


@pytest.fixture
async def stack(kafka_bootstrap, reference_files, tmp_path):
    register, directory = reference_files
    smtp = LoopbackSmtpServer().start()
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}", directory_file=directory,
        register_file=register, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_tls_mode="plain",
        smtp_allow_plaintext=True, state_dir=tmp_path / "state", intake_allow_anonymous=True,
        intake_port=0, rules_port=0, scheduler_port=0, notifier_port=0,
    )
    running = await start_services(list(SERVICES), settings, SystemClock())
    intake = next(s for s in running if s.name == "intake")
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{intake.http.port}", timeout=30)
    try:
        yield settings, client, smtp, running
    finally:
        await client.aclose()
        await stop_services(running)
        smtp.stop()


async def test_reception_of_a_ppo_becomes_one_email_to_ppo_and_om(stack):
    settings, client, smtp, running = stack
    response = await client.post("/v1/events", json=received())
    assert response.status_code == 202, response.text
    await wait_for(lambda: len(smtp.messages) >= 2)
    await asyncio.sleep(1.0)  # anything extra would arrive now
    a1 = [m for m in smtp.messages if m.message["X-PPO-Rule"] == "A1"]
    assert sorted(r for m in a1 for r in m.rcpt_tos) == sorted([LEEDS_PPO, LEEDS_PROBATION])
    body = a1[0].message.get_body(preferencelist=("plain",)).get_content()
    assert "G1234HJ" in body and "LEI" in body and "Sample" in body.title()
    # The same movement again (and through the SNS wrapper): still one email per recipient.
    assert (await client.post("/v1/events", json=sns(received()))).status_code == 202
    assert (await client.post("/v1/events", json=received())).status_code == 202
    await asyncio.sleep(3.0)
    a1 = [m for m in smtp.messages if m.message["X-PPO-Rule"] == "A1"]
    assert len(a1) == 2
    # The obligation's state on Kafka says notified.
    states = [v for _, v in await read_to_end(settings, f"{settings.topic_prefix}.obligations") if v]
    assert any(b'"rule":"A1"' in v and b'"status":"notified"' in v for v in states)
    # Every service answers /metrics and /healthz.
    async with httpx.AsyncClient() as c:
        for service in running:
            base = f"http://127.0.0.1:{service.http.port}"
            assert (await c.get(base + "/healthz")).status_code == 200
            assert "ppo_" in (await c.get(base + "/metrics")).text


async def test_person_not_on_register_produces_no_email(stack):
    _, client, smtp, _ = stack
    response = await client.post("/v1/events", json=received(noms="Z9999ZZ"))
    assert response.status_code == 202
    await asyncio.sleep(3.0)
    assert [m for m in smtp.messages if m.message["X-PPO-Rule"] == "A1"] == []


async def test_malformed_body_gets_4xx_naming_the_field_and_is_dead_lettered(stack):
    settings, client, _, _ = stack
    bad = received()
    bad["occurredAt"] = "2026-11-23T09:00:00"  # no offset
    response = await client.post("/v1/events", json=bad)
    assert response.status_code == 422
    problems = response.json()["problems"]
    assert any("occurredAt" in p["field"] for p in problems), problems
    assert "Traceback" not in response.text
    canonical = {"id": "x-1", "type": "prison.reception", "occurred_at": "2026-11-23T09:00:00Z", "source": "T",
                 "person": {"noms": "G1234HJ"}, "data": {"prison_id": "LEI", "reason": "holiday"}}
    response = await client.post("/v1/events", json=canonical)
    assert response.status_code == 422 and response.json()["problems"][0]["field"] == "data.reason"
    assert (await client.post("/v1/events", content=b"{not json")).status_code == 400
    await wait_for(lambda: True)
    dead = [v for _, v in await read_to_end(settings, f"{settings.topic_prefix}.dead-letter") if v]
    assert len(dead) == 3 and all(b'"reason"' in d for d in dead)


def notices(smtp: LoopbackSmtpServer) -> list:
    return [m for m in smtp.messages if m.message["X-PPO-Rule"] == "A1"
            and not m.message["X-PPO-Obligation"].endswith("#escalation")]


async def test_a_failed_obligation_is_sent_when_its_fact_is_reported_again(kafka_bootstrap, tmp_path):
    """Issue 14, item 1: an A1 with nobody to send to fails; once the directory is mended, the next report of the
    same reception (another feed's event) is sent, under the same obligation id; a replay changes nothing."""
    import copy

    import yaml

    broken = copy.deepcopy(DIRECTORY)
    contacts = broken["bcus"]["13-LD"]["contacts"]
    contacts["ppo"], contacts["probation"] = [], []
    (tmp_path / "register.csv").write_text(REGISTER_CSV)
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(broken))
    smtp = LoopbackSmtpServer().start()
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}", directory_file=directory,
        register_file=tmp_path / "register.csv", smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_tls_mode="plain",
        smtp_allow_plaintext=True, state_dir=tmp_path / "state", intake_allow_anonymous=True, directory_reload_s=0.5,
        intake_port=0, rules_port=0, scheduler_port=0, notifier_port=0,
    )
    running = await start_services(list(SERVICES), settings, SystemClock())
    intake = next(s for s in running if s.name == "intake")
    topic = f"{settings.topic_prefix}.obligations"
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{intake.http.port}", timeout=30) as client:
            assert (await client.post("/v1/events", json=received())).status_code == 202

            async def a1_states() -> list[bytes]:
                return [v for _, v in await read_to_end(settings, topic) if v and b'"rule":"A1"' in v]

            deadline = asyncio.get_running_loop().time() + 30
            while not any(b'"status":"failed"' in v for v in await a1_states()):
                assert asyncio.get_running_loop().time() < deadline, "A1 never failed"
                await asyncio.sleep(0.3)
            await asyncio.sleep(1.0)  # the rules service reads the failure from the topic
            directory.write_text(yaml.safe_dump(DIRECTORY))  # mended
            await asyncio.sleep(2.0)  # reloaded
            again = {"id": f"canonical-{uuid.uuid4().hex[:6]}", "type": "prison.reception",
                     "occurred_at": "2026-11-23T09:00:30Z", "source": "HMP-LEI", "person": {"noms": "G1234HJ"},
                     "data": {"prison_id": "LEI", "reason": "new"}}
            assert (await client.post("/v1/events", json=again)).status_code == 202
            await wait_for(lambda: len(notices(smtp)) >= 2)
            assert (await client.post("/v1/events", json=again)).status_code == 202  # a replay: a duplicate
            await asyncio.sleep(2.0)
        a1 = notices(smtp)
        assert sorted(r for m in a1 for r in m.rcpt_tos) == sorted([LEEDS_PPO, LEEDS_PROBATION])
        assert len({m.message["X-PPO-Obligation"] for m in a1}) == 1
        escalations = [m for m in smtp.messages if m.message["X-PPO-Obligation"].endswith("#escalation")]
        assert len(escalations) == 1  # the failure was escalated once, and not again for the same obligation
        states = [json.loads(v) for v in await a1_states()]
        assert any(h["what"].startswith("raised again") for h in states[-1]["history"])
    finally:
        await stop_services(running)
        smtp.stop()
