"""HMPPS domain events (formats.md §1) → canonical events (formats.md §6).

Accepted envelopes: the bare event (`eventType`, `occurredAt`, `additionalInformation`, `personReference`)
and the AWS SNS notification that wraps it (`{"Type": "Notification", "Message": "<event JSON>"}`); problems
in a wrapped event are reported as `Message.<field>`.

Mapping (the table in formats.md §6, plus the decisions below):

* `prison-offender-events.prisoner.received` and `prisoner-offender-search.prisoner.received`
  → `prison.reception` (prison = `prisonId`, T = `occurredAt`, person = NOMS):
  `ADMISSION`, `NEW_ADMISSION`, `READMISSION`, `READMISSION_SWITCH_BOOKING` → `new`, or `recall` when
  `nomisMovementReasonCode` is `L`, `Y` or `B`, or `remand` when it is `N` (the immediate
  prisoner-offender-search feed carries no movement code, so it always says `new`: the rules treat
  `new`/`remand`/`recall` alike for A1); `TRANSFERRED` → `transfer_in`; `RETURN_FROM_COURT` →
  `return_from_court`; `TEMPORARY_ABSENCE_RETURN` → `rotl_return`.
* `prison-offender-events.prisoner.released` and `prisoner-offender-search.prisoner.released`
  → `prison.release`: `RELEASED` → `released`, `TEMPORARY_ABSENCE_RELEASE` → `rotl`, `SENT_TO_COURT` →
  `to_court`, `TRANSFERRED` → `transfer`, `RELEASED_TO_HOSPITAL` → `to_hospital`.
* Any other reason (`UNKNOWN`, `POST_MERGE_ADMISSION`, missing, unrecognised) is accepted with the ignored
  reason `hmpps:reason:<REASON>` for reasons formats.md names, else `hmpps:reason:unrecognised`
  (or `hmpps:reason:missing`), so the vocabulary stays bounded.
* `create-and-vary-a-licence.hdc-licence.activated` → `prison.release` reason `hdc` when the event has a
  NOMS number and an `additionalInformation.prisonId`; otherwise ignored (`hmpps:hdc-licence:no-noms`,
  `hmpps:hdc-licence:no-prison-id`). The rules key A7 on the London day of the release, so the same
  release also reported by `prisoner.released` is one obligation.
* `calculate-release-dates.prisoner.changed` and `prison-offender-events.prisoner.sentence-dates-changed`
  carry no dates in the published feeds (they say "look it up"), so they are ignored
  (`hmpps:release-dates:no-dates`) unless `additionalInformation` states dates. Then, one event per date
  stated, in this order (the rules keep one pending 28-day notice per person, replaced by the latest, so
  the most authoritative date goes last):
  `releaseDate` → `prison.release_date_set` kind `other`; `conditionalReleaseDate` → `crd`;
  `automaticReleaseDate` → `ard`; `actualParoleDate` → `parole`; `homeDetentionCurfewActualDate` → `hdc`;
  `confirmedReleaseDate` → `confirmed`; and `homeDetentionCurfewEligibilityDate` → `prison.hdc_eligible`
  (`eligibility_date`). `releaseOnTemporaryLicenceDate` is a date without a time, which cannot make the
  `starts_at` instant of `prison.rotl_scheduled`, so it is not mapped. A date key present but null/empty
  is "not stated", except that when every date key present is null/empty the payload says the date was
  withdrawn: one `prison.release_date_set` with `release_date` null (kind of the most authoritative key
  present). Prison = `additionalInformation.prisonId`; without it the event is ignored
  (`hmpps:release-dates:no-prison-id`). A date that does not parse is a problem; the others still count.
* A small set of event types named in formats.md §1 that carry nothing the rules can use yet
  (licence activation/inactivation, ROTL lifecycle, probation registrations) → `hmpps:event-type-not-mapped`;
  every other event type → `hmpps:unknown-event-type`. Neither is ever rejected, and nothing else in such
  an event is looked at.

Identifiers: `additionalInformation.nomsNumber` and `personReference.identifiers[]` whose `type` matches,
ignoring case and punctuation, `NOMS`/`nomsNumber`/`nomsId`/`prisonerNumber` (→ noms), `CRN` (→ crn),
`PNC`/`pncNumber`/`pncId` (→ pnc), `CRO`/`croNumber` (→ cro); other types (`PERSON`, ...) are tolerated.
When two values of one kind disagree the first (additionalInformation first) is used and a problem is noted.
An invalid identifier is a problem; a mapped event with no usable identifier is rejected.

Ids: HMPPS events carry none, so the canonical id is `hmpps:` + the first 32 hex digits of the SHA-256 of
(event type, `occurredAt` in UTC, the NOMS number (or the first identifier), the feed's reason and, for
release dates, the date field). A re-published movement gets the same id; the two feeds (immediate and
delayed) give different ids for one movement, and the rules engine de-duplicates that by fact.
`source` is `HMPPS:` + the event type's producer prefix, e.g. `HMPPS:prison-offender-events`.
`occurredAt` must carry an offset: a naive one rejects the event, as does a mapped event without a usable
`prisonId`.

Construction: receptions and releases are made only of values this module checked itself (identifiers by
their normalisers, the prison code, the parsed instant, the reason from the mapping), so they are constructed
without validating them again (`shared.trusted`); the other events go through the canonical models. The usual
movement (`usual_movement`) is translated in one step; a property test holds it to the general path.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError

from services.intake.feeds import (
    MAX_INSTANT_CHARS,
    FeedResult,
    decode_json,
    digest,
    identifier_problem,
    parse_instant,
)
from shared.errors import InputRejected, problems_of
from shared.events import EVENT_MODELS, Person, ReceptionData, ReleaseData
from shared.identifiers import NORMALISERS, is_normal_noms
from shared.trusted import trusted_constructor

FORMAT = "hmpps"

RECEIVED = frozenset(
    {"prison-offender-events.prisoner.received", "prisoner-offender-search.prisoner.received"}
)
RELEASED = frozenset(
    {"prison-offender-events.prisoner.released", "prisoner-offender-search.prisoner.released"}
)
MOVEMENTS = RECEIVED | RELEASED
RELEASE_DATES = frozenset(
    {"calculate-release-dates.prisoner.changed", "prison-offender-events.prisoner.sentence-dates-changed"}
)
HDC_ACTIVATED = "create-and-vary-a-licence.hdc-licence.activated"
NOT_MAPPED = frozenset(
    {
        "create-and-vary-a-licence.licence.activated",
        "create-and-vary-a-licence.licence.inactivated",
        "create-and-vary-a-licence.hdc-licence.inactivated",
        "person.temporary-absence.scheduled",
        "person.temporary-absence.started",
        "person.temporary-absence.completed",
        "person.temporary-absence.cancelled",
        "probation-case.registration.added",
    }
)

ADMISSIONS = frozenset({"ADMISSION", "NEW_ADMISSION", "READMISSION", "READMISSION_SWITCH_BOOKING"})
RECEPTION_REASONS = {
    "TRANSFERRED": "transfer_in",
    "RETURN_FROM_COURT": "return_from_court",
    "TEMPORARY_ABSENCE_RETURN": "rotl_return",
}
RELEASE_REASONS = {
    "RELEASED": "released",
    "TEMPORARY_ABSENCE_RELEASE": "rotl",
    "SENT_TO_COURT": "to_court",
    "TRANSFERRED": "transfer",
    "RELEASED_TO_HOSPITAL": "to_hospital",
}
RECALL_CODES = frozenset({"L", "Y", "B"})
REMAND_CODES = frozenset({"N"})
# Every reason formats.md names: an ignored reason is reported by name only if it is one of these.
KNOWN_REASONS = frozenset(
    ADMISSIONS | RECEPTION_REASONS.keys() | RELEASE_REASONS.keys() | {"UNKNOWN", "POST_MERGE_ADMISSION"}
)

IDENTIFIER_TYPES = {
    "noms": "noms",
    "nomsnumber": "noms",
    "nomsid": "noms",
    "prisonernumber": "noms",
    "crn": "crn",
    "crnnumber": "crn",
    "pnc": "pnc",
    "pncnumber": "pnc",
    "pncid": "pnc",
    "cro": "cro",
    "cronumber": "cro",
}
_NOT_LETTERS = re.compile(r"[^a-z]")
_PRISON_ID = re.compile(r"^[A-Z0-9]{2,10}$")
MAX_IDENTIFIERS = 50

# (additionalInformation key, release_date_set kind), least authoritative first.
RELEASE_DATE_FIELDS = (
    ("releaseDate", "other"),
    ("conditionalReleaseDate", "crd"),
    ("automaticReleaseDate", "ard"),
    ("actualParoleDate", "parole"),
    ("homeDetentionCurfewActualDate", "hdc"),
    ("confirmedReleaseDate", "confirmed"),
)
HDC_ELIGIBILITY_FIELD = "homeDetentionCurfewEligibilityDate"

_RECEPTION = EVENT_MODELS["prison.reception"]
_RELEASE = EVENT_MODELS["prison.release"]
_RELEASE_DATE_SET = EVENT_MODELS["prison.release_date_set"]
_HDC_ELIGIBLE = EVENT_MODELS["prison.hdc_eligible"]


def is_sns_notification(payload: dict[str, Any]) -> bool:
    return payload.get("Type") == "Notification" and "Message" in payload


def looks_like_hmpps(payload: dict[str, Any]) -> bool:
    return "eventType" in payload or is_sns_notification(payload)


def unwrap(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The domain event and the prefix its problems are reported under (`Message.` when SNS-wrapped)."""
    if not is_sns_notification(payload):
        return payload, ""
    message = payload.get("Message")
    if not isinstance(message, str):
        raise InputRejected(
            "invalid SNS notification", [{"field": "Message", "problem": "must be a JSON string"}]
        )
    event = decode_json(message, "Message")
    if not isinstance(event, dict):
        raise InputRejected(
            "invalid SNS notification",
            [{"field": "Message", "problem": "must hold a JSON object (an HMPPS domain event)"}],
        )
    if "eventType" not in event:
        raise InputRejected(
            "invalid SNS notification",
            [{"field": "Message.eventType", "problem": "required: the message is not an HMPPS domain event"}],
        )
    return event, "Message."


