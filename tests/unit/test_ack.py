"""Signed acknowledgement links (shared/ack.py): pure signing and checking, the key, the settings."""

from __future__ import annotations

import asyncio
import html
import logging
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import ValidationError

from shared.ack import (
    LINK_PATH,
    AckLinks,
    Acknowledgement,
    AckSecretMissing,
    ack_secret,
    base_url_problem,
    expiry,
    link,
    signature,
    verify,
)
from shared.clock import FixedClock
from shared.settings import Settings

KEY = b"k" * 40
OTHER_KEY = b"x" * 40
OID = "A1-0123456789abcdef01234567"
WHO = "leeds.ppo@westyorkshire.police.uk"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
BASE = "https://notices.example.gov.uk"


def params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def a_link(**overrides: object) -> dict[str, str]:
    p = params(link(BASE, KEY, OID, WHO, expiry(NOW, timedelta(days=30))))
    p.update({k: str(v) for k, v in overrides.items()})
    return p


def test_a_link_round_trips_and_names_the_obligation_and_recipient():
    url = link(BASE, KEY, OID, WHO, expiry(NOW, timedelta(days=30)))
    assert url.startswith(BASE + LINK_PATH + "?")
    check = verify(KEY, params(url), NOW + timedelta(days=29))
    assert check.ok and check.http_status == 200
    assert (check.obligation_id, check.recipient) == (OID, WHO)
    assert check.expires_at == NOW + timedelta(days=30)


def test_recipient_is_compared_case_insensitively():
    url = link(BASE, KEY, OID, "Leeds.PPO@WestYorkshire.Police.UK", expiry(NOW, timedelta(days=1)))
    assert verify(KEY, params(url), NOW).recipient == WHO
    assert verify(KEY, a_link(r=WHO.upper()), NOW).ok


@pytest.mark.parametrize("change", [
    {"o": "A1-0123456789abcdef01234568"},  # another obligation
    {"r": "leeds.duty@westyorkshire.police.uk"},  # another recipient
    {"e": str(int((NOW + timedelta(days=3650)).timestamp()))},  # a later expiry
])
def test_a_changed_link_is_refused_403(change: dict[str, str]):
    check = verify(KEY, a_link(**change), NOW)
    assert check.verdict == "bad-signature" and check.http_status == 403
    assert check.obligation_id == "" and check.recipient == ""  # nothing from a forged link is trusted


def test_a_link_signed_with_another_key_is_refused():
    forged = params(link(BASE, OTHER_KEY, OID, WHO, expiry(NOW, timedelta(days=30))))
    assert verify(KEY, forged, NOW).verdict == "bad-signature"


def test_an_expired_link_is_refused_410():
    check = verify(KEY, a_link(), NOW + timedelta(days=30))
    assert check.verdict == "expired" and check.http_status == 410


@pytest.mark.parametrize("broken", [
    {}, {"o": ""}, {"r": "not-an-address"}, {"e": "soon"}, {"s": "ABC"}, {"s": "g" * 64}, {"o": "../etc/passwd"},
])
def test_a_malformed_link_is_refused_400(broken: dict[str, str]):
    p = a_link(**broken) if broken else {}
    assert verify(KEY, p, NOW).verdict == "malformed"


def test_signature_is_hmac_sha256_hex_over_the_four_parts():
    s = signature(KEY, OID, WHO, 1_800_000_000)
    assert len(s) == 64 and set(s) <= set("0123456789abcdef")
    assert s == signature(KEY, OID, WHO.upper(), 1_800_000_000)
    assert s != signature(KEY, OID, WHO, 1_800_000_001)


def test_a_court_recipients_link_never_says_ppo():
    from services.notifier.render import COURT_FORBIDDEN

    for i in range(300):  # hex signatures and ids cannot spell it; try many
        url = link(BASE, KEY, f"B1-{i:024x}", "listing.office@court.example.gov.uk", 1_800_000_000 + i)
        assert not COURT_FORBIDDEN.search(url), url


@pytest.mark.parametrize("url", ["https://ppo-alerts.example.gov.uk", "https://example.gov.uk/ppo",
                                 "https://prolific.example.gov.uk"])
def test_a_base_url_that_says_ppo_is_refused(url: str):
    assert "PPO" in (base_url_problem(url) or "")
    assert base_url_problem(url, neutral=False) is None
    with pytest.raises(ValidationError, match="PPO_ACK_BASE_URL|says PPO"):
        Settings(ack_base_url=url)


