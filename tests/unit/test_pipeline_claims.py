"""The pipeline and the claim (services.notifier.pipeline, sendlog): two instances on one send log never both
send, and an instance never sends past its own claim."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from ppo_alerts.render_examples import sample_obligation
from services.notifier.pipeline import DeliveryPipeline, RetryPolicy
from services.notifier.render import Renderer
from services.notifier.sendlog import SendLog
from services.notifier.smtp import RecipientResult, SendResult
from shared.clock import FixedClock
from shared.obligations import Obligation

NOW = datetime(2026, 2, 10, 14, 5, tzinfo=UTC)
PPO = "leeds.ppo@westyorkshire.police.uk"
FROM = "ppo-alerts@notify.example.gov.uk"


class HeldSender:
    """Accepts every message, each only once `release` is set (a slow server, or one mid-transaction)."""

    def __init__(self, hold_s: float | None = None) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.hold_s = hold_s
        self.held_for: float | None = None  # how long a cancelled transaction had run

    async def send(self, message: EmailMessage, recipients: list[str]) -> SendResult:
        self.calls += 1
        started = time.monotonic()
        try:
            if self.hold_s is not None:
                await asyncio.sleep(self.hold_s)
            else:
                await self.release.wait()
        except asyncio.CancelledError:
            self.held_for = time.monotonic() - started
            raise
        return SendResult({r: RecipientResult(r, "accepted", 250, "2.0.0 OK") for r in recipients})


def obligation() -> Obligation:
    return sample_obligation("A1").model_copy(update={"recipients": [PPO], "recipient_roles": {PPO: "ppo"}})


def pipeline(sender: HeldSender, log: SendLog) -> DeliveryPipeline:
    return DeliveryPipeline(Renderer(), sender, log, FixedClock(NOW), ["police.uk"], from_address=FROM,
                            retry=RetryPolicy(max_attempts=1))


async def test_the_second_instance_does_not_send_what_the_first_is_sending(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    o = obligation()
    sender_a, sender_b = HeldSender(), HeldSender()
    sender_b.release.set()
    with SendLog(path, holder="a") as log_a, SendLog(path, holder="b") as log_b:
        sending = asyncio.create_task(pipeline(sender_a, log_a).deliver(o))
        while sender_a.calls == 0:  # a is in its SMTP transaction: the partition moves to b now
            await asyncio.sleep(0.01)
        [busy] = await pipeline(sender_b, log_b).deliver(o)
        assert busy.outcome == "temporary-failure" and sender_b.calls == 0
        assert busy.detail.startswith("in progress at another notifier instance (a, queued at")
        sender_a.release.set()
        [sent] = await sending
        assert sent.outcome == "sent"
        [again] = await pipeline(sender_b, log_b).deliver(o)  # b's redelivery of the parked request
    assert again.outcome == "duplicate-suppressed" and sender_b.calls == 0


async def test_a_transaction_that_would_outlast_the_claim_is_abandoned(tmp_path: Path) -> None:
    o = obligation()
    slow = HeldSender(hold_s=5.0)
    with SendLog(tmp_path / "log.sqlite", holder="a", claim_timeout=timedelta(seconds=0.4)) as log:
        [out] = await pipeline(slow, log).deliver(o)
        entry = log.get(o.obligation_id, PPO)
    assert out.outcome == "temporary-failure" and out.detail == "abandoned: no reply within the claim (0.4 s)"
    # Cut within the claim less its margin (0.1 s): gone before anyone else may take the row.
    assert slow.calls == 1 and slow.held_for is not None and slow.held_for < 0.3
    assert entry is not None and entry.state == "temporary-failure"
