"""Sending email over SMTP: the `EmailSender` interface and two aiosmtplib implementations.

`SmtpSender` keeps a small pool of persistent connections (connected lazily, never at import or
construction; an idle connection is checked with NOOP before reuse; a broken one is dropped and replaced).
`OneShotSmtpSender` opens one connection per message (the baseline for the benchmark).

Every SMTP error is turned into a per-recipient result, never raised:
- accepted: the server said 250 to the whole transaction for this recipient;
- temporary: a 4xx reply, a dropped connection, a timeout, a refused connection, or an authentication /
  greeting problem (server or configuration trouble, not the recipient's: retried until the deadline);
- permanent: a 5xx reply about this recipient or this message (or a message the server cannot take at all).
aiosmtplib returns recipients refused at RCPT without raising when at least one is accepted, and raises
SMTPRecipientsRefused when all are; both are handled here.

Metric: `ppo_smtp_send_seconds{outcome}` (Histogram), outcome in accepted | partial | temporary | permanent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Literal, Protocol, runtime_checkable

import aiosmtplib
from prometheus_client import Histogram
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = [
    "SMTP_SEND_SECONDS",
    "EmailSender",
    "OneShotSmtpSender",
    "RecipientResult",
    "SendResult",
    "SmtpSender",
    "SmtpSettings",
    "classify_code",
    "envelope_sender",
]

log = logging.getLogger(__name__)

SMTP_SEND_SECONDS = Histogram(
    "ppo_smtp_send_seconds",
    "Time to hand one message to the SMTP server (including connect when needed), by outcome",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

_ADDRESS = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")

RecipientStatus = Literal["accepted", "temporary", "permanent"]


# --- settings ------------------------------------------------------------------------------------------


class SmtpSettings(BaseModel):
    """How to reach the mail server. Strict: unknown keys are errors; plain text needs an explicit yes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="localhost", min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    tls_mode: Literal["implicit", "starttls", "plain"] = "starttls"
    allow_plaintext: bool = False
    validate_certs: bool = True
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    pool_size: int = Field(default=4, ge=1, le=64)
    idle_check_after_s: float = Field(default=30.0, ge=0)  # NOOP an idle pooled connection before reuse
    sender: str = Field(description="envelope and From address, e.g. ppo-alerts@notify.example.gov.uk")
    court_sender: str | None = None  # From address for court recipients: must not name PPOs
    local_hostname: str | None = None  # EHLO name; default: the host's FQDN

    @field_validator("sender", "court_sender")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None:
            return v
        bare = re.search(r"<([^<>]*)>\s*$", v)
        address = bare.group(1) if bare else v
        if "\r" in v or "\n" in v or not _ADDRESS.match(address.strip()):
            raise ValueError(f"{v!r} is not an email address (write name@domain or 'Name <name@domain>')")
        return v.strip()

    @model_validator(mode="after")
    def _consistent(self) -> SmtpSettings:
        if self.tls_mode == "plain" and not self.allow_plaintext:
            raise ValueError(
                "tls_mode 'plain' sends names of offenders unencrypted: set allow_plaintext=true to accept "
                "that (only for a relay on the same host or a test server), or use 'starttls' or 'implicit'"
            )
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: give both or neither")
        return self

    @property
    def envelope_sender(self) -> str:
        bare = re.search(r"<([^<>]*)>\s*$", self.sender)
        return bare.group(1) if bare else self.sender

    def client_kwargs(self) -> dict[str, object]:
        return {
            "hostname": self.host,
            "port": self.port,
            "use_tls": self.tls_mode == "implicit",
            "start_tls": self.tls_mode == "starttls",
            "validate_certs": self.validate_certs,
            "username": self.username,
            "password": self.password.get_secret_value() if self.password else None,
            "timeout": self.timeout_s,
            "local_hostname": self.local_hostname,
        }


# --- results -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipientResult:
    recipient: str
    status: RecipientStatus
    code: int | None = None
    message: str = ""

    @property
    def detail(self) -> str:
        return f"{self.code} {self.message}".strip() if self.code is not None else self.message


@dataclass(frozen=True)
class SendResult:
    results: dict[str, RecipientResult]
    elapsed_s: float = 0.0
    server_response: str = ""
    by_recipient_lower: dict[str, RecipientResult] = field(default_factory=dict, repr=False, compare=False)

    def for_recipient(self, recipient: str) -> RecipientResult:
        found = self.results.get(recipient) or self.by_recipient_lower.get(recipient.strip().lower())
        if found is None:
            return RecipientResult(
                recipient, "temporary", None, "no result from the sender for this recipient"
            )
        return found

    @property
    def outcome(self) -> Literal["accepted", "partial", "temporary", "permanent"]:
        statuses = {r.status for r in self.results.values()}
        if statuses == {"accepted"}:
            return "accepted"
        if "accepted" in statuses:
            return "partial"
        return "permanent" if statuses == {"permanent"} else "temporary"


@runtime_checkable
class EmailSender(Protocol):
    async def send(self, message: EmailMessage, recipients: list[str]) -> SendResult: ...


def classify_code(code: int | None) -> RecipientStatus:
    """5xx permanent; 4xx, anything else and no code at all (connection trouble) temporary."""
    if code is not None and 500 <= code < 600:
        return "permanent"
    return "temporary"


def _result(
    recipients: Sequence[str], results: list[RecipientResult], started: float, server_response: str = ""
) -> SendResult:
    by = {r.recipient: r for r in results}
    result = SendResult(
        by, time.perf_counter() - started, server_response, {r.recipient.strip().lower(): r for r in results}
    )
    SMTP_SEND_SECONDS.labels(outcome=result.outcome).observe(result.elapsed_s)
    return result


