"""The operations reports (ppo_alerts/reports.py): pure functions over obligations, outcomes, events and register
snapshots, and what the CLI writes from them."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest

from ppo_alerts import reports
from ppo_alerts.cli import build_parser
from shared.events import parse_event
from shared.obligations import DeliveryOutcome, HistoryEntry, Obligation, PersonRef
from shared.register import Period, RegisterEntry

NOW = datetime(2026, 4, 15, 12, 0, tzinfo=UTC)
ALEX = PersonRef(person_id="pnc:2006/0777001G", pnc="2006/0777001G", noms="G1234HJ", crn="L112233",
                 given_name="Alex", family_name="Sample")
SAM = PersonRef(person_id="pnc:2022/0031337W", pnc="2022/0031337W", noms="H2345JK")


def ob(rule: str = "A1", n: int = 0, *, send_at: datetime = NOW - timedelta(days=1), within: timedelta = timedelta(
        minutes=15), status: str = "pending", notified_after: timedelta | None = None,
        person: PersonRef | None = ALEX) -> Obligation:
    o = Obligation(
        obligation_id=f"{rule}-{n:024d}", rule=rule, source_paragraph=f"rule {rule}", person=person, bcu="13-LD",
        recipients=["leeds.ppo@westyorkshire.police.uk"],
        recipient_roles={"leeds.ppo@westyorkshire.police.uk": "ppo"}, send_at=send_at,
        notify_by=send_at + within, status=status, raised_at=send_at,  # type: ignore[arg-type]
        history=[HistoryEntry(at=send_at, what="raised")],
    )
    if notified_after is not None:
        o.record_acceptance(send_at + notified_after)
    return o


# --- timeliness ----------------------------------------------------------------------------------------------

def test_classify_every_result():
    assert reports.classify(ob(notified_after=timedelta(minutes=1)), NOW) == "on_time"
    assert reports.classify(ob(notified_after=timedelta(hours=2)), NOW) == "late"
    assert reports.classify(ob(), NOW) == "breached"  # pending, its deadline a day ago
    assert reports.classify(ob(status="breached"), NOW) == "breached"
    assert reports.classify(ob(status="failed"), NOW) == "failed"
    assert reports.classify(ob(status="cancelled"), NOW) == "cancelled"
    assert reports.classify(ob(send_at=NOW + timedelta(days=3)), NOW) == "open"
    acknowledged = ob(notified_after=timedelta(minutes=3))
    acknowledged.status = "acknowledged"
    assert reports.classify(acknowledged, NOW) == "on_time"


def test_at_risk_is_open_due_and_within_the_hour():
    assert reports.at_risk(ob(send_at=NOW - timedelta(minutes=5)), NOW)  # immediate, not yet accepted
    assert not reports.at_risk(ob(send_at=NOW - timedelta(minutes=5), within=timedelta(days=1)), NOW)
    assert not reports.at_risk(ob(send_at=NOW + timedelta(minutes=30)), NOW)  # timed, on schedule
    assert not reports.at_risk(ob(send_at=NOW - timedelta(minutes=5), notified_after=timedelta(seconds=2)), NOW)


def test_timeliness_counts_per_rule_in_the_period_by_london_date():
    april = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
    obligations = [
        ob("A1", 1, send_at=april, notified_after=timedelta(seconds=5)),
        ob("A1", 2, send_at=april, notified_after=timedelta(minutes=20)),
        ob("A1", 3, send_at=april, status="failed"),
        ob("A2", 4, send_at=april + timedelta(days=3), within=timedelta(days=1), status="cancelled"),
        ob("A4", 5, send_at=NOW + timedelta(days=2)),  # open
        ob("A1", 6, send_at=NOW - timedelta(minutes=10)),  # open, at risk
        # 23:30 UTC on 31 March is 00:30 on 1 April in London (BST): inside April
        ob("B1", 7, send_at=datetime(2026, 3, 31, 23, 30, tzinfo=UTC), within=timedelta(hours=24),
           notified_after=timedelta(minutes=1)),
        ob("B1", 8, send_at=datetime(2026, 3, 31, 22, 30, tzinfo=UTC), notified_after=timedelta(minutes=1)),  # March
        ob("A1", 9, send_at=datetime(2026, 5, 1, 9, 0, tzinfo=UTC)),  # May: outside
    ]
    rows = {r.rule: r for r in reports.timeliness(obligations, date(2026, 4, 1), date(2026, 4, 30), NOW)}
    assert set(reports.STANDARDS) <= set(rows)  # every rule of the rule book has a row, even with nothing
    a1 = rows["A1"]
    assert (a1.total, a1.on_time, a1.late, a1.failed, a1.open, a1.at_risk) == (4, 1, 1, 1, 1, 1)
    assert a1.on_time_pct == pytest.approx(33.3)
    assert (rows["A2"].cancelled, rows["A2"].on_time_pct) == (1, None)
    assert rows["A4"].open == 1 and rows["A4"].at_risk == 0
    assert rows["B1"].total == 1 and rows["B1"].on_time == 1
    assert rows["C6"].total == 0
    total = rows["all"]
    assert total.total == 7 and total.on_time == 2 and total.at_risk == 1
    assert rows["A1"].title == "received into custody" and rows["A1"].standard == "15 minutes after receipt"


def test_timeliness_keeps_rules_outside_the_rule_book():
    rows = reports.timeliness([ob("D2", 1, send_at=NOW - timedelta(days=2), notified_after=timedelta(seconds=1))],
                              date(2026, 4, 1), date(2026, 4, 30), NOW)
    assert [r.rule for r in rows][-2:] == ["D2", "all"]


# --- reading the topics -------------------------------------------------------------------------------------

def test_parse_sources_keeps_the_latest_state_per_key_and_counts_what_it_cannot_read():
    pending = ob("A1", 1, send_at=NOW)
    notified = ob("A1", 1, send_at=NOW, notified_after=timedelta(seconds=3))
    key = pending.obligation_id.encode()
    entry = RegisterEntry("noms:H2345JK", {"noms": "H2345JK"}, periods=[Period(date(2025, 1, 1), None, "21-ST")])
    outcome = DeliveryOutcome(obligation_id=pending.obligation_id, rule="A1", recipient="x@y.gov.uk",
                              outcome="sent", at=NOW, template_version="A1@3")
    event = {"id": "e-1", "type": "police.arrest", "occurred_at": "2026-04-01T10:00:00Z", "source": "T",
             "person": {"noms": "H2345JK"}, "data": {}}
    sources = reports.parse_sources(
        obligations=[(key, pending.model_dump_json().encode()), (b"other", b"{not json"),
                     (key, notified.model_dump_json().encode())],
        outcomes=[(key, outcome.model_dump_json().encode())],
        events=[(b"noms:H2345JK", json.dumps(event).encode()), (None, b'{"id": 1}')],
        register=[(b"noms:H2345JK", json.dumps(entry.to_dict()).encode()), (b"gone", b"{}"), (b"gone", None)],
    )
    assert [o.status for o in sources.obligations] == ["notified"]
    assert len(sources.outcomes) == 1 and sources.outcomes[0].template_version == "A1@3"
    assert [e.id for e in sources.events] == ["e-1"]
    assert [e.person_id for e in sources.register] == ["noms:H2345JK"]  # "gone" was deleted by its tombstone
    assert sources.skipped == 2


# --- the per-area PPO list ----------------------------------------------------------------------------------

def register() -> list[RegisterEntry]:
    return [
        RegisterEntry("pnc:2006/0777001G", {"pnc": "2006/0777001G", "noms": "G1234HJ"}, "Alex", "Sample",
                      date(1988, 8, 8), [Period(date(2025, 6, 1), None, "13-LD", "catch_and_convict", "NIM core")]),
        RegisterEntry("noms:K4567LM", {"noms": "K4567LM"}, "Jordan", "Testcase", None, [
            Period(date(2024, 2, 1), date(2025, 8, 1), "13-LD", "deter", "acquisitive", "stopped_offending",
                   "BCU Commander"),
            Period(date(2026, 1, 10), date(2026, 3, 2), "13-LD", "deter", "again", "moved_area"),
            Period(date(2026, 3, 2), None, "21-ST", "deter", "again"),
        ]),
        RegisterEntry("noms:H2345JK", {"noms": "H2345JK"}, "Sam", "Junior", None,
                      [Period(date(2025, 11, 1), None, "21-ST", "deter", "PYO")]),
    ]


def event(kind: str, at: str, data: dict, noms: str = "G1234HJ", n: int = 0) -> object:
    return parse_event({"id": f"e-{kind}-{n}", "type": kind, "occurred_at": at, "source": "T",
                        "person": {"noms": noms}, "data": data})


def test_register_report_lists_current_ppos_and_removals_for_one_bcu():
    events = [event("prison.reception", "2026-03-01T10:00:00Z", {"prison_id": "LEI", "reason": "new"}),
              event("prison.transfer", "2026-03-20T10:00:00Z", {"from_prison_id": "LEI", "to_prison_id": "HMI"})]
    rows = reports.register_report(register(), "13-LD", date(2026, 4, 1), events)
    assert [(r.section, r.person_id, r.status) for r in rows] == [
        ("current", "pnc:2006/0777001G", "on the register"),
        ("removed", "noms:K4567LM", "removed"),
        ("removed", "noms:K4567LM", "moved to another area"),
    ]
    alex = rows[0]
    assert (alex.reason_for_selection, alex.date_added, alex.strand) == ("NIM core", "2025-06-01", "catch_and_convict")
    assert alex.custody == "in custody (HMI)"
    first = rows[1]
    assert (first.removed_on, first.removal_reason, first.authority) == ("2025-08-01", "stopped_offending",
                                                                         "BCU Commander")
    # The other BCU sees the move in, and a release into the community.
    released = event("prison.release", "2026-03-25T10:00:00Z", {"prison_id": "HMI", "reason": "released"},
                     noms="K4567LM")
    staffs = reports.register_report(register(), "21-ST", date(2026, 4, 1), [released])
    assert [(r.person_id, r.custody) for r in staffs] == [("noms:H2345JK", "not known"),
                                                         ("noms:K4567LM", "in the community")]
    # As on an earlier date, Jordan was still a Leeds PPO.
    earlier = reports.register_report(register(), "13-LD", date(2026, 2, 1))
    assert [r.person_id for r in earlier if r.section == "current"] == ["pnc:2006/0777001G", "noms:K4567LM"]


def test_additions_and_removals_by_quarter():
    rows = reports.register_report(register(), "13-LD", date(2026, 4, 1))
    assert reports.additions_and_removals(rows) == [
        ("2024 Q1", 1, 0), ("2025 Q2", 1, 0), ("2025 Q3", 0, 1), ("2026 Q1", 1, 1)]


# --- audit -----------------------------------------------------------------------------------------------------

def test_resolve_identifier_accepts_any_kind_in_any_common_form():
    assert reports.resolve_identifier(" g1234hj ") == {"noms": "G1234HJ"}
    assert reports.resolve_identifier("06/777001G") == {"pnc": "2006/0777001G"}
    assert reports.resolve_identifier("pnc:2006/0777001G") == {"pnc": "2006/0777001G"}
    assert reports.resolve_identifier("L112233") == {"crn": "L112233"}
    with pytest.raises(ValueError, match="not a PNC ID, CRO number, NOMS number or CRN"):
        reports.resolve_identifier("Alex Sample")


def test_audit_trail_follows_every_identifier_of_the_person_in_time_order():
    a1 = ob("A1", 1, send_at=datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC), notified_after=timedelta(seconds=2))
    other = ob("A1", 2, send_at=datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC), person=SAM)
    sent = DeliveryOutcome(obligation_id=a1.obligation_id, rule="A1", recipient="leeds.ppo@westyorkshire.police.uk",
                           outcome="sent", at=datetime(2026, 3, 1, 10, 0, 7, tzinfo=UTC), template_version="A1@2",
                           message_id="<m1@ppo>")
    not_theirs = DeliveryOutcome(obligation_id=other.obligation_id, rule="A1", recipient="x@y.gov.uk",
                                 outcome="sent", at=NOW)
    sources = reports.Sources(
        obligations=[a1, other], outcomes=[sent, not_theirs], register=register(),
        events=[event("prison.reception", "2026-03-01T10:00:00Z", {"prison_id": "LEI", "reason": "new"}),
                # known to this feed by PNC only: linked through the register entry
                parse_event({"id": "w-1", "type": "warrant.issued", "occurred_at": "2026-03-05T10:00:00Z",
                             "source": "CP", "person": {"pnc": "06/777001G"},
                             "data": {"warrant_id": "W1", "court_code": "B01LY", "kind": "fta"}}),
                event("prison.reception", "2026-03-01T11:00:00Z", {"prison_id": "LEI", "reason": "new"},
                      noms="H2345JK")])
    wanted, lines = reports.audit_trail({"noms": "G1234HJ"}, sources)
    assert ("pnc", "2006/0777001G") in wanted
    assert [(x.kind, x.what) for x in lines] == [
        ("register", "selected in 13-LD"),
        ("event", "prison.reception"),
        ("obligation", "raised"),
        ("obligation", "accepted by the mail server"),
        ("message", "sent"),
        ("event", "warrant.issued"),
    ]
    message = lines[4]
    assert message.template_version == "A1@2" and message.recipient == "leeds.ppo@westyorkshire.police.uk (ppo)"
    assert "notify_by=" in lines[2].detail and "to ppo" in lines[2].detail
    assert reports.audit_trail({"noms": "Z9999ZZ"}, sources)[1] == []


# --- output ----------------------------------------------------------------------------------------------------

def run_cli(argv: list[str], sources: reports.Sources) -> str:
    args = build_parser().parse_args(argv)
    return reports.build_report(args, sources, NOW)


def test_timeliness_csv_has_a_row_per_rule_and_a_total():
    sources = reports.Sources(obligations=[ob("A1", 1, notified_after=timedelta(seconds=1))])
    text = run_cli(["report", "timeliness", "--from", "2026-04-01", "--to", "2026-04-30"], sources)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["rule", "title", "standard", "source", "total", "on_time", "late", "breached", "failed",
                             "cancelled", "open", "at_risk", "on_time_pct"]
    by_rule = {r["rule"]: r for r in rows}
    assert by_rule["A1"]["on_time"] == "1" and by_rule["A1"]["on_time_pct"] == "100.0"
    assert by_rule["all"]["total"] == "1" and by_rule["A2"]["on_time_pct"] == ""


def test_html_pages_are_self_contained_with_an_svg_chart_and_escape_their_input():
    entries = register()
    entries[0].family_name = "<script>alert(1)</script>"
    sources = reports.Sources(obligations=[ob("A1", 1, notified_after=timedelta(seconds=1)), ob("A2", 2)],
                              register=entries)
    pages = [
        run_cli(["report", "timeliness", "--from", "2026-04-01", "--to", "2026-04-30", "--format", "html"], sources),
        run_cli(["report", "register", "--bcu", "13-LD", "--on", "2026-04-01", "--format", "html"], sources),
        run_cli(["audit", "G1234HJ", "--format", "html"], sources),
    ]
    for page in pages:
        assert page.startswith("<!DOCTYPE html>") and "</html>" in page
        assert "<script" not in page and "src=" not in page and "<link" not in page
    assert "<svg" in pages[0] and "<svg" in pages[1]
    assert "&lt;script&gt;" in pages[1]
    assert "A2, breached: 1" in pages[0]  # each bar says what it counts


def test_register_csv_and_audit_text():
    sources = reports.Sources(register=register())
    text = run_cli(["report", "register", "--bcu", "13-LD", "--on", "2026-04-01"], sources)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["section"] for r in rows] == ["current", "removed", "removed"]
    assert rows[1]["authority"] == "BCU Commander"
    audit = run_cli(["audit", "noms:K4567LM"], sources)
    assert "de-selected from 13-LD" in audit and "authority=BCU Commander" in audit
    assert run_cli(["audit", "noms:K4567LM", "--format", "csv"], sources).startswith("at,kind,rule,what,")


def test_cli_refuses_bad_arguments_with_a_message(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["report", "timeliness", "--from", "April", "--to", "2026-04-30"])
    assert "'April' is not a date" in capsys.readouterr().err
    args = build_parser().parse_args(["report", "timeliness", "--from", "2026-04-30", "--to", "2026-04-01"])
    assert reports.main_report(args) == 2
    assert "--to is before --from" in capsys.readouterr().err
    assert reports.main_report(build_parser().parse_args(["audit", "nobody"])) == 2
    assert "not a PNC ID" in capsys.readouterr().err