@pytest.mark.parametrize("url", ["ftp://example.gov.uk", "notices.example.gov.uk", "https://x.gov.uk/?a=1"])
def test_a_base_url_that_is_not_http_is_refused(url: str):
    assert base_url_problem(url) is not None


def test_links_built_for_the_pipeline_expire_after_the_ttl():
    clock = FixedClock(NOW)
    build = AckLinks(BASE + "/", KEY, timedelta(days=30), clock)
    url = build(OID, WHO)
    assert url.startswith(BASE + "/ack?")
    assert verify(KEY, params(url), NOW + timedelta(days=30) - timedelta(seconds=1)).ok
    assert verify(KEY, params(url), NOW + timedelta(days=30)).verdict == "expired"


def test_ack_secret_from_settings():
    assert ack_secret(Settings(ack_secret="s" * 32)) == b"s" * 32
    with pytest.raises(ValidationError):
        Settings(ack_secret="too short")


def test_ack_secret_generated_once_for_local_use_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    settings = Settings(state_dir=tmp_path / "state", public_base_url="http://127.0.0.1:8080")
    with caplog.at_level(logging.WARNING, logger="ppo.ack"):
        first = ack_secret(settings)
    assert len(first) >= 32 and "PPO_ACK_SECRET is not set" in caplog.text
    assert ack_secret(settings) == first  # the services of one checkout share it; links survive restarts
    key_file = tmp_path / "state" / "ack-secret"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_ack_secret_required_outside_local_use(tmp_path: Path):
    settings = Settings(state_dir=tmp_path, public_base_url="https://alerts.example.gov.uk")
    with pytest.raises(AckSecretMissing, match="PPO_ACK_SECRET"):
        ack_secret(settings)
    assert not (tmp_path / "ack-secret").exists()
    local_links_remote_base = Settings(state_dir=tmp_path, ack_base_url="https://notices.example.gov.uk")
    with pytest.raises(AckSecretMissing):
        ack_secret(local_links_remote_base)


# --- the pages and "already acknowledged" (services/intake), on a fake broker --------------------------------

ACK_NOW = datetime(2026, 3, 3, 14, 5, tzinfo=UTC)  # 14:05 in London (GMT)
ACK_OID = "A1-0123456789abcdef01234567"


class FakeKafka:
    """Topics as lists, shared by the intake instances built on it. A subscriber is fed only when told
    (`deliver`): a test decides when one instance has read what another published."""

    def __init__(self) -> None:
        self.topics: dict[str, list[bytes]] = {}
        self.fail_publish = False
        self.publish_delay_s = 0.0

    def broker(self) -> FakeBroker:
        return FakeBroker(self)


class FakeBroker:
    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka
        self.handlers: dict[str, Any] = {}
        self.read_up_to: dict[str, int] = {}

    def subscriber(self, topic: str, **kwargs: Any) -> Any:
        def register(handler: Any) -> Any:
            self.handlers[topic] = handler
            return handler
        return register

    async def publish(self, message: bytes, topic: str, key: bytes | None = None, headers: Any = None,
                      no_confirm: bool = False) -> None:
        from aiokafka.errors import KafkaTimeoutError

        if self.kafka.publish_delay_s:
            await asyncio.sleep(self.kafka.publish_delay_s)
        if self.kafka.fail_publish:
            raise KafkaTimeoutError()
        self.kafka.topics.setdefault(topic, []).append(message)

    async def deliver(self, topic: str) -> None:
        records = self.kafka.topics.get(topic, [])
        for value in records[self.read_up_to.get(topic, 0):]:
            await self.handlers[topic](SimpleNamespace(body=value))
        self.read_up_to[topic] = len(records)


def intake_on(kafka: FakeKafka, clock: FixedClock, reads: list[int] | None = None) -> tuple[Any, FakeBroker]:
    from services.intake.service import IntakeService

    broker = kafka.broker()
    service = IntakeService(Settings(ack_secret="s" * 32), broker, clock)  # type: ignore[arg-type]

    async def read_acks() -> list[bytes | None]:  # the catch-up: the whole topic as it is now
        if reads is not None:
            reads.append(1)
        return list(kafka.topics.get(service.topics.acknowledgements, []))

    service.read_acks = read_acks
    return service, broker