def translate(payload: dict[str, Any], received_at: datetime) -> FeedResult:
    """One HMPPS domain event, bare or SNS-wrapped."""
    event, prefix = unwrap(payload) if is_sns_notification(payload) else (payload, "")
    usual = usual_movement(event)
    if usual is not None:
        res = FeedResult()
        res.events.append(usual)
        return res
    return translate_event(event, prefix)


def translate_event(event: dict[str, Any], prefix: str = "") -> FeedResult:
    """One domain event (unwrapped), the general way: every shape, every problem reported."""
    raw_type = event.get("eventType")
    event_type = raw_type.strip() if isinstance(raw_type, str) else ""  # however long: unknown, not invalid
    if not event_type:
        raise InputRejected(
            "invalid HMPPS domain event",
            [{"field": f"{prefix}eventType", "problem": "required: a non-empty string"}],
        )
    res = FeedResult()
    if event_type in MOVEMENTS:
        _movement(event, event_type, prefix, res)
    elif event_type in RELEASE_DATES:
        _release_dates(event, event_type, prefix, res)
    elif event_type == HDC_ACTIVATED:
        _hdc_activated(event, event_type, prefix, res)
    elif event_type in NOT_MAPPED:
        res.ignored.append("hmpps:event-type-not-mapped")
    else:
        res.ignored.append("hmpps:unknown-event-type")
    return res.finish() if res.problems else res


