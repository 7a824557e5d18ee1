"""The delivery pipeline against a real SMTP server on loopback (aiosmtpd): exactly once per recipient."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr, ValidationError

from services.notifier.pipeline import DeliveryPipeline, RetryPolicy, obligation_status
from services.notifier.render import COURT_FORBIDDEN, Renderer, message_id_for, reference_for
from services.notifier.sendlog import SendLog
from services.notifier.smtp import EmailSender, OneShotSmtpSender, SmtpSender, SmtpSettings
from shared.clock import FixedClock
from shared.obligations import Obligation, PersonRef
from tests.smtp_server import LoopbackSmtpServer

pytestmark = pytest.mark.smtp

PPO = "leeds.ppo@westyorkshire.police.uk"
PROBATION = "leeds.iom@justice.gov.uk"
T0 = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
ALLOWED = ["police.uk", "justice.gov.uk", "gov.uk", "cjsm.net"]
FROM = "PPO Alerts <ppo-alerts@notify.example.gov.uk>"
COURT_FROM = "Offender notifications <notices@notify.example.gov.uk>"


def obligation(recipients: dict[str, str] | None = None, rule: str = "A1", **changes: Any) -> Obligation:
    roles = recipients or {PPO: "ppo", PROBATION: "probation"}
    fields: dict[str, Any] = dict(
        obligation_id=f"{rule}-0123456789abcdef01234567",
        rule=rule,
        source_paragraph="001 §7.5",
        person=PersonRef(
            person_id="p-1",
            pnc="2004/0012345D",
            noms="A1234BC",
            given_name="Sam",
            family_name="Example",
            date_of_birth=date(1990, 5, 1),
        ),
        bcu="13-LD",
        recipients=list(roles),
        recipient_roles=roles,
        send_at=T0,
        notify_by=T0 + timedelta(minutes=15),
        raised_at=T0,
        occurred_at=T0 - timedelta(minutes=5),
        event_type="prison.reception",
        facts={"prison_id": "LEI", "reason": "new"},
    )
    fields.update(changes)
    return Obligation(**fields)


class FakeSleep:
    """Records the backoff and moves the clock instead of waiting."""

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.set(self.clock.now() + timedelta(seconds=seconds))


@pytest.fixture
def server() -> Iterator[LoopbackSmtpServer]:
    with LoopbackSmtpServer() as s:
        yield s


@pytest.fixture
def settings(server: LoopbackSmtpServer) -> SmtpSettings:
    return SmtpSettings(
        host=server.host,
        port=server.port,
        tls_mode="plain",
        allow_plaintext=True,
        sender=FROM,
        court_sender=COURT_FROM,
        timeout_s=5,
        pool_size=2,
        local_hostname="localhost",
    )


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def sleep(clock: FixedClock) -> FakeSleep:
    return FakeSleep(clock)


@pytest.fixture
def sendlog_path(tmp_path: Path) -> Path:
    return tmp_path / "sendlog.sqlite3"


@pytest.fixture
async def sender(settings: SmtpSettings) -> AsyncIterator[SmtpSender]:
    async with SmtpSender(settings) as s:
        yield s


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def make_pipeline(
    renderer: Renderer,
    sender: EmailSender,
    sendlog: SendLog,
    clock: FixedClock,
    sleep: FakeSleep,
    retry: RetryPolicy | None = None,
    **kw: Any,
) -> DeliveryPipeline:
    return DeliveryPipeline(
        renderer,
        sender,
        sendlog,
        clock,
        ALLOWED,
        ack_url_builder=lambda oid, rcpt: (
            f"https://ack.notify.example.gov.uk/a/{oid}/{abs(hash(rcpt)) % 10**8}"
        ),
        retry=retry or RetryPolicy(max_attempts=4, initial_backoff_s=1.0, multiplier=2.0),
        from_address=FROM,
        court_from_address=COURT_FROM,
        sleep=sleep,
        **kw,
    )


def by_recipient(outcomes: list[Any]) -> dict[str, str]:
    return {o.recipient: o.outcome for o in outcomes}


# --- the required scenarios ----------------------------------------------------------------------------


@pytest.mark.parametrize("sender_class", [SmtpSender, OneShotSmtpSender])
async def test_451_then_250_is_delivered_once(
    server: LoopbackSmtpServer,
    settings: SmtpSettings,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
    sender_class: type,
) -> None:
    server.fail_next(1)
    o = obligation({PPO: "ppo"})
    with SendLog(sendlog_path) as log:
        one = sender_class(settings)
        try:
            outcomes = await make_pipeline(renderer, one, log, clock, sleep).deliver(o)
        finally:
            await one.close()
        assert by_recipient(outcomes) == {PPO: "sent"}
        assert sleep.delays == [1.0]
        assert server.data_commands == 2
        assert len(server.messages_for(PPO)) == 1
        entry = log.get(o.obligation_id, PPO)
        assert entry is not None and (entry.state, entry.attempts) == ("sent", 2)
    assert obligation_status(outcomes) == "notified"


async def test_550_for_one_recipient_does_not_affect_the_other(
    server: LoopbackSmtpServer,
    sender: SmtpSender,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    server.refuse_recipient(PROBATION)
    with SendLog(sendlog_path) as log:
        outcomes = await make_pipeline(renderer, sender, log, clock, sleep).deliver(obligation())
        assert by_recipient(outcomes) == {PPO: "sent", PROBATION: "permanent-failure"}
        refused = next(o for o in outcomes if o.recipient == PROBATION)
        assert refused.detail.startswith("550")
        assert log.get(outcomes[1].obligation_id, PROBATION).state == "permanent-failure"  # type: ignore[union-attr]
    assert len(server.messages_for(PPO)) == 1 and server.messages_for(PROBATION) == []
    assert sleep.delays == []  # a permanent refusal is not retried
    assert obligation_status(outcomes) == "notified"


async def test_connection_dropped_mid_data_is_retried_and_delivered_once(
    server: LoopbackSmtpServer,
    sender: SmtpSender,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    server.drop_next(1)
    with SendLog(sendlog_path) as log:
        outcomes = await make_pipeline(renderer, sender, log, clock, sleep).deliver(obligation({PPO: "ppo"}))
    assert by_recipient(outcomes) == {PPO: "sent"}
    assert server.data_commands == 2 and len(server.messages_for(PPO)) == 1
    assert sleep.delays == [1.0]


async def test_run_twice_over_a_restart_sends_each_recipient_once(
    server: LoopbackSmtpServer,
    settings: SmtpSettings,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    o = obligation()
    # First process.
    log = SendLog(sendlog_path)
    async with SmtpSender(settings) as first:
        outcomes = await make_pipeline(renderer, first, log, clock, sleep).deliver(o)
    log.close()
    assert by_recipient(outcomes) == {PPO: "sent", PROBATION: "sent"}
    # The Kafka offset was not committed: after the restart the same request arrives again.
    clock.set(T0 + timedelta(minutes=3))
    with SendLog(sendlog_path) as log2:
        async with SmtpSender(settings) as second:
            again = await make_pipeline(Renderer(), second, log2, clock, sleep).deliver(o)
    assert by_recipient(again) == {PPO: "duplicate-suppressed", PROBATION: "duplicate-suppressed"}
    assert {a.message_id for a in again} == {a.message_id for a in outcomes}
    assert len(server.messages_for(PPO)) == 1 and len(server.messages_for(PROBATION)) == 1
    assert len(server.messages) == 2
    assert obligation_status(again) == "notified"


async def test_every_recipient_refused_means_failed(
    server: LoopbackSmtpServer,
    sender: SmtpSender,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    server.refuse_recipient(PPO)
    server.refuse_recipient(PROBATION)
    with SendLog(sendlog_path) as log:
        pipeline = make_pipeline(renderer, sender, log, clock, sleep)
        outcomes = await pipeline.deliver(obligation())
        assert by_recipient(outcomes) == {PPO: "permanent-failure", PROBATION: "permanent-failure"}
        assert obligation_status(outcomes) == "failed"
        # Asked again: still failed, and nothing is sent.
        again = await pipeline.deliver(obligation())
        assert obligation_status(again) == "failed"
    assert server.messages == [] and server.data_commands == 0


# --- retries, deadlines, restarts ----------------------------------------------------------------------


async def test_temporary_failure_is_bounded_and_resumes_later(
    server: LoopbackSmtpServer,
    sender: SmtpSender,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    server.fail_next(100)
    with SendLog(sendlog_path) as log:
        pipeline = make_pipeline(renderer, sender, log, clock, sleep)
        outcomes = await pipeline.deliver(obligation({PPO: "ppo"}))
        assert by_recipient(outcomes) == {PPO: "temporary-failure"}
        assert outcomes[0].detail.startswith("451")
        assert sleep.delays == [1.0, 2.0, 4.0]  # 4 attempts, exponential backoff
        assert obligation_status(outcomes) is None
        assert log.get(outcomes[0].obligation_id, PPO).attempts == 4  # type: ignore[union-attr]
        # Later (a redelivered request), the server is back.
        server.fail_next(0)
        clock.set(T0 + timedelta(hours=1))
        later = await pipeline.deliver(obligation({PPO: "ppo"}))
        assert by_recipient(later) == {PPO: "sent"}
    assert len(server.messages_for(PPO)) == 1


async def test_gives_up_at_the_retry_deadline(
    server: LoopbackSmtpServer,
    sender: SmtpSender,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    server.fail_next(1000)
    retry = RetryPolicy(
        max_attempts=50,
        initial_backoff_s=60,
        multiplier=2,
        max_backoff_s=600,
        give_up_after=timedelta(minutes=30),
    )
    with SendLog(sendlog_path) as log:
        outcomes = await make_pipeline(renderer, sender, log, clock, sleep, retry).deliver(
            obligation({PPO: "ppo"})
        )
        assert by_recipient(outcomes) == {PPO: "permanent-failure"}
        assert outcomes[0].detail.startswith("gave up")
        assert sum(sleep.delays) < 30 * 60
        # A later request after the deadline is not sent either.
        server.fail_next(0)
        clock.set(T0 + timedelta(hours=2))
        again = await make_pipeline(renderer, sender, log, clock, sleep, retry).deliver(
            obligation({PPO: "ppo"})
        )
        assert by_recipient(again) == {PPO: "permanent-failure"}
    assert server.messages == []


async def test_crash_after_queued_is_sent_again_once(
    server: LoopbackSmtpServer,
    sender: SmtpSender,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    """The residual window: `queued` on disk, outcome unknown. At least once: it is sent (once more)."""
    o = obligation({PPO: "ppo"})
    with SendLog(sendlog_path) as log:
        log.record_queued(
            o.obligation_id,
            PPO,
            rule="A1",
            message_id="<m@ppo-alerts>",
            template_version="v0",
            now=T0 - timedelta(minutes=1),
        )
        outcomes = await make_pipeline(renderer, sender, log, clock, sleep).deliver(o)
        assert by_recipient(outcomes) == {PPO: "sent"}
        assert log.get(o.obligation_id, PPO).attempts == 2  # type: ignore[union-attr]
    assert len(server.messages_for(PPO)) == 1


async def test_recipient_outside_the_allow_list_is_refused_without_sending(
    server: LoopbackSmtpServer,
    sender: SmtpSender,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    o = obligation({PPO: "ppo", "someone@gmail.com": "probation"})
    with SendLog(sendlog_path) as log:
        outcomes = await make_pipeline(renderer, sender, log, clock, sleep).deliver(o)
        refused = next(x for x in outcomes if x.recipient == "someone@gmail.com")
        assert refused.outcome == "permanent-failure" and refused.detail.startswith("domain-not-allowed")
        assert log.get(o.obligation_id, "someone@gmail.com").state == "permanent-failure"  # type: ignore[union-attr]
    assert server.messages_for("someone@gmail.com") == [] and len(server.messages) == 1


# --- what arrives --------------------------------------------------------------------------------------


async def test_received_message_is_the_rendered_one(
    server: LoopbackSmtpServer,
    sender: SmtpSender,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    o = obligation()
    with SendLog(sendlog_path) as log:
        outcomes = await make_pipeline(renderer, sender, log, clock, sleep).deliver(o)
    for recipient in (PPO, PROBATION):
        [received] = server.messages_for(recipient)
        assert received.rcpt_tos == (recipient,)  # one email per recipient
        assert received.mail_from == "ppo-alerts@notify.example.gov.uk"
        message = received.message
        assert message["Message-ID"].strip() == message_id_for(o.obligation_id, recipient)
        assert message["X-PPO-Obligation"] == o.obligation_id and message["X-PPO-Rule"] == "A1"
        ref = reference_for(o.obligation_id, "A1")
        assert message["Subject"] == f"OFFICIAL-SENSITIVE: PPO in custody at HMP Leeds, ref {ref}"
        assert message["X-Classification"] == "OFFICIAL-SENSITIVE"
        body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "https://ack.notify.example.gov.uk/a/" in body
        assert body.startswith("OFFICIAL-SENSITIVE") and f"Ref {ref}: quote this reference" in body
        assert message.get_body(("html",)) is not None
    assert {x.message_id for x in outcomes} == {message_id_for(o.obligation_id, r) for r in (PPO, PROBATION)}
    assert all(len(x.template_version) == 12 for x in outcomes)


async def test_court_recipient_gets_a_neutral_message(
    server: LoopbackSmtpServer,
    sender: SmtpSender,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    court = "listing.leeds@justice.gov.uk"
    o = obligation(
        {PPO: "ppo", court: "court"},
        rule="B1",
        event_type="court.bail_decision",
        facts={"court_code": "B01LY00", "decision": "conditional_bail"},
    )
    with SendLog(sendlog_path) as log:
        outcomes = await make_pipeline(renderer, sender, log, clock, sleep).deliver(o)
    assert by_recipient(outcomes) == {PPO: "sent", court: "sent"}
    [received] = server.messages_for(court)
    assert not COURT_FORBIDDEN.search(received.content.decode("utf-8", "replace"))
    assert received.mail_from == "notices@notify.example.gov.uk"
    [police] = server.messages_for(PPO)
    ref = reference_for(o.obligation_id, "B1")
    # a court the reference data does not name is shown by its plain code
    assert police.message["Subject"] == f"OFFICIAL-SENSITIVE: PPO bail decision at B01LY00, ref {ref}"
    assert received.message["Subject"] == f"OFFICIAL-SENSITIVE: Bail decision at B01LY00, ref {ref}"


async def test_escalation_is_its_own_message_sent_once(
    server: LoopbackSmtpServer,
    sender: SmtpSender,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    duty = "leeds.duty.inspector@westyorkshire.police.uk"
    o = obligation({PPO: "ppo"}, status="breached")
    with SendLog(sendlog_path) as log:
        pipeline = make_pipeline(renderer, sender, log, clock, sleep)
        await pipeline.deliver(o)
        first = await pipeline.escalate(o, [duty], "not delivered in time")
        second = await pipeline.escalate(o, [duty], "not delivered in time")
    assert [x.outcome for x in first] == ["sent"] and [x.outcome for x in second] == ["duplicate-suppressed"]
    assert first[0].rule == "escalation" and first[0].obligation_id == o.obligation_id
    [received] = server.messages_for(duty)
    ref = reference_for(f"{o.obligation_id}#escalation", "A1")
    assert received.message["Subject"] == f"OFFICIAL-SENSITIVE: PPO alert escalation, ref {ref}"
    assert "not delivered in time" in received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert len(server.messages) == 2


async def test_cancelled_obligation_is_not_sent(
    server: LoopbackSmtpServer,
    sender: SmtpSender,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    with SendLog(sendlog_path) as log:
        outcomes = await make_pipeline(renderer, sender, log, clock, sleep).deliver(
            obligation(status="cancelled")
        )
    assert outcomes == [] and server.messages == []


async def test_latency_histogram_is_recorded(
    server: LoopbackSmtpServer,
    sender: SmtpSender,
    renderer: Renderer,
    clock: FixedClock,
    sleep: FakeSleep,
    sendlog_path: Path,
) -> None:
    def count(outcome: str) -> float:
        return REGISTRY.get_sample_value("ppo_smtp_send_seconds_count", {"outcome": outcome}) or 0.0

    accepted, temporary = count("accepted"), count("temporary")
    server.fail_next(1)
    with SendLog(sendlog_path) as log:
        await make_pipeline(renderer, sender, log, clock, sleep).deliver(obligation({PPO: "ppo"}))
    assert count("accepted") == accepted + 1 and count("temporary") == temporary + 1
    assert (REGISTRY.get_sample_value("ppo_notifier_deliveries_total", {"outcome": "sent"}) or 0) >= 1


async def test_pooled_sender_reuses_connections_and_survives_a_drop(
    server: LoopbackSmtpServer, sender: SmtpSender
) -> None:
    renderer = Renderer()
    messages = [
        renderer.render(
            obligation({f"user{i}@justice.gov.uk": "probation"}),
            f"user{i}@justice.gov.uk",
            "probation",
            None,
            T0,
        ).to_email(FROM)
        for i in range(6)
    ]
    for i, m in enumerate(messages[:3]):
        assert (await sender.send(m, [f"user{i}@justice.gov.uk"])).outcome == "accepted"
    assert len(sender._idle) == 1  # sequential sends share one connection
    server.drop_next(1)
    assert (await sender.send(messages[3], ["user3@justice.gov.uk"])).outcome == "temporary"
    assert len(sender._idle) == 0  # the broken connection was dropped
    for i, m in enumerate(messages[4:], start=4):
        assert (await sender.send(m, [f"user{i}@justice.gov.uk"])).outcome == "accepted"
    assert len(server.messages) == 5


async def test_unreachable_server_is_a_temporary_failure(settings: SmtpSettings) -> None:
    with LoopbackSmtpServer() as gone:
        port = gone.port
    closed = settings.model_copy(update={"port": port})  # nothing listens there any more
    m = Renderer().render(obligation({PPO: "ppo"}), PPO, "ppo", None, T0).to_email(FROM)
    for cls in (SmtpSender, OneShotSmtpSender):
        s = cls(closed)
        result = await s.send(m, [PPO])
        await s.close()
        assert result.for_recipient(PPO).status == "temporary"
        assert result.for_recipient(PPO).message.startswith("SMTPConnectError")


async def test_pooled_connection_survives_a_server_restart(
    server: LoopbackSmtpServer, sender: SmtpSender
) -> None:
    m = Renderer().render(obligation({PPO: "ppo"}), PPO, "ppo", None, T0).to_email(FROM)
    assert (await sender.send(m, [PPO])).outcome == "accepted"
    assert len(sender._idle) == 1
    server.stop()
    server.start()  # same port; the pooled connection is now dead
    sender._idle[0].last_used -= 3600  # idle long enough for the NOOP health check
    assert (await sender.send(m, [PPO])).outcome == "accepted"
    assert len(server.messages_for(PPO)) == 2


# --- settings ------------------------------------------------------------------------------------------


def test_plaintext_is_refused_unless_allowed() -> None:
    with pytest.raises(ValidationError, match="allow_plaintext"):
        SmtpSettings(host="mail", port=25, tls_mode="plain", sender="a@b.gov.uk")
    assert SmtpSettings(host="mail", port=25, tls_mode="plain", allow_plaintext=True, sender="a@b.gov.uk")


def test_settings_are_strict() -> None:
    with pytest.raises(ValidationError):
        SmtpSettings(host="mail", sender="a@b.gov.uk", tls="yes")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="username and password"):
        SmtpSettings(host="mail", sender="a@b.gov.uk", username="u")
    with pytest.raises(ValidationError, match="not an email address"):
        SmtpSettings(host="mail", sender="a@b.gov.uk\r\nBcc: x@y.com")
    s = SmtpSettings(
        host="mail",
        port=465,
        tls_mode="implicit",
        sender="Alerts <a@b.gov.uk>",
        username="u",
        password=SecretStr("secret"),
    )
    assert "secret" not in repr(s) and s.envelope_sender == "a@b.gov.uk"
    assert s.client_kwargs()["use_tls"] is True and s.client_kwargs()["start_tls"] is False
