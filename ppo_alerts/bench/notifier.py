"""Notifier: emails per second to a local SMTP sink, the pooled sender (SmtpSender) against one connection per
message (OneShotSmtpSender), measured in the same run against the same sink. Part of `ppo-alerts bench`; also runs
on its own:

    .venv/bin/python -m ppo_alerts.bench.notifier [--messages 400] [--concurrency 4] [--rounds 3]

The sink is aiosmtpd on loopback in its own thread, accepting and counting (nothing stored). Messages are rendered
once beforehand (a real A1 notice, one recipient each), so the figures are about SMTP only. Each round runs both
senders with the same number of concurrent senders (the pool has that many connections), after a short warm-up;
the median round is reported. Loopback has no TLS and no network latency, so the ratio here understates what the
pool saves against a real relay (each connection there costs a TCP and a TLS handshake, and EHLO/AUTH).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING

from ppo_alerts.bench.data import SENDER, rendered_emails
from ppo_alerts.bench.sink import SmtpSink

if TYPE_CHECKING:
    from services.notifier.smtp import EmailSender


@dataclass(frozen=True)
class NotifierResult:
    messages: int
    concurrency: int
    rounds: int
    pooled_per_s: float  # median over the rounds
    one_shot_per_s: float

    @property
    def speedup(self) -> float:
        return self.pooled_per_s / self.one_shot_per_s

    @property
    def pooled_ms_per_message(self) -> float:
        return 1000 / self.pooled_per_s

    @property
    def one_shot_ms_per_message(self) -> float:
        return 1000 / self.one_shot_per_s


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


async def measure_notifier(sink: SmtpSink, messages: int, concurrency: int = 4, rounds: int = 3) -> NotifierResult:
    """Both senders, `rounds` times each, `messages` messages a round, to `sink` (started)."""
    from services.notifier.smtp import OneShotSmtpSender, SmtpSender, SmtpSettings

    settings = SmtpSettings(host=sink.host, port=sink.port, tls_mode="plain", allow_plaintext=True, sender=SENDER,
                            pool_size=concurrency, timeout_s=30, local_hostname="bench.local")
    batch = rendered_emails(messages)
    rates: dict[str, list[float]] = {"pool": [], "one-shot": []}
    for _ in range(rounds):
        for name, make in (("pool", SmtpSender), ("one-shot", OneShotSmtpSender)):
            sender = make(settings)
            try:
                await send_all(sender, batch[:concurrency * 2], concurrency)  # warm up (and fill the pool)
                before = sink.count
                seconds = await send_all(sender, batch, concurrency)
            finally:
                await sender.close()
            if sink.count - before != messages:
                raise RuntimeError(f"the sink counted {sink.count - before} messages of {messages}")
            rates[name].append(messages / seconds)
    return NotifierResult(messages, concurrency, rounds, statistics.median(rates["pool"]),
                          statistics.median(rates["one-shot"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppo_alerts.bench.notifier", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent senders = pool connections")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with SmtpSink() as sink:
        r = asyncio.run(measure_notifier(sink, args.messages, args.concurrency, args.rounds))
    print(f"messages per round: {r.messages}, concurrency: {r.concurrency}, rounds: {r.rounds} (median)")
    print(f"pool (SmtpSender, {r.concurrency} connections): {r.pooled_per_s:8.1f} emails/s")
    print(f"one connection per message (OneShotSmtpSender): {r.one_shot_per_s:8.1f} emails/s")
    print(f"ratio pool / one-shot: {r.speedup:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
