"""Defence in depth at send time, against a real SMTP server on loopback: whatever reaches the notifier, nothing
goes outside the allowed domains, no header can be injected, nothing oversized is sent, plain text only when
explicitly allowed. Each refusal is a recorded permanent failure (escalated), never a silent drop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from ppo_alerts.render_examples import PERSON, sample_obligation
from services.notifier.main import retry_policy, smtp_settings
from services.notifier.pipeline import DeliveryPipeline
from services.notifier.render import Renderer
from services.notifier.sendlog import SendLog
from services.notifier.smtp import SmtpSender, SmtpSettings
from shared.clock import FixedClock
from shared.obligations import Obligation
from shared.settings import Settings
from tests.smtp_server import LoopbackSmtpServer

pytestmark = pytest.mark.smtp

ALLOWED = ("police.uk", "justice.gov.uk", "gov.uk")
NOW = datetime(2026, 2, 10, 14, 5, tzinfo=UTC)
FROM = "ppo-alerts@notify.example.gov.uk"


@pytest.fixture
def server() -> Iterator[LoopbackSmtpServer]:
    with LoopbackSmtpServer() as s:
        yield s


@pytest.fixture
async def sender(server: LoopbackSmtpServer) -> AsyncIterator[SmtpSender]:
    settings = SmtpSettings(host=server.host, port=server.port, tls_mode="plain", allow_plaintext=True,
                            sender=FROM, timeout_s=5, local_hostname="localhost")
    async with SmtpSender(settings) as s:
        yield s


@pytest.fixture
def pipeline(sender: SmtpSender, tmp_path: Path) -> Iterator[DeliveryPipeline]:
    with SendLog(tmp_path / "sendlog.sqlite") as log:
        yield DeliveryPipeline(Renderer(max_message_bytes=20_000), sender, log, FixedClock(NOW), ALLOWED,
                               from_address=FROM)


def to(recipients: list[str], rule: str = "A1", **changes: object) -> Obligation:
    roles = {r: "ppo" for r in recipients}
    return sample_obligation(rule).model_copy(update={"recipients": recipients, "recipient_roles": roles, **changes})


async def test_the_allow_list_is_enforced_again_at_send_time(pipeline: DeliveryPipeline,
                                                             server: LoopbackSmtpServer) -> None:
    good = ["leeds.ppo@westyorkshire.police.uk", "LEEDS.IOM@JUSTICE.GOV.UK", "yot@leeds.gov.uk"]
    bad = ["someone@gmail.com", "x@notpolice.uk", "x@police.uk.attacker.net", "x@justice.gov.uk.evil.com",
           "x@gov.uk-mail.com"]
    outcomes = {o.recipient: o for o in await pipeline.deliver(to(good + bad))}
    for address in good:
        assert outcomes[address].outcome == "sent", address
    for address in bad:
        assert outcomes[address].outcome == "permanent-failure", address
        assert outcomes[address].detail.startswith("domain-not-allowed"), address
        assert pipeline.sendlog.get(outcomes[address].obligation_id, address).state == "permanent-failure"  # type: ignore[union-attr]
    delivered = sorted(r.lower() for m in server.messages for r in m.rcpt_tos)
    assert delivered == sorted(a.lower() for a in good)


@pytest.mark.parametrize("recipient", [
    "leeds.ppo@westyorkshire.police.uk\r\nBcc: someone@gmail.com",
    "leeds.ppo@westyorkshire.police.uk,someone@gmail.com",
    "Leeds <leeds.ppo@westyorkshire.police.uk>",
])
async def test_a_recipient_that_is_not_one_plain_address_is_refused(
    pipeline: DeliveryPipeline, server: LoopbackSmtpServer, recipient: str
) -> None:
    [outcome] = await pipeline.deliver(to([recipient]))
    assert outcome.outcome == "permanent-failure" and outcome.detail.startswith("invalid-address")
    assert server.messages == [] and server.data_commands == 0


async def test_no_header_can_be_injected_through_the_facts(pipeline: DeliveryPipeline,
                                                           server: LoopbackSmtpServer) -> None:
    address = "leeds.ppo@westyorkshire.police.uk"
    through_name = to([address], person=PERSON.model_copy(update={"given_name": "Sam\r\nBcc: someone@gmail.com"}))
    through_fact = to([address], facts={"prison_id": "LEI\nBcc: someone@gmail.com", "reason": "new"},
                      obligation_id="A1-through-a-fact")
    through_id = to([address], obligation_id="A1-x\r\nBcc: someone@gmail.com")
    # A value from a payload is never in a header (the subject is fixed wording and a reference), so it can
    # neither inject one nor make the message fail: these are sent, with no header but ours.
    for o in (through_name, through_fact):
        [outcome] = await pipeline.deliver(o)
        assert outcome.outcome == "sent", (o.obligation_id, outcome.detail)
    assert len(server.messages) == 2
    for m in server.messages:
        assert list(m.rcpt_tos) == [address] and m.message["Bcc"] is None
        assert "\n" not in m.message["Subject"] and "Sam" not in m.message["Subject"]
    # Our own identifiers are checked too: an id with a line break is refused, never sent
    [outcome] = await pipeline.deliver(through_id)
    assert outcome.outcome == "permanent-failure" and outcome.detail.startswith("header-injection"), outcome.detail
    assert len(server.messages) == 2


async def test_nothing_over_the_size_limit_is_sent(pipeline: DeliveryPipeline, server: LoopbackSmtpServer) -> None:
    people = [{"given_name": f"Person{i}", "family_name": "Example", "pnc": "2006/0777001G", "noms": "G1234HJ",
               "strand": "catch_and_convict", "selected_on": "2025-06-01", "status": "in_custody"}
              for i in range(400)]
    o = to(["leeds.iom.coord@westyorkshire.police.uk"], rule="C6", facts={"period": "2026-02", "ppos": people})
    [outcome] = await pipeline.deliver(o)
    assert outcome.outcome == "permanent-failure" and outcome.detail.startswith("too-large")
    assert "over the limit of 20000 bytes" in outcome.detail
    assert server.messages == []


def test_plain_text_smtp_only_when_explicitly_allowed() -> None:
    with pytest.raises(ValidationError, match="PPO_SMTP_ALLOW_PLAINTEXT"):
        smtp_settings(Settings(smtp_tls_mode="plain"))
    assert smtp_settings(Settings(smtp_tls_mode="plain", smtp_allow_plaintext=True)).tls_mode == "plain"
    strict = smtp_settings(Settings())
    assert (strict.tls_mode, strict.validate_certs) == ("starttls", True)


def test_notifier_settings_are_wired() -> None:
    s = Settings(smtp_court_sender="Offender notifications <notices@notify.example.gov.uk>",
                 smtp_validate_certs=False, notifier_retry_attempts=2, notifier_redeliver_after_s=10,
                 notifier_redeliver_max_s=40, notifier_give_up_after_h=6)
    smtp = smtp_settings(s)
    assert smtp.court_sender == "Offender notifications <notices@notify.example.gov.uk>"
    assert smtp.client_kwargs()["validate_certs"] is False
    retry = retry_policy(s)
    assert retry.max_attempts == 2 and [retry.redelivery_delay(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 40]
    assert retry.give_up_after.total_seconds() == 6 * 3600
    with pytest.raises(SystemExit) as refused:  # one line naming the variable, exit 2 (start-up errors)
        smtp_settings(Settings(smtp_court_sender="notices@x.gov.uk\r\nBcc: someone@gmail.com"))
    assert refused.value.code == 2
