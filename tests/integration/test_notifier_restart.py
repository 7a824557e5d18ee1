"""Exactly once across crashes: the notifier killed (SIGKILL) mid-batch and restarted, twice.

Real Kafka, a real SMTP server on loopback, and the notifier as the operator runs it (`ppo-alerts run notifier`
in its own process, configured by PPO_ environment variables). 30 notification requests, two recipients each,
are waiting on the notifications topic. The SMTP server holds its reply to the n-th RCPT (its event loop stops
answering anybody), the test waits a moment so that every reply already given has reached the send log, then
kills the notifier's process group with SIGKILL: no clean stop, no offset committed for the request in hand,
SMTP transactions cut in the middle. After a restart, every recipient must have received each message exactly
once (by Message-ID and by X-PPO-Obligation), or the delivery-outcomes topic must say it failed.

The kill deliberately avoids the one residual duplicate window (the server has said 250 and the `sent` row is
not on disk yet, a few milliseconds; see services/notifier/sendlog.py): that window is documented, not tested.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaProducer

from ppo_alerts.render_examples import sample_obligation
from shared.kafka import dumps, ensure_topics, read_to_end
from shared.obligations import NotificationRequest, Obligation
from shared.settings import Settings
from shared.topics import Topics
from tests.rulebook_fixtures import DIRECTORY
from tests.smtp_server import LoopbackSmtpServer

pytestmark = [pytest.mark.kafka, pytest.mark.smtp]

ROOT = Path(__file__).resolve().parents[2]
RECIPIENTS = {"leeds.ppo@westyorkshire.police.uk": "ppo", "leeds.iom@justice.gov.uk": "probation"}
REQUESTS = 30
# Two crashes partway through the batch of 60 messages: one with an SMTP transaction held at RCPT (nothing of
# that request sent yet), one held at the end of DATA (its other recipient's message may be through).
KILLS = (("rcpt", 17), ("data", 40))


class GatedSmtpServer(LoopbackSmtpServer):
    """Stops answering at the n-th RCPT or DATA (the whole server: its event loop waits) until `release()`.

    After a kill, `discard()` makes it refuse everything (451, nothing stored) until `accept()`: commands the
    dead client had already written (a whole message waiting behind the held one) are drained without being
    delivered, as a real server would do for a transaction that never received its final reply either way.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rcpts = 0
        self.datas = 0
        self.gate: tuple[str, int] | None = None
        self.held = threading.Event()
        self._go = threading.Event()
        self._discarding = False

    def hold_at(self, command: str, n: int) -> None:
        self.gate = (command, n)
        self.held.clear()
        self._go.clear()

    def release(self) -> None:
        self._go.set()

    def discard(self) -> None:
        self._discarding = True

    def accept(self) -> None:
        self._discarding = False

    def _wait_if_gated(self, command: str) -> str | None:
        with self._lock:
            if command == "rcpt":
                self.rcpts += 1
            else:
                self.datas += 1
            hold = self.gate == (command, self.rcpts if command == "rcpt" else self.datas)
        if hold:
            self.held.set()
            self._go.wait(timeout=120)
        return "451 4.3.0 Transaction abandoned, nothing delivered" if self._discarding else None

    def _refusal_for(self, address: str) -> str | None:  # called by handle_RCPT, in the server's thread
        return self._wait_if_gated("rcpt") or super()._refusal_for(address)

    def _next_data_action(self) -> str | None:  # called by handle_DATA before the message is stored
        return self._wait_if_gated("data") or super()._next_data_action()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NotifierProcess:
    def __init__(self, workdir: Path, env: dict[str, str], port: int) -> None:
        self.workdir, self.env, self.port = workdir, env, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = open(self.workdir / f"notifier-{self.runs}.log", "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([sys.executable, "-m", "ppo_alerts.cli", "run", "notifier"], cwd=ROOT,
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"notifier exited: {(self.workdir / f'notifier-{self.runs}.log').read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("notifier not healthy in 60 s")

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def smtp() -> Iterator[GatedSmtpServer]:
    server = GatedSmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.release()
        server.stop()


def requests(n: int) -> list[Obligation]:
    now = datetime.now(UTC)
    return [sample_obligation("A1").model_copy(update={
        "obligation_id": f"A1-{uuid.uuid4().hex[:24]}", "recipients": list(RECIPIENTS), "recipient_roles": RECIPIENTS,
        "send_at": now, "notify_by": now + timedelta(minutes=15), "raised_at": now,
    }) for _ in range(n)]


async def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


async def test_killed_mid_batch_and_restarted_every_recipient_gets_each_message_once(
    kafka_bootstrap: str, smtp: GatedSmtpServer, tmp_path: Path
) -> None:
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    port = free_port()
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"k{uuid.uuid4().hex[:8]}")
    topics = Topics(settings.topic_prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPO_")}
    env.update({
        "PPO_KAFKA_BOOTSTRAP": kafka_bootstrap, "PPO_TOPIC_PREFIX": settings.topic_prefix,
        "PPO_DIRECTORY_FILE": str(directory), "PPO_STATE_DIR": str(tmp_path / "state"),
        "PPO_SMTP_HOST": "127.0.0.1", "PPO_SMTP_PORT": str(smtp.port), "PPO_SMTP_TLS_MODE": "plain",
        "PPO_SMTP_ALLOW_PLAINTEXT": "true", "PPO_SMTP_SENDER": "ppo-alerts@notify.example.gov.uk",
        "PPO_NOTIFIER_PORT": str(port), "PPO_NOTIFIER_REDELIVER_AFTER_S": "2", "PPO_LOG_LEVEL": "INFO",
    })

    # The batch is waiting on the topic before the notifier starts.
    await ensure_topics(settings, topics)
    batch = requests(REQUESTS)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for o in batch:
            body = dumps(NotificationRequest(obligation=o, requested_at=datetime.now(UTC)))
            await producer.send_and_wait(topics.notifications, body, key=o.obligation_id.encode())
    finally:
        await producer.stop()

    notifier = NotifierProcess(tmp_path, env, port)
    expected = {(o.obligation_id, r) for o in batch for r in RECIPIENTS}
    try:
        for command, n in KILLS:
            smtp.hold_at(command, n)
            smtp.accept()
            notifier.start()
            await wait_until(smtp.held.is_set, 90, f"the notifier reaching {command.upper()} {n}")
            await asyncio.sleep(1.0)  # every 250 already given is on disk by now (milliseconds after it)
            notifier.kill()
            smtp.discard()
            smtp.release()
            await asyncio.sleep(0.5)  # the dead connections are drained, nothing delivered
            arrived = len(smtp.messages)
            assert 0 < arrived < len(expected), f"killed at {arrived} of {len(expected)}: not mid-batch"
            print(f"killed at {command.upper()} {n} with {arrived} of {len(expected)} delivered")  # noqa: T201

        smtp.accept()
        notifier.start()
        await wait_until(lambda: len(smtp.messages) >= len(expected), 120, "every message delivered")
        await asyncio.sleep(3.0)  # a duplicate would arrive now
    finally:
        notifier.stop()

    received = Counter((m.message["X-PPO-Obligation"], rcpt) for m in smtp.messages for rcpt in m.rcpt_tos)
    duplicates = {k: n for k, n in received.items() if n > 1}
    assert not duplicates, f"sent more than once: {duplicates}"
    by_message_id = Counter(m.message_id for m in smtp.messages)
    assert max(by_message_id.values()) == 1
    outcomes = [json.loads(v) for _, v in await read_to_end(settings, topics.delivery_outcomes) if v]
    failed = {(r["obligation_id"], r["recipient"]) for r in outcomes if r["outcome"] == "permanent-failure"}
    missing = expected - set(received) - failed
    assert not missing, f"neither delivered nor reported failed: {sorted(missing)[:5]}"
    assert set(received) <= expected
    # Every delivery is on the outcomes topic: `sent` from the run that made it, or, when that run was killed
    # before publishing, `duplicate-suppressed` ("already sent at ...") from the run that found it in the log.
    accepted = {(r["obligation_id"], r["recipient"]) for r in outcomes
                if r["outcome"] in ("sent", "duplicate-suppressed")}
    assert accepted == set(received)
    sent = {(r["obligation_id"], r["recipient"]) for r in outcomes if r["outcome"] == "sent"}
    queued = {(r["obligation_id"], r["recipient"]) for r in outcomes if r["outcome"] == "queued"}
    assert queued >= sent
    assert notifier.runs == len(KILLS) + 1
