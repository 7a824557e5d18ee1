"""The benchmark's SMTP sink: aiosmtpd on loopback in its own thread, accepting every message, storing nothing.

It counts recipients accepted and notes when each message for an obligation was accepted (its
`X-PPO-Obligation` / `X-Alert-Obligation` header), which is how end-to-end latency is read.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import defaultdict
from typing import Any

from aiosmtpd.controller import Controller

_OBLIGATION = re.compile(rb"^X-(?:PPO|Alert)-Obligation:[ \t]*(\S+)", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        at = time.perf_counter()
        data: bytes = envelope.original_content or envelope.content
        head = data[:data.find(b"\r\n\r\n") if b"\r\n\r\n" in data else 8192]
        match = _OBLIGATION.search(head)
        self.sink.accepted(match.group(1).decode("ascii", "replace") if match else None, len(envelope.rcpt_tos), at)
        return "250 2.0.0 Accepted"


class SmtpSink:
    """Start with `start()`; `port`, `count`, `arrivals[obligation key] -> [perf_counter instants]`."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.count = 0
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()
        self._controller = Controller(_Handler(self), hostname=host, port=self.port, server_hostname="bench.local")

    def accepted(self, key: str | None, recipients: int, at: float) -> None:
        with self._lock:
            self.count += recipients
            if key is not None:
                self.arrivals[key].extend([at] * recipients)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
