"""The notifier service on real Kafka and a real SMTP server: outcome records and redelivery.

Per recipient, the delivery-outcomes topic carries `queued` before each SMTP transaction, `temporary-failure`
(the last of a request says when the retry is scheduled), and `sent` / `permanent-failure` /
`duplicate-suppressed`. A temporarily failing recipient never holds the partition: the request is parked and
redelivered later, while requests behind it go through.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ppo_alerts.render_examples import sample_obligation
from services.notifier.main import build
from services.notifier.service import NotifierService
from shared.clock import SystemClock
from shared.kafka import dumps, ensure_topics, read_to_end
from shared.obligations import NotificationRequest, Obligation
from shared.service import RunningService
from shared.settings import Settings
from shared.topics import Topics
from tests.rulebook_fixtures import DIRECTORY
from tests.smtp_server import LoopbackSmtpServer

pytestmark = [pytest.mark.kafka, pytest.mark.smtp]

PPO = "leeds.ppo@westyorkshire.police.uk"
PROBATION = "leeds.iom@justice.gov.uk"
YOT = "yot@leeds.gov.uk"
BUSY = "451 4.2.1 Mailbox busy, try again later"


def request(o: Obligation) -> bytes:
    return dumps(NotificationRequest(obligation=o, requested_at=datetime.now(UTC)))


def obligation(recipients: dict[str, str], rule: str = "A1") -> Obligation:
    now = datetime.now(UTC)
    return sample_obligation(rule).model_copy(update={
        "obligation_id": f"{rule}-{uuid.uuid4().hex[:24]}", "recipients": list(recipients),
        "recipient_roles": recipients, "send_at": now, "notify_by": now + timedelta(minutes=15), "raised_at": now,
    })


async def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await predicate() if asyncio.iscoroutinefunction(predicate) else predicate()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


class Notifier:
    def __init__(self, settings: Settings, running: RunningService, service: NotifierService,
                 smtp: LoopbackSmtpServer) -> None:
        self.settings, self.running, self.service, self.smtp = settings, running, service, smtp
        self.topics = Topics(settings.topic_prefix)

    async def send(self, o: Obligation, key: str | None = None) -> None:
        await self.running.broker.publish(request(o), self.topics.notifications,
                                          key=(key or o.obligation_id).encode())

    async def outcomes(self, obligation_id: str | None = None) -> list[dict[str, Any]]:
        records = [json.loads(v) for _, v in await read_to_end(self.settings, self.topics.delivery_outcomes) if v]
        return [r for r in records if obligation_id is None or r["obligation_id"] == obligation_id]

    async def trail(self, obligation_id: str, recipient: str) -> list[str]:
        return [r["outcome"] for r in await self.outcomes(obligation_id) if r["recipient"] == recipient]

    async def states(self, obligation_id: str) -> list[str]:
        records = [json.loads(v) for _, v in await read_to_end(self.settings, self.topics.obligations) if v]
        return [r["status"] for r in records if r["obligation_id"] == obligation_id]


@pytest.fixture
async def notifier(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Notifier]:
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    smtp = LoopbackSmtpServer().start()
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"n{uuid.uuid4().hex[:8]}", directory_file=directory,
        smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_tls_mode="plain", smtp_allow_plaintext=True,
        smtp_sender="PPO Alerts <ppo-alerts@notify.example.gov.uk>", state_dir=tmp_path / "state",
        notifier_port=0, notifier_retry_attempts=1, notifier_redeliver_after_s=1.0,
        notifier_redeliver_max_s=2.0,
    )
    await ensure_topics(settings, Topics(settings.topic_prefix))
    running, service = build(settings, SystemClock())
    await running.start()
    try:
        yield Notifier(settings, running, service, smtp)
    finally:
        await running.stop()
        smtp.stop()


async def test_every_outcome_is_recorded_per_recipient_queued_first(notifier: Notifier) -> None:
    smtp = notifier.smtp
    smtp.refuse_recipient(PROBATION)  # 550: permanent
    smtp.refuse_recipient(YOT, BUSY)  # 451: temporary, until accepted below
    o = obligation({PPO: "ppo", PROBATION: "probation", YOT: "yot"})
    await notifier.send(o)

    async def yot_failed() -> bool:
        return "temporary-failure" in await notifier.trail(o.obligation_id, YOT)

    await wait_for(yot_failed, what="a temporary failure for the YOT")
    [temporary] = [r for r in await notifier.outcomes(o.obligation_id) if r["outcome"] == "temporary-failure"]
    assert temporary["detail"].startswith("451") and "retry scheduled at" in temporary["detail"]
    assert "(redelivery 1)" in temporary["detail"]
    # Notified already (one recipient accepted it), and still to be retried for the YOT.
    assert "notified" in await notifier.states(o.obligation_id)
    assert [(k, n) for k, n, _ in notifier.service.pipeline.sendlog.redeliveries()] == [(o.obligation_id, 1)]
    smtp.accept_recipient(YOT)

    async def yot_sent() -> bool:
        return "sent" in await notifier.trail(o.obligation_id, YOT)

    await wait_for(yot_sent, what="the redelivered request sent to the YOT")
    assert await notifier.trail(o.obligation_id, YOT) == ["queued", "temporary-failure", "queued", "sent"]
    ppo = await notifier.trail(o.obligation_id, PPO)
    assert ppo[:2] == ["queued", "sent"] and set(ppo[2:]) <= {"duplicate-suppressed"}
    probation = await notifier.trail(o.obligation_id, PROBATION)
    assert probation[:2] == ["queued", "permanent-failure"] and set(probation[2:]) <= {"permanent-failure"}
    assert [len(smtp.messages_for(r)) for r in (PPO, PROBATION, YOT)] == [1, 0, 1]
    records = await notifier.outcomes(o.obligation_id)
    assert all(r["rule"] == "A1" for r in records)
    assert {r["message_id"] for r in records if r["recipient"] == YOT and r["outcome"] == "sent"} == {
        smtp.messages_for(YOT)[0].message_id}
    await wait_for(lambda: notifier.service.pipeline.sendlog.redeliveries() == [], what="the park cleared")


async def test_every_recipient_refused_is_failed(notifier: Notifier) -> None:
    notifier.smtp.refuse_recipient(PPO)
    notifier.smtp.refuse_recipient(PROBATION)
    o = obligation({PPO: "ppo", PROBATION: "probation"})
    await notifier.send(o)

    async def failed() -> bool:
        return "failed" in await notifier.states(o.obligation_id)

    await wait_for(failed, what="the obligation failed")
    for recipient in (PPO, PROBATION):
        assert await notifier.trail(o.obligation_id, recipient) == ["queued", "permanent-failure"]
    assert notifier.smtp.messages == []


async def test_a_failing_recipient_does_not_hold_the_partition_and_retries_back_off(notifier: Notifier) -> None:
    notifier.smtp.refuse_recipient(YOT, BUSY)
    stuck = obligation({YOT: "yot"})
    behind = obligation({PPO: "ppo"}, rule="A7")
    started = time.monotonic()
    await notifier.send(stuck)
    await notifier.send(behind, key=stuck.obligation_id)  # same key, same partition, right behind it

    async def behind_sent() -> bool:
        return "sent" in await notifier.trail(behind.obligation_id, PPO)

    await wait_for(behind_sent, timeout=15, what="the request behind the failing one")
    assert time.monotonic() - started < 10
    await asyncio.sleep(4.0)
    # Redelivered after 1 s, then 2 s, 2 s, ...: a handful of attempts in ~5 s, not a busy loop.
    attempts = (await notifier.trail(stuck.obligation_id, YOT)).count("queued")
    assert 2 <= attempts <= 5, attempts
    assert notifier.smtp.messages_for(YOT) == []
    notifier.smtp.accept_recipient(YOT)

    async def stuck_sent() -> bool:
        return "sent" in await notifier.trail(stuck.obligation_id, YOT)

    await wait_for(stuck_sent, timeout=15, what="the failing request, once the mailbox is back")
    assert len(notifier.smtp.messages_for(YOT)) == 1 and len(notifier.smtp.messages_for(PPO)) == 1


async def test_a_custody_digest_request_arrives_with_its_csv(notifier: Notifier) -> None:
    from ppo_alerts.render_examples import sample_custody_rows
    from shared.custody import digest_obligation

    coordinator = "leeds.iom.coord@westyorkshire.police.uk"
    now = datetime.now(UTC)
    o = digest_obligation("13-LD", sample_custody_rows(), now.date(), {coordinator: "coordinator"}, now)
    await notifier.send(o)
    [received] = await wait_for(lambda: notifier.smtp.messages_for(coordinator), what="the digest")
    message = received.message
    assert message["X-PPO-Rule"] == "D2"
    [csv_part] = list(message.iter_attachments())
    assert csv_part.get_filename() == f"custody-countdown-13-LD-{now.date().isoformat()}.csv"
    assert b"Alex SAMPLE" in csv_part.get_payload(decode=True)
