"""The console's materialised view: records in, the pages' queries out, at injected times; and its size."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.console.view import ConsoleView
from shared.ack import Acknowledgement
from shared.obligations import HistoryEntry, Obligation, PersonRef
from shared.register import Period, RegisterEntry

T = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday; London is on GMT
LEEDS, BRADFORD = "13-LD", "13-BD"
PPO = "leeds.ppo@westyorkshire.police.uk"

SMITH = PersonRef(person_id="pnc:2004/0012345D", pnc="2004/0012345D", noms="A1234BC", crn="X123456",
                  cro="065656/91H", given_name="John", family_name="Smith", date_of_birth=date(1990, 5, 1))
JONES = PersonRef(person_id="pnc:2012/0054321B", pnc="2012/0054321B", given_name="Mary-Ann",
                  family_name="O'Brien Jones", date_of_birth=date(1985, 2, 3))


def obligation(n: int, rule: str = "A1", bcu: str | None = LEEDS, person: PersonRef | None = SMITH,
               send_at: datetime = T, window: timedelta = timedelta(hours=8), **kw: Any) -> Obligation:
    fields: dict[str, Any] = dict(
        obligation_id=f"{rule}-{n:024x}", rule=rule, source_paragraph="001 §7.5", person=person, bcu=bcu,
        recipients=[PPO], recipient_roles={PPO: "ppo"}, send_at=send_at, notify_by=send_at + window,
        raised_at=send_at, occurred_at=send_at)
    fields.update(kw)
    return Obligation(**fields)


def release_notice(n: int, release: date, person: PersonRef = SMITH, bcu: str = LEEDS, raised_at: datetime = T,
                   **kw: Any) -> Obligation:
    return obligation(n, "A4", bcu=bcu, person=person, send_at=raised_at, raised_at=raised_at,
                      facts={"prison_id": "LEI", "release_date": release.isoformat(), "kind": "crd",
                             "source": "hmpps", "rule_title": "release in 28 days"}, **kw)


def record(o: Obligation) -> tuple[bytes, bytes]:
    return o.obligation_id.encode(), o.model_dump_json().encode()


def entry_of(p: PersonRef, bcu: str, start: date = date(2025, 1, 6), end: date | None = None) -> RegisterEntry:
    ids = p.identifiers()
    return RegisterEntry(p.person_id, ids, p.given_name, p.family_name, p.date_of_birth,
                         [Period(start, end, bcu, "Catch and Convict", "reason")])


def register_record(e: RegisterEntry) -> tuple[bytes, bytes]:
    return e.person_id.encode(), json.dumps(e.to_dict()).encode()


def ack_record(oid: str, who: str = PPO, at: datetime = T) -> tuple[bytes, bytes]:
    a = Acknowledgement(obligation_id=oid, recipient=who, acknowledged_at=at, link_expires_at=at + timedelta(days=30))
    return oid.encode(), a.model_dump_json().encode()


def view_with(*obligations: Obligation) -> ConsoleView:
    view = ConsoleView()
    for o in obligations:
        view.apply_obligation(*record(o))
    return view


def states(view: ConsoleView, now: datetime, bcus: set[str] | None = None) -> dict[str, str]:
    return {r.obligation_id: r.state for r in view.open_for_bcus(bcus, now)}


# --- derived states ------------------------------------------------------------------------------------------


def test_a_pending_obligation_is_pending_then_due_then_at_risk_then_breached_as_time_passes():
    o = obligation(1, send_at=T + timedelta(hours=1), window=timedelta(hours=8))  # at risk from 2h before
    view = view_with(o)
    assert states(view, T) == {o.obligation_id: "pending"}
    assert states(view, T + timedelta(hours=1)) == {o.obligation_id: "due"}
    assert states(view, T + timedelta(hours=6, minutes=59)) == {o.obligation_id: "due"}
    assert states(view, T + timedelta(hours=7)) == {o.obligation_id: "at risk"}
    assert states(view, T + timedelta(hours=9)) == {o.obligation_id: "breached"}


def test_a_short_window_is_at_risk_in_its_last_hour():
    o = obligation(1, window=timedelta(hours=2))  # a quarter is 30 minutes: the hour counts
    view = view_with(o)
    assert states(view, T + timedelta(minutes=59)) == {o.obligation_id: "due"}
    assert states(view, T + timedelta(hours=1)) == {o.obligation_id: "at risk"}


def test_breached_failed_and_unacknowledged_stay_open_and_timed_notices_acknowledged_cancelled_do_not_show():
    due = obligation(1, window=timedelta(days=2))
    later = obligation(2, window=timedelta(days=3))
    breached = obligation(3, status="breached", notified_at=T + timedelta(hours=9))
    failed = obligation(4, status="failed")
    pending = obligation(5, send_at=T + timedelta(days=1))
    sent = obligation(9, status="notified", notified_at=T)  # an immediate notice: its acknowledgement is awaited
    timed_notice = release_notice(6, date(2027, 1, 4), status="notified", notified_at=T)  # a timed rule's (A4):
    # not watched for acknowledgement, closed once sent
    closed = [timed_notice, obligation(7, status="acknowledged"),
              obligation(8, status="cancelled", cancelled_reason="release date changed")]
    view = view_with(later, pending, due, breached, failed, sent, *closed)
    rows = view.open_for_bcus({LEEDS}, T + timedelta(hours=1))
    assert [(r.obligation_id, r.state) for r in rows] == [
        (failed.obligation_id, "failed"), (breached.obligation_id, "breached"), (due.obligation_id, "due"),
        (later.obligation_id, "due"), (sent.obligation_id, "not acknowledged"), (pending.obligation_id, "pending")]
    assert view.counts({LEEDS}, T + timedelta(hours=1)) == {
        "failed": 1, "breached": 1, "at risk": 0, "due": 2, "not acknowledged": 1, "pending": 1,
        "notified": 1, "acknowledged": 1, "cancelled": 1}
    view.apply_acknowledgement(*ack_record(sent.obligation_id))
    assert sent.obligation_id not in [r.obligation_id for r in view.open_for_bcus({LEEDS}, T + timedelta(hours=1))]


def test_pages_are_limited_and_offset():
    view = view_with(*(obligation(n, window=timedelta(hours=8 + n)) for n in range(10)))
    ids = [r.obligation_id for r in view.open_for_bcus({LEEDS}, T)]
    assert ids == [obligation(n).obligation_id for n in range(10)]  # earliest deadline first
    page = view.open_for_bcus({LEEDS}, T, limit=3, offset=3)
    assert [r.obligation_id for r in page] == ids[3:6]
    assert view.open_for_bcus({LEEDS}, T, limit=3, offset=9)[0].obligation_id == ids[9]
    assert view.open_for_bcus({LEEDS}, T, limit=0) == []


# --- acknowledgements ------------------------------------------------------------------------------------------


def test_an_acknowledgement_on_the_topic_closes_an_obligation_before_the_scheduler_says_so():
    o = obligation(1, status="breached")
    view = view_with(o)
    view.apply_acknowledgement(*ack_record(o.obligation_id, at=T + timedelta(hours=2)))
    view.apply_acknowledgement(*ack_record(o.obligation_id, who=PPO.upper(), at=T + timedelta(hours=3)))  # again
    assert view.open_for_bcus({LEEDS}, T + timedelta(hours=4)) == []
    assert view.counts({LEEDS}, T + timedelta(hours=4))["acknowledged"] == 1
    detail = view.obligation(o.obligation_id, {LEEDS}, T + timedelta(hours=4))
    assert detail is not None and detail.row.state == "acknowledged"
    assert [(a.recipient, a.at) for a in detail.acknowledgements] == [(PPO, T + timedelta(hours=2))]


def test_an_acknowledgement_read_before_its_obligation_still_counts():
    o = obligation(1)
    view = ConsoleView()
    view.apply_acknowledgement(*ack_record(o.obligation_id, at=T + timedelta(minutes=5)))
    view.apply_obligation(*record(o))
    assert view.open_for_bcus(None, T + timedelta(minutes=10)) == []


def test_the_detail_has_the_history_and_the_acknowledgements_the_scheduler_recorded():
    history = [HistoryEntry(at=T, what="accepted by the mail server"),
               HistoryEntry(at=T + timedelta(minutes=30), what=f"acknowledged by {PPO}")]
    o = obligation(1, status="acknowledged", notified_at=T, history=history)
    view = view_with(o)
    detail = view.obligation(o.obligation_id, {LEEDS}, T + timedelta(hours=1))
    assert detail is not None
    assert detail.history == history
    assert [(a.recipient, a.at) for a in detail.acknowledgements] == [(PPO, T + timedelta(minutes=30))]
    assert detail.obligation.person == SMITH
    assert view.obligation("A1-nothing", None, T) is None


# --- latest state, tombstones, bad records ------------------------------------------------------------------


def test_the_latest_record_wins_a_stale_copy_does_not_move_the_status_back_and_a_tombstone_deletes():
    o = obligation(1)
    view = view_with(o)
    notified = o.model_copy(deep=True)
    notified.record_acceptance(T + timedelta(minutes=5))
    view.apply_obligation(*record(notified))
    assert states(view, T + timedelta(hours=1)) == {o.obligation_id: "not acknowledged"}
    view.apply_obligation(*record(o))  # another writer's copy from before the acceptance
    assert states(view, T + timedelta(hours=1)) == {o.obligation_id: "not acknowledged"}  # not pending again
    assert view.counts(None, T)["not acknowledged"] == 1
    cancelled = o.model_copy(update={"status": "cancelled", "cancelled_reason": "person de-selected"})
    view.apply_obligation(*record(cancelled))
    assert view.counts(None, T)["cancelled"] == 1 and view.counts(None, T)["not acknowledged"] == 0
    view.apply_obligation(o.obligation_id.encode(), None)
    assert view.obligation(o.obligation_id, None, T) is None
    assert view.person_trail(SMITH.person_id, None, T) == []
    assert set(view.counts(None, T).values()) == {0}
    view.apply_obligation(o.obligation_id.encode(), b"")  # a second tombstone: nothing to delete
    assert view.unreadable == 0


def test_records_that_do_not_decode_are_counted_and_skipped_never_raised():
    view = view_with(obligation(1))
    bad: list[tuple[bytes | None, bytes | None]] = [
        (b"x", b"not json"), (b"x", b"[]"), (b"x", b'{"obligation_id": "x"}'), (None, None), (b"\xff", b""),
        (b"x", json.dumps({**json.loads(record(obligation(2))[1]), "status": "lost"}).encode())]
    for key, value in bad:
        view.apply_obligation(key, value)
    for key, value in [(b"p", b"{}"), (b"p", b'"text"'), (b"p", b'{"person_id": 5, "identifiers": {}}'),
                       (b"p", b'{"person_id": "p", "identifiers": {"pnc": 1}}'),
                       (b"p", b'{"person_id": "p", "identifiers": {"x": "1"}, "periods": []}'),
                       (b"p", b'{"person_id": "p", "identifiers": {"pnc": "1"}, "given_name": ["x"]}'),
                       (b"p", b'{"person_id": "p", "identifiers": {"pnc": "1"}, "periods": [1]}'),
                       (None, None)]:
        view.apply_register(key, value)
    for key, value in [(b"a", b"{}"), (b"a", b"\x00\x01"), (None, b"")]:
        view.apply_acknowledgement(key, value)
    assert view.unreadable == len(bad) + 8 + 3
    assert view.unreadable_by_topic == {"obligations": len(bad), "register": 8, "acknowledgements": 3}
    assert [r.obligation_id for r in view.open_for_bcus(None, T)] == [obligation(1).obligation_id]
    assert view.sizes()["register_entries"] == 0


def test_an_unreadable_record_logs_no_personal_data(caplog):
    view = ConsoleView()
    raw = json.loads(register_record(entry_of(SMITH, LEEDS))[1])
    raw["periods"][0]["start"] = "John Smith 1990-05-01"
    with caplog.at_level("WARNING", logger="ppo.console"):
        view.apply_register(b"pnc:2004/0012345D", json.dumps(raw).encode())
    assert view.unreadable == 1
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "unreadable record skipped" in logged
    assert "Smith" not in logged and "1990" not in logged


# --- BCUs -------------------------------------------------------------------------------------------------------


def test_a_bcu_user_never_sees_another_bcus_rows():
    leeds = obligation(1, bcu=LEEDS)
    bradford = obligation(2, bcu=BRADFORD, person=JONES)
    nowhere = obligation(3, rule="C6", bcu=None, person=None)
    view = view_with(leeds, bradford, nowhere, release_notice(4, date(2026, 12, 10), person=JONES, bcu=BRADFORD))
    for e in (entry_of(SMITH, LEEDS), entry_of(JONES, BRADFORD)):
        view.apply_register(*register_record(e))
    assert set(states(view, T, {LEEDS})) == {leeds.obligation_id}
    assert set(states(view, T, {BRADFORD})) == {bradford.obligation_id, release_notice(4, T.date()).obligation_id}
    assert set(states(view, T, None)) == {leeds.obligation_id, bradford.obligation_id, nowhere.obligation_id,
                                          release_notice(4, T.date()).obligation_id}
    assert states(view, T, set()) == {}
    assert view.obligation(bradford.obligation_id, {LEEDS}, T) is None
    assert view.obligation(nowhere.obligation_id, {LEEDS}, T) is None
    assert view.obligation(bradford.obligation_id, None, T) is not None
    assert view.person_trail(JONES.person_id, {LEEDS}, T) == []
    assert view.custody_countdown({LEEDS}, T) == []
    assert [r.person_id for r in view.custody_countdown({BRADFORD}, T)] == [JONES.person_id]
    assert view.register_search("Jones", {LEEDS}, T) == []
    assert view.register_search("2012/0054321B", {LEEDS}, T) == []
    assert [r.entry.person_id for r in view.register_search("Jones", {BRADFORD}, T)] == [JONES.person_id]
    assert view.counts({LEEDS}, T)["due"] == 1 and view.counts({BRADFORD}, T)["due"] == 2


def test_an_obligation_moving_bcu_leaves_the_old_bcus_list():
    o = obligation(1, bcu=LEEDS)
    view = view_with(o)
    view.apply_obligation(*record(o.model_copy(update={"bcu": BRADFORD})))
    assert states(view, T, {LEEDS}) == {}
    assert set(states(view, T, {BRADFORD})) == {o.obligation_id}


# --- custody countdown ----------------------------------------------------------------------------------------


def test_the_custody_countdown_lists_releases_in_the_next_28_days_soonest_first():
    third = PersonRef(person_id="noms:B2345CD", noms="B2345CD", given_name="Sam", family_name="Ali")
    fourth = PersonRef(person_id="crn:Y654321", crn="Y654321", given_name="Ann", family_name="Lee")
    view = view_with(
        release_notice(1, date(2026, 12, 21), person=SMITH, status="notified", notified_at=T),  # in 28 days
        release_notice(2, date(2026, 12, 1), person=JONES),
        release_notice(3, date(2026, 12, 22), person=third),  # 29 days: not yet
        release_notice(4, date(2026, 11, 22), person=fourth),  # yesterday: gone
        obligation(5, rule="A1"),  # no release date
    )
    rows = view.custody_countdown({LEEDS}, T)
    assert [(r.person_id, r.release_date, r.days_left) for r in rows] == [
        (JONES.person_id, date(2026, 12, 1), 8), (SMITH.person_id, date(2026, 12, 21), 28)]
    assert rows[0].kind == "crd" and rows[0].prison_id == "LEI" and rows[0].person == JONES
    assert [r.person_id for r in view.custody_countdown({LEEDS}, T, days=29)][-1] == third.person_id


def test_a_changed_release_date_counts_a_cancelled_one_does_not_and_a_release_ends_the_countdown():
    old = release_notice(1, date(2026, 12, 10), status="notified", notified_at=T)
    new = release_notice(2, date(2026, 12, 15), raised_at=T + timedelta(days=1))
    view = view_with(old, new)
    assert [r.release_date for r in view.custody_countdown({LEEDS}, T + timedelta(days=2))] == [date(2026, 12, 15)]
    view.apply_obligation(*record(new.model_copy(update={"status": "cancelled"})))  # date withdrawn
    assert [r.release_date for r in view.custody_countdown({LEEDS}, T + timedelta(days=2))] == [date(2026, 12, 10)]
    released = obligation(3, rule="A7", send_at=T + timedelta(days=3))
    view.apply_obligation(*record(released))
    assert view.custody_countdown({LEEDS}, T + timedelta(days=3)) == []


# --- register search --------------------------------------------------------------------------------------------


def registered() -> ConsoleView:
    view = ConsoleView()
    for e in (entry_of(SMITH, LEEDS), entry_of(JONES, LEEDS, end=date(2026, 6, 1))):
        view.apply_register(*register_record(e))
    return view


def test_a_search_by_pnc_in_any_spelling_finds_the_person():
    view = registered()
    for spelling in ("2004/0012345D", "04/12345D", "20040012345D", " 04/12345d "):
        rows = view.register_search(spelling, {LEEDS}, T)
        assert [(r.entry.person_id, r.matched_by) for r in rows] == [(SMITH.person_id, "pnc")], spelling
    assert view.register_search("2004/0012345E", {LEEDS}, T) == []  # a wrong check character finds nobody


def test_a_search_by_noms_crn_cro_person_id_and_name_parts():
    view = registered()
    for query, how in (("a1234bc", "noms"), ("X123456", "crn"), ("65656/91H", "cro"),
                       ("pnc:2004/0012345D", "person_id"), ("smi", "name"), ("john SMITH", "name"),
                       ("jo sm", "name")):
        assert [(r.entry.person_id, r.matched_by) for r in view.register_search(query, None, T)] == [
            (SMITH.person_id, how)], query
    rows = view.register_search("o'brien", None, T)
    assert [r.entry.person_id for r in rows] == [JONES.person_id]
    assert rows[0].home_bcu == LEEDS and rows[0].on_register is False  # de-selected in June
    assert [r.entry.person_id for r in view.register_search("mary-ann", None, T)] == [JONES.person_id]
    assert [r.entry.person_id for r in view.register_search("j", None, T)] == [JONES.person_id, SMITH.person_id]
    assert view.register_search("john jones", None, T) == []
    assert view.register_search("  ", None, T) == []


def test_a_register_record_replaces_the_entry_and_a_tombstone_removes_it():
    view = registered()
    moved = entry_of(SMITH, BRADFORD)
    moved.given_name, moved.identifiers = "Brian", {"pnc": "2004/0012345D"}
    view.apply_register(*register_record(moved))
    assert view.register_search("john", None, T) == []
    assert view.register_search("A1234BC", None, T) == []
    assert [r.home_bcu for r in view.register_search("brian", None, T)] == [BRADFORD]
    assert view.register_search("brian", {LEEDS}, T) == []
    view.apply_register(SMITH.person_id.encode(), None)
    assert view.register_search("04/12345D", None, T) == []
    assert view.register_search("smith", None, T) == []
    assert view.sizes()["register_entries"] == 1


def test_search_results_are_limited_to_50():
    view = ConsoleView()
    for n in range(60):
        view.apply_register(*register_record(RegisterEntry(
            f"crn:Z{n:06d}", {"crn": f"Z{n:06d}"}, "Alex", f"Smith{n:02d}", None, [Period(T.date(), None, LEEDS)])))
    rows = view.register_search("alex", None, T)
    assert len(rows) == 50 and rows[0].entry.family_name == "Smith00"


# --- a person's audit trail ---------------------------------------------------------------------------------


def test_the_person_trail_is_every_obligation_about_them_oldest_first():
    first = obligation(1, rule="A1", send_at=T - timedelta(days=10), status="acknowledged", notified_at=T)
    second = release_notice(2, date(2027, 1, 4), raised_at=T - timedelta(days=5), status="cancelled")
    third = obligation(3, rule="B4", send_at=T, bcu=BRADFORD)
    someone_else = obligation(4, person=JONES)
    view = view_with(third, someone_else, second, first)
    rows = view.person_trail(SMITH.person_id, None, T)
    assert [(r.obligation_id, r.state) for r in rows] == [
        (first.obligation_id, "acknowledged"), (second.obligation_id, "cancelled"), (third.obligation_id, "due")]
    assert [r.obligation_id for r in view.person_trail(SMITH.person_id, {LEEDS}, T)] == [
        first.obligation_id, second.obligation_id]


def test_queries_refuse_a_naive_now():
    view = ConsoleView()
    try:
        view.open_for_bcus(None, datetime(2026, 11, 23, 10, 0))
    except ValueError:
        return
    raise AssertionError("a naive now was accepted")


# --- size ---------------------------------------------------------------------------------------------------


BCUS = [f"{n:02d}-B{n:02d}" for n in range(40)]


def synthetic_register(n: int) -> bytes:
    pnc = f"2010/{n:07d}"
    ids = {"pnc": pnc + "ZABCDEFGHJKLMNPQRTUVWXY"[int(f"10{n:07d}") % 23], "crn": f"X{n:06d}"}
    return json.dumps({"person_id": f"pnc:{ids['pnc']}", "identifiers": ids, "given_name": f"Given{n % 997}",
                       "family_name": f"Family{n}", "date_of_birth": "1990-01-01",
                       "periods": [{"start": "2025-01-06", "end": None, "home_bcu": BCUS[n % len(BCUS)]}]}).encode()


def test_at_size_a_bcus_queries_answer_from_that_bcus_rows_only():
    """How fast the pages are at 20,000 entries and 100,000 obligations is `ppo-alerts bench` (section 5c), not a
    timed test; here, at a tenth of that, that the indexes give the same answers as reading every row."""
    view = ConsoleView()
    for n in range(2_000):
        view.apply_register(b"", synthetic_register(n))
    template = json.loads(obligation(0).model_dump_json())
    statuses = ("pending", "pending", "breached", "failed", "notified", "acknowledged", "cancelled", "notified")
    everything = []
    for n in range(10_000):
        person = n % 2_000
        sent = T + timedelta(minutes=(n % 2880) - 1440)
        o = dict(template, obligation_id=f"A1-{n:024x}", bcu=BCUS[person % len(BCUS)], status=statuses[(n // 7) % 8],
                 person={"person_id": f"p{person}", "given_name": f"Given{person % 997}"},
                 send_at=sent.isoformat(), notify_by=(sent + timedelta(hours=4)).isoformat(),
                 raised_at=sent.isoformat())
        everything.append(o)
        view.apply_obligation(None, json.dumps(o).encode())
    assert view.unreadable == 0
    assert view.sizes()["obligations"] == 10_000 and view.sizes()["register_entries"] == 2_000

    mine = [o for o in everything if o["bcu"] == BCUS[7]]
    page = view.open_for_bcus({BCUS[7]}, T)
    assert len(page) == 50 and {r.bcu for r in page} == {BCUS[7]}
    counts = view.counts({BCUS[7]}, T)
    assert sum(counts.values()) == len(mine)
    assert sum(counts[s] for s in ("failed", "breached", "at risk", "due", "pending")) == sum(
        o["status"] in ("pending", "breached", "failed") for o in mine)
    found = view.register_search("given", {BCUS[7]}, T)  # every entry's name: the first 50 of this BCU's
    assert len(found) == 50 and {r.home_bcu for r in found} == {BCUS[7]}


# --- the quick paths agree with the plain way --------------------------------------------------------------


def random_view(seed: int) -> tuple[ConsoleView, list[datetime]]:
    """Obligations in every status, with and without a notification, windows from minutes to days, over two BCUs
    and none; and instants around and exactly on their edges."""
    import random

    rng = random.Random(seed)
    view = ConsoleView()
    edges: list[datetime] = []
    for n in range(400):
        send_at = T + timedelta(minutes=rng.randint(-3000, 3000))
        window = timedelta(minutes=rng.choice([5, 15, 60, 240, 2880]))
        status = rng.choice(["pending", "pending", "notified", "breached", "failed", "acknowledged", "cancelled"])
        notified_at = send_at + timedelta(minutes=rng.randint(0, 300)) if status in ("notified", "acknowledged") \
            or (status == "breached" and rng.random() < 0.3) else None
        rule = rng.choice(["A1", "A4", "B3", "C1", "Z9"])  # Z9: a rule the rule book does not have
        raised_at = send_at if rng.random() < 0.7 else send_at - timedelta(days=1)
        o = obligation(n, rule=rule, bcu=rng.choice([LEEDS, BRADFORD, None]), send_at=send_at, window=window,
                       status=status, notified_at=notified_at, raised_at=raised_at,
                       cancelled_reason="x" if status == "cancelled" else None)
        view.apply_obligation(*record(o))
        if rng.random() < 0.1:
            view.apply_acknowledgement(*ack_record(o.obligation_id))
        edges += [o.send_at, o.notify_by, o.notify_by - timedelta(hours=1)]
    nows = [T + timedelta(minutes=rng.randint(-3000, 3000)) for _ in range(20)] + rng.sample(edges, 20)
    return view, nows


def test_the_urgency_order_and_counts_are_the_plain_states_order_and_counts():
    from services.console.view import URGENCY, _state

    for seed in range(5):
        view, nows = random_view(seed)
        for now in nows:
            for bcus in (None, {LEEDS}, {LEEDS, BRADFORD}):
                plain = sorted((URGENCY[_state(p, now)], p.obligation.notify_by, oid)
                               for oid, p in view._placed.items() if p.label is None and view._visible(p, bcus))
                assert [r.obligation_id for r in view.open_for_bcus(bcus, now, limit=1000)] == [
                    oid for *_, oid in plain]
                assert [r.state for r in view.open_for_bcus(bcus, now, limit=1000)] == [
                    _state(view._placed[oid], now) for *_, oid in plain]
                counts = view.counts(bcus, now)
                for state in URGENCY:
                    assert counts[state] == sum(1 for u, *_ in plain if u == URGENCY[state])


def test_the_views_timeliness_is_the_reports():
    from ppo_alerts.reports import timeliness

    for seed in range(5):
        view, nows = random_view(seed)
        for now in nows:
            for bcus in (None, {LEEDS}):
                start, end = (T - timedelta(days=1)).date(), (T + timedelta(days=1)).date()
                assert view.timeliness(bcus, start, end, now) == timeliness(view.obligations_in(bcus), start, end,
                                                                            now)
