"""Emails per second to a local SMTP sink: the pooled sender (SmtpSender) against one connection per message
(OneShotSmtpSender), measured in the same run against the same sink. Not a test.

    .venv/bin/python bench/notifier_bench.py [--messages 400] [--concurrency 4] [--rounds 3]

The sink is aiosmtpd on loopback in its own thread, accepting and counting (nothing stored). Messages are
rendered once beforehand (a real A1 notice, one recipient each), so the figures are about SMTP only. Each round
runs both senders with the same number of concurrent senders (the pool has that many connections); the median
round is reported. Loopback has no TLS and no network latency, so the ratio here understates what the pool
saves against a real relay (each connection there costs a TCP and a TLS handshake, and EHLO/AUTH).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppo_alerts.render_examples import sample_now, sample_obligation  # noqa: E402
from services.notifier.render import Renderer  # noqa: E402
from services.notifier.smtp import EmailSender, OneShotSmtpSender, SmtpSender, SmtpSettings  # noqa: E402

SENDER = "ppo-alerts@notify.example.gov.uk"


class CountingSink:
    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        with self._lock:
            self.count += len(envelope.rcpt_tos)
        return "250 2.0.0 Accepted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def messages(n: int) -> list[tuple[EmailMessage, str]]:
    renderer = Renderer()
    o = sample_obligation("A1")
    out = []
    for i in range(n):
        recipient = f"officer{i}@westyorkshire.police.uk"
        one = o.model_copy(update={"obligation_id": f"A1-bench-{i:06d}", "recipients": [recipient],
                                   "recipient_roles": {recipient: "ppo"}})
        out.append((renderer.render(one, recipient, "ppo", None, sample_now("A1")).to_email(SENDER), recipient))
    return out


async def send_all(sender: EmailSender, batch: list[tuple[EmailMessage, str]], concurrency: int) -> float:
    """Seconds to send the whole batch with `concurrency` senders; every message must be accepted."""
    queue: asyncio.Queue[tuple[EmailMessage, str]] = asyncio.Queue()
    for item in batch:
        queue.put_nowait(item)

    async def worker() -> None:
        while True:
            try:
                message, recipient = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await sender.send(message, [recipient])
            if result.outcome != "accepted":
                raise RuntimeError(f"not accepted: {result.for_recipient(recipient)}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def run(n: int, concurrency: int, rounds: int) -> dict[str, float]:
    sink = CountingSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, server_hostname="bench.local")
    controller.start()
    settings = SmtpSettings(host="127.0.0.1", port=port, tls_mode="plain", allow_plaintext=True, sender=SENDER,
                            pool_size=concurrency, timeout_s=30, local_hostname="bench.local")
    batch = messages(n)
    rates: dict[str, list[float]] = {"pool": [], "one-shot": []}
    try:
        for _ in range(rounds):
            for name, make in (("pool", SmtpSender), ("one-shot", OneShotSmtpSender)):
                sender = make(settings)
                try:
                    await send_all(sender, batch[:concurrency * 2], concurrency)  # warm up (and fill the pool)
                    before = sink.count
                    seconds = await send_all(sender, batch, concurrency)
                finally:
                    await sender.close()
                assert sink.count - before == n, "the sink did not count every message"
                rates[name].append(n / seconds)
    finally:
        controller.stop()
    return {name: statistics.median(values) for name, values in rates.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent senders = pool connections")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.messages, args.concurrency, args.rounds))
    pool, one_shot = result["pool"], result["one-shot"]
    print(f"messages per round: {args.messages}, concurrency: {args.concurrency}, rounds: {args.rounds} (median)")
    print(f"pool (SmtpSender, {args.concurrency} connections): {pool:8.1f} emails/s")
    print(f"one connection per message (OneShotSmtpSender): {one_shot:8.1f} emails/s")
    print(f"ratio pool / one-shot: {pool / one_shot:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