def client_of(service: Any) -> httpx.AsyncClient:
    from starlette.applications import Starlette

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=Starlette(routes=service.routes())),
                             base_url="http://intake")


def signed(recipient: str = WHO, oid: str = ACK_OID) -> dict[str, str]:
    return params(link(BASE, b"s" * 32, oid, recipient, expiry(ACK_NOW, timedelta(days=30))))


def acks_on(kafka: FakeKafka) -> list[Acknowledgement]:
    return [Acknowledgement.model_validate_json(v) for v in kafka.topics.get("ppo.acknowledgements", [])]


async def test_the_page_names_the_message_and_records_nothing():
    from services.notifier.render import reference_for

    kafka = FakeKafka()
    service, _ = intake_on(kafka, FixedClock(ACK_NOW))
    query = {**signed(), "r": WHO.upper()}  # a mail client may change the case: the form carries ours
    async with client_of(service) as client:
        page = await client.get("/ack", params=query)
    assert page.status_code == 200
    assert f"Ref A1-{reference_for(ACK_OID)[-8:]}" in page.text  # as the message gives it to quote
    assert '<button type="submit">Acknowledge</button>' in page.text and 'method="post"' in page.text
    assert f'name="r" value="{WHO}"' in page.text and WHO.upper() not in page.text
    assert "PPO" not in page.text and "Nothing is recorded until you press it" in page.text
    assert acks_on(kafka) == []


async def test_a_second_press_answers_already_acknowledged_with_the_first_time_and_publishes_nothing():
    kafka = FakeKafka()
    clock = FixedClock(ACK_NOW)
    service, _ = intake_on(kafka, clock)
    async with client_of(service) as client:
        first = await client.post("/ack", data=signed())
        assert first.status_code == 200 and "<h1>Acknowledged</h1>" in first.text
        assert "recorded at 14:05 on Tuesday 3 March 2026" in first.text
        clock.set(ACK_NOW + timedelta(days=2, hours=1))
        again = await client.post("/ack", data={**signed(), "r": WHO.upper()})
        assert again.status_code == 200 and "<h1>Already acknowledged</h1>" in again.text
        assert "already acknowledged at 14:05 on Tuesday 3 March 2026" in again.text
        other = await client.post("/ack", data=signed("leeds.duty@westyorkshire.police.uk"))
        assert "<h1>Acknowledged</h1>" in other.text  # another recipient of the same message: their own record
    assert [(a.recipient, a.acknowledged_at) for a in acks_on(kafka)] == [
        (WHO, ACK_NOW), ("leeds.duty@westyorkshire.police.uk", ACK_NOW + timedelta(days=2, hours=1))]


async def test_another_instance_and_a_restart_know_the_first_press():
    kafka = FakeKafka()
    clock = FixedClock(ACK_NOW)
    one, _ = intake_on(kafka, clock)
    reads: list[int] = []
    two, two_broker = intake_on(kafka, clock, reads)
    async with client_of(two) as client:  # two started (read the empty topic) before anyone pressed
        assert (await client.get("/ack", params=signed())).status_code == 200
        await asyncio.sleep(0)
    async with client_of(one) as client:
        assert "<h1>Acknowledged</h1>" in (await client.post("/ack", data=signed())).text
    await two_broker.deliver("ppo.acknowledgements")  # two follows the topic
    clock.set(ACK_NOW + timedelta(minutes=10))
    async with client_of(two) as client:
        assert "already acknowledged at 14:05" in (await client.post("/ack", data=signed())).text
    assert reads == [1]  # the catch-up read runs once per process
    restarted, _ = intake_on(kafka, clock)  # a new process reads the topic to its end before answering
    async with client_of(restarted) as client:
        assert "already acknowledged at 14:05" in (await client.post("/ack", data=signed())).text
    assert len(acks_on(kafka)) == 1


async def test_a_double_click_is_one_record():
    kafka = FakeKafka()
    kafka.publish_delay_s = 0.05
    service, _ = intake_on(kafka, FixedClock(ACK_NOW))
    async with client_of(service) as client:
        answers = await asyncio.gather(*(client.post("/ack", data=signed()) for _ in range(3)))
    assert sorted("Already" in a.text for a in answers) == [False, True, True]
    assert len(acks_on(kafka)) == 1


