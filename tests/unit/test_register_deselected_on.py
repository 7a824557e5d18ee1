"""The register's own `deselected_on` stops C1 and C2 (issue 14, item 7).

Rules apply only to people on the register at the time (obligations.md, opening paragraph and "Notes for the
implementer"); C1 is "for a PPO". A review timer due on or after the London day of `deselected_on` is not
raised, and one already pending is cancelled, as a `register.deselected` event cancels it; a timer due before
still fires; a later selection (a second row, or a `register.selected` event) starts the clocks again.
"""

from __future__ import annotations

from datetime import timedelta

from ppo_alerts.simulate import SimulationEngine
from shared.directory import Directory
from shared.register import Register, RegisterEntry
from tests.rulebook_fixtures import DIRECTORY, STOKE_COORD, event, make_ledger, only, utc

HEADER = "pnc,cro,noms,crn,given_name,family_name,date_of_birth,home_bcu,strand,selected_on,reason,deselected_on\n"
LOADED = utc("2026-02-02T10:00:00Z")
QUINN = {"noms": "Q1111QQ"}
RHYS = {"noms": "R2222RR"}
UNA = {"noms": "U3333UU"}


def register_csv(*rows: str) -> str:
    return HEADER + "".join(row + "\n" for row in rows)


def quinn(deselected_on: str, selected_on: str = "2026-01-15") -> str:
    return register_csv(f",,Q1111QQ,,Quinn,Leaving,1990-01-01,21-ST,deter,{selected_on},Core nominal,{deselected_on}")


def rules_of(obligations: list) -> list[str]:
    return sorted(o.rule for o in obligations)


# --- C1 ------------------------------------------------------------------------------------------------------


def test_c1_due_on_the_deselection_day_is_not_raised() -> None:
    # Selected Thu 15 Jan 2026: C1 due Wed 15 Jul 2026 09:00 BST, the very day de-selection takes effect.
    ledger = make_ledger(quinn("2026-07-15"))
    d = ledger.on_register_loaded(ledger.register.find(QUINN), LOADED)
    assert d.raised == [] and d.cancelled == []  # C2 (17 Jan 2028) falls after it too


def test_c1_due_the_day_before_deselection_still_fires() -> None:
    ledger = make_ledger(quinn("2026-07-16"))
    d = ledger.on_register_loaded(ledger.register.find(QUINN), LOADED)
    c1 = only(d, "C1")
    assert c1.send_at == utc("2026-07-15T08:00:00Z") and c1.status == "pending" and c1.recipients == [STOKE_COORD]
    assert rules_of(d.raised) == ["C1"]  # no C2: two years is long after


def test_c1_repeat_after_deselection_is_not_raised() -> None:
    ledger = make_ledger(quinn("2026-10-01"))
    c1 = only(ledger.on_register_loaded(ledger.register.find(QUINN), LOADED), "C1")
    ledger.mark_sent(c1, c1.send_at)
    follow = ledger.after_sent(c1, c1.send_at)  # would be Fri 15 Jan 2027
    assert follow.raised == [] and follow.cancelled == []


def test_arrest_moving_c1_past_deselection_cancels_the_old_one_and_raises_nothing() -> None:
    ledger = make_ledger(quinn("2026-08-01"))
    first = only(ledger.on_register_loaded(ledger.register.find(QUINN), LOADED), "C1")  # 15 Jul 2026
    d = ledger.on_event(event("police.arrest", QUINN, "2026-03-02T10:00:00Z", force_code="21"),
                        utc("2026-03-02T10:05:00Z"))  # moves it to 2 Sep 2026, after 1 Aug
    assert d.raised == []
    assert [o.obligation_id for o in d.cancelled] == [first.obligation_id]
    assert ledger.get(first.obligation_id).cancelled_reason == "arrest or intelligence since"
    assert ledger.pending() == []


# --- C2 ------------------------------------------------------------------------------------------------------


