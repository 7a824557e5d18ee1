"""Common Platform hearing results → canonical events (formats.md §2, §6): every mapping row and the edges."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.intake.feeds import common_platform as cp
from services.intake.plausibility import InstantWindow
from services.intake.translate import translate
from shared.errors import InputRejected

R = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PNC = "2004/0012345D"
PNC2 = "2010/0001234T"
CRO = "065656/91H"
HEARING_ID = "8bbb4fe3-a899-45c7-bdd4-4ee25ac5a83f"
SITTING = "2026-02-13T10:30:00.000Z"


def result(
    cjs: str | int | None = None,
    category: str | None = "INTERMEDIARY",
    *,
    rid: str = "r1",
    label: str = "A result",
    text: str | None = None,
    convicted: bool | None = None,
    ordered: str | None = "2026-02-13",
    prompts: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    r: dict[str, Any] = {"judicialResultId": rid, "label": label, "orderedDate": ordered}
    if cjs is not None:
        r["cjsCode"] = cjs
    if category is not None:
        r["category"] = category
    if text is not None:
        r["resultText"] = text
    if convicted is not None:
        r["isConvictedResult"] = convicted
    if prompts is not None:
        r["judicialResultPrompts"] = prompts
    r.update(extra)
    return r


def offence(*results: dict[str, Any], code: str = "TH68010", oid: str = "o1") -> dict[str, Any]:
    return {
        "id": oid,
        "offenceCode": code,
        "offenceTitle": "Theft from a shop",
        "judicialResults": list(results),
    }


def defendant(
    *offences: dict[str, Any],
    pnc: Any = PNC,
    cro: Any = None,
    did: str = "d1",
    first: Any = "Sam",
    last: Any = "Example",
    dob: Any = "1990-05-01",
    **extra: Any,
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": did,
        "masterDefendantId": did,
        "isYouth": False,
        "personDefendant": {
            "personDetails": {"firstName": first, "lastName": last, "dateOfBirth": dob},
            "bailStatus": {"code": "C", "description": "Custody"},
        },
        "offences": list(offences),
    }
    if pnc is not None:
        d["pncId"] = pnc
    if cro is not None:
        d["croNumber"] = cro
    d.update(extra)
    return d


def hearing(
    *defendants: dict[str, Any],
    court: Any = "B01LY00",
    days: Any = None,
    hid: Any = HEARING_ID,
    wrapped: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    h: dict[str, Any] = {
        "id": hid,
        "jurisdictionType": "MAGISTRATES",
        "courtCentre": {"id": "c1", "code": court, "name": "Somewhere Magistrates' Court"},
        "hearingDays": [{"sittingDay": SITTING, "listingSequence": 0}] if days is None else days,
        "prosecutionCases": [
            {
                "id": "case1",
                "prosecutionCaseIdentifier": {"caseURN": "01AA0000000"},
                "defendants": list(defendants),
            }
        ],
    }
    if hid is None:
        del h["id"]
    h.update(extra)
    return {"hearing": h} if wrapped else h


# Translation, not plausibility, is tested here (tests/hostile/test_implausible_instants.py): any instant.
ANY_TIME = InstantWindow(max_past=timedelta(days=36500), max_future=timedelta(days=36500))


def run(payload: dict[str, Any]) -> Any:
    t = translate(payload, R, ANY_TIME)
    assert t.format == "common-platform"
    return t


def single(*results: dict[str, Any], code: str = "TH68010") -> Any:
    t = run(hearing(defendant(offence(*results, code=code))))
    assert len(t.events) == 1, (t.ignored, t.problems)
    return t.events[0]


CASE_FACTS = ("case_urn", "hearing_date", "court_name", "result_text")  # tested on their own below


def data(e: Any) -> dict[str, Any]:
    """The event's data as the mapping table gives it (without what an officer can look up: CASE_FACTS)."""
    return {k: v for k, v in e.data.model_dump().items() if k not in CASE_FACTS}


# --- the mapping table, row by row ---------------------------------------------------------------------


@pytest.mark.parametrize(("cjs", "backed"), [("4575", True), ("4576", False), ("4577", True), (4576, False)])
def test_warrants_issued(cjs: str | int, backed: bool) -> None:
    e = single(result(cjs))
    assert e.type == "warrant.issued"
    assert data(e)["kind"] == "arrest"
    assert data(e)["backed_for_bail"] is backed
    assert data(e)["court_code"] == "B01LY00"
    assert e.data.warrant_id.startswith("cp-warrant:")


