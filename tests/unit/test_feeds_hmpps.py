"""HMPPS domain events → canonical events (formats.md §1, §6): every mapping row, envelopes, identifiers."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import event as event_if
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.feeds import hmpps
from services.intake.plausibility import InstantWindow
from services.intake.translate import Translation, translate
from shared.errors import InputRejected

R = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POE = "prison-offender-events"
POS = "prisoner-offender-search"


def event(
    event_type: str = f"{POE}.prisoner.received",
    reason: str | None = "ADMISSION",
    *,
    code: str | None = None,
    noms: str = "A1234BC",
    prison: str | None = "LEI",
    occurred: str = "2024-10-14T15:08:51+01:00",
    identifiers: list[Any] | None = None,
    **info: Any,
) -> dict[str, Any]:
    additional: dict[str, Any] = {"nomsNumber": noms}
    if prison is not None:
        additional["prisonId"] = prison
    if reason is not None:
        additional["reason"] = reason
    if code is not None:
        additional["nomisMovementReasonCode"] = code
    additional.update(info)
    return {
        "eventType": event_type,
        "version": 1,
        "occurredAt": occurred,
        "publishedAt": occurred,
        "description": "A prisoner movement",
        "additionalInformation": additional,
        "personReference": {
            "identifiers": identifiers if identifiers is not None else [{"type": "NOMS", "value": noms}]
        },
    }


def events(t: Translation) -> list[Any]:
    """The events, typed loosely: each is one of the per-type models, with its own `type` and `data`."""
    return list(t.events)


def sns(inner: dict[str, Any]) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": "0b6e1e6c-7a3d-4b4f-9e0f-2f0c1d2e3f40",
        "TopicArn": "arn:aws:sns:eu-west-2:000000000000:hmpps-domain-events",
        "Message": json.dumps(inner),
        "Timestamp": "2024-10-14T15:09:00.000Z",
        "MessageAttributes": {"eventType": {"Type": "String", "Value": inner.get("eventType")}},
    }


# Translation, not plausibility, is tested here (tests/hostile/test_implausible_instants.py): any instant.
ANY_TIME = InstantWindow(max_past=timedelta(days=36500), max_future=timedelta(days=36500))


def one(payload: dict[str, Any]) -> Any:
    t = translate(payload, R, ANY_TIME)
    assert t.format == "hmpps"
    assert len(t.events) == 1, (t.ignored, t.problems)
    return t.events[0]


# --- formats.md §6: the mapping table, row by row, for both feeds --------------------------------------

RECEIVED_ROWS = [
    (POE, "ADMISSION", None, "new"),
    (POE, "ADMISSION", "", "new"),
    (POE, "ADMISSION", "INT", "new"),
    (POE, "ADMISSION", "L", "recall"),
    (POE, "ADMISSION", "Y", "recall"),
    (POE, "ADMISSION", "B", "recall"),
    (POE, "ADMISSION", "N", "remand"),
    (POE, "ADMISSION", " n ", "remand"),
    (POS, "NEW_ADMISSION", None, "new"),
    (POS, "READMISSION", None, "new"),
    (POS, "READMISSION_SWITCH_BOOKING", None, "new"),
    (POS, "NEW_ADMISSION", "L", "recall"),
    (POS, "READMISSION", "N", "remand"),
    (POE, "TRANSFERRED", "INT", "transfer_in"),
    (POS, "TRANSFERRED", None, "transfer_in"),
    (POE, "RETURN_FROM_COURT", None, "return_from_court"),
    (POS, "RETURN_FROM_COURT", None, "return_from_court"),
    (POE, "TEMPORARY_ABSENCE_RETURN", None, "rotl_return"),
    (POS, "TEMPORARY_ABSENCE_RETURN", None, "rotl_return"),
]


@pytest.mark.parametrize(("feed", "reason", "code", "expected"), RECEIVED_ROWS)
def test_received_reasons_map_to_reception(feed: str, reason: str, code: str | None, expected: str) -> None:
    e = one(event(f"{feed}.prisoner.received", reason, code=code))
    assert e.type == "prison.reception"
    assert e.data.reason == expected
    assert e.data.prison_id == "LEI"
    assert e.person.noms == "A1234BC"
    assert e.occurred_at == datetime(2024, 10, 14, 14, 8, 51, tzinfo=UTC)
    assert e.source == f"HMPPS:{feed}"



def _revalidates(e: Any) -> None:
    """What the adapter emits survives a round trip through the canonical model unchanged."""
    again = type(e).model_validate(e.model_dump())
    assert again == e
    assert type(e).model_validate_json(e.model_dump_json()) == e


@pytest.mark.parametrize(("feed", "reason", "code", "expected"), RECEIVED_ROWS)
def test_translated_receptions_round_trip_through_the_canonical_model(feed: str, reason: str, code: str | None,
                                                          expected: str) -> None:
    _revalidates(one(event(f"{feed}.prisoner.received", reason, code=code)))


@pytest.mark.parametrize("feed", [POE, POS])
@pytest.mark.parametrize("reason", ["RELEASED", "TEMPORARY_ABSENCE_RELEASE", "SENT_TO_COURT", "TRANSFERRED",
                                    "RELEASED_TO_HOSPITAL"])
def test_translated_releases_round_trip_through_the_canonical_model(feed: str, reason: str) -> None:
    _revalidates(one(event(f"{feed}.prisoner.released", reason, code="CR")))

RELEASED_ROWS = [
    ("RELEASED", "released"),
    ("TEMPORARY_ABSENCE_RELEASE", "rotl"),
    ("SENT_TO_COURT", "to_court"),
    ("TRANSFERRED", "transfer"),
    ("RELEASED_TO_HOSPITAL", "to_hospital"),
]


@pytest.mark.parametrize("feed", [POE, POS])
@pytest.mark.parametrize(("reason", "expected"), RELEASED_ROWS)
def test_released_reasons_map_to_release(feed: str, reason: str, expected: str) -> None:
    e = one(event(f"{feed}.prisoner.released", reason, code="CR"))
    assert e.type == "prison.release"
    assert (e.data.reason, e.data.prison_id, e.person.noms) == (expected, "LEI", "A1234BC")


@pytest.mark.parametrize(
    ("event_type", "reason", "ignored"),
    [
        (f"{POE}.prisoner.released", "UNKNOWN", "hmpps:reason:UNKNOWN"),
        (f"{POS}.prisoner.received", "POST_MERGE_ADMISSION", "hmpps:reason:POST_MERGE_ADMISSION"),
        (f"{POE}.prisoner.received", "RELEASED", "hmpps:reason:RELEASED"),  # a release reason on a reception
        (f"{POE}.prisoner.received", "SOMETHING_NEW", "hmpps:reason:unrecognised"),
        (f"{POE}.prisoner.received", None, "hmpps:reason:missing"),
        (f"{POE}.prisoner.released", "", "hmpps:reason:missing"),
    ],
)
def test_unmapped_reasons_are_accepted_and_ignored(event_type: str, reason: str | None, ignored: str) -> None:
    t = translate(event(event_type, reason), R)
    assert (t.format, t.events, t.ignored, t.problems) == ("hmpps", [], [ignored], [])


def test_an_unmapped_reason_needs_nothing_else_to_be_valid() -> None:
    e = event(f"{POE}.prisoner.released", "UNKNOWN", prison=None, occurred="not a date")
    e["personReference"] = "junk"
    assert translate(e, R).ignored == ["hmpps:reason:UNKNOWN"]


def test_reason_spelling_is_case_insensitive() -> None:
    assert one(event(reason="admission", code="l")).data.reason == "recall"


@pytest.mark.parametrize(
    "event_type",
    [
        "prison-offender-events.prisoner.merged",
        "probation-case.engagement.created",
        "x",
        "a.b.c" * 50,
        "person.temporary-absence.started",
        "create-and-vary-a-licence.licence.activated",
    ],
)
def test_unknown_event_types_are_accepted_counted_and_ignored(event_type: str) -> None:
    payload = {
        "eventType": event_type,
        "version": 1,
        "occurredAt": "garbage",
        "additionalInformation": [1, 2],
        "personReference": {"identifiers": "nope"},
    }
    t = translate(payload, R)
    assert t.format == "hmpps"
    assert t.events == []
    assert t.problems == []
    assert len(t.ignored) == 1
    assert t.ignored[0] in ("hmpps:unknown-event-type", "hmpps:event-type-not-mapped")


def test_known_but_unmapped_event_types_have_their_own_reason() -> None:
    assert translate({"eventType": "probation-case.registration.added", "version": 1}, R).ignored == [
        "hmpps:event-type-not-mapped"
    ]
    assert translate({"eventType": "some.new.event", "version": 1}, R).ignored == ["hmpps:unknown-event-type"]


@pytest.mark.parametrize("bad", [None, "", "   ", 7, ["x"], {"a": 1}])
def test_event_type_must_be_a_string(bad: Any) -> None:
    with pytest.raises(InputRejected) as exc:
        translate({"eventType": bad, "version": 1}, R)
    assert exc.value.problems[0]["field"] == "eventType"


# --- envelopes: bare and SNS-wrapped --------------------------------------------------------------------


def test_sns_wrapped_and_bare_events_translate_identically() -> None:
    bare = event(code="L")
    a = translate(bare, R)
    b = translate(sns(bare), R)
    assert a.events == b.events
    assert (a.ignored, a.problems) == (b.ignored, b.problems)


def test_sns_wrapped_unknown_type_is_ignored() -> None:
    t = translate(sns({"eventType": "whatever.happened", "version": 1}), R)
    assert (t.format, t.events, t.ignored) == ("hmpps", [], ["hmpps:unknown-event-type"])


def test_problems_in_a_wrapped_event_are_named_under_message() -> None:
    with pytest.raises(InputRejected) as exc:
        translate(sns(event(occurred="2024-10-14T15:08:51")), R)
    assert exc.value.problems[0]["field"] == "Message.occurredAt"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("{not json", "Message"),
        ("[1, 2]", "Message"),
        ('"a string"', "Message"),
        (7, "Message"),
        ('{"no": "eventType"}', "Message.eventType"),
        ("[" * 100_000 + "]" * 100_000, "Message"),
    ],
)
def test_an_sns_message_that_is_not_an_event_is_rejected(message: Any, field: str) -> None:
    with pytest.raises(InputRejected) as exc:
        translate({"Type": "Notification", "Message": message}, R)
    assert exc.value.problems[0]["field"] == field


# --- instants ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("naive", ["2024-10-14T15:08:51", "2024-10-14T15:08:51.123456", "2024-10-14"])
def test_naive_occurred_at_is_rejected_with_a_clear_message(naive: str) -> None:
    with pytest.raises(InputRejected) as exc:
        translate(event(occurred=naive), R)
    problem = exc.value.problems[0]
    assert problem["field"] == "occurredAt"
    assert "no offset" in problem["problem"]
    assert "occurredAt" in str(exc.value)


@pytest.mark.parametrize("bad", [None, "", "yesterday", "2024-13-45T10:00:00Z", 1728914931, "9" * 200])
def test_missing_or_unparseable_occurred_at_is_rejected(bad: Any) -> None:
    payload = event()
    if bad is None:
        del payload["occurredAt"]
    else:
        payload["occurredAt"] = bad
    with pytest.raises(InputRejected) as exc:
        translate(payload, R)
    assert exc.value.problems[0]["field"] == "occurredAt"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-06-11T15:16:25.194617521+01:00", datetime(2024, 6, 11, 14, 16, 25, 194617, tzinfo=UTC)),
        ("2026-02-10T14:00:00Z", datetime(2026, 2, 10, 14, 0, tzinfo=UTC)),
        ("2026-02-10T14:00:00+00:00", datetime(2026, 2, 10, 14, 0, tzinfo=UTC)),
    ],
)
def test_offsets_and_nanoseconds_are_understood(raw: str, expected: datetime) -> None:
    assert one(event(occurred=raw)).occurred_at == expected


# --- identifiers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling", ["NOMS", "noms", "Noms", "nomsNumber", "NOMS_NUMBER", "noms-number", "nomsId"]
)
def test_noms_identifier_type_is_matched_case_insensitively(spelling: str) -> None:
    payload = event(identifiers=[{"type": spelling, "value": "a1234bc"}])
    del payload["additionalInformation"]["nomsNumber"]
    assert one(payload).person.noms == "A1234BC"


@pytest.mark.parametrize("spelling", ["CRN", "crn", "Crn"])
def test_crn_identifier_is_kept(spelling: str) -> None:
    e = one(event(identifiers=[{"type": "NOMS", "value": "A1234BC"}, {"type": spelling, "value": "x123456"}]))
    assert (e.person.noms, e.person.crn) == ("A1234BC", "X123456")


def test_unknown_identifier_types_are_tolerated() -> None:
    e = one(
        event(
            identifiers=[
                {"type": "PERSON", "value": "5f8a"},
                {"type": "NOMS", "value": "A1234BC"},
                {"type": "SOMETHING", "value": None},
                "junk",
                {"value": "A1234BC"},
            ]
        )
    )
    assert e.person.identifiers() == {"noms": "A1234BC"}


def test_additional_information_noms_alone_is_enough() -> None:
    assert one(event(identifiers=[])).person.noms == "A1234BC"
    payload = event()
    del payload["personReference"]
    assert one(payload).person.noms == "A1234BC"


def test_an_invalid_crn_is_a_problem_not_a_rejection() -> None:
    t = translate(
        event(identifiers=[{"type": "NOMS", "value": "A1234BC"}, {"type": "CRN", "value": "98765"}]), R
    )
    assert len(t.events) == 1 and t.events[0].person.crn is None
    assert t.problems == [
        {"field": "personReference.identifiers[1].value", "problem": t.problems[0]["problem"]}
    ]
    assert "CRN" in t.problems[0]["problem"] and "98765" not in t.problems[0]["problem"]


def test_conflicting_noms_numbers_keep_the_first_and_say_so() -> None:
    t = translate(event(noms="A1234BC", identifiers=[{"type": "NOMS", "value": "B9999ZZ"}]), R)
    assert t.events[0].person.noms == "A1234BC"
    assert t.problems[0]["field"] == "personReference.identifiers[0].value"


def test_an_invalid_noms_and_nothing_else_rejects_without_echoing_the_value() -> None:
    with pytest.raises(InputRejected) as exc:
        translate(event(noms="NOT-A-NOMS", identifiers=[]), R)
    assert exc.value.problems[0]["field"] == "additionalInformation.nomsNumber"
    assert "NOT-A-NOMS" not in str(exc.value)
    assert "NOMS number" in exc.value.problems[0]["problem"]


def test_no_identifier_at_all_rejects() -> None:
    payload = event(identifiers=[])
    del payload["additionalInformation"]["nomsNumber"]
    with pytest.raises(InputRejected) as exc:
        translate(payload, R)
    assert exc.value.problems[0]["field"] == "additionalInformation.nomsNumber"


@pytest.mark.parametrize(
    ("prison", "expected"),
    [
        (None, "required"),
        ("", "required"),
        ("L", "not a prison"),
        ("LEI HMP", "not a prison"),
        (12, "not a prison"),
    ],
)
def test_a_mapped_movement_needs_a_prison(prison: Any, expected: str) -> None:
    payload = event()
    payload["additionalInformation"]["prisonId"] = prison
    with pytest.raises(InputRejected) as exc:
        translate(payload, R)
    assert exc.value.problems[0]["field"] == "additionalInformation.prisonId"
    assert expected in exc.value.problems[0]["problem"]


def test_prison_code_is_normalised() -> None:
    assert one(event(prison=" lei ")).data.prison_id == "LEI"


def test_additional_information_must_be_an_object_for_a_mapped_event() -> None:
    payload = event()
    payload["additionalInformation"] = "LEI"
    with pytest.raises(InputRejected) as exc:
        translate(payload, R)
    assert exc.value.problems[0]["field"] == "additionalInformation"


# --- ids and idempotency ------------------------------------------------------------------------------


def test_ids_are_deterministic_and_depend_on_the_movement() -> None:
    a = one(event(code="L"))
    assert a.id == one(event(code="L")).id
    assert a.id == one(copy.deepcopy(event(code="L"))).id
    assert a.id.startswith("hmpps:")
    assert a.id != one(event(occurred="2024-10-14T15:08:52+01:00")).id
    assert a.id != one(event(noms="B1234CD")).id
    assert a.id != one(event(reason="TRANSFERRED")).id


def test_the_same_instant_written_differently_gives_the_same_id() -> None:
    assert (
        one(event(occurred="2024-10-14T15:08:51+01:00")).id == one(event(occurred="2024-10-14T14:08:51Z")).id
    )


def test_both_feeds_report_one_movement_with_the_same_canonical_fields() -> None:
    delayed = one(event(f"{POE}.prisoner.received", "ADMISSION", code="INT"))
    immediate = one(event(f"{POS}.prisoner.received", "NEW_ADMISSION"))
    assert (delayed.type, delayed.occurred_at, delayed.person, delayed.data) == (
        immediate.type,
        immediate.occurred_at,
        immediate.person,
        immediate.data,
    )
    assert delayed.id != immediate.id  # allowed: the rules engine de-duplicates by fact


# --- HDC licence ---------------------------------------------------------------------------------------


def licence(**info: Any) -> dict[str, Any]:
    return {
        "eventType": "create-and-vary-a-licence.hdc-licence.activated",
        "version": 1,
        "occurredAt": "2024-06-11T15:16:25.194617521+01:00",
        "additionalInformation": {"licenceId": "111", **info},
        "personReference": {
            "identifiers": [{"type": "CRN", "value": "X738925"}, {"type": "NOMS", "value": "A7928DZ"}]
        },
    }


def test_hdc_licence_activated_with_prison_is_an_hdc_release() -> None:
    e = one(licence(prisonId="SWI"))
    assert (e.type, e.data.reason, e.data.prison_id) == ("prison.release", "hdc", "SWI")
    assert (e.person.noms, e.person.crn) == ("A7928DZ", "X738925")
    assert e.source == "HMPPS:create-and-vary-a-licence"


def test_hdc_licence_activated_without_prison_is_ignored() -> None:
    t = translate(licence(), R)
    assert (t.events, t.ignored) == ([], ["hmpps:hdc-licence:no-prison-id"])


def test_hdc_licence_activated_without_noms_is_ignored() -> None:
    payload = licence(prisonId="SWI")
    payload["personReference"]["identifiers"] = [{"type": "CRN", "value": "X738925"}]
    t = translate(payload, R)
    assert (t.events, t.ignored) == ([], ["hmpps:hdc-licence:no-noms"])


# --- release dates --------------------------------------------------------------------------------------

RELEASE_DATE_TYPES = ["calculate-release-dates.prisoner.changed", f"{POE}.prisoner.sentence-dates-changed"]


def dates_event(event_type: str, **dates: Any) -> dict[str, Any]:
    return event(event_type, None, prison="MDI", bookingId="1234", **dates)


@pytest.mark.parametrize("event_type", RELEASE_DATE_TYPES)
def test_date_change_without_dates_is_ignored(event_type: str) -> None:
    t = translate(dates_event(event_type), R)
    assert (t.events, t.ignored) == ([], ["hmpps:release-dates:no-dates"])


@pytest.mark.parametrize("event_type", RELEASE_DATE_TYPES)
@pytest.mark.parametrize(
    ("field", "kind"),
    [
        ("conditionalReleaseDate", "crd"),
        ("confirmedReleaseDate", "confirmed"),
        ("homeDetentionCurfewActualDate", "hdc"),
        ("releaseDate", "other"),
        ("automaticReleaseDate", "ard"),
        ("actualParoleDate", "parole"),
    ],
)
def test_each_release_date_field_has_its_kind(event_type: str, field: str, kind: str) -> None:
    e = one(dates_event(event_type, **{field: "2026-07-15"}))
    assert e.type == "prison.release_date_set"
    assert (e.data.prison_id, e.data.release_date, e.data.kind) == ("MDI", date(2026, 7, 15), kind)


def test_hdc_eligibility_date_is_hdc_eligible() -> None:
    e = one(dates_event(RELEASE_DATE_TYPES[0], homeDetentionCurfewEligibilityDate="2026-05-01"))
    assert e.type == "prison.hdc_eligible"
    assert (e.data.prison_id, e.data.eligibility_date) == ("MDI", date(2026, 5, 1))


def test_several_dates_give_several_events_most_authoritative_last() -> None:
    t = translate(
        dates_event(
            RELEASE_DATE_TYPES[0],
            confirmedReleaseDate="2026-07-10",
            releaseDate="2026-07-10",
            conditionalReleaseDate="2026-07-15",
            homeDetentionCurfewActualDate="2026-05-20",
            homeDetentionCurfewEligibilityDate="2026-05-01",
            releaseOnTemporaryLicenceDate="2026-04-01",
        ),
        R,
    )
    kinds = [(e.type, getattr(e.data, "kind", None)) for e in events(t)]
    assert kinds == [
        ("prison.release_date_set", "other"),
        ("prison.release_date_set", "crd"),
        ("prison.release_date_set", "hdc"),
        ("prison.release_date_set", "confirmed"),
        ("prison.hdc_eligible", None),
    ]
    assert len({e.id for e in events(t)}) == 5


def test_an_unparseable_date_is_a_problem_and_the_others_still_count() -> None:
    t = translate(
        dates_event(
            RELEASE_DATE_TYPES[0], conditionalReleaseDate="15/07/2026", confirmedReleaseDate="2026-07-10"
        ),
        R,
    )
    assert [e.data.kind for e in events(t)] == ["confirmed"]
    assert t.problems == [
        {
            "field": "additionalInformation.conditionalReleaseDate",
            "problem": "not an ISO date (expected e.g. 2026-07-15)",
        }
    ]


def test_dates_all_cleared_is_a_withdrawal() -> None:
    e = one(dates_event(RELEASE_DATE_TYPES[0], conditionalReleaseDate=None, confirmedReleaseDate=""))
    assert (e.type, e.data.release_date, e.data.kind) == ("prison.release_date_set", None, "confirmed")


def test_a_cleared_date_next_to_a_stated_one_is_not_a_withdrawal() -> None:
    t = translate(
        dates_event(RELEASE_DATE_TYPES[0], conditionalReleaseDate="2026-07-15", confirmedReleaseDate=""), R
    )
    assert [(e.data.kind, e.data.release_date) for e in events(t)] == [("crd", date(2026, 7, 15))]


def test_dates_without_a_prison_are_ignored() -> None:
    payload = dates_event(RELEASE_DATE_TYPES[0], conditionalReleaseDate="2026-07-15")
    del payload["additionalInformation"]["prisonId"]
    t = translate(payload, R)
    assert (t.events, t.ignored) == ([], ["hmpps:release-dates:no-prison-id"])


def test_source_and_ids_of_date_events() -> None:
    a = one(dates_event(RELEASE_DATE_TYPES[0], conditionalReleaseDate="2026-07-15"))
    b = one(dates_event(RELEASE_DATE_TYPES[0], conditionalReleaseDate="2026-07-16"))
    assert a.source == "HMPPS:calculate-release-dates"
    assert a.id != b.id
    assert a.id == one(dates_event(RELEASE_DATE_TYPES[0], conditionalReleaseDate="2026-07-15")).id


# --- odds and ends --------------------------------------------------------------------------------------


def test_module_recognises_its_envelopes() -> None:
    assert hmpps.looks_like_hmpps({"eventType": "x"})
    assert hmpps.looks_like_hmpps({"Type": "Notification", "Message": "{}"})
    assert not hmpps.looks_like_hmpps({"Type": "SubscriptionConfirmation", "Message": "{}"})


def test_occurred_at_with_an_unusual_offset() -> None:
    e = one(event(occurred="2024-10-14T15:08:51-05:30"))
    assert e.occurred_at.utcoffset() == timedelta(hours=-5, minutes=-30)
    assert e.occurred_at == datetime(
        2024, 10, 14, 15, 8, 51, tzinfo=timezone(timedelta(hours=-5, minutes=-30))
    )


# --- ids do not depend on how occurredAt was written, and what is built is what validation would give ----


@settings(max_examples=400, deadline=None)
@given(instant=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 31)),
       offset=st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(hours=-3, minutes=-30)]),
       style=st.sampled_from(["isoformat", "Z", "micro", "milli", "no-fraction"]))
def test_the_id_uses_the_utc_instant_as_isoformat_writes_it(instant: datetime, offset: timedelta, style: str) -> None:
    aware = instant.replace(tzinfo=timezone(offset))
    text = {
        "isoformat": aware.isoformat(),
        "Z": aware.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z",
        "micro": aware.isoformat(timespec="microseconds"),  # ".000000" when the fraction is zero
        "milli": aware.isoformat(timespec="milliseconds"),
        "no-fraction": aware.replace(microsecond=0).isoformat(),
    }[style]
    e = one(event(occurred=text))
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    expected = hmpps.digest(f"{POE}.prisoner.received", parsed.astimezone(UTC).isoformat(), "A1234BC", "ADMISSION")
    assert e.id == "hmpps:" + expected
    assert type(e).model_validate(e.model_dump()) == e  # constructed, not validated: still what validation gives


# --- the usual movement's one-step path gives exactly what the general path gives ------------------------

_MOVEMENT_TYPES = sorted(hmpps.MOVEMENTS)


_MISSING = object()
_ODD = [_MISSING, None, 0, "", " ", [], {}]  # what a field may be instead of a good value
_occurred = st.one_of(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-4))]))
    .map(lambda d: d.isoformat()),
    st.sampled_from(["2024-10-14T15:08:51Z", "2024-10-14T15:08:51", " 2024-10-14T15:08:51+01:00",
                     "2024-10-14T15:08:51.000000+00:00", "not a date", ""]),
)


def _field(draw: Any, good: Any, other: list[Any]) -> Any:
    """Mostly a good value; sometimes a near miss (`other`) or something odd, to find where the paths part."""
    if draw(st.integers(0, 9)) < 7:
        return draw(good)
    return draw(st.sampled_from(other + _ODD))


@st.composite
def movement_payloads(draw: Any) -> dict[str, Any]:
    event_type = _field(draw, st.sampled_from(_MOVEMENT_TYPES), [" " + _MOVEMENT_TYPES[0], "x.y.z"])
    received = isinstance(event_type, str) and event_type in hmpps.RECEIVED
    noms = _field(draw, st.sampled_from(["A1234BC", "Z9999ZZ"]), ["a1234bc", " A1234BC", "A1234B", "I1234OO"])
    info: dict[str, Any] = {
        "nomsNumber": noms,
        "prisonId": _field(draw, st.sampled_from(["LEI", "MDI"]), ["lei", "MDI ", "X", "L-1"]),
        "reason": _field(draw, st.sampled_from(sorted(hmpps.ADMISSIONS | hmpps.RECEPTION_REASONS.keys())
                                               if received else sorted(hmpps.RELEASE_REASONS)),
                         ["admission", " RELEASED", "ELSE", *sorted(hmpps.KNOWN_REASONS)]),
        "nomisMovementReasonCode": _field(draw, st.sampled_from(["L", "Y", "B", "N", "INT"]), [" n ", 5]),
    }
    info = {k: v for k, v in info.items() if v is not _MISSING}
    identifiers = draw(st.sampled_from([
        *[[{"type": "NOMS", "value": noms}]] * 8,
        [{"type": "NOMS", "value": noms}, {"type": "CRN", "value": "X123456"}],
        [{"type": "nomsNumber", "value": noms}], [{"type": "NOMS", "value": "B1234CD"}], [],
    ]))
    event: dict[str, Any] = {
        "eventType": event_type,
        "occurredAt": _field(draw, _occurred, ["2024-10-14T15:08:51", "not a date"]),
        "version": 1,
        "additionalInformation": info,
    }
    if draw(st.integers(0, 9)) < 8:
        event["personReference"] = {"identifiers": identifiers}
    return event


@settings(max_examples=1500, deadline=None)
@given(payload=movement_payloads())
def test_the_usual_movement_path_agrees_with_the_general_one(payload: dict[str, Any]) -> None:
    try:
        general = hmpps.translate_event(copy.deepcopy(payload))
    except InputRejected:
        general = None
    usual = hmpps.usual_movement(payload)
    event_if("the usual path answered" if usual is not None else "the general path's")
    if usual is None:
        return  # the general path's to answer, as it did
    assert general is not None and general.ignored == [] and general.problems == []
    assert general.events == [usual] and general.events[0].id == usual.id
    assert type(usual).model_validate(usual.model_dump()) == usual


def test_the_usual_shape_takes_the_one_step_path() -> None:
    payload = event(reason="NEW_ADMISSION", code=None, event_type=f"{POS}.prisoner.received")
    assert hmpps.usual_movement(payload) == one(payload)
    assert hmpps.usual_movement(sns(payload)) is None  # a wrapped event is unwrapped first (translate does)