def test_c2_due_after_deselection_is_not_raised() -> None:
    # Selected Mon 2 Sep 2024: C2 due Wed 2 Sep 2026 09:00 BST; de-selected that day.
    csv = register_csv(",,R2222RR,,Rhys,Review,1985-05-05,21-ST,deter,2024-09-02,Core nominal,2026-09-02")
    ledger = make_ledger(csv)
    d = ledger.on_register_loaded(ledger.register.find(RHYS), LOADED)
    assert "C2" not in rules_of(d.raised)
    assert only(d, "C1").send_at == LOADED  # six months long past at load: sent now, before de-selection


def test_c2_due_before_deselection_still_fires() -> None:
    csv = register_csv(",,R2222RR,,Rhys,Review,1985-05-05,21-ST,deter,2024-09-02,Core nominal,2026-09-03")
    ledger = make_ledger(csv)
    c2 = only(ledger.on_register_loaded(ledger.register.find(RHYS), LOADED), "C2")
    assert c2.send_at == utc("2026-09-02T08:00:00Z") and c2.status == "pending"


# --- live: a restart whose register snapshot now carries deselected_on --------------------------------------


def test_pending_timers_are_cancelled_when_the_register_snapshot_carries_deselected_on() -> None:
    before = make_ledger(quinn(""))
    raised = before.on_register_loaded(before.register.find(QUINN), LOADED).raised
    assert rules_of(raised) == ["C1", "C2"]
    # The rules service restarts: obligations from their topic, the register from its snapshot (now closed).
    snapshot = before.register.find(QUINN).to_dict()
    snapshot["periods"][0].update(end="2026-07-15", end_reason="other")
    after = make_ledger(HEADER)
    after.register.put(RegisterEntry.from_dict(snapshot))
    for o in raised:
        after.load(o.model_copy(deep=True))
    restarted = utc("2026-03-01T12:00:00Z")
    d = after.on_register_loaded(after.register.find(QUINN), restarted)
    assert d.raised == [] and rules_of(d.cancelled) == ["C1", "C2"]
    assert {o.cancelled_reason for o in d.cancelled} == {"person de-selected on 2026-07-15"}
    assert after.pending() == []
    # Loading again (another restart) changes nothing.
    again = after.on_register_loaded(after.register.find(QUINN), restarted + timedelta(hours=1))
    assert again.raised == [] and again.cancelled == []


def test_deselected_event_and_deselected_on_agree() -> None:
    """The same story told by the file and by events: no C1 or C2 is left to fire after de-selection."""
    by_event = make_ledger(quinn(""))
    by_event.on_register_loaded(by_event.register.find(QUINN), LOADED)
    by_event.on_event(event("register.deselected", QUINN, "2026-07-15T00:30:00+01:00", reason="other"),
                      utc("2026-07-15T07:00:00Z"))
    by_file = make_ledger(quinn("2026-07-15"))
    by_file.on_register_loaded(by_file.register.find(QUINN), LOADED)
    assert by_event.pending() == [] and by_file.pending() == []


# --- re-selection starts the clocks again ----------------------------------------------------------------------


def test_reselection_in_the_file_starts_the_clocks_from_the_new_selected_on() -> None:
    csv = register_csv(",,U3333UU,,Una,Again,1991-01-01,21-ST,deter,2025-10-01,Core nominal,2026-04-01",
                       ",,U3333UU,,Una,Again,1991-01-01,21-ST,deter,2026-06-01,Core nominal,")
    ledger = make_ledger(csv)
    d = ledger.on_register_loaded(ledger.register.find(UNA), LOADED)
    # First membership: C1 (Wed 1 Apr 2026) and C2 (1 Oct 2027) fall on or after its de-selection.
    assert only(d, "C1").send_at == utc("2026-12-01T09:00:00Z")  # 1 Jun 2026 + 6 months, Tue 09:00 GMT
    assert only(d, "C1").facts["anchor"] == "2026-06-01"
    assert only(d, "C2").send_at == utc("2028-06-01T08:00:00Z")  # 1 Jun 2026 + 2 years, Thu 09:00 BST

    # A restart (the same register, the obligations as published) keeps the second membership's timers.
    again = ledger.on_register_loaded(ledger.register.find(UNA), LOADED + timedelta(days=30))
    assert again.raised == [] and again.cancelled == [] and rules_of(ledger.pending()) == ["C1", "C2"]