@pytest.mark.parametrize("code", ["BA76001", "BA76002", "ba76001"])
def test_a_warrant_on_a_bail_act_offence_is_fta(code: str) -> None:
    assert single(result("4576"), code=code).data.kind == "fta"


@pytest.mark.parametrize(
    "words",
    [
        "Defendant failed to appear",
        "The defendant FAILED TO ATTEND court",
        "failure to surrender",
        "Warrant issued as defendant fails to appear",
    ],
)
def test_a_warrant_whose_text_says_failed_to_appear_is_fta(words: str) -> None:
    assert single(result("4575", text=words)).data.kind == "fta"
    assert single(result("4575", label=words)).data.kind == "fta"


def test_a_warrant_on_another_offence_is_arrest() -> None:
    assert (
        single(result("4577", text="Warrant for arrest, backed for bail"), code="BA76005").data.kind
        == "arrest"
    )


def test_warrant_withdrawn() -> None:
    e = single(result("2509"))
    assert e.type == "warrant.withdrawn"
    assert e.data.warrant_id.startswith("cp-warrant:")


@pytest.mark.parametrize(
    ("cjs", "decision"),
    [
        ("4027", "conditional_bail"),
        ("4047", "unconditional_bail"),
        ("4028", "custody"),
        ("4531", "custody"),
        ("4541", "custody"),
        ("4572", "conditional_bail"),
        ("4574", "conditional_bail"),
    ],
)
def test_bail_decisions(cjs: str, decision: str) -> None:
    e = single(result(cjs))
    assert e.type == "court.bail_decision"
    assert data(e) == {"court_code": "B01LY00", "decision": decision}


@pytest.mark.parametrize("cjs", ["1002", "1024", "1081", "1501", "1507"])
def test_custodial_sentences(cjs: str) -> None:
    e = single(
        result(
            cjs,
            "FINAL",
            prompts=[{"label": "Total custodial period", "value": "6 Months", "type": "DURATION"}],
        )
    )
    assert e.type == "court.sentence"
    assert data(e) == {"court_code": "B01LY00", "disposal": "custody", "custody_days": 180}


def test_custodial_sentence_without_duration() -> None:
    assert data(single(result("1002", "FINAL"))) == {
        "court_code": "B01LY00",
        "disposal": "custody",
        "custody_days": None,
    }


def test_suspended_sentence_is_not_custody() -> None:
    e = single(result("1115", "FINAL", prompts=[{"label": "Period of imprisonment", "value": "6 Months"}]))
    assert data(e) == {"court_code": "B01LY00", "disposal": "suspended", "custody_days": None}


@pytest.mark.parametrize(("convicted", "outcome"), [(True, "conviction"), (False, "other"), (None, "other")])
def test_other_final_results_are_outcomes(convicted: bool | None, outcome: str) -> None:
    e = single(result("2006", "FINAL", convicted=convicted))
    assert e.type == "court.outcome"
    assert data(e) == {"court_code": "B01LY00", "outcome": outcome, "case_ended": True}


def test_a_final_result_without_a_code_is_an_outcome() -> None:
    assert single(result(None, "final")).type == "court.outcome"


@pytest.mark.parametrize("category", ["INTERMEDIARY", "ANCILLARY", None, "", 7])
def test_other_results_are_not_mapped(category: Any) -> None:
    t = run(hearing(defendant(offence(result("1234", category)))))
    assert (t.events, t.ignored, t.problems) == ([], ["cp:result-not-mapped"], [])


@pytest.mark.parametrize("cjs", ["4585", "4586"])
def test_warrants_for_a_parent_or_witness_are_not_the_defendants(cjs: str) -> None:
    t = run(hearing(defendant(offence(result(cjs, "FINAL")))))
    assert (t.events, t.ignored) == ([], ["cp:result-not-mapped"])


# --- custody_days -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "days"),
    [
        ("6 Months", 180),
        ("2 Years", 730),
        ("18 Weeks", 126),
        ("14 Days", 14),
        ("1 Year 6 Months", 545),
        ("1 year and 2 weeks", 379),
        ("24 months", 720),
        ("3M", 90),
        ("no time", None),
        ("", None),
        ("99999 Years", None),
    ],
)
def test_duration_days(value: str, days: int | None) -> None:
    assert cp.duration_days(value) == days