# --- the usual movement, in one step ----------------------------------------------------------------------

# (received, reason as the feeds spell it) -> canonical reason, for the reasons that need nothing else.
_USUAL_REASONS = {
    **{(True, k): v for k, v in RECEPTION_REASONS.items()},
    **{(False, k): v for k, v in RELEASE_REASONS.items()},
}


def usual_movement(event: dict[str, Any]) -> Any:
    """The canonical reception or release for a bare domain event of the usual shape, or None for anything else.

    The usual shape is what both feeds publish nearly always: a movement event type, `occurredAt` with an
    offset, a known prison, a reason in the feeds' own spelling, and `nomsNumber` with that same NOMS as the
    one identifier of `personReference`, every value already in its normal form. For it the result is exactly
    what `translate` gives (a property test says so); anything else, including every input with a problem to
    report, returns None and goes the general way. Why: half of all payloads are movements, and this is the
    busiest path of intake and `simulate`."""
    event_type = event.get("eventType")
    if type(event_type) is not str or event_type not in MOVEMENTS:  # exact spelling only
        return None
    info = event.get("additionalInformation")
    noms = info.get("nomsNumber") if type(info) is dict else None
    if type(noms) is not str or not is_normal_noms(noms):
        return None
    ref = event.get("personReference")
    if type(ref) is not dict or ref.get("identifiers") != [{"type": "NOMS", "value": noms}]:
        return None
    raw_reason = info.get("reason")  # type: ignore[union-attr]
    if type(raw_reason) is not str:
        return None
    received = event_type in RECEIVED
    reason = _USUAL_REASONS.get((received, raw_reason))
    if reason is None:
        if not (received and raw_reason in ADMISSIONS):
            return None
        code = info.get("nomisMovementReasonCode")  # type: ignore[union-attr]
        if code is not None and type(code) is not str:
            return None
        code = code.strip().upper() if code else ""
        reason = "recall" if code in RECALL_CODES else "remand" if code in REMAND_CODES else "new"
    prison_id = _clean_prison_id(info)  # type: ignore[arg-type]
    data = _movement_data(received, prison_id, reason) if prison_id is not None else None
    occurred = event.get("occurredAt")
    if type(data) not in _DATA_MODELS or type(occurred) is not str or len(occurred) > MAX_INSTANT_CHARS:
        return None
    try:
        occurred_at = datetime.fromisoformat(occurred)
    except ValueError:
        return None
    if occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
        return None
    return _BUILT[_RECEPTION if received else _RELEASE]({
        "id": "hmpps:" + digest(event_type, _utc_text(event, occurred_at), noms, raw_reason),
        "type": "prison.reception" if received else "prison.release",
        "occurred_at": occurred_at,
        "source": _source(event_type),
        "person": _validated_person({"noms": noms}),
        "data": data,
    })


