"""The rule book, rule by rule, with the dates that catch mistakes: bank holidays, DST, birthdays."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.rulebook_fixtures import (
    ALEX,
    LEEDS_COORD,
    LEEDS_PPO,
    LEEDS_PROBATION,
    LEEDS_WARRANTS,
    NOBODY,
    PAT,
    SAM,
    STOKE_COORD,
    STOKE_PPO,
    STOKE_YOT,
    event,
    make_ledger,
    only,
    utc,
)

R = utc("2026-02-10T14:05:00Z")


# --- A1 reception ------------------------------------------------------------------------------------------

def test_a1_reception_tells_ppo_and_probation_immediately():
    ledger = make_ledger()
    d = ledger.on_event(event("prison.reception", ALEX, "2026-02-10T14:00:00Z", prison_id="LEI", reason="new"), R)
    o = only(d, "A1")
    assert o.recipients == [LEEDS_PPO, LEEDS_PROBATION]
    assert o.send_at == R and o.notify_by == R + timedelta(minutes=15)
    assert o.source_paragraph == "001 §7.5" and o.status == "pending"
    assert o.person.pnc == "2006/0777001G" and o.person.noms == "G1234HJ"


@pytest.mark.parametrize("reason", ["new", "remand", "recall", "transfer_in"])
def test_a1_every_new_period_in_custody(reason):
    d = make_ledger().on_event(event("prison.reception", ALEX, "2026-02-10T14:00:00Z", prison_id="LEI",
                                     reason=reason), R)
    only(d, "A1")


@pytest.mark.parametrize("reason", ["return_from_court", "rotl_return"])
def test_a1_not_for_returns(reason):
    d = make_ledger().on_event(event("prison.reception", ALEX, "2026-02-10T14:00:00Z", prison_id="LEI",
                                     reason=reason), R)
    assert d.raised == []


def test_same_reception_from_two_feeds_is_one_obligation():
    ledger = make_ledger()
    first = ledger.on_event(event("prison.reception", {"noms": "G1234HJ"}, "2026-02-10T14:00:00Z",
                                  prison_id="LEI", reason="new"), R)
    second = ledger.on_event(event("prison.reception", {"noms": "G1234HJ"}, "2026-02-10T14:00:30+00:00",
                                   prison_id="LEI", reason="recall"), R + timedelta(minutes=45))
    assert len(first.raised) == 1 and second.raised == []
    assert second.duplicates == [first.raised[0].obligation_id]


def test_matched_by_any_identifier():
    ledger = make_ledger()
    for person in ({"crn": "L112233"}, {"noms": "G1234HJ"}, {"pnc": "06/777001G"}):
        d = ledger.on_event(event("prison.reception", person, "2026-02-10T14:00:00Z", prison_id="LEI",
                                  reason="new"), R)
        assert d.raised or d.duplicates


def test_youth_routing_day_before_and_day_of_18th_birthday():
    ledger = make_ledger()
    before = ledger.on_event(event("prison.reception", SAM, "2028-01-19T12:00:00Z", prison_id="WYI",
                                   reason="new"), utc("2028-01-19T12:05:00Z"))
    assert only(before, "A1").recipients == [STOKE_PPO, STOKE_YOT]
    on_day = ledger.on_event(event("prison.reception", SAM, "2028-01-20T00:30:00+00:00", prison_id="LEI",
                                   reason="new"), utc("2028-01-20T00:35:00Z"))
    assert only(on_day, "A1").recipients == [STOKE_PPO, "stoke.iom@justice.gov.uk"]


def test_youth_age_is_reckoned_on_the_london_date():
    # 23:30 UTC on 19 July is 00:30 BST on 20 July: a person born 20 July 2010 is 18 that London day.
    csv = ("pnc,cro,noms,crn,given_name,family_name,date_of_birth,home_bcu,strand,selected_on,reason,deselected_on\n"
           ",,A1111AA,,Kit,Summer,2010-07-20,21-ST,,2026-01-01,,\n")
    ledger = make_ledger(csv)
    d = ledger.on_event(event("prison.reception", {"noms": "A1111AA"}, "2028-07-19T23:30:00Z", prison_id="LEI",
                              reason="new"), utc("2028-07-19T23:35:00Z"))
    assert only(d, "A1").recipients == [STOKE_PPO, "stoke.iom@justice.gov.uk"]


# --- the register at the event's time -------------------------------------------------------------------------

def test_not_on_register_raises_nothing():
    d = make_ledger().on_event(event("prison.reception", NOBODY, "2026-02-10T14:00:00Z", prison_id="LEI",
                                     reason="new"), R)
    assert d.raised == [] and d.ignored == "not-on-register"


def test_deselected_before_the_event_raises_nothing():
    d = make_ledger().on_event(event("prison.reception", PAT, "2026-03-01T09:00:00Z", prison_id="LEI",
                                     reason="new"), utc("2026-03-01T10:00:00Z"))
    assert d.raised == []


def test_event_before_deselection_still_counts_even_if_late():
    d = make_ledger().on_event(event("prison.reception", PAT, "2025-12-30T09:00:00Z", prison_id="LEI",
                                     reason="new"), utc("2026-03-01T10:00:00Z"))
    only(d, "A1")


def test_selected_after_the_event_does_not_trigger_retroactively():
    ledger = make_ledger()
    ledger.on_event(event("register.selected", NOBODY, "2026-03-01T09:00:00Z", home_bcu="13-LD"),
                    utc("2026-03-01T09:00:00Z"))
    late = ledger.on_event(event("prison.reception", NOBODY, "2026-02-20T09:00:00Z", prison_id="LEI",
                                 reason="new"), utc("2026-03-02T10:00:00Z"))
    assert late.raised == []
    now = ledger.on_event(event("prison.reception", NOBODY, "2026-03-02T09:00:00Z", prison_id="LEI",
                                reason="new"), utc("2026-03-02T10:00:00Z"))
    only(now, "A1")


# --- A2 / A3 warrants ---------------------------------------------------------------------------------------

def test_a2_fta_on_friday_due_end_of_monday_grade_a():
    d = make_ledger().on_event(event("warrant.issued", SAM, "2026-02-13T15:30:00+00:00", warrant_id="W-1",
                                     court_code="B21AA00", kind="fta", grade_given="B"), utc("2026-02-13T16:00:00Z"))
    o = only(d, "A2")
    assert o.recipients == [STOKE_PPO, "warrants@staffordshire.police.uk"]
    assert o.notify_by == utc("2026-02-16T23:59:59Z") and o.grade == "A"
    assert d.graded_warrants[0]["grade"] == "A" and d.graded_warrants[0]["grade_given"] == "B"


def test_a2_over_easter_skips_good_friday_and_easter_monday():
    d = make_ledger().on_event(event("warrant.issued", ALEX, "2026-04-02T11:00:00+01:00", warrant_id="W-2",
                                     court_code="B13AA00", kind="fta"), utc("2026-04-02T10:30:00Z"))
    # Thursday 2 April -> Tuesday 7 April, end of day in BST.
    assert only(d, "A2").notify_by == utc("2026-04-07T22:59:59Z")


def test_a2_over_christmas_uses_substitute_boxing_day():
    d = make_ledger().on_event(event("warrant.issued", ALEX, "2026-12-24T10:00:00Z", warrant_id="W-3",
                                     court_code="B13AA00", kind="fta"), utc("2026-12-24T10:05:00Z"))
    # 25 Fri, 26 Sat, 27 Sun, 28 Mon (substitute Boxing Day) -> Tuesday 29 December.
    assert only(d, "A2").notify_by == utc("2026-12-29T23:59:59Z")


@pytest.mark.parametrize("kind", ["breach", "recall", "arrest"])
def test_a3_other_warrants_are_category_a(kind):
    d = make_ledger().on_event(event("warrant.issued", ALEX, "2026-02-10T10:00:00Z", warrant_id=f"W-{kind}",
                                     court_code="B13AA00", kind=kind, grade_given="C"), R)
    o = only(d, "A3")
    assert o.grade == "A" and o.recipients == [LEEDS_PPO, LEEDS_WARRANTS]
    assert o.notify_by == utc("2026-02-11T23:59:59Z")


# --- A4 release in 28 days ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("release", "send_at"), [
    ("2026-07-15", "2026-06-17T08:00:00Z"),  # plain Wednesday, BST
    ("2026-07-18", "2026-06-19T08:00:00Z"),  # 28 days before is a Saturday -> Friday
    ("2027-04-26", "2027-03-25T09:00:00Z"),  # lands on Easter Monday 2027 -> Thursday before Good Friday (GMT)
    ("2026-04-27", "2026-03-30T08:00:00Z"),  # the Monday after clocks go forward
    ("2026-11-23", "2026-10-26T09:00:00Z"),  # the Monday after clocks go back
    ("2027-01-22", "2026-12-24T09:00:00Z"),  # 25 Dec is a holiday -> 24 Dec
])
def test_a4_last_working_day_at_least_28_days_before(release, send_at):
    d = make_ledger().on_event(event("prison.release_date_set", ALEX, "2026-02-10T10:00:00Z", prison_id="LEI",
                                     release_date=release, kind="crd"), R)
    o = only(d, "A4")
    assert o.send_at == utc(send_at) and o.notify_by == utc(send_at) + timedelta(minutes=15)
    assert o.recipients == [LEEDS_PPO, LEEDS_PROBATION]


def test_a4_already_past_is_sent_at_once():
    d = make_ledger().on_event(event("prison.release_date_set", ALEX, "2026-02-10T10:00:00Z", prison_id="LEI",
                                     release_date="2026-02-20", kind="confirmed"), R)
    o = only(d, "A4")
    assert o.send_at == R and o.notify_by == R + timedelta(minutes=15)


def test_a4_date_changed_withdrawn_and_restored():
    ledger = make_ledger()
    first = only(ledger.on_event(event("prison.release_date_set", ALEX, "2026-02-10T10:00:00Z", prison_id="LEI",
                                       release_date="2026-07-15", kind="crd"), R), "A4")
    moved = ledger.on_event(event("prison.release_date_set", ALEX, "2026-02-11T10:00:00Z", prison_id="LEI",
                                  release_date="2026-08-03", kind="crd"), R + timedelta(days=1))
    second = only(moved, "A4")
    assert [o.obligation_id for o in moved.cancelled] == [first.obligation_id]
    assert ledger.get(first.obligation_id).status == "cancelled"
    assert second.send_at == utc("2026-07-06T08:00:00Z")
    withdrawn = ledger.on_event(event("prison.release_date_set", ALEX, "2026-02-12T10:00:00Z", prison_id="LEI",
                                      release_date=None, kind="crd"), R + timedelta(days=2))
    assert withdrawn.raised == [] and [o.obligation_id for o in withdrawn.cancelled] == [second.obligation_id]
    restored = ledger.on_event(event("prison.release_date_set", ALEX, "2026-02-13T10:00:00Z", prison_id="LEI",
                                     release_date="2026-07-15", kind="confirmed"), R + timedelta(days=3))
    again = only(restored, "A4")
    assert again.obligation_id == first.obligation_id and again.status == "pending"
    assert len(ledger.pending()) >= 1 and ledger.get(second.obligation_id).status == "cancelled"


def test_a4_same_date_from_two_kinds_is_one_notice():
    ledger = make_ledger()
    ledger.on_event(event("prison.release_date_set", ALEX, "2026-02-10T10:00:00Z", prison_id="LEI",
                          release_date="2026-07-15", kind="crd"), R)
    d = ledger.on_event(event("prison.release_date_set", ALEX, "2026-02-11T10:00:00Z", prison_id="LEI",
                              release_date="2026-07-15", kind="confirmed"), R + timedelta(days=1))
    assert d.raised == [] and d.cancelled == [] and len(d.duplicates) == 1


def test_a4_out_of_order_older_date_does_not_replace_newer():
    ledger = make_ledger()
    newer = only(ledger.on_event(event("prison.release_date_set", ALEX, "2026-02-12T10:00:00Z", prison_id="LEI",
                                       release_date="2026-08-03", kind="crd"), R), "A4")
    older = ledger.on_event(event("prison.release_date_set", ALEX, "2026-02-11T10:00:00Z", prison_id="LEI",
                                  release_date="2026-07-15", kind="crd"), R + timedelta(minutes=5))
    assert older.raised == [] and older.cancelled == []
    assert ledger.get(newer.obligation_id).status == "pending"


def test_a6_hdc_date_also_immediate():
    d = make_ledger().on_event(event("prison.release_date_set", ALEX, "2026-02-10T10:00:00Z", prison_id="LEI",
                                     release_date="2026-06-01", kind="hdc"), R)
    assert only(d, "A6").send_at == R
    assert only(d, "A4").send_at == utc("2026-05-01T08:00:00Z")  # 4 May is a bank holiday; 28 days -> 4 May


# --- A5, A7, A8 -------------------------------------------------------------------------------------------------

def test_a5_hdc_eligible_action_due_end_of_decision_day():
    d = make_ledger().on_event(event("prison.hdc_eligible", ALEX, "2026-02-10T10:00:00Z", prison_id="LEI",
                                     eligibility_date="2026-03-01", decision_due="2026-02-20"), R)
    o = only(d, "A5")
    assert o.recipients == [LEEDS_PPO] and o.action_due == utc("2026-02-20T23:59:59Z")


def test_a7_release_and_b4_risk_assessment():
    d = make_ledger().on_event(event("prison.release", ALEX, "2026-02-10T10:00:00Z", prison_id="LEI",
                                     reason="licence"), R)
    assert only(d, "A7").recipients == [LEEDS_PPO]
    b4 = only(d, "B4")
    assert b4.recipients == [LEEDS_PROBATION] and b4.action_due == utc("2026-02-17T23:59:59Z")


@pytest.mark.parametrize("reason", ["to_court", "transfer", "to_hospital"])
def test_a7_not_for_releases_that_are_not_into_the_community(reason):
    d = make_ledger().on_event(event("prison.release", ALEX, "2026-02-10T10:00:00Z", prison_id="LEI",
                                     reason=reason), R)
    assert d.raised == []


def test_a8_rotl_scheduled_notify_by_start():
    d = make_ledger().on_event(event("prison.rotl_scheduled", ALEX, "2026-02-10T10:00:00Z", prison_id="LEI",
                                     starts_at="2026-02-12T08:00:00Z"), R)
    o = only(d, "A8")
    assert o.send_at == R and o.notify_by == utc("2026-02-12T08:00:00Z")


def test_a8_rotl_release_is_late_by_construction_and_same_fact_as_schedule():
    ledger = make_ledger()
    d = ledger.on_event(event("prison.release", ALEX, "2026-02-12T08:00:00Z", prison_id="LEI", reason="rotl"),
                        utc("2026-02-12T08:45:00Z"))
    o = only(d, "A8")
    assert o.notify_by == utc("2026-02-12T08:00:00Z") < o.send_at
    ledger.mark_sent(o, o.send_at)
    assert o.late and o.status == "breached"


# --- B rules -------------------------------------------------------------------------------------------------------

def test_b1_bail_decision_within_24_hours():
    d = make_ledger().on_event(event("court.bail_decision", ALEX, "2026-02-10T11:00:00Z", court_code="B13AA00",
                                     decision="conditional_bail"), R)
    o = only(d, "B1")
    assert o.notify_by == utc("2026-02-11T11:00:00Z") and o.recipients == [LEEDS_PPO, LEEDS_PROBATION]


def test_b2_outcome_by_end_of_day_and_case_tracking_when_case_ended():
    d = make_ledger().on_event(event("court.outcome", ALEX, "2026-03-27T11:00:00Z", court_code="B13AA00",
                                     outcome="acquittal", case_ended=True), utc("2026-03-27T12:00:00Z"))
    o = only(d, "B2")
    assert o.notify_by == utc("2026-03-27T23:59:59Z")
    assert o.action_due == utc("2026-04-03T22:59:59Z")  # T + 7 days, end of day in BST
    assert not [x for x in d.raised if x.rule == "B8"]


def test_b8_youth_conviction_needs_pre_sentence_report():
    d = make_ledger().on_event(event("court.outcome", SAM, "2026-12-21T11:00:00Z", court_code="B21AA00",
                                     outcome="conviction"), utc("2026-12-21T12:00:00Z"))
    o = only(d, "B8")
    assert o.recipients == [STOKE_YOT]
    # 10 working days after Mon 21 Dec: 22,23,24,29,30,31 Dec, 4,5,6,7 Jan (1 Jan and 25/28 Dec are holidays).
    assert o.action_due == utc("2027-01-07T23:59:59Z")
    assert only(d, "B2").recipients == [STOKE_PPO, STOKE_YOT]


def test_b3_sentence_and_c3_long_custody():
    d = make_ledger().on_event(event("court.sentence", ALEX, "2026-02-10T11:00:00Z", court_code="C13AA00",
                                     disposal="custody", custody_days=731), R)
    assert only(d, "B3").action_due == utc("2026-02-15T23:59:59Z")
    assert only(d, "B3").recipients == [LEEDS_PROBATION]
    assert only(d, "C3").recipients == [LEEDS_COORD]
    d2 = make_ledger().on_event(event("court.sentence", ALEX, "2026-02-10T11:00:00Z", court_code="C13AA00",
                                      disposal="custody", custody_days=730), R)
    assert not [x for x in d2.raised if x.rule == "C3"]


def test_b4_community_order():
    d = make_ledger().on_event(event("court.sentence", ALEX, "2026-02-10T11:00:00Z", court_code="B13AA00",
                                     disposal="community"), R)
    assert only(d, "B4").action_due == utc("2026-02-17T23:59:59Z")


def test_b5_breach_and_b6_transfer_and_c7_high_harm():
    ledger = make_ledger()
    b5 = only(ledger.on_event(event("breach.reported", ALEX, "2026-02-10T11:00:00Z", order="licence"), R), "B5")
    assert b5.action_due == utc("2026-02-17T23:59:59Z") and b5.recipients == [LEEDS_PPO, LEEDS_PROBATION]
    b6 = only(ledger.on_event(event("prison.transfer", ALEX, "2026-02-10T11:00:00Z", from_prison_id="LEI",
                                    to_prison_id="WYI"), R), "B6")
    assert b6.facts["prison_id"] == "WYI"
    c7 = only(ledger.on_event(event("offence.high_harm", ALEX, "2026-02-10T11:00:00Z"), R), "C7")
    assert c7.recipients == [LEEDS_COORD]


# --- C rules: register housekeeping -------------------------------------------------------------------------------

def test_c1_c2_timers_from_register_load():
    ledger = make_ledger()
    loaded = utc("2026-02-13T16:00:00Z")
    alex = ledger.register.find(ALEX)
    d = ledger.on_register_loaded(alex, loaded)
    c1 = only(d, "C1")
    assert c1.send_at == loaded  # 1 Dec 2025 already past at load: sent at once
    assert only(d, "C2").send_at == utc("2027-06-01T08:00:00Z")
    sam = ledger.register.find(SAM)
    d2 = ledger.on_register_loaded(sam, loaded)
    assert only(d2, "C1").send_at == utc("2026-05-01T08:00:00Z")
    assert only(d2, "C2").send_at == utc("2027-11-01T09:00:00Z")
    assert only(d2, "C1").recipients == [STOKE_COORD]
    # Loading again (a restart) raises nothing new.
    again = ledger.on_register_loaded(sam, loaded + timedelta(hours=1))
    assert again.raised == []


def test_c1_arrest_moves_it_and_older_arrest_does_not():
    ledger = make_ledger()
    loaded = utc("2026-02-13T16:00:00Z")
    first = only(ledger.on_register_loaded(ledger.register.find(SAM), loaded), "C1")
    moved = ledger.on_event(event("police.arrest", SAM, "2026-03-02T10:00:00Z", force_code="21"),
                            utc("2026-03-02T10:05:00Z"))
    c1 = only(moved, "C1")
    assert [o.obligation_id for o in moved.cancelled] == [first.obligation_id]
    assert c1.send_at == utc("2026-09-02T08:00:00Z")
    older = ledger.on_event(event("police.intelligence", SAM, "2026-02-20T10:00:00Z"), utc("2026-03-03T10:00:00Z"))
    assert older.raised == [] and older.cancelled == []


def test_c1_repeats_every_six_months_after_firing():
    ledger = make_ledger()
    loaded = utc("2026-02-13T16:00:00Z")
    c1 = only(ledger.on_register_loaded(ledger.register.find(SAM), loaded), "C1")
    ledger.mark_sent(c1, c1.send_at)
    follow = only(ledger.after_sent(c1, c1.send_at), "C1")
    assert follow.send_at == utc("2026-11-02T09:00:00Z")  # 1 Nov 2026 is a Sunday


def test_deselection_cancels_pending_timers_and_c4_on_release_date():
    ledger = make_ledger()
    ledger.on_register_loaded(ledger.register.find(ALEX), utc("2026-02-13T16:00:00Z"))
    a4 = only(ledger.on_event(event("prison.release_date_set", ALEX, "2026-02-14T10:00:00Z", prison_id="LEI",
                                    release_date="2028-09-15", kind="crd"), utc("2026-02-14T10:05:00Z")), "A4")
    d = ledger.on_event(event("register.deselected", ALEX, "2026-03-01T10:00:00Z", reason="long_custody",
                              authority="Leeds PPO panel"), utc("2026-03-01T10:05:00Z"))
    cancelled = {o.rule for o in d.cancelled}
    assert {"A4", "C2"} <= cancelled and ledger.get(a4.obligation_id).status == "cancelled"
    c4 = only(d, "C4")
    assert c4.send_at == utc("2028-06-15T08:00:00Z") and c4.recipients == [LEEDS_COORD]
    # A new release date after de-selection moves C4; A4 is not raised (no longer a PPO).
    d2 = ledger.on_event(event("prison.release_date_set", ALEX, "2026-04-01T10:00:00Z", prison_id="LEI",
                               release_date="2028-10-02", kind="crd"), utc("2026-04-01T10:05:00Z"))
    assert [o.rule for o in d2.raised] == ["C4"] and [o.rule for o in d2.cancelled] == ["C4"]
    assert d2.raised[0].send_at == utc("2028-06-30T08:00:00Z")


def test_c4_not_for_other_deselection_reasons():
    ledger = make_ledger()
    d = ledger.on_event(event("prison.release_date_set", PAT, "2026-02-14T10:00:00Z", prison_id="LEI",
                              release_date="2027-09-15", kind="crd"), utc("2026-02-14T10:05:00Z"))
    assert d.raised == []


def test_c5_move_tells_receiving_coordinator_and_later_events_go_there():
    ledger = make_ledger()
    d = ledger.on_event(event("register.moved_area", ALEX, "2026-02-10T10:00:00Z", from_bcu="13-LD",
                              to_bcu="21-ST"), R)
    assert only(d, "C5").recipients == [STOKE_COORD]
    after = ledger.on_event(event("prison.reception", ALEX, "2026-02-11T10:00:00Z", prison_id="LEI",
                                  reason="new"), R + timedelta(days=1))
    assert only(after, "A1").recipients[0] == STOKE_PPO
    before = ledger.on_event(event("prison.reception", ALEX, "2026-02-09T10:00:00Z", prison_id="DUR",
                                   reason="new"), R + timedelta(days=1))
    assert only(before, "A1").recipients[0] == LEEDS_PPO


def test_c6_list_review_per_bcu():
    ledger = make_ledger()
    at, label = ledger.rulebook.list_review_at(utc("2026-02-13T16:00:00Z"))
    assert at == utc("2026-03-02T09:00:00Z") and label == "2026-03"
    d = ledger.list_reviews(at, label)
    by_bcu = {o.bcu: o for o in d.raised}
    assert set(by_bcu) == {"13-LD", "21-ST"}
    assert by_bcu["13-LD"].recipients == [LEEDS_COORD] and by_bcu["13-LD"].person is None
    assert [p["family_name"] for p in by_bcu["13-LD"].facts["ppos"]] == ["Sample"]
    assert ledger.list_reviews(at, label).raised == []  # same period: one per BCU


def test_c6_quarterly():
    from services.rules.rulebook import RuleTimings

    ledger = make_ledger(timings=RuleTimings(list_review_every_months=3))
    at, label = ledger.rulebook.list_review_at(utc("2026-02-13T16:00:00Z"))
    assert label == "2026-04" and at == utc("2026-04-01T08:00:00Z")


def test_missing_contact_is_failed_never_silent():
    from services.rules.ledger import Ledger
    from services.rules.rulebook import RuleBook
    from shared.directory import Directory
    from shared.register import Register
    from tests.rulebook_fixtures import DIRECTORY, REGISTER_CSV

    directory = dict(DIRECTORY)
    directory["bcus"] = {**DIRECTORY["bcus"], "13-LD": {"name": "Leeds", "contacts": {"ppo": [LEEDS_PPO]}}}
    ledger = Ledger(RuleBook(Register.from_csv_text(REGISTER_CSV), Directory.from_mapping(directory)))
    d = ledger.on_event(event("warrant.issued", ALEX, "2026-02-10T10:00:00Z", warrant_id="W", court_code="B1",
                              kind="fta"), R)
    o = only(d, "A2")
    assert o.recipients == [LEEDS_PPO] and o.facts["missing_roles"] == ["warrants"]
    c7 = only(ledger.on_event(event("offence.high_harm", ALEX, "2026-02-10T11:00:00Z"), R), "C7")
    assert c7.recipients == [] and c7.status == "failed"


def test_replay_of_everything_raises_nothing_new():
    ledger = make_ledger()
    events = [
        event("prison.reception", ALEX, "2026-02-10T14:00:00Z", prison_id="LEI", reason="new"),
        event("warrant.issued", SAM, "2026-02-13T15:30:00Z", warrant_id="W-1", court_code="B21", kind="fta"),
        event("prison.release_date_set", ALEX, "2026-02-14T10:00:00Z", prison_id="LEI", release_date="2026-09-01",
              kind="crd"),
    ]
    first = [o.obligation_id for e in events for o in ledger.on_event(e, R).raised]
    assert len(first) == 3
    replay = [ledger.on_event(e, R + timedelta(days=1)) for e in events]
    assert all(d.raised == [] for d in replay)


def test_ledger_rebuilt_from_published_obligations_dedups():
    ledger = make_ledger()
    e = event("prison.reception", ALEX, "2026-02-10T14:00:00Z", prison_id="LEI", reason="new")
    raised = ledger.on_event(e, R).raised
    fresh = make_ledger()
    for o in raised:
        fresh.load(o.model_copy(deep=True))
    assert fresh.on_event(e, R).raised == []