@pytest.mark.parametrize(
    ("prompts", "days"),
    [
        ([{"label": "Period of imprisonment", "value": "2 Years"}], 730),
        (
            [
                {"label": "Custodial period", "value": "18 Weeks"},
                {"label": "Total custodial period", "value": "3 Years"},
            ],
            1095,
        ),
        (
            [
                {"label": "Licence period", "value": "2 Years"},
                {"label": "Period of detention", "value": "4 Months"},
            ],
            120,
        ),
        ([{"label": "Suspended for", "value": "2 Years"}], None),
        ([{"label": "Something", "value": "14 Days", "type": "DURATION"}], 14),
        ([{"label": "Number of days to abstain from alcohol", "value": "120", "type": "INT"}], None),
        ([{"label": "Term", "value": 3}, "junk", None], None),
        ("not a list", None),
    ],
)
def test_custody_days_from_prompts(prompts: Any, days: int | None) -> None:
    assert cp.custody_days(prompts) == days


def test_long_custody_from_a_real_looking_result() -> None:
    e = single(
        result(
            "1002",
            "FINAL",
            prompts=[
                {"label": "Period of imprisonment", "value": "2 Years 6 Months", "type": "DURATION"},
                {"label": "Concurrent", "value": "true", "type": "BOOLEAN"},
            ],
        )
    )
    assert e.data.custody_days == 910


# --- deduplication, ids ------------------------------------------------------------------------------


def test_the_same_remand_on_three_offences_is_one_bail_decision() -> None:
    t = run(
        hearing(
            defendant(
                offence(result("4028", rid="r1"), oid="o1"),
                offence(result("4028", rid="r2"), oid="o2"),
                offence(result("4028", rid="r3"), oid="o3"),
            )
        )
    )
    assert [e.type for e in t.events] == ["court.bail_decision"]
    assert t.ignored == ["cp:duplicate-result", "cp:duplicate-result"]


def test_one_warrant_over_several_offences_is_one_warrant_and_fta_wins() -> None:
    t = run(
        hearing(
            defendant(
                offence(result("4576", rid="r1"), oid="o1", code="TH68010"),
                offence(result("4576", rid="r2"), oid="o2", code="BA76001"),
            )
        )
    )
    assert len(t.events) == 1
    assert (t.events[0].type, t.events[0].data.kind) == ("warrant.issued", "fta")


def test_different_results_for_one_defendant_are_different_events() -> None:
    t = run(
        hearing(
            defendant(
                offence(result("4028"), result("2006", "FINAL", convicted=True, rid="r2")),
                offence(result("2006", "FINAL", convicted=False, rid="r3"), oid="o2"),
            )
        )
    )
    assert [(e.type, getattr(e.data, "outcome", None)) for e in t.events] == [
        ("court.bail_decision", None),
        ("court.outcome", "conviction"),
        ("court.outcome", "other"),
    ]


def test_the_same_result_for_two_defendants_is_two_events() -> None:
    t = run(
        hearing(
            defendant(offence(result("4576")), did="d1"),
            defendant(offence(result("4576")), did="d2", pnc=PNC2),
        )
    )
    assert len(t.events) == 2
    assert t.events[0].data.warrant_id != t.events[1].data.warrant_id
    assert {e.person.pnc for e in t.events} == {PNC, PNC2}


def test_defendants_sharing_an_id_are_still_told_apart_by_identifiers() -> None:
    t = run(
        hearing(
            defendant(offence(result("4028")), did="same"),
            defendant(offence(result("4028")), did="same", pnc=PNC2),
        )
    )
    assert len(t.events) == 2 and t.events[0].id != t.events[1].id


def test_ids_are_deterministic_across_replays_and_offence_order() -> None:
    a = run(
        hearing(defendant(offence(result("4028"), oid="o1"), offence(result("4576", rid="r2"), oid="o2")))
    )
    b = run(
        hearing(defendant(offence(result("4028"), oid="o1"), offence(result("4576", rid="r2"), oid="o2")))
    )
    c = run(
        hearing(defendant(offence(result("4576", rid="r2"), oid="o2"), offence(result("4028"), oid="o1")))
    )
    assert [e.id for e in a.events] == [e.id for e in b.events]
    assert sorted(e.id for e in a.events) == sorted(e.id for e in c.events)
    assert {e.data.model_dump_json() for e in a.events} == {e.data.model_dump_json() for e in c.events}
    assert all(e.id.startswith("cp:") for e in a.events)


def test_ids_differ_between_hearings() -> None:
    a = run(hearing(defendant(offence(result("4576")))))
    b = run(hearing(defendant(offence(result("4576"))), hid="another-hearing"))
    assert a.events[0].id != b.events[0].id
    assert a.events[0].data.warrant_id != b.events[0].data.warrant_id


