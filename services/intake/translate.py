"""Intake's pure core: every accepted payload format → validated canonical events (formats.md §6).

No I/O, no clock (the instant received is an argument), no logging. Bad input raises `InputRejected`
(reason + problems naming field and why), never anything else.

Formats, told apart by cheap key look-ups (no parsing):

* `canonical` — a dict with `type` (a string) or `data`: validated by `shared.events.parse_event`.
* `hmpps` — an HMPPS domain event (`eventType`) or the SNS notification wrapping one
  (`{"Type": "Notification", "Message": "<json>"}`): `services.intake.feeds.hmpps`.
* `common-platform` — a resulted hearing, `{"hearing": {...}}` or the bare hearing (`prosecutionCases`
  or `courtCentre`): `services.intake.feeds.common_platform`.

`translate_many` takes the body of one request or message: one object or a JSON array of them (already
decoded, or as JSON text/bytes, decoded once here). An array is all-or-nothing: if any item is rejected
the whole body is rejected, with every item's problems prefixed by its index (`[3].person.noms`).
"""

from __future__ import annotations

import gc
from datetime import datetime
from typing import Any, NamedTuple

from pydantic import ValidationError

from services.intake.feeds import common_platform, decode_json, hmpps
from services.intake.plausibility import DEFAULT_WINDOW, InstantWindow, implausible
from shared.errors import InputRejected, rejected_from
from shared.events import EventBase, parse_event

__all__ = ["FORMATS", "MAX_BATCH", "Translation", "detect_format", "translate", "translate_many"]

CANONICAL = "canonical"
HMPPS = hmpps.FORMAT
COMMON_PLATFORM = common_platform.FORMAT
FORMATS = (CANONICAL, HMPPS, COMMON_PLATFORM)
MAX_BATCH = 100_000  # items in one JSON array
MAX_BATCH_PROBLEMS = 200
GC_PAUSE_BATCH = 1_000

_JSON_KIND = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
    bytes: "bytes",
}
_EXPECTED = (
    "expected a canonical event (type, data), an HMPPS domain event (eventType), "
    "an SNS notification wrapping one, or a Common Platform hearing (hearing, prosecutionCases)"
)


class Translation(NamedTuple):  # a tuple: one is made per payload, and a frozen dataclass costs ~1 us to build
    format: str  # "canonical" | "hmpps" | "common-platform"
    events: list[EventBase]  # validated canonical events, possibly empty
    ignored: list[str]  # bounded-vocabulary reasons for what was accepted but not turned into an event
    problems: list[dict[str, str]]  # per-item problems that did not reject the payload: {"field", "problem"}


PART_NOT_TAKEN = "part of payload not taken"  # a fixed reason: it is a metric label


def not_taken(translations: list[Translation], is_array: bool) -> list[dict[str, str]]:
    """The problems that did not reject a payload but left part of it unused (a Common Platform defendant with
    a bad PNC...), with the array index if the body was an array."""
    return [{"field": f"[{i}].{p['field']}" if is_array else p["field"], "problem": p["problem"]}
            for i, t in enumerate(translations) for p in t.problems]


def detect_format(payload: Any) -> str:
    """Which accepted format `payload` (a decoded JSON object) is in; InputRejected if none."""
    if isinstance(payload, dict):
        if "data" in payload and isinstance(payload.get("type"), str):
            return CANONICAL
        if hmpps.looks_like_hmpps(payload):
            return HMPPS
        if common_platform.looks_like_hearing(payload):
            return COMMON_PLATFORM
        if "data" in payload or isinstance(payload.get("type"), str):
            return CANONICAL
        raise InputRejected("unrecognised payload", [{"field": "(body)", "problem": _EXPECTED}])
    kind = _JSON_KIND.get(type(payload), type(payload).__name__)
    raise InputRejected(
        "unrecognised payload", [{"field": "(body)", "problem": f"got {kind}; {_EXPECTED}, as a JSON object"}]
    )


def translate(payload: Any, received_at: datetime, window: InstantWindow = DEFAULT_WINDOW) -> Translation:
    """One decoded payload (a dict) → its canonical events; InputRejected if it is wholly unusable, or if an
    event's instants or dates are implausible for the time it was received (plausibility.py)."""
    fmt = detect_format(payload)
    if fmt == CANONICAL:
        try:
            event = parse_event(payload)
        except ValidationError as exc:
            raise rejected_from(exc) from None
        translation = Translation(CANONICAL, [event], [], [])
    else:
        result = (hmpps.translate if fmt == HMPPS else common_platform.translate)(payload, received_at)
        translation = Translation(fmt, result.events, result.ignored, result.problems)
    problems = [p for e in translation.events for p in implausible(e, received_at, window)]
    if problems:
        raise InputRejected("implausible instant or date", problems)
    return translation


def translate_many(body: Any, received_at: datetime, window: InstantWindow = DEFAULT_WINDOW) -> list[Translation]:
    """A body holding one payload or a JSON array of them (decoded, or JSON text/bytes)."""
    try:
        return _translate_body(body, received_at, window)
    except RecursionError:  # JSON that decodes but is nested too deep for validation: refused, not a crash
        raise InputRejected("payload nested too deeply", [
            {"field": "(body)", "problem": "JSON nested too deeply to validate"}]) from None


def _translate_body(body: Any, received_at: datetime, window: InstantWindow) -> list[Translation]:
    if type(body) is dict:  # the usual case
        return [translate(body, received_at, window)]
    if isinstance(body, (str, bytes, bytearray)):
        body = decode_json(body, "(body)")
    if not isinstance(body, list):
        return [translate(body, received_at, window)]
    if len(body) > MAX_BATCH:
        raise InputRejected(
            "too many events in one body",
            [{"field": "(body)", "problem": f"{len(body)} items; at most {MAX_BATCH}"}],
        )
    # A large batch allocates hundreds of thousands of small, acyclic objects; the cyclic garbage collector
    # would traverse them again and again (it halves throughput at 50,000 events). Reference counting
    # frees them all the same, so the collector is paused for the loop and restored after.
    pause_gc = len(body) >= GC_PAUSE_BATCH and gc.isenabled()
    if pause_gc:
        gc.disable()
    try:
        return _translate_array(body, received_at, window)
    finally:
        if pause_gc:
            gc.enable()


def _translate_array(body: list[Any], received_at: datetime, window: InstantWindow) -> list[Translation]:
    out: list[Translation] = []
    problems: list[dict[str, str]] = []
    failed = 0
    for i, item in enumerate(body):
        try:
            out.append(translate(item, received_at, window))
        except InputRejected as exc:
            failed += 1
            if len(problems) >= MAX_BATCH_PROBLEMS:
                continue
            if not exc.problems:
                problems.append({"field": f"[{i}]", "problem": exc.reason})
            for p in exc.problems:
                where = p.get("field", "(body)")
                problems.append(
                    {
                        "field": f"[{i}]" if where == "(body)" else f"[{i}].{where}",
                        "problem": p.get("problem", exc.reason),
                    }
                )
    if failed:
        # A fixed reason (it may become a metric label); the counts go in the first problem.
        summary = {"field": "(body)", "problem": f"{failed} of {len(body)} items rejected; none was accepted"}
        raise InputRejected("invalid items in array", [summary, *problems[:MAX_BATCH_PROBLEMS]])
    return out