def _all(
    recipients: Sequence[str], status: RecipientStatus, code: int | None, message: str
) -> list[RecipientResult]:
    return [RecipientResult(r, status, code, message) for r in recipients]


def envelope_sender(message: EmailMessage, default: str) -> str:
    """MAIL FROM: the message's own From address (so a court message's neutral sender is also the envelope
    sender, and the Return-Path a recipient may see), else the configured sender."""
    _, address = parseaddr(str(message.get("From", "")))
    return address if address and _ADDRESS.match(address) else default


async def _transact(
    client: aiosmtplib.SMTP, message: EmailMessage, default_sender: str, recipients: Sequence[str]
) -> tuple[list[RecipientResult], str]:
    """One SMTP transaction; every SMTP reply becomes per-recipient results (connection errors re-raised)."""
    sender = envelope_sender(message, default_sender)
    try:
        refused, response = await client.send_message(message, sender=sender, recipients=list(recipients))
    except aiosmtplib.SMTPRecipientsRefused as exc:
        by = {e.recipient: e for e in exc.recipients}
        out = []
        for r in recipients:
            e = by.get(r)
            if e is None:
                out.append(
                    RecipientResult(r, "temporary", None, "refused with the others, no reply of its own")
                )
            else:
                out.append(RecipientResult(r, classify_code(e.code), e.code, e.message))
        return out, ""
    except (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPHeloError) as exc:
        # The server or our configuration, not the recipient: never a permanent verdict on the message.
        return _all(recipients, "temporary", exc.code, f"{type(exc).__name__}: {exc.message}"), ""
    except aiosmtplib.SMTPResponseException as exc:  # sender refused, DATA refused, ...
        return _all(recipients, classify_code(exc.code), exc.code, exc.message), ""
    except aiosmtplib.SMTPNotSupported as exc:
        return _all(recipients, "permanent", None, f"not supported by the server: {exc.message}"), ""
    out = []
    for r in recipients:
        bad = refused.get(r)
        if bad is None:
            out.append(RecipientResult(r, "accepted", 250, response))
        else:
            out.append(RecipientResult(r, classify_code(bad.code), bad.code, bad.message))
    return out, response


_CONNECTION_ERRORS = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPTimeoutError,
    aiosmtplib.SMTPException,
    OSError,
    asyncio.TimeoutError,
)


# --- pooled sender -------------------------------------------------------------------------------------


@dataclass
class _Connection:
    client: aiosmtplib.SMTP
    last_used: float = 0.0


class SmtpSender:
    """A small pool of persistent SMTP connections. One message = one SMTP transaction on one connection.

    Use `async with SmtpSender(settings) as sender:` or call `close()` at shutdown (QUIT on idle connections).
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._idle: list[_Connection] = []
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    async def __aenter__(self) -> SmtpSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _new_client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(**self.settings.client_kwargs())  # type: ignore[arg-type]

    async def _ready(self, conn: _Connection) -> None:
        """Connected and healthy, or raises (the caller drops the connection)."""
        client = conn.client
        if not client.is_connected:
            await client.connect()
            return
        if time.monotonic() - conn.last_used >= self.settings.idle_check_after_s:
            await client.noop()

    async def send(self, message: EmailMessage, recipients: list[str]) -> SendResult:
        if self._closed:
            raise RuntimeError("SmtpSender is closed")
        if not recipients:
            raise ValueError("no recipients")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.pool_size)
        started = time.perf_counter()
        async with self._slots:
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else _Connection(self._new_client())
            try:
                try:
                    await self._ready(conn)
                except _CONNECTION_ERRORS:
                    if not reused:
                        raise
                    # A stale pooled connection (the server timed it out): nothing was sent on it yet, so one
                    # fresh connection is safe.
                    self._discard(conn)
                    conn = _Connection(self._new_client())
                    await conn.client.connect()
                results, response = await _transact(
                    conn.client, message, self.settings.envelope_sender, recipients
                )
            except _CONNECTION_ERRORS as exc:
                self._discard(conn)
                log.warning(
                    "smtp: %s talking to %s:%s", type(exc).__name__, self.settings.host, self.settings.port
                )
                return _result(
                    recipients,
                    _all(recipients, "temporary", getattr(exc, "code", None), f"{type(exc).__name__}: {exc}"),
                    started,
                )
            except BaseException:
                self._discard(conn)
                raise
            conn.last_used = time.monotonic()
            if conn.client.is_connected and not self._closed:
                self._idle.append(conn)
            else:
                self._discard(conn)
            return _result(recipients, results, started, response)

    @staticmethod
    def _discard(conn: _Connection) -> None:
        try:
            conn.client.close()
        except Exception:  # pragma: no cover - closing a broken transport
            pass

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                if conn.client.is_connected:
                    await asyncio.wait_for(conn.client.quit(), timeout=self.settings.timeout_s)
            except Exception:
                pass
            finally:
                self._discard(conn)


# --- one connection per message ------------------------------------------------------------------------


class OneShotSmtpSender:
    """Connect, send, QUIT for every message: simple, slower; the baseline for the pooled sender."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage, recipients: list[str]) -> SendResult:
        if not recipients:
            raise ValueError("no recipients")
        started = time.perf_counter()
        client = aiosmtplib.SMTP(**self.settings.client_kwargs())  # type: ignore[arg-type]
        try:
            await client.connect()
            results, response = await _transact(client, message, self.settings.envelope_sender, recipients)
        except _CONNECTION_ERRORS as exc:
            return _result(
                recipients,
                _all(recipients, "temporary", getattr(exc, "code", None), f"{type(exc).__name__}: {exc}"),
                started,
            )
        finally:
            if client.is_connected:
                try:
                    await client.quit()
                except Exception:
                    client.close()
        return _result(recipients, results, started, response)

    async def close(self) -> None:
        return None
