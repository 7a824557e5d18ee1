"""Obligations: what the product owes someone, by when. The status vocabulary lives here and only here."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

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


M = TypeVar("M", bound=BaseModel)
_object_setattr = object.__setattr__


def trusted_constructor(model: type[M]) -> Callable[[dict[str, Any]], M]:
    """A constructor, without validation, for values our own code has already given every field's type (the
    rule book building an obligation from a validated event, the register and its own clock).

    Why: an obligation is built rarely, between thousands of events, so the validator's code is cold each time;
    measured in a national-scale simulation it cost ~50 us an obligation (6 us when warm), a third of all the
    time. Input from outside (events, records read back from Kafka, API bodies) is always validated; tests
    check that what is built here survives `model_validate(model_dump())` unchanged.

    Every field must be given (checked: a missing one would otherwise surface far away). The instance is what
    pydantic's own `model_construct` makes; all fields count as set, and one set of names is shared.
    """
    names = set(model.model_fields)
    new = model.__new__

    def construct(values: dict[str, Any]) -> M:
        if values.keys() != names:
            raise TypeError(f"{model.__name__}: fields {sorted(names ^ values.keys())} missing or unknown")
        m = new(model)
        _object_setattr(m, "__dict__", values)
        _object_setattr(m, "__pydantic_fields_set__", names)  # pydantic adds assigned names: all are in it
        _object_setattr(m, "__pydantic_extra__", None)
        _object_setattr(m, "__pydantic_private__", None)
        return m

    return construct


_history_entry = trusted_constructor(HistoryEntry)


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
