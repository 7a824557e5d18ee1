"""Obligations: what the product owes someone, by when. The status vocabulary lives here and only here."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.trusted import trusted_constructor

Status = Literal["pending", "notified", "acknowledged", "breached", "failed", "cancelled"]
OPEN_STATUSES: frozenset[str] = frozenset({"pending"})
TERMINAL_STATUSES: frozenset[str] = frozenset({"notified", "acknowledged", "failed", "cancelled"})


class PersonRef(BaseModel):
    """The person an obligation is about, as the register knows them (for the message; never logged)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    person_id: str  # the register's key for this person
    pnc: str | None = None
    cro: str | None = None
    noms: str | None = None
    crn: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    date_of_birth: date | None = None

    def identifiers(self) -> dict[str, str]:
        return {k: v for k, v in (("pnc", self.pnc), ("cro", self.cro), ("noms", self.noms), ("crn", self.crn)) if v}


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: AwareDatetime
    what: str


_history_entry = trusted_constructor(HistoryEntry)


RAISED_AGAIN = "raised again: its fact was reported anew after the earlier attempt failed"


def attempts(history: list[HistoryEntry]) -> int:
    """How many times an obligation was raised again after failing (each is a new attempt at the same duty)."""
    return sum(1 for h in history if h.what == RAISED_AGAIN)


def this_attempt(history: list[HistoryEntry]) -> list[HistoryEntry]:
    """The entries since it was last raised again: what the current attempt has done (fired, escalated...)."""
    starts = [i for i, h in enumerate(history) if h.what == RAISED_AGAIN]
    return history[starts[-1]:] if starts else history


def history_entry(at: datetime, what: str) -> HistoryEntry:
    """A history line, from our own clock (aware: checked) and our own words."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("history: naive datetime: instants must carry an offset")
    return _history_entry({"at": at, "what": what})


class Obligation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    obligation_id: str
    rule: str
    source_paragraph: str
    person: PersonRef | None
    bcu: str | None
    recipients: list[str]
    recipient_roles: dict[str, str] = Field(default_factory=dict)  # address -> role
    send_at: AwareDatetime
    notify_by: AwareDatetime
    action_due: AwareDatetime | None = None
    grade: str | None = None
    status: Status = "pending"
    notified_at: AwareDatetime | None = None
    source_event_ids: list[str] = Field(default_factory=list)
    raised_at: AwareDatetime
    occurred_at: AwareDatetime | None = None
    event_type: str | None = None
    facts: dict[str, Any] = Field(default_factory=dict)
    replaces: str | None = None
    cancelled_reason: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)

    @property
    def late(self) -> bool:
        return self.notified_at is not None and self.notified_at > self.notify_by

    def log_ref(self) -> str:
        return f"obligation={self.obligation_id} rule={self.rule}"

    def record_acceptance(self, at: datetime) -> None:
        """The mail server accepted the message: `notified`, or `breached` when it was after notify_by."""
        self.notified_at = at
        self.status = "breached" if at > self.notify_by else "notified"
        self.history.append(history_entry(
            at, "accepted by the mail server" + (" after its deadline" if self.status == "breached" else "")))

    def record_failure(self, at: datetime, why: str) -> None:
        """Every recipient refused permanently: `failed` (escalated at once)."""
        self.status = "failed"
        self.history.append(history_entry(at, f"failed: {why}"))


def obligation_id(rule: str, subject: str, fact: str) -> str:
    """Identity = (rule, person, the fact it is about): the same fact from two feeds or a replay is one id."""
    digest = hashlib.sha256(f"{rule}|{subject}|{fact}".encode()).hexdigest()[:24]
    return f"{rule}-{digest}"


class NotificationRequest(BaseModel):
    """Send this obligation now (published by rules for immediate rules, by the scheduler for timed ones)."""

    model_config = ConfigDict(extra="forbid")

    obligation: Obligation
    requested_at: datetime


class DeliveryOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    obligation_id: str
    rule: str
    recipient: str
    outcome: Literal["queued", "sent", "temporary-failure", "permanent-failure", "duplicate-suppressed"]
    at: AwareDatetime
    detail: str = ""
    template_version: str = ""
    message_id: str = ""
