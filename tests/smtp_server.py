"""A real SMTP server on loopback for tests (aiosmtpd in its own thread, its own event loop).

    with LoopbackSmtpServer() as server:      # 127.0.0.1, a free port chosen by the OS
        ...send to server.host, server.port...
        server.messages                        # every accepted message, parsed
        server.fail_next(2)                    # the next 2 messages get "451 4.3.0 Try again later" at DATA
        server.refuse_recipient("x@a.gov.uk")  # "550 5.1.1 Mailbox unavailable" at RCPT for that address
        server.drop_next(1)                    # the next message: connection closed after DATA, no reply
        server.stop(); server.start()          # a restart on the same port (open connections are dropped)

The pytest fixture `smtp_server` (import it into a test module or a conftest) gives a started server and
stops it after the test. The server runs in a thread, so it answers whatever event loop the test uses.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

__all__ = ["LoopbackSmtpServer", "ReceivedMessage", "smtp_server"]


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.content, policy=email.policy.default)  # type: ignore[return-value]

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


class _Handler:
    def __init__(self, server: LoopbackSmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self.server._refusal_for(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.server.delay_s:
            await asyncio.sleep(self.server.delay_s)  # a slow relay
        action = self.server._next_data_action()
        if action == "drop":
            # The whole message has arrived; close without a reply, as a crashing relay would.
            server.transport.abort()
            await asyncio.Event().wait()  # connection_lost() cancels this handler
        if action is not None:
            return action
        self.server._store(
            ReceivedMessage(
                envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.original_content or b"")
            )
        )
        return "250 2.0.0 Message accepted"


class _LoopbackController(Controller):
    """aiosmtpd's Controller bound to port 0: the OS picks a free port, no race with other tests."""

    def _trigger_server(self) -> None:
        server = self.server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()


class LoopbackSmtpServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._lock = threading.Lock()
        self.delay_s = 0.0  # seconds before answering DATA: a slow server
        self._messages: list[ReceivedMessage] = []
        self._temporary_failures = 0
        self._temporary_reply = "451 4.3.0 Try again later"
        self._drops = 0
        self._refused: dict[str, str] = {}
        self.data_commands = 0  # DATA transactions seen, whatever their reply
        self._port = 0
        self._controller: _LoopbackController | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> LoopbackSmtpServer:
        """Start listening: on a free port the first time, on the same port after a `stop()` (a restart)."""
        if self._controller is not None:
            raise RuntimeError("already running")
        controller = _LoopbackController(
            _Handler(self),
            hostname=self.host,
            port=self._port,
            server_hostname="loopback.test",
            ready_timeout=10.0,
        )
        controller.start()
        self._controller, self._port = controller, int(controller.port)
        return self

    def stop(self) -> None:
        """Stop listening and close every open connection (clients see them drop)."""
        if self._controller is not None:
            controller, self._controller = self._controller, None
            controller.stop()

    def __enter__(self) -> LoopbackSmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- behaviour ---------------------------------------------------------------------------------------

    def fail_next(self, n: int, reply: str = "451 4.3.0 Try again later") -> None:
        """Answer `reply` (a 4xx by default) at the end of DATA for the next `n` messages."""
        with self._lock:
            self._temporary_failures = n
            self._temporary_reply = reply

    def refuse_recipient(self, address: str, reply: str = "550 5.1.1 Mailbox unavailable") -> None:
        """Answer `reply` to RCPT TO for this address, until `accept_recipient`."""
        with self._lock:
            self._refused[address.lower()] = reply

    def accept_recipient(self, address: str) -> None:
        with self._lock:
            self._refused.pop(address.lower(), None)

    def drop_next(self, n: int = 1) -> None:
        """Close the connection without a reply after receiving the whole of each of the next `n` messages."""
        with self._lock:
            self._drops = n

    def reset(self) -> None:
        with self._lock:
            self._messages.clear()
            self._temporary_failures = self._drops = self.data_commands = 0
            self._refused.clear()

    # --- what arrived ------------------------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    def messages_for(self, recipient: str) -> list[ReceivedMessage]:
        r = recipient.lower()
        return [m for m in self.messages if r in (a.lower() for a in m.rcpt_tos)]

    # --- called from the server thread -------------------------------------------------------------------

    def _refusal_for(self, address: str) -> str | None:
        with self._lock:
            return self._refused.get(address.lower())

    def _next_data_action(self) -> str | None:
        with self._lock:
            self.data_commands += 1
            if self._drops > 0:
                self._drops -= 1
                return "drop"
            if self._temporary_failures > 0:
                self._temporary_failures -= 1
                return self._temporary_reply
            return None

    def _store(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._messages.append(message)


@pytest.fixture
def smtp_server() -> Iterator[LoopbackSmtpServer]:
    with LoopbackSmtpServer() as server:
        yield server
