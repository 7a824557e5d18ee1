"""Acknowledgement and escalation: signed links, the acknowledgement record and the escalation request.

Every message carries a link a recipient follows to say "seen" (obligations.md, "Beyond the sources"):

    <base>/ack?o=<obligation id>&r=<recipient>&e=<expiry, Unix seconds>&s=<signature>

The signature is HMAC-SHA256 (hex) over `v1 \\n obligation id \\n recipient (lower case) \\n expiry`, keyed with
PPO_ACK_SECRET. Changing any of the four, or signing with another key, gives a link that does nothing. The path
is neutral and the signature hex (no letters beyond a-f), so a link can go to a court recipient: it must never
say "PPO" (001 §6.3, §7.2) — nor may the base URL, which `base_url_problem` (shared/neutral_url.py) checks at
start-up.

Signing and checking are pure: the instant is an argument. `ack_secret` is the one function here that reads
settings and the disk (a generated key for local use).

The records: intake publishes an `Acknowledgement` (topic `<prefix>.acknowledgements`, key = obligation id)
when a valid link is followed; the scheduler, which watches every obligation, records it in the obligation's
state and stops its escalation. The scheduler publishes an `EscalationRequest` (topic `<prefix>.escalations`);
the notifier sends it to the BCU's `escalation` contacts, once (send-log key `<obligation id>#escalation`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlencode, urlsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict

from shared.clock import Clock
from shared.local_key import generated_key
from shared.neutral_url import base_url_problem  # re-exported: shared.ack.base_url_problem
from shared.obligations import Obligation

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = [
    "LINK_PATH", "AckLinks", "AckSecretMissing", "Acknowledgement", "EscalationRequest", "LinkCheck",
    "ack_secret", "base_url_problem", "link", "reference", "rule_of", "signature", "verify",
]

log = logging.getLogger("ppo.ack")

LINK_PATH = "/ack"
_VERSION = "v1"
_OBLIGATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_RECIPIENT = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}$")
_EXPIRY = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


# --- pure: sign, link, verify ----------------------------------------------------------------------------


def signature(secret: bytes, obligation_id: str, recipient: str, expires: int) -> str:
    message = "\n".join((_VERSION, obligation_id, recipient.strip().lower(), str(expires))).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def expiry(now: datetime, ttl: timedelta) -> int:
    """The link's expiry in whole Unix seconds."""
    return int((now + ttl).timestamp())


def link(base_url: str, secret: bytes, obligation_id: str, recipient: str, expires: int) -> str:
    query = urlencode({"o": obligation_id, "r": recipient.strip().lower(), "e": str(expires),
                       "s": signature(secret, obligation_id, recipient, expires)})
    return f"{base_url.rstrip('/')}{LINK_PATH}?{query}"


Verdict = Literal["ok", "malformed", "bad-signature", "expired"]


@dataclass(frozen=True)
class LinkCheck:
    verdict: Verdict  # bounded: a metric label and the page shown
    obligation_id: str = ""
    recipient: str = ""
    expires_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    @property
    def http_status(self) -> int:
        return {"ok": 200, "malformed": 400, "bad-signature": 403, "expired": 410}[self.verdict]


def verify(secret: bytes, params: Mapping[str, str], now: datetime) -> LinkCheck:
    """Check a followed link's parameters: well-formed, signed with our key for exactly this obligation,
    recipient and expiry, and not expired. Constant-time comparison; nothing is trusted before it passes."""
    o, r, e, s = (str(params.get(k, "")).strip() for k in ("o", "r", "e", "s"))
    r = r.lower()
    if not (_OBLIGATION_ID.match(o) and _RECIPIENT.match(r) and _EXPIRY.match(e) and _SIGNATURE.match(s)):
        return LinkCheck("malformed")
    if not hmac.compare_digest(signature(secret, o, r, int(e)), s):
        return LinkCheck("bad-signature")
    expires_at = datetime.fromtimestamp(int(e), UTC)
    if now >= expires_at:
        return LinkCheck("expired", o, r, expires_at)
    return LinkCheck("ok", o, r, expires_at)