# --- T, court, source --------------------------------------------------------------------------------


def test_t_is_the_sitting_day() -> None:
    e = single(result("4028"))
    assert e.occurred_at == datetime(2026, 2, 13, 10, 30, tzinfo=UTC)
    assert e.source == "common-platform"


def test_t_is_the_earliest_sitting_day_not_cancelled() -> None:
    days = [
        {"sittingDay": "2026-02-14T10:00:00Z"},
        {"sittingDay": "2026-02-12T10:00:00Z", "isCancelled": True},
        {"sittingDay": "2026-02-13T09:00:00Z"},
    ]
    t = run(hearing(defendant(offence(result("4028"))), days=days))
    assert t.events[0].occurred_at == datetime(2026, 2, 13, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("days", [[], None, "x", [{"sittingDay": None}], [{}]])
def test_without_a_sitting_day_t_is_the_ordered_date_at_london_midnight(days: Any) -> None:
    payload = hearing(defendant(offence(result("4028", ordered="2026-06-01"))))
    payload["hearing"]["hearingDays"] = days
    e = run(payload).events[0]
    assert e.occurred_at.isoformat() == "2026-06-01T00:00:00+01:00"  # British Summer Time


def test_a_naive_or_bad_sitting_day_is_a_problem_and_the_ordered_date_is_used() -> None:
    t = run(
        hearing(
            defendant(offence(result("4028", ordered="2026-01-10"))),
            days=[{"sittingDay": "2026-01-09T10:00:00"}, {"sittingDay": "soon"}],
        )
    )
    assert t.events[0].occurred_at.isoformat() == "2026-01-10T00:00:00+00:00"
    assert [p["field"] for p in t.problems] == [
        "hearing.hearingDays[0].sittingDay",
        "hearing.hearingDays[1].sittingDay",
    ]
    assert "no offset" in t.problems[0]["problem"]


def test_a_result_with_no_date_at_all_is_a_problem() -> None:
    t = run(hearing(defendant(offence(result("4028", ordered=None))), days=[]))
    assert t.events == []
    assert t.ignored == ["cp:no-date"]
    assert t.problems == [
        {
            "field": "hearing.prosecutionCases[0].defendants[0].offences[0].judicialResults[0].orderedDate",
            "problem": "no sitting day and no ordered date: the result has no date",
        }
    ]


@pytest.mark.parametrize("court", [None, "", 123, "X" * 40])
def test_without_a_court_code_court_events_are_not_produced(court: Any) -> None:
    t = run(hearing(defendant(offence(result("4028"), result("2509", rid="r2"))), court=court))
    assert [e.type for e in t.events] == ["warrant.withdrawn"]
    assert t.ignored == ["cp:no-court-code"]
    assert t.problems[0]["field"] == "hearing.courtCentre.code"


# --- people ---------------------------------------------------------------------------------------------


def test_person_from_pnc_cro_names_and_date_of_birth() -> None:
    t = run(hearing(defendant(offence(result("4028")), pnc="04/12345D", cro="65656/91H")))
    p = t.events[0].person
    assert (p.pnc, p.cro, p.given_name, p.family_name, p.date_of_birth) == (
        PNC,
        CRO,
        "Sam",
        "Example",
        date(1990, 5, 1),
    )


def test_pnc_without_its_slash_is_normalised() -> None:
    assert run(hearing(defendant(offence(result("4028")), pnc="20040012345D"))).events[0].person.pnc == PNC


def test_cro_alone_identifies() -> None:
    e = run(hearing(defendant(offence(result("4028")), pnc=None, cro=CRO))).events[0]
    assert (e.person.pnc, e.person.cro) == (None, CRO)


def test_an_invalid_pnc_names_the_field_and_the_rest_of_the_hearing_translates() -> None:
    t = run(
        hearing(
            defendant(offence(result("4028")), did="d1", pnc="pnc number1"),
            defendant(offence(result("4028")), did="d2", pnc=PNC2),
        )
    )
    assert [e.person.pnc for e in t.events] == [PNC2]
    assert t.ignored == ["cp:no-identifier"]
    assert t.problems[0]["field"] == "hearing.prosecutionCases[0].defendants[0].pncId"
    assert "PNC" in t.problems[0]["problem"]
    assert "pnc number1" not in t.problems[0]["problem"]


def test_a_wrong_check_character_is_invalid() -> None:
    t = run(hearing(defendant(offence(result("4028")), pnc="2004/0012345E")))
    assert t.events == [] and "check character" in t.problems[0]["problem"]


def test_an_invalid_cro_next_to_a_valid_pnc_is_a_problem_but_the_defendant_translates() -> None:
    t = run(hearing(defendant(offence(result("4028")), cro="12345ABCDEF")))
    assert len(t.events) == 1 and t.events[0].person.cro is None
    assert t.problems == [
        {"field": "hearing.prosecutionCases[0].defendants[0].croNumber", "problem": t.problems[0]["problem"]}
    ]
    assert "12345ABCDEF" not in t.problems[0]["problem"]


@pytest.mark.parametrize("pnc", [None, "", "   "])
def test_a_defendant_without_identifiers_is_a_problem(pnc: Any) -> None:
    t = run(hearing(defendant(offence(result("4028")), pnc=pnc)))
    assert t.events == [] and t.ignored == ["cp:no-identifier"]
    assert t.problems[0]["field"] == "hearing.prosecutionCases[0].defendants[0].pncId"
    assert "cannot be identified" in t.problems[0]["problem"]


def test_a_non_string_identifier_is_a_problem() -> None:
    t = run(hearing(defendant(offence(result("4028")), pnc=20040012345)))
    assert t.problems[0] == {
        "field": "hearing.prosecutionCases[0].defendants[0].pncId",
        "problem": "must be a string",
    }


def test_a_bad_date_of_birth_is_dropped_with_a_problem() -> None:
    t = run(hearing(defendant(offence(result("4028")), dob="29/06/1982")))
    assert t.events[0].person.date_of_birth is None
    assert (
        t.problems[0]["field"]
        == "hearing.prosecutionCases[0].defendants[0].personDefendant.personDetails.dateOfBirth"
    )
    assert "1982" not in t.problems[0]["problem"]


def test_long_and_odd_names_do_not_block_the_event() -> None:
    t = run(hearing(defendant(offence(result("4028")), first="A" * 300, last=42)))
    p = t.events[0].person
    assert (len(p.given_name or ""), p.family_name) == (100, None)


def test_a_legal_entity_defendant_has_no_identifiers() -> None:
    d = defendant(offence(result("4028")), pnc=None)
    del d["personDefendant"]
    d["legalEntityDefendant"] = {"organisation": {"name": "ACME Ltd"}}
    assert run(hearing(d)).ignored == ["cp:no-identifier"]


# --- shapes -----------------------------------------------------------------------------------------


def test_bare_and_wrapped_hearings_give_the_same_events() -> None:
    d = defendant(offence(result("4576"), result("4028", rid="r2")))
    wrapped = run(hearing(copy.deepcopy(d)))
    bare = run(hearing(copy.deepcopy(d), wrapped=False))
    assert wrapped.events == bare.events
    bad = run(hearing(defendant(offence(result("4028")), pnc="x"), wrapped=False))
    assert bad.problems[0]["field"] == "prosecutionCases[0].defendants[0].pncId"


def test_results_made_at_an_earlier_hearing_are_not_reported_again() -> None:
    t = run(
        hearing(
            defendant(
                offence(
                    result("4028", orderedHearingId="earlier"),
                    result("4576", rid="r2", orderedHearingId=HEARING_ID),
                )
            )
        )
    )
    assert [e.type for e in t.events] == ["warrant.issued"]
    assert t.ignored == ["cp:result-from-earlier-hearing"]


def test_deleted_results_are_ignored() -> None:
    t = run(hearing(defendant(offence(result("4028", isDeleted=True)))))
    assert (t.events, t.ignored) == ([], ["cp:result-deleted"])


def test_defendant_level_results() -> None:
    d = defendant(offence(code="BA76001"), defendantCaseJudicialResults=[result("4576")])
    e = run(hearing(d)).events[0]
    assert (e.type, e.data.kind) == ("warrant.issued", "fta")


def test_hearing_level_defendant_results_match_on_master_defendant_id() -> None:
    payload = hearing(defendant(offence(), did="d1"))
    payload["hearing"]["defendantJudicialResults"] = [
        {"masterDefendantId": "d1", "judicialResult": result("4047")},
        {"masterDefendantId": "nobody", "judicialResult": result("4047")},
        {"masterDefendantId": "d1", "judicialResult": "junk"},
        "junk",
    ]
    t = run(payload)
    assert [data(e)["decision"] for e in t.events] == ["unconditional_bail"]
    assert t.ignored == ["cp:result-no-defendant"]


def test_a_hearing_without_cases_is_accepted_and_ignored() -> None:
    t = run({"hearing": {"id": "h", "courtCentre": {"code": "B01LY00"}, "courtApplications": []}})
    assert (t.events, t.ignored) == ([], ["cp:no-prosecution-cases"])


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"hearing": "x"}, "hearing"),
        ({"hearing": []}, "hearing"),
        ({"hearing": {"prosecutionCases": {"a": 1}}}, "hearing.prosecutionCases"),
        ({"prosecutionCases": "x", "courtCentre": {}}, "prosecutionCases"),
    ],
)
def test_a_hearing_that_is_not_one_is_rejected(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(InputRejected) as exc:
        translate(payload, R)
    assert exc.value.problems[0]["field"] == field


def test_odd_shapes_inside_a_hearing_are_problems_or_skipped() -> None:
    payload = hearing(defendant(offence(result("4028"))))
    cases = payload["hearing"]["prosecutionCases"]
    cases.extend(["junk", {"defendants": "junk"}, {"defendants": [7, {"offences": "x", "pncId": PNC2}]}, {}])
    cases[0]["defendants"][0]["offences"].extend([None, {"judicialResults": [None, 3, {"cjsCode": []}]}])
    t = run(payload)
    assert [e.type for e in t.events] == ["court.bail_decision"]
    assert [p["field"] for p in t.problems] == [
        "hearing.prosecutionCases[1]",
        "hearing.prosecutionCases[2].defendants",
        "hearing.prosecutionCases[3].defendants[0]",
    ]


def test_no_hearing_id_still_gives_deterministic_ids() -> None:
    a = run(hearing(defendant(offence(result("4576"))), hid=None))
    b = run(hearing(defendant(offence(result("4576"))), hid=None))
    assert a.events[0].id == b.events[0].id


def test_too_many_events_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cp, "MAX_EVENTS", 2)
    offences = [
        offence(result("2006", "FINAL", convicted=bool(i % 2), rid=f"r{i}"), oid=f"o{i}") for i in range(2)
    ]
    run(hearing(defendant(*offences)))
    with pytest.raises(InputRejected, match="too large"):
        run(hearing(defendant(*offences, offence(result("4028"), oid="o9"))))


