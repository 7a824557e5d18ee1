"""A local SMTP sink (aiosmtpd on loopback) that writes every message it accepts to a folder as .eml.

For `ppo-alerts demo` and for people trying the system: no mail leaves the machine.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class FolderHandler:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        data: bytes = envelope.original_content or envelope.content
        for rcpt in envelope.rcpt_tos:
            name = hashlib.sha256(data + rcpt.encode()).hexdigest()[:16]
            (self.folder / f"{name}.eml").write_bytes(f"X-Envelope-To: {rcpt}\r\n".encode() + data)
            self.count += 1
        return "250 Message accepted for delivery"


class MailSink:
    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = FolderHandler(folder)
        self.controller = Controller(self.handler, hostname=host, port=port or _free_port())

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