def test_reselection_by_event_starts_the_clocks_again() -> None:
    ledger = make_ledger(quinn("2026-03-01"))
    assert ledger.on_register_loaded(ledger.register.find(QUINN), LOADED).raised == []
    d = ledger.on_event(event("register.selected", QUINN, "2026-05-01T10:00:00+01:00", home_bcu="21-ST"),
                        utc("2026-05-01T09:05:00Z"))
    assert only(d, "C1").send_at == utc("2026-11-02T09:00:00Z")  # 1 Nov 2026 is a Sunday
    assert only(d, "C2").send_at == utc("2028-05-02T08:00:00Z")  # Mon 1 May 2028 is the early May bank holiday
    assert d.cancelled == []


def test_c2_fired_in_the_first_membership_then_the_reselection_has_its_own() -> None:
    csv = register_csv(",,U3333UU,,Una,Again,1991-01-01,21-ST,deter,2024-03-04,Core nominal,2026-05-01",
                       ",,U3333UU,,Una,Again,1991-01-01,21-ST,deter,2026-06-01,Core nominal,")
    ledger = make_ledger(csv)
    c2 = only(ledger.on_register_loaded(ledger.register.find(UNA), LOADED), "C2")
    assert c2.send_at == utc("2026-03-04T09:00:00Z")  # Wed 4 Mar 2026, before de-selection: fires
    ledger.mark_sent(c2, c2.send_at)
    follow = only(ledger.after_sent(c2, c2.send_at), "C2")
    assert follow.send_at == utc("2028-06-01T08:00:00Z") and follow.facts["selected_on"] == "2026-06-01"


# --- simulate ------------------------------------------------------------------------------------------------


def test_simulate_sends_nothing_after_deselected_on_and_restarts_on_reselection() -> None:
    csv = register_csv(
        ",,Q1111QQ,,Quinn,Leaving,1990-01-01,21-ST,deter,2026-01-15,Core nominal,2026-07-15",
        ",,R2222RR,,Rhys,Staying,1985-05-05,21-ST,deter,2025-09-01,Core nominal,2026-03-03",
        ",,U3333UU,,Una,Again,1991-01-01,21-ST,deter,2025-10-01,Core nominal,2026-04-01",
        ",,U3333UU,,Una,Again,1991-01-01,21-ST,deter,2026-06-01,Core nominal,",
    )
    engine = SimulationEngine(Register.from_csv_text(csv), Directory.from_mapping(DIRECTORY), LOADED)
    engine.advance(utc("2027-01-01T00:00:00Z"))
    timers = [o for o in engine.obligations() if o.rule in ("C1", "C2")]
    by_person = {pid: sorted((o.rule, o.send_at.isoformat(), o.status) for o in timers if o.person.person_id == pid)
                 for pid in ("noms:Q1111QQ", "noms:R2222RR", "noms:U3333UU")}
    assert by_person["noms:Q1111QQ"] == []
    assert by_person["noms:R2222RR"] == [("C1", "2026-03-02T09:00:00+00:00", "notified")]  # no repeat, no C2
    assert by_person["noms:U3333UU"] == [
        ("C1", "2026-12-01T09:00:00+00:00", "notified"),
        ("C1", "2027-06-01T08:00:00+00:00", "pending"),
        ("C2", "2028-06-01T08:00:00+00:00", "pending"),
    ]
