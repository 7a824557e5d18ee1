"""The pipeline reports `queued` before each SMTP transaction and each interim temporary failure as it happens
(`on_progress`), against a real SMTP server on loopback; if the report cannot be made, nothing is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ppo_alerts.render_examples import sample_obligation
from services.notifier.pipeline import DeliveryPipeline, RetryPolicy
from services.notifier.render import Renderer
from services.notifier.sendlog import SendLog
from services.notifier.smtp import SmtpSender, SmtpSettings
from shared.clock import FixedClock
from shared.obligations import DeliveryOutcome
from tests.smtp_server import LoopbackSmtpServer

pytestmark = pytest.mark.smtp

NOW = datetime(2026, 2, 10, 14, 5, tzinfo=UTC)
PPO = "leeds.ppo@westyorkshire.police.uk"
FROM = "ppo-alerts@notify.example.gov.uk"


class Recorder:
    def __init__(self, server: LoopbackSmtpServer, clock: FixedClock) -> None:
        self.server, self.clock = server, clock
        self.seen: list[tuple[str, str, int]] = []  # (outcome, detail, messages the server had at that moment)
        self.delays: list[float] = []

    async def __call__(self, outcome: DeliveryOutcome) -> None:
        self.seen.append((outcome.outcome, outcome.detail, len(self.server.messages)))

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.set(self.clock.now() + timedelta(seconds=seconds))


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


def obligation():  # type: ignore[no-untyped-def]
    return sample_obligation("A1").model_copy(update={"recipients": [PPO], "recipient_roles": {PPO: "ppo"}})


async def test_queued_before_each_attempt_and_interim_failures_as_they_happen(
    server: LoopbackSmtpServer, sender: SmtpSender, tmp_path: Path
) -> None:
    clock = FixedClock(NOW)
    recorder = Recorder(server, clock)
    server.fail_next(2)
    with SendLog(tmp_path / "log.sqlite") as log:
        pipeline = DeliveryPipeline(Renderer(), sender, log, clock, ["police.uk"], from_address=FROM,
                                    retry=RetryPolicy(max_attempts=3), sleep=recorder.sleep)
        [final] = await pipeline.deliver(obligation(), on_progress=recorder)
    assert final.outcome == "sent"
    assert [(o, n) for o, _, n in recorder.seen] == [
        ("queued", 0), ("temporary-failure", 0), ("queued", 0), ("temporary-failure", 0), ("queued", 0)]
    details = [d for _, d, _ in recorder.seen]
    assert details[0] == "attempt 1" and details[2] == "attempt 2" and details[4] == "attempt 3"
    assert details[1].startswith("451") and details[1].endswith("; retry in 1 s")
    assert details[3].endswith("; retry in 2 s")
    assert recorder.delays == [1.0, 2.0] and len(server.messages_for(PPO)) == 1


async def test_nothing_is_sent_when_queued_cannot_be_recorded(
    server: LoopbackSmtpServer, sender: SmtpSender, tmp_path: Path
) -> None:
    async def kafka_down(outcome: DeliveryOutcome) -> None:
        raise ConnectionError("Kafka is down")

    o = obligation()
    with SendLog(tmp_path / "log.sqlite") as log:
        pipeline = DeliveryPipeline(Renderer(), sender, log, FixedClock(NOW), ["police.uk"], from_address=FROM)
        with pytest.raises(ConnectionError):
            await pipeline.deliver(o, on_progress=kafka_down)
        assert server.data_commands == 0 and server.messages == []
        assert log.get(o.obligation_id, PPO).state == "queued"  # type: ignore[union-attr]
        # The request comes again (not committed) with Kafka back: sent once.
        [final] = await pipeline.deliver(o, on_progress=None)
    assert final.outcome == "sent" and len(server.messages_for(PPO)) == 1
