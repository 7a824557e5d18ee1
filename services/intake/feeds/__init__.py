"""Translators for the real agency feeds (formats.md §1, §2, §6): pure functions, no I/O, no logging.

Each feed module turns one decoded payload into a `FeedResult`: validated canonical events, the
bounded-vocabulary reasons for what was accepted but not turned into an event (`ignored`), and per-item
problems that did not reject the whole payload. A payload that is wholly unusable raises `InputRejected`.

Problem messages name the field and the reason, never the value: identifiers, names and dates of birth
must not end up in logs or dead-letter reasons.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from shared.errors import InputRejected
from shared.events import EventBase

MAX_PROBLEMS = 100  # per payload; beyond this one line says how many more there were
MAX_EVENTS = 10_000  # per payload: a sanity bound, not a business rule
MAX_JSON_CHARS = 20_000_000  # one JSON document decoded here (a request body, an SNS Message)
MAX_INSTANT_CHARS = 64


class FeedResult:
    """What one payload gave. A plain class, not a dataclass with default factories: one is made per payload."""

    __slots__ = ("events", "ignored", "problems", "_dropped_problems")

    def __init__(self) -> None:
        self.events: list[EventBase] = []
        self.ignored: list[str] = []
        self.problems: list[dict[str, str]] = []
        self._dropped_problems = 0

    def problem(self, where: str, what: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append({"field": where, "problem": what})
        else:
            self._dropped_problems += 1

    def finish(self) -> FeedResult:
        if self._dropped_problems:
            self.problems.append(
                {"field": "(body)", "problem": f"{self._dropped_problems} more problems not listed"}
            )
            self._dropped_problems = 0
        return self


def digest(*parts: str) -> str:
    """A short, stable hash of the parts: the deterministic part of an event id."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def text(value: Any, max_len: int = 200) -> str | None:
    """A non-blank string of bounded length, stripped; anything else is None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > max_len:
        return None
    return value


def identifier_problem(exc: ValueError, value: str) -> str:
    """The normaliser's message without the value itself (identifiers are personal data)."""
    msg = str(exc)
    quoted = repr(value)
    if msg.startswith(quoted):
        msg = "value" + msg[len(quoted) :]
    return msg.replace(quoted, "value")


def parse_instant(value: Any) -> datetime:
    """An ISO 8601 date-time with an offset; ValueError with a message a person can act on otherwise."""
    if type(value) is str and len(value) <= MAX_INSTANT_CHARS:  # the usual case, in one step
        try:
            instant = datetime.fromisoformat(value)
        except ValueError:
            pass  # the checks below say why (or accept it once stripped)
        else:
            if instant.tzinfo is not None and instant.utcoffset() is not None:
                return instant
    if not isinstance(value, str) or not value.strip():
        raise ValueError("required: an ISO 8601 date-time with offset, e.g. 2024-10-14T15:08:51+01:00")
    value = value.strip()
    if len(value) > MAX_INSTANT_CHARS:
        raise ValueError("too long to be an ISO 8601 date-time")
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an ISO 8601 date-time (expected e.g. 2024-10-14T15:08:51+01:00)") from None
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("date-time has no offset (write e.g. 2024-10-14T15:08:51+01:00)")
    return instant


def decode_json(raw: str | bytes | bytearray, where: str) -> Any:
    """Decode one embedded or raw JSON document; InputRejected (never a JSON or recursion error) otherwise."""
    if len(raw) > MAX_JSON_CHARS:
        raise InputRejected(
            "payload too large", [{"field": where, "problem": f"over {MAX_JSON_CHARS} characters"}]
        )
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except UnicodeDecodeError:
        problem = "not valid UTF-8"
    except RecursionError:
        problem = "JSON nested too deeply"
    except (ValueError, TypeError):
        problem = "not valid JSON"
    raise InputRejected("payload is not valid JSON", [{"field": where, "problem": problem}])