# --- what an officer can look up: the case, the hearing, the court, the court's words -------------------


def test_every_court_event_carries_the_case_the_hearing_and_the_court() -> None:
    for r in (result("4576"), result("4028"), result("1002", "FINAL"), result("1115", "FINAL"),
              result(None, "FINAL", convicted=True)):
        e = single(r)
        assert e.data.case_urn == "01AA0000000"
        assert e.data.hearing_date == date(2026, 2, 13)  # the London date of the sitting day
        assert e.data.court_name == "Somewhere Magistrates' Court"
        assert e.data.result_text == "A result"  # the label, without a resultText


def test_the_result_text_is_preferred_to_the_label_and_is_cleaned_and_bounded() -> None:
    e = single(result("4028", text="RI - Remanded in custody\nuntil\x00 the next hearing\u202e" + "x" * 900))
    assert e.data.result_text.startswith("RI - Remanded in custody until the next hearing")
    assert len(e.data.result_text) <= 500 and e.data.result_text.isprintable()


def test_the_prosecution_authority_reference_stands_in_for_a_missing_urn_and_a_long_one_is_left_out() -> None:
    h = hearing(defendant(offence(result("4028"))))
    h["hearing"]["prosecutionCases"][0]["prosecutionCaseIdentifier"] = {"prosecutionAuthorityReference": "PAR-1"}
    assert run(h).events[0].data.case_urn == "PAR-1"
    h["hearing"]["prosecutionCases"][0]["prosecutionCaseIdentifier"] = {"caseURN": "U" * 41}
    assert run(h).events[0].data.case_urn is None
    h["hearing"]["prosecutionCases"][0]["prosecutionCaseIdentifier"] = "not an object"
    assert run(h).events[0].data.case_urn is None
    h["hearing"]["courtCentre"]["name"] = "A\r\nBcc: x@y.z"
    assert run(h).events[0].data.court_name == "A Bcc: x@y.z"  # one line: never a header, only a body


def test_the_case_facts_change_no_id() -> None:
    a = run(hearing(defendant(offence(result("4028", text="one wording")))))
    b = run(hearing(defendant(offence(result("4028", text="another wording")))))
    assert [e.id for e in a.events] == [e.id for e in b.events]