# --- the mapped event types -------------------------------------------------------------------------


def _movement(event: dict[str, Any], event_type: str, prefix: str, res: FeedResult) -> None:
    info = _info(event, prefix)
    raw_reason = info.get("reason")
    feed_reason = raw_reason.strip().upper() if isinstance(raw_reason, str) else ""
    received = event_type in RECEIVED
    reason = (RECEPTION_REASONS if received else RELEASE_REASONS).get(feed_reason)
    if reason is None and received and feed_reason in ADMISSIONS:
        code = info.get("nomisMovementReasonCode")
        code = code.strip().upper() if isinstance(code, str) else ""
        reason = "recall" if code in RECALL_CODES else "remand" if code in REMAND_CODES else "new"
    if not reason:
        res.ignored.append(_ignored_reason(raw_reason, feed_reason))
        return
    occurred_at = _occurred_at(event, prefix)
    prison_id = _prison_id(info, prefix)
    person, key = _person(event, info, prefix, res, required=True)
    assert person is not None  # required: _person rejected the event otherwise
    _emit_built(
        res,
        _RECEPTION if received else _RELEASE,
        {
            "id": "hmpps:" + digest(event_type, _utc_text(event, occurred_at), key, feed_reason),
            "type": "prison.reception" if received else "prison.release",
            "occurred_at": occurred_at,
            "source": _source(event_type),
            "person": _validated_person(person),
            "data": _movement_data(received, prison_id, reason),
        },
        prefix,
    )


_DATA_MODELS = (ReceptionData, ReleaseData)
_MOVEMENT_DATA: dict[tuple[bool, str, str], Any] = {}  # (received, prison, reason) -> the frozen data model


def _movement_data(received: bool, prison_id: str, reason: str) -> Any:
    """The `data` of a reception or release, validated once per (prison, reason): there are a few hundred
    prisons and a dozen reasons, and the event model takes a validated instance as it is."""
    key = (received, prison_id, reason)
    found = _MOVEMENT_DATA.get(key)
    if found is None:
        model = ReceptionData if received else ReleaseData
        try:
            found = model.__pydantic_validator__.validate_python({"prison_id": prison_id, "reason": reason})
        except ValidationError:
            return {"prison_id": prison_id, "reason": reason}  # `_emit` says why, in canonical terms
        if len(_MOVEMENT_DATA) >= 10_000:  # bounded: prison codes come from the sender
            _MOVEMENT_DATA.clear()
        _MOVEMENT_DATA[key] = found
    return found