_RULE_IN_ID = re.compile(r"^([A-Za-z0-9]{1,20})-[0-9a-f]{24}$")


def rule_of(obligation_id: str) -> str | None:
    """The rule an obligation id was made for (`<rule>-<24 hex>`, shared.obligations.obligation_id), or None."""
    found = _RULE_IN_ID.match(obligation_id)
    return found.group(1) if found else None


def reference(obligation_id: str) -> str:
    """The reference the obligation's message gives to quote ("A1-3f9a1c2e"): its rule and the first 8 hex digits
    of sha256 of its id (the notifier's `reference_for`), so the page a link opens names the message, and nobody."""
    digest = hashlib.sha256(obligation_id.encode()).hexdigest()[:8]
    rule = rule_of(obligation_id)
    return f"{rule}-{digest}" if rule else digest


def is_local(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in _LOCAL_HOSTS or host.endswith(".localhost")


# --- the records ---------------------------------------------------------------------------------------------


class Acknowledgement(BaseModel):
    """A recipient followed a valid link (published by intake, applied by the scheduler)."""

    model_config = ConfigDict(extra="forbid")

    obligation_id: str
    recipient: str
    acknowledged_at: AwareDatetime
    link_expires_at: AwareDatetime


class EscalationRequest(BaseModel):
    """Tell the BCU's duty contacts about this obligation, with its history (published by the scheduler, sent by
    the notifier once: send-log key `<obligation id>#escalation`)."""

    model_config = ConfigDict(extra="forbid")

    obligation: Obligation
    reason: str  # in words, for the message: "breached: ...", "failed: ...", "not acknowledged ..."
    recipients: dict[str, str]  # address -> role (`escalation`)
    requested_at: AwareDatetime


# --- adapters: the key, and the builder the notifier's pipeline calls ------------------------------------------


class AckSecretMissing(ValueError):
    """PPO_ACK_SECRET is required here; the message says what to do."""


def ack_base_url(settings: Settings) -> str:
    return settings.ack_base_url or settings.public_base_url


def ack_secret(settings: Settings) -> bytes:
    """The key that signs links. PPO_ACK_SECRET when set. Unset is allowed for local use only (links pointing at
    this machine): a random key is generated once into `<state_dir>/ack-secret` (mode 0600) with a warning, so
    the services of one checkout (`ppo-alerts run all`, the demo) share it and links survive restarts."""
    if settings.ack_secret is not None:
        return settings.ack_secret.get_secret_value().encode()
    base = ack_base_url(settings)
    if not is_local(base):
        raise AckSecretMissing(
            f"PPO_ACK_SECRET is not set, and acknowledgement links point at {base}: set it (at least 32 "
            "random characters, the same for notifier and intake; e.g. `python -c \"import secrets; "
            "print(secrets.token_urlsafe(48))\"`)")
    path = Path(settings.state_dir) / "ack-secret"
    key = generated_key(path)
    if len(key) < 32:
        raise AckSecretMissing(f"{path} holds no usable key: delete it, or set PPO_ACK_SECRET")
    log.warning("PPO_ACK_SECRET is not set: acknowledgement links are signed with a generated key (local use "
                "only; set PPO_ACK_SECRET in any real deployment)", extra={"key_file": str(path)})
    return key.encode()


class AckLinks:
    """The notifier pipeline's `ack_url_builder`: (obligation id, recipient) -> a signed link expiring ttl after
    now."""

    def __init__(self, base_url: str, secret: bytes, ttl: timedelta, clock: Clock) -> None:
        if problem := base_url_problem(base_url, neutral=False):
            raise ValueError(problem)
        if problem := base_url_problem(base_url):  # the renderer will refuse court messages carrying it
            log.error("acknowledgement links: %s; set PPO_ACK_BASE_URL", problem)
        self.base_url = base_url
        self._secret = secret
        self.ttl = ttl
        self.clock = clock

    def __call__(self, obligation_id: str, recipient: str) -> str:
        return link(self.base_url, self._secret, obligation_id, recipient, expiry(self.clock.now(), self.ttl))