async def test_the_earliest_of_two_records_is_kept_whatever_the_order_read():
    from services.intake.acks_seen import AcksSeen

    seen = AcksSeen()
    later = Acknowledgement(obligation_id=ACK_OID, recipient=WHO.upper(), acknowledged_at=ACK_NOW + timedelta(1),
                            link_expires_at=ACK_NOW + timedelta(30))
    earlier = later.model_copy(update={"acknowledged_at": ACK_NOW})
    assert seen.learn(later) and seen.learn(earlier) and not seen.learn(later)
    assert seen.first(ACK_OID, WHO) == ACK_NOW
    assert not seen.learn_record(b'{"not": "an acknowledgement"}') and not seen.learn_record(None)
    assert len(seen) == 1


async def test_kafka_unavailable_not_recorded_yet_with_the_button_again():
    kafka = FakeKafka()
    kafka.fail_publish = True
    service, _ = intake_on(kafka, FixedClock(ACK_NOW))
    async with client_of(service) as client:
        busy = await client.post("/ack", data=signed())
        assert busy.status_code == 503 and "<h1>Not recorded yet</h1>" in busy.text
        assert '<button type="submit">Try again</button>' in busy.text and f'value="{WHO}"' in busy.text
        kafka.fail_publish = False
        assert "<h1>Acknowledged</h1>" in (await client.post("/ack", data=signed())).text  # not taken as done
    assert len(acks_on(kafka)) == 1


async def test_a_press_is_recorded_when_the_topic_cannot_be_read_first(caplog: pytest.LogCaptureFixture):
    kafka = FakeKafka()
    service, _ = intake_on(kafka, FixedClock(ACK_NOW))

    async def unreachable() -> list[bytes | None]:
        raise OSError("no broker")

    service.read_acks = unreachable
    with caplog.at_level(logging.WARNING, logger="ppo.intake"):
        async with client_of(service) as client:
            assert "<h1>Acknowledged</h1>" in (await client.post("/ack", data=signed())).text
            assert "Already" in (await client.post("/ack", data=signed())).text  # this instance knows its own
    assert "not read to its end" in caplog.text and len(acks_on(kafka)) == 1


@pytest.mark.parametrize(("change", "status", "title"), [
    ({"s": "0" * 64}, 403, "Link not valid"),
    ({"r": "someone.else@example.gov.uk"}, 403, "Link not valid"),
    ({"o": "<script>alert(1)</script>"}, 400, "Link not recognised"),
    ({"e": "1700000000", "s": signature(b"s" * 32, ACK_OID, WHO, 1_700_000_000)}, 410, "Link expired"),
])
async def test_refused_links_say_why_record_nothing_and_echo_nothing(change: dict[str, str], status: int,
                                                                     title: str):
    kafka = FakeKafka()
    service, _ = intake_on(kafka, FixedClock(ACK_NOW))
    query = {**signed(), **change}
    async with client_of(service) as client:
        for answer in (await client.get("/ack", params=query), await client.post("/ack", data=query)):
            assert answer.status_code == status and f"<h1>{title}</h1>" in answer.text
            assert "nothing has been recorded" in answer.text and "<form" not in answer.text
            for value in query.values():  # neither the values nor anything derived from them
                assert value not in answer.text and html.escape(value) not in answer.text
            assert "Ref " not in answer.text
            assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    assert acks_on(kafka) == []


def test_london_time_spells_the_day_in_london():
    from services.intake.acks_seen import london_time

    assert london_time(datetime(2026, 3, 3, 14, 5, tzinfo=UTC)) == "14:05 on Tuesday 3 March 2026"
    assert london_time(datetime(2026, 7, 1, 23, 30, tzinfo=UTC)) == "00:30 on Thursday 2 July 2026"  # BST


def test_the_reference_is_the_messages_and_the_rule_comes_from_the_id():
    from services.notifier.render import reference_for
    from shared.ack import reference, rule_of
    from shared.custody import DIGEST
    from shared.obligations import obligation_id

    for rule in ("A1", "C6", DIGEST):
        oid = obligation_id(rule, "p", "f")
        assert rule_of(oid) == rule
        assert reference(oid) == f"{rule}-{reference_for(oid)[-8:]}"  # the notifier's digest, with the rule
    assert rule_of("not-an-id") is None and reference("not-an-id") == reference_for("not-an-id")[-8:]