def _hdc_activated(event: dict[str, Any], event_type: str, prefix: str, res: FeedResult) -> None:
    info = _info(event, prefix)
    person, key = _person(event, info, prefix, res, required=False)
    if person is None or "noms" not in person:
        res.ignored.append("hmpps:hdc-licence:no-noms")
        return
    prison_id = _optional_prison_id(info, prefix, res)
    if prison_id is None:
        res.ignored.append("hmpps:hdc-licence:no-prison-id")
        return
    occurred_at = _occurred_at(event, prefix)
    _emit_built(
        res,
        _RELEASE,
        {
            "id": "hmpps:" + digest(event_type, _utc_text(event, occurred_at), key, "hdc"),
            "type": "prison.release",
            "occurred_at": occurred_at,
            "source": _source(event_type),
            "person": _validated_person(person),
            "data": _movement_data(False, prison_id, "hdc"),
        },
        prefix,
    )


def _release_dates(event: dict[str, Any], event_type: str, prefix: str, res: FeedResult) -> None:
    info = _info(event, prefix)
    stated: list[tuple[str, str, date]] = []  # (field, kind, date)
    cleared: list[tuple[str, str]] = []
    eligibility: date | None = None
    for key, kind in (*RELEASE_DATE_FIELDS, (HDC_ELIGIBILITY_FIELD, "")):
        if key not in info:
            continue
        value = info[key]
        if value is None or (isinstance(value, str) and not value.strip()):
            if kind:
                cleared.append((key, kind))
            continue
        parsed = _date(value)
        if parsed is None:
            res.problem(f"{prefix}additionalInformation.{key}", "not an ISO date (expected e.g. 2026-07-15)")
        elif kind:
            stated.append((key, kind, parsed))
        else:
            eligibility = parsed
    if not stated and eligibility is None and not cleared:
        res.ignored.append("hmpps:release-dates:no-dates")
        return
    prison_id = _optional_prison_id(info, prefix, res)
    if prison_id is None:
        res.ignored.append("hmpps:release-dates:no-prison-id")
        return
    occurred_at = _occurred_at(event, prefix)
    found, person_key = _person(event, info, prefix, res, required=True)
    assert found is not None  # required: _person rejected the event otherwise
    person = _validated_person(found)  # once, for every event made from this one
    instant = _utc_text(event, occurred_at)
    source = _source(event_type)
    if stated:
        for key, kind, day in stated:
            _emit(
                res,
                _RELEASE_DATE_SET,
                {
                    "id": "hmpps:" + digest(event_type, instant, person_key, key, day.isoformat()),
                    "type": "prison.release_date_set",
                    "occurred_at": occurred_at,
                    "source": source,
                    "person": person,
                    "data": {"prison_id": prison_id, "release_date": day, "kind": kind},
                },
                prefix,
            )
    elif cleared and eligibility is None:
        key, kind = cleared[-1]
        _emit(
            res,
            _RELEASE_DATE_SET,
            {
                "id": "hmpps:" + digest(event_type, instant, person_key, key, "withdrawn"),
                "type": "prison.release_date_set",
                "occurred_at": occurred_at,
                "source": source,
                "person": person,
                "data": {"prison_id": prison_id, "release_date": None, "kind": kind},
            },
            prefix,
        )
    if eligibility is not None:
        _emit(
            res,
            _HDC_ELIGIBLE,
            {
                "id": "hmpps:"
                + digest(event_type, instant, person_key, HDC_ELIGIBILITY_FIELD, eligibility.isoformat()),
                "type": "prison.hdc_eligible",
                "occurred_at": occurred_at,
                "source": source,
                "person": person,
                "data": {"prison_id": prison_id, "eligibility_date": eligibility},
            },
            prefix,
        )


# --- pieces ------------------------------------------------------------------------------------------


