"""The register commands' pure parts: identifiers, checked changes, the import diff (dry run), identity care,
the quarterly record; `register.updated` in the ledger; the directory holder and its gaps; intake's scopes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from ppo_alerts import register_cli as rc
from services.rules.ledger import Ledger
from services.rules.rulebook import RuleBook
from shared.directory import Directory, DirectoryError, DirectoryHolder, missing_contacts
from shared.events import parse_event
from shared.register import CSV_COLUMNS, Register
from shared.register_admin import ChangeRefused, NothingToChange, Planner, normalise_ids, plan_import, quarterly_rows
from tests.rulebook_fixtures import DIRECTORY, REGISTER_CSV

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday
ALEX_PNC, ALEX_NOMS, ALEX_CRN = "2006/0777001G", "G1234HJ", "L112233"
SAM_PNC, SAM_NOMS = "2022/0031337W", "H2345JK"
NEW_PNC, NEW_NOMS = "2010/0123456T", "B2222CD"
HEADER = ",".join(CSV_COLUMNS)


def planner(register: Register | None = None) -> Planner:
    return Planner(register if register is not None else Register.from_csv_text(REGISTER_CSV), source="Jo Bloggs",
                   now=NOW, known_bcus=DIRECTORY["bcus"].keys())


def ledger_for(register: Register) -> Ledger:
    return Ledger(RuleBook(register, Directory.from_mapping(DIRECTORY)))


def refused(fn, *args, **kwargs) -> ChangeRefused:
    with pytest.raises(ChangeRefused) as info:
        fn(*args, **kwargs)
    return info.value


# --- identifiers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("2006/0777001G", {"pnc": ALEX_PNC}), ("06/777001G", {"pnc": ALEX_PNC}), ("g1234hj", {"noms": ALEX_NOMS}),
    ("L112233", {"crn": ALEX_CRN}), ("123457/12V", {"cro": "123457/12V"}), ("pnc:2006/0777001G", {"pnc": ALEX_PNC}),
    ("noms:G1234HJ", {"noms": ALEX_NOMS}),
])
def test_identifier_is_told_apart_by_its_shape(text, expected):
    assert rc.parse_identifier(text) == expected


def test_identifier_with_a_wrong_check_character_is_refused_saying_so():
    exc = refused(rc.parse_identifier, "2006/0777001H")
    assert "check character is H, expected G" in str(exc)
    exc = refused(normalise_ids, {"pnc": "2006/0777001H", "noms": "1234"})
    assert [p["field"] for p in exc.problems] == ["pnc", "noms"]


# --- one change -------------------------------------------------------------------------------------------------


def test_select_is_a_register_selected_event_with_who_and_why():
    p = planner()
    change = p.select({"pnc": "10/123456T", "noms": NEW_NOMS}, "21-ST", strand="catch_and_convict",
                      reason="NIM core nominal", authority="Supt Smith, BCU Commander", given_name="Kim",
                      family_name="New", date_of_birth=date(1990, 1, 2))
    event = parse_event(change.event)
    assert event.type == "register.selected" and event.source == "Jo Bloggs"
    assert event.person.pnc == NEW_PNC and event.person.noms == NEW_NOMS and event.person.given_name == "Kim"
    assert event.data.home_bcu == "21-ST" and event.data.authority == "Supt Smith, BCU Commander"
    assert event.occurred_at == NOW
    assert change.key == f"pnc:{NEW_PNC}".encode()  # as intake keys it
    assert change.person_id == f"pnc:{NEW_PNC}"
    assert p.register.find({"noms": NEW_NOMS}).period_at(NOW.date()).home_bcu == "21-ST"  # the working copy


def test_select_in_the_past_is_effective_from_london_midnight_and_never_in_the_future():
    change = planner().select({"pnc": NEW_PNC}, "13-LD", on=date(2026, 1, 5))
    assert change.event["occurred_at"] == "2026-01-05T00:00:00+00:00"
    exc = refused(planner().select, {"pnc": NEW_PNC}, "13-LD", on=date(2026, 3, 3))
    assert "in the future" in str(exc)


def test_same_pnc_different_noms_is_refused_with_an_explanation():
    exc = refused(planner().select, {"pnc": ALEX_PNC, "noms": "Z9999ZZ"}, "13-LD")
    assert exc.status == 409
    assert f"PNC {ALEX_PNC} is register entry pnc:{ALEX_PNC}, whose NOMS is {ALEX_NOMS}, not Z9999ZZ" in str(exc)


def test_identifiers_of_two_people_are_refused():
    exc = refused(planner().select, {"pnc": ALEX_PNC, "noms": SAM_NOMS}, "13-LD")
    assert exc.status == 409 and "already belongs to register entry" in str(exc)
    assert f"pnc:{SAM_PNC}" in str(exc) and f"pnc:{ALEX_PNC}" in str(exc)


def test_select_someone_already_on_the_register():
    with pytest.raises(NothingToChange):
        planner().select({"noms": ALEX_NOMS}, "13-LD")
    exc = refused(planner().select, {"noms": ALEX_NOMS}, "21-ST")
    assert exc.status == 409 and "use `move`" in str(exc)


def test_unknown_bcu_is_refused():
    exc = refused(planner().select, {"pnc": NEW_PNC}, "99-XX")
    assert "not in the directory" in str(exc) and "13-LD, 21-ST" in str(exc)


def test_reselection_after_deselection_is_a_new_period():
    p = planner()
    change = p.select({"noms": "J3456KL"}, "13-LD")  # Pat, de-selected 2025-12-31
    assert [x.start for x in p.register.find({"noms": "J3456KL"}).periods] == [date(2023, 1, 1), NOW.date()]
    assert change.event["person"]["pnc"] == "1999/0001234X"  # every identifier the register has: a stable key


def test_deselect_needs_a_known_reason_and_someone_on_the_register():
    p = planner()
    change = p.deselect({"crn": ALEX_CRN}, "two_year_review", "Leeds IOM panel")
    event = parse_event(change.event)
    assert event.type == "register.deselected" and event.data.authority == "Leeds IOM panel"
    assert event.person.pnc == ALEX_PNC  # identified by CRN, keyed by the best identifier
    assert "bored" in str(refused(p.deselect, {"crn": ALEX_CRN}, "bored", "x"))
    assert refused(p.deselect, {"noms": "Z9999ZZ"}, "other", "x").status == 404
    assert refused(p.deselect, {"crn": ALEX_CRN}, "other", "x").status == 409  # already off (working copy)


def test_move_and_no_op_move():
    p = planner()
    change = p.move({"noms": ALEX_NOMS}, "21-ST", reason="moved house", authority="coordinators")
    assert change.event["data"] == {"from_bcu": "13-LD", "to_bcu": "21-ST", "reason": "moved house",
                                    "authority": "coordinators"}
    with pytest.raises(NothingToChange):
        p.move({"noms": ALEX_NOMS}, "21-ST")


def test_update_adds_identifiers_and_refuses_a_clash():
    p = planner()
    change = p.update({"noms": SAM_NOMS}, {"crn": "X123456"}, reason="nDelius case opened")
    event = parse_event(change.event)
    assert event.type == "register.updated" and event.person.crn == "X123456" and event.person.pnc == SAM_PNC
    assert p.register.find({"crn": "X123456"}).person_id == f"pnc:{SAM_PNC}"
    exc = refused(p.update, {"noms": SAM_NOMS}, {"crn": ALEX_CRN})  # Alex's CRN
    assert exc.status == 409 and "already belongs" in str(exc)
    exc = refused(p.update, {"noms": SAM_NOMS}, {"noms": "A1234BC"})  # a second NOMS number
    assert f"whose NOMS is {SAM_NOMS}, not A1234BC" in str(exc)
    with pytest.raises(NothingToChange):
        p.update({"noms": SAM_NOMS}, {"crn": "X123456"})


# --- the ledger applies register.updated --------------------------------------------------------------------------


def test_ledger_applies_register_updated_and_refuses_a_clash():
    ledger = ledger_for(Register.from_csv_text(REGISTER_CSV))
    change = planner().update({"noms": SAM_NOMS}, {"crn": "X123456"})
    d = ledger.on_event(parse_event(change.event), NOW)
    assert [e.identifiers.get("crn") for e in d.register_changes] == ["X123456"]
    assert ledger.register.find({"crn": "X123456"}).person_id == f"pnc:{SAM_PNC}"
    again = ledger.on_event(parse_event(change.event), NOW)
    assert again.ignored == "register-unchanged" and again.register_changes == []
    clash = dict(change.event, id="x-2", person={"noms": SAM_NOMS, "crn": ALEX_CRN})
    assert ledger.on_event(parse_event(clash), NOW).ignored.startswith("register-conflict")
    stranger = dict(change.event, id="x-3", person={"noms": "Z9999ZZ", "crn": "Z999999"})
    assert ledger.on_event(parse_event(stranger), NOW).ignored == "not-on-register"


# --- import: the dry run's diff -----------------------------------------------------------------------------------

IMPORT = "\n".join([
    HEADER + ",deselection_reason,deselection_authority",
    f"{ALEX_PNC},,{ALEX_NOMS},{ALEX_CRN},Alex,Sample,1988-08-08,13-LD,catch_and_convict,2025-06-01,NIM core nominal,,,",
    f"{SAM_PNC},,{SAM_NOMS},X123456,Sam,Junior,2010-01-20,21-ST,deter,2025-11-01,PYO,2026-02-27,"
    "stopped_offending,YOS panel",
    f"{NEW_PNC},,{NEW_NOMS},,Kim,New,1990-01-02,13-LD,catch_and_convict,2026-01-05,Core nominal,,,",
    "2012/0000777B,,,,Lee,Past,1980-01-01,21-ST,,2024-01-01,,2024-06-30,long_custody,Panel",
    "2012/0000777B,,,,Lee,Past,1980-01-01,21-ST,,2025-01-01,,,,",
]) + "\n"


def test_import_dry_run_shows_what_would_change_row_by_row():
    p = planner()
    plan = plan_import(IMPORT, p)
    assert not plan.refused, plan.problems
    assert [(c.line, c.action) for c in plan.changes] == [
        (3, "update"), (3, "deselect"),  # Sam: a CRN added, de-selected by the file
        (4, "select"),  # a new person
        (5, "select"), (5, "deselect"),  # a past period, opened and closed
        (6, "select"),  # the same person again later
    ]
    assert plan.unchanged == 1  # Alex: the register already says so
    assert plan.counts() == {"update": 1, "deselect": 2, "select": 3}
    lee = p.register.find({"pnc": "2012/0000777B"})
    assert [(x.start, x.end, x.end_reason, x.authority) for x in lee.periods] == [
        (date(2024, 1, 1), date(2024, 6, 30), "long_custody", "Panel"), (date(2025, 1, 1), None, None, None)]
    # deterministic ids: publishing the same file twice is the same events
    assert plan.changes[0].event["id"] == plan_import(IMPORT, planner()).changes[0].event["id"]


def test_import_through_the_ledger_gives_the_register_the_dry_run_predicted_and_is_then_a_no_op():
    p = planner()
    plan = plan_import(IMPORT, p)
    ledger = ledger_for(Register.from_csv_text(REGISTER_CSV))
    for c in plan.changes:
        d = ledger.on_event(parse_event(c.event), NOW)
        assert not (d.ignored or "").startswith("register-conflict"), d.ignored
    assert ledger.register.to_csv_text() == p.register.to_csv_text()
    again = plan_import(IMPORT, planner(ledger.register))
    assert again.changes == [] and again.unchanged == 5 and not again.refused


def test_a_bad_row_refuses_the_whole_import_with_line_and_reason():
    bad = IMPORT + "\n".join([
        "2006/0777001H,,,,X,Y,,13-LD,,2026-01-01,,",  # line 7: check character
        f"{ALEX_PNC},,Z9999ZZ,,,,,13-LD,,2025-06-01,,",  # line 8: same PNC, different NOMS
        f"{ALEX_PNC},,,,,,,21-ST,,2025-06-01,,",  # line 9: another BCU for the same period
        f"{NEW_PNC},,,,,,,13-LD,,2026-02-01,,",  # line 10: overlaps line 4's period
        "2015/0004242N,,,,,,,99-XX,,2026-01-01,,",  # line 11: unknown BCU
        "2018/0000099F,,,,,,,13-LD,,2027-01-01,,",  # line 12: in the future
        "2018/0000099F,,,,,,,13-LD,,2025-01-01,,2025-02-01,bored,",  # line 13: unknown de-selection reason
    ]) + "\n"
    plan = plan_import(bad, planner(), origin="r.csv")
    where = [p["field"] for p in plan.problems]
    assert where == [f"r.csv line {n}" for n in range(7, 14)], plan.problems
    text = " | ".join(p["problem"] for p in plan.problems)
    for expected in ("check character is H", f"whose NOMS is {ALEX_NOMS}, not Z9999ZZ", "use `register move`",
                     "overlaps", "not in the directory", "in the future", "'bored'"):
        assert expected in text


def test_import_header_is_checked_first():
    plan = plan_import("pnc,noms\n2006/0777001G,G1234HJ\n", planner())
    assert plan.refused and plan.problems[0]["field"] == "line 1" and "home_bcu" in plan.problems[0]["problem"]


# --- the quarterly record (002 §37) -------------------------------------------------------------------------------


def test_quarterly_additions_removals_and_moves_per_area():
    reg = Register.from_csv_text(REGISTER_CSV)
    p = Planner(reg, source="t", now=datetime(2026, 4, 2, 12, tzinfo=UTC), known_bcus=None)
    p.select({"pnc": NEW_PNC}, "13-LD", on=date(2026, 1, 5), reason="Core nominal", given_name="Kim",
             family_name="New")
    p.deselect({"noms": SAM_NOMS}, "stopped_offending", "YOS panel", on=date(2026, 2, 27))
    p.move({"noms": ALEX_NOMS}, "21-ST", on=date(2026, 3, 2))
    p.select({"pnc": "2012/0000777B"}, "21-ST", on=date(2026, 3, 31))
    p.select({"pnc": "2015/0004242N"}, "21-ST", on=date(2026, 4, 1))  # Q2
    rows = quarterly_rows(reg, 2026, 1)
    got = [(r["bcu"], r["change"], r["date"], r["pnc"], r["reason"], r["authority"]) for r in rows]
    assert got == [
        ("13-LD", "added", "2026-01-05", NEW_PNC, "Core nominal", ""),
        ("13-LD", "moved_out", "2026-03-02", ALEX_PNC, "moved to 21-ST", ""),
        ("21-ST", "removed", "2026-02-27", SAM_PNC, "stopped_offending", "YOS panel"),
        ("21-ST", "moved_in", "2026-03-02", ALEX_PNC, "moved from 13-LD", ""),
        ("21-ST", "added", "2026-03-31", "2012/0000777B", "", ""),
    ]
    assert [r["change"] for r in quarterly_rows(reg, 2026, 1, bcu="13-LD")] == ["added", "moved_out"]
    # Q4 2025: Sam added in 21-ST, Pat removed from 13-LD (sorted by BCU, then date)
    assert [(r["bcu"], r["change"], r["date"]) for r in quarterly_rows(reg, 2025, 4)] == [
        ("13-LD", "removed", "2025-12-31"), ("21-ST", "added", "2025-11-01")]
    text = rc.csv_text(rc.QUARTERLY_COLUMNS, rows)
    assert text.splitlines()[0] == ",".join(rc.QUARTERLY_COLUMNS)


def test_list_rows_today_and_all():
    reg = Register.from_csv_text(REGISTER_CSV)
    today = [r["person_id"] for r in rc.list_rows(reg, NOW.date())]
    assert today == [f"pnc:{ALEX_PNC}", f"pnc:{SAM_PNC}"]
    assert [r["person_id"] for r in rc.list_rows(reg, NOW.date(), bcu="21-ST")] == [f"pnc:{SAM_PNC}"]
    assert len(rc.list_rows(reg, NOW.date(), everyone=True)) == 3
    assert "on the register today (2026-03-02): yes, BCU 13-LD" in rc.show_text(reg.find({"noms": ALEX_NOMS}),
                                                                                 NOW.date())


# --- the directory: holder, reload, gaps --------------------------------------------------------------------------


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_holder_reloads_a_good_file_refuses_a_broken_one_and_keeps_the_old(tmp_path):
    path = write(tmp_path / "d.yaml", DIRECTORY)
    holder = DirectoryHolder(path)
    assert holder.reload_if_changed() is None
    changed = json.loads(json.dumps(DIRECTORY))
    changed["bcus"]["13-LD"]["contacts"]["ppo"] = ["new.ppo@westyorkshire.police.uk"]
    write(path, changed)
    assert holder.reload_if_changed() is not None
    assert holder.contacts("13-LD", "ppo") == ["new.ppo@westyorkshire.police.uk"]
    broken = json.loads(json.dumps(changed))
    broken["bcus"]["13-LD"]["contacts"]["ppo"] = ["someone@gmail.com"]
    write(path, broken)
    with pytest.raises(DirectoryError, match="gmail.com is outside the allowed recipient domains"):
        holder.reload_if_changed()
    assert holder.contacts("13-LD", "ppo") == ["new.ppo@westyorkshire.police.uk"]  # the old one stays
    assert holder.reload_if_changed() is None  # reported once, not at every look
    path.write_text("bcus: [unclosed")
    with pytest.raises(DirectoryError, match="not valid YAML"):
        holder.reload_if_changed()
    assert holder.bcu_codes == ["13-LD", "21-ST"] and holder.allowed("x@justice.gov.uk")


def test_gaps_are_bcus_with_ppos_lacking_a_role():
    data = json.loads(json.dumps(DIRECTORY))
    del data["bcus"]["21-ST"]["contacts"]["yot"]
    directory = Directory.from_mapping(data)
    assert missing_contacts(directory, ["13-LD", "21-ST", "99-XX"]) == [
        ("21-ST", "yot"), *[("99-XX", r) for r in ("ppo", "warrants", "probation", "yot", "coordinator",
                                                   "escalation")]]
    reg = Register.from_csv_text(REGISTER_CSV)
    check = rc.check_directory(lambda: directory, reg, NOW.date())
    assert check.ok and check.gaps == [("21-ST", "yot")] and check.ppos == {"13-LD": 1, "21-ST": 1}
    assert any("BCU 21-ST has 1 PPO(s) and has no yot contact" in line for line in check.report())
    bad = rc.check_directory(lambda: Directory.from_mapping({"recipient_domains": ["gov.uk"], "bcus": {
        "X": {"name": "x", "contacts": {"ppo": ["a@gmail.com"]}}}}), reg, NOW.date())
    assert not bad.ok and bad.report()[0].startswith("REFUSED:")


# --- intake: only a coordinator's token changes the register --------------------------------------------------


class RecordingBroker:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, bytes | None]] = []

    def subscriber(self, *args, **kwargs):
        return lambda handler: handler

    async def publish(self, message: bytes, topic: str, key: bytes | None = None, headers=None) -> None:
        self.published.append((topic, message, key))


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def test_intake_register_routes_need_a_coordinator_token(monkeypatch, tmp_path):
    from starlette.applications import Starlette

    from services.intake.service import IntakeService
    from shared.clock import FixedClock
    from shared.settings import Settings

    async def register_from_topic(settings, warn=None):
        return Register.from_csv_text(REGISTER_CSV)

    import shared.register_admin as admin

    monkeypatch.setattr(admin, "read_register", register_from_topic)
    settings = Settings(intake_tokens={_sha("court-token"): "HMCTS"},
                        intake_coordinator_tokens={_sha("coord-token"): "Leeds IOM coordinator"},
                        directory_file=write(tmp_path / "d.yaml", DIRECTORY))
    broker = RecordingBroker()
    service = IntakeService(settings, broker, FixedClock(NOW))  # type: ignore[arg-type]
    app = Starlette(routes=service.routes())
    select = {"person": {"pnc": NEW_PNC, "given_name": "Kim"}, "home_bcu": "13-LD", "reason": "Core nominal"}
    register_event = {"id": "r-1", "type": "register.selected", "occurred_at": "2026-03-02T10:00:00Z",
                      "source": "x", "person": {"pnc": NEW_PNC}, "data": {"home_bcu": "13-LD"}}

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
            court = {"Authorization": "Bearer court-token"}
            coord = {"Authorization": "Bearer coord-token"}
            return [
                await c.post("/v1/register/select", json=select),  # no token
                await c.post("/v1/register/select", json=select, headers=court),
                await c.post("/v1/events", json=register_event, headers=court),
                await c.post("/v1/register/select", json=select, headers=coord),
                await c.post("/v1/register/select", json={**select, "person": {"pnc": ALEX_PNC, "noms": "Z9999ZZ"}},
                             headers=coord),
                await c.post("/v1/register/deselect", json={"person": {"noms": ALEX_NOMS}, "reason": "bored",
                                                            "authority": "x"}, headers=coord),
                await c.post("/v1/register/import?dry_run=true", content=IMPORT.encode(), headers=coord),
                await c.post("/v1/register/frobnicate", json={}, headers=coord),
            ]

    codes = asyncio.run(run())
    assert [r.status_code for r in codes] == [401, 403, 403, 202, 409, 422, 200, 404], [r.text for r in codes]
    published = [json.loads(m) for t, m, _ in broker.published]
    assert len(published) == 1 and published[0]["type"] == "register.selected"
    assert published[0]["source"] == "Leeds IOM coordinator" and published[0]["data"]["reason"] == "Core nominal"
    assert codes[3].json()["accepted"] == [published[0]["id"]]
    assert "whose NOMS is G1234HJ" in codes[4].json()["error"]
    assert codes[5].json()["problems"][0]["field"] == "reason"
    assert codes[6].json()["counts"] == {"update": 1, "deselect": 2, "select": 3}
