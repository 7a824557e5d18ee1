"""Turning validation failures into errors a person can act on: what, where, why. Never a stack trace."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from shared.events import EVENT_TYPES


class InputRejected(Exception):
    """Input that cannot be accepted; `problems` say where and why."""

    def __init__(self, reason: str, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.problems = problems or []

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.reason, "problems": self.problems}

    def __str__(self) -> str:
        if not self.problems:
            return self.reason
        return self.reason + ": " + "; ".join(f"{p['field']}: {p['problem']}" for p in self.problems)


MAX_FIELD_NAME = 64  # a key is payload text too: an answer never echoes more of it than this


def _field_name(part: Any) -> str:
    name = "".join(c if c.isprintable() else "?" for c in str(part)[:MAX_FIELD_NAME])
    return name + "…" if len(str(part)) > MAX_FIELD_NAME else name


def _location(loc: tuple[Any, ...]) -> str:
    # Drop the discriminator tag pydantic puts first ("warrant.issued") so the path reads like the payload.
    parts = [_field_name(p) for p in loc if not (isinstance(p, str) and p in EVENT_TYPES)]
    return ".".join(parts) or "(body)"


def _without_value(msg: str, value: Any) -> str:
    """A validator's message with the offending value taken out: problems name the field, never its value
    (values are personal data, and an echo of a huge field would be huge)."""
    if isinstance(value, str) and value:
        msg = msg.replace(repr(value), "value").replace(value, "value")
    return msg


def _message(err: Any) -> str:
    msg = _without_value(str(err.get("msg", "invalid")), err.get("input"))
    if err.get("type") == "union_tag_invalid":
        # The type is not personal data and naming it helps the sender; cut like a field name.
        return f"unknown event type {_field_name(err['ctx']['tag'])!r}; expected one of {', '.join(EVENT_TYPES)}"
    if err.get("type") == "union_tag_not_found":
        return "missing field 'type'"
    if err.get("type") == "timezone_aware":
        return "instant has no offset (write e.g. 2026-03-02T10:15:00+00:00)"
    return msg.removeprefix("Value error, ")


def problems_of(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    out = []
    for err in exc.errors(include_url=False):
        where = _location(tuple(err.get("loc", ())))
        if err.get("type") == "union_tag_invalid":
            where = "type"
        out.append({"field": f"{prefix}{where}" if prefix else where, "problem": _message(err)})
    return out


def rejected_from(exc: ValidationError, what: str = "invalid event", prefix: str = "") -> InputRejected:
    return InputRejected(what, problems_of(exc, prefix))