def _ignored_reason(raw: Any, reason: str) -> str:
    if raw is None or not reason:
        return "hmpps:reason:missing"
    return f"hmpps:reason:{reason}" if reason in KNOWN_REASONS else "hmpps:reason:unrecognised"


def _source(event_type: str) -> str:
    source = _SOURCES.get(event_type)
    if source is None:
        source = "HMPPS:" + event_type.split(".", 1)[0][:90]
        if len(_SOURCES) < 1000:  # only mapped event types get here, but stay bounded
            _SOURCES[event_type] = source
    return source


_SOURCES: dict[str, str] = {}

# `occurredAt` as HMPPS publishes it when it is already what `isoformat()` of the UTC instant gives.
_UTC_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?\+00:00")


def _utc_text(event: dict[str, Any], instant: datetime) -> str:
    """`instant` (the event's parsed `occurredAt`) in UTC as `isoformat()` writes it: a part of event ids, so
    exactly that text. Usually the feed sent that very text, and formatting it again costs a microsecond."""
    raw = event.get("occurredAt")
    if type(raw) is str and _UTC_TEXT.fullmatch(raw) and raw[20:26] != "000000":
        return raw
    return instant.astimezone(UTC).isoformat()


def _info(event: dict[str, Any], prefix: str) -> dict[str, Any]:
    info = event.get("additionalInformation")
    if info is None:
        return {}
    if not isinstance(info, dict):
        raise InputRejected(
            "invalid HMPPS domain event",
            [{"field": f"{prefix}additionalInformation", "problem": "must be an object"}],
        )
    return info


def _occurred_at(event: dict[str, Any], prefix: str) -> datetime:
    try:
        return parse_instant(event.get("occurredAt"))
    except ValueError as exc:
        raise InputRejected(
            "invalid HMPPS domain event", [{"field": f"{prefix}occurredAt", "problem": str(exc)}]
        ) from None


def _clean_prison_id(info: dict[str, Any]) -> str | None:
    value = info.get("prisonId")
    if type(value) is not str:
        return None
    clean = _PRISON_IDS.get(value)
    if clean is None:
        clean = value.strip().upper()
        if not _PRISON_ID.match(clean):
            return None
        if len(_PRISON_IDS) < 10_000:  # a few hundred prisons; bounded all the same
            _PRISON_IDS[value] = clean
    return clean


_PRISON_IDS: dict[str, str] = {}  # prisonId as sent -> its clean form (valid ones only)


def _prison_id(info: dict[str, Any], prefix: str) -> str:
    prison_id = _clean_prison_id(info)
    if prison_id is None:
        problem = (
            "required: a prison code such as LEI"
            if info.get("prisonId") in (None, "")
            else "not a prison code (2-10 letters or digits, e.g. LEI)"
        )
        raise InputRejected(
            "invalid HMPPS domain event",
            [{"field": f"{prefix}additionalInformation.prisonId", "problem": problem}],
        )
    return prison_id


def _optional_prison_id(info: dict[str, Any], prefix: str, res: FeedResult) -> str | None:
    prison_id = _clean_prison_id(info)
    if prison_id is None and info.get("prisonId") not in (None, ""):
        res.problem(
            f"{prefix}additionalInformation.prisonId", "not a prison code (2-10 letters or digits, e.g. LEI)"
        )
    return prison_id


def _date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    if len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _identifier_candidates(event: dict[str, Any], info: dict[str, Any]) -> list[tuple[str, Any, int]]:
    """(kind, raw value, where) for every identifier the event names; `where` is -1 for
    additionalInformation.nomsNumber, else the index in personReference.identifiers (see `_where`)."""
    out: list[tuple[str, Any, int]] = []
    noms = info.get("nomsNumber")
    if noms is not None and noms != "":
        out.append(("noms", noms, -1))
    ref = event.get("personReference")
    ids = ref.get("identifiers") if type(ref) is dict else None
    if type(ids) is list:
        kinds = _KINDS_SEEN
        for i, item in enumerate(ids):
            if i == MAX_IDENTIFIERS:
                break
            if type(item) is not dict:
                continue
            kind_raw = item.get("type")
            if type(kind_raw) is not str:
                continue
            kind = kinds[kind_raw] if kind_raw in kinds else _identifier_kind(kind_raw)
            if kind is None:
                continue  # unknown identifier types are normal
            value = item.get("value")
            if value is None or value == "":
                continue
            out.append((kind, value, i))
    return out


_KINDS_SEEN: dict[str, str | None] = {}


def _identifier_kind(kind_raw: str) -> str | None:
    """`NOMS`, `nomsNumber`, `PNC ID` ... -> noms / pnc ...; remembered (a feed uses a handful of spellings)."""
    try:
        return _KINDS_SEEN[kind_raw]
    except KeyError:
        pass
    kind = IDENTIFIER_TYPES.get(_NOT_LETTERS.sub("", kind_raw.lower())) if len(kind_raw) <= 40 else None
    if len(_KINDS_SEEN) < 1000:  # bounded: the spellings come from the sender
        _KINDS_SEEN[kind_raw] = kind
    return kind


def _where(prefix: str, index: int) -> str:
    if index < 0:
        return f"{prefix}additionalInformation.nomsNumber"
    return f"{prefix}personReference.identifiers[{index}].value"


def _person(
    event: dict[str, Any], info: dict[str, Any], prefix: str, res: FeedResult, required: bool
) -> tuple[dict[str, str] | None, str]:
    """The person's normalised identifiers and the one used in the event id.

    Rejects when `required` and none is usable; otherwise returns (None, "") and notes the problems.
    """
    found: dict[str, str] = {}
    seen_raw: dict[str, str] = {}  # raw value -> kind already normalised (the same NOMS twice is common)
    rejected: list[dict[str, str]] = []
    for kind, raw, where in _identifier_candidates(event, info):
        if type(raw) is not str:
            rejected.append({"field": _where(prefix, where), "problem": "must be a string"})
            continue
        if seen_raw.get(raw) == kind:
            continue
        try:
            value = NORMALISERS[kind](raw)
        except ValueError as exc:
            rejected.append({"field": _where(prefix, where), "problem": identifier_problem(exc, raw)})
            continue
        seen_raw[raw] = kind
        if kind not in found:
            found[kind] = value
        elif found[kind] != value:
            res.problem(
                _where(prefix, where), f"differs from the {kind} number given earlier in the event; the first is used"
            )
    if not found and required:
        problems = rejected or [
            {
                "field": f"{prefix}additionalInformation.nomsNumber",
                "problem": "required: no NOMS number or other identifier in the event",
            }
        ]
        raise InputRejected("HMPPS domain event names no usable identifier", problems)
    for p in rejected:
        res.problem(p["field"], p["problem"])
    if not found:
        return None, ""
    return found, found.get("noms") or next(iter(found.values()))


_person_of = trusted_constructor(Person)


def _validated_person(found: dict[str, str]) -> Person:
    """The canonical Person for the identifiers `_person` found. Each was normalised by its kind's normaliser,
    which is what Person's own field validators do, and there is at least one (`_person` rejects or returns
    None otherwise): valid by construction, so it is not validated again."""
    return _person_of({
        "pnc": found.get("pnc"), "cro": found.get("cro"), "noms": found.get("noms"), "crn": found.get("crn"),
        "given_name": None, "family_name": None, "date_of_birth": None,
    })


_BUILT = {model: trusted_constructor(model) for model in (_RECEPTION, _RELEASE)}


def _emit_built(res: FeedResult, model: Any, fields: dict[str, Any], prefix: str) -> None:
    """A reception or release made only of values this module checked itself (the id and source it wrote,
    `occurredAt` parsed with its offset, a validated Person and data model): constructed as is. Anything else
    goes through the canonical model's validator (`_emit`)."""
    if type(fields["data"]) in _DATA_MODELS and type(fields["person"]) is Person:
        res.events.append(_BUILT[model](fields))
    else:
        _emit(res, model, fields, prefix)


def _emit(res: FeedResult, model: Any, fields: dict[str, Any], prefix: str) -> None:
    try:
        res.events.append(model.__pydantic_validator__.validate_python(fields))  # model_validate less its wrapper
    except (
        ValidationError
    ) as exc:  # a translated value the canonical model refuses: say so, in canonical terms
        raise InputRejected(
            "HMPPS domain event cannot be translated", problems_of(exc, f"{prefix}(translated) ")
        ) from None
