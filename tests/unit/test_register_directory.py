"""The PPO register (effective-dated, CSV) and the directory (allowed domains, contacts): contract §2."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from shared.directory import ROLES, Directory, DirectoryError, domain_allowed
from shared.register import CSV_COLUMNS, Period, Register, RegisterEntry, RegisterError, age_on, person_id_for

EXAMPLE = Path("/work/shared/examples/e1_reception_hmpps")
HEADER = ",".join(CSV_COLUMNS)

ALEX = {"pnc": "2006/0777001G", "noms": "G1234HJ", "crn": "L112233"}
SAM = {"pnc": "2022/0031337W", "noms": "H2345JK"}
PAT = {"pnc": "1999/0001234X", "noms": "J3456KL"}


def row(
    pnc="2002/0073319Z",
    cro="",
    noms="",
    crn="",
    given="",
    family="",
    dob="",
    bcu="13-LD",
    strand="",
    selected="2025-01-01",
    reason="",
    deselected="",
) -> str:
    return ",".join([pnc, cro, noms, crn, given, family, dob, bcu, strand, selected, reason, deselected])


def csv_text(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def load_error(text: str) -> str:
    with pytest.raises(RegisterError) as info:
        Register.from_csv_text(text)
    return str(info.value)


@pytest.fixture()
def example_register() -> Register:
    if not (EXAMPLE / "register.csv").exists():
        pytest.skip("shared example register not available")
    return Register.load(EXAMPLE / "register.csv")


# --- loading the example -----------------------------------------------------------------------------------


def test_example_register_loads(example_register):
    reg = example_register
    assert len(reg) == 3
    alex = reg.find({"pnc": ALEX["pnc"]})
    assert alex is not None and alex.person_id == "pnc:2006/0777001G"
    assert alex.identifiers == ALEX
    assert (alex.given_name, alex.family_name, alex.date_of_birth) == ("Alex", "Sample", date(1988, 8, 8))
    assert alex.periods == [Period(date(2025, 6, 1), None, "13-LD", "catch_and_convict", "NIM core nominal")]
    sam = reg.find({"noms": SAM["noms"]})
    assert sam is not None and sam.period_at(date(2026, 3, 2)).home_bcu == "21-ST"
    pat = reg.find({"noms": PAT["noms"]})
    assert pat is not None and pat.periods[0].end == date(2025, 12, 31)


@pytest.mark.parametrize("kind", ["pnc", "noms", "crn"])
def test_example_matches_on_any_identifier(example_register, kind):
    assert example_register.find({kind: ALEX[kind]}).person_id == "pnc:2006/0777001G"


def test_find_uses_any_of_several_identifiers(example_register):
    # a court feed knows the PNC, the prison the NOMS number: either is enough
    assert example_register.find({"pnc": "2000/0000001A", "noms": ALEX["noms"]}).identifiers == ALEX
    assert example_register.find({"pnc": "2000/0000001A"}) is None
    assert example_register.find({}) is None


def test_example_effective_dating(example_register):
    alex = example_register.find(ALEX)
    assert not alex.on_register(date(2025, 5, 31))
    assert alex.on_register(date(2025, 6, 1))  # from selected_on, inclusive
    assert alex.on_register(date(2030, 1, 1))  # open-ended
    pat = example_register.find(PAT)
    assert pat.on_register(date(2023, 1, 1)) and pat.on_register(date(2025, 12, 30))
    assert not pat.on_register(date(2025, 12, 31))  # de-selection takes effect that day
    assert pat.open_period() is None and pat.last_period().end == date(2025, 12, 31)


def test_load_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "register.csv"
    path.write_text(csv_text(row()), encoding="utf-8-sig")
    assert len(Register.load(path)) == 1


def test_load_missing_file_says_which(tmp_path):
    with pytest.raises(RegisterError, match="cannot read register .*nope.csv"):
        Register.load(tmp_path / "nope.csv")


# --- bad rows ----------------------------------------------------------------------------------------------


def test_bad_pnc_check_character_names_line_and_expected_letter():
    message = load_error(csv_text(row(), row(pnc="2002/0073319A")))
    assert "line 3" in message and "pnc" in message and "expected Z" in message
    assert "line 2" not in message


def test_missing_home_bcu_names_line():
    message = load_error(csv_text(row(), row(pnc="2004/0012345D", bcu="")))
    assert "line 3: home_bcu is empty" in message


@pytest.mark.parametrize("bad", ["2025-13-01", "01/06/2025", "yesterday"])
def test_bad_selected_on_names_line_and_value(bad):
    message = load_error(csv_text(row(selected=bad)))
    assert "line 2" in message and "selected_on" in message and bad in message


def test_missing_selected_on_names_line():
    assert "line 2: selected_on is empty" in load_error(csv_text(row(selected="")))


def test_bad_deselected_on_and_date_of_birth_name_the_column():
    assert "deselected_on" in load_error(csv_text(row(deselected="2025-02-30")))
    assert "date_of_birth" in load_error(csv_text(row(dob="1990-02-30")))


def test_deselected_before_selected_is_refused():
    message = load_error(csv_text(row(selected="2025-06-01", deselected="2025-05-31")))
    assert "line 2" in message and "deselected_on 2025-05-31 is before selected_on 2025-06-01" in message


def test_deselected_on_the_selection_day_is_allowed_and_never_on_register():
    reg = Register.from_csv_text(csv_text(row(selected="2025-06-01", deselected="2025-06-01")))
    assert not reg.entries()[0].on_register(date(2025, 6, 1))


def test_row_without_identifier_is_refused():
    assert "line 2: no identifier" in load_error(csv_text(row(pnc="")))


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [("cro", "065656/91A", "expected H"), ("noms", "A1234B", "NOMS"), ("crn", "X12345", "CRN")],
)
def test_bad_other_identifiers_name_the_column(column, value, words):
    message = load_error(csv_text(row(**{column: value})))
    assert f"line 2: {column}:" in message and words in message


def test_every_bad_row_is_reported_at_once():
    message = load_error(
        csv_text(
            row(pnc="2002/0073319A"),
            row(pnc="2004/0012345D"),
            row(pnc="1999/0001234X", bcu=""),
            row(noms="A1234BC", pnc="", selected="2025-06-01", deselected="2025-01-01"),
        )
    )
    for line in ("line 2", "line 4", "line 5"):
        assert line in message
    assert "line 3" not in message


def test_more_than_twenty_bad_rows_are_summarised():
    message = load_error(csv_text(*[row(bcu="") for _ in range(25)]))
    assert "line 21" in message and "line 22" not in message and "(and 5 more)" in message


def test_missing_header_columns_are_named():
    text = "pnc,noms,home_bcu,selected_on\n2002/0073319Z,,13-LD,2025-01-01\n"
    message = load_error(text)
    for column in ("cro", "crn", "given_name", "deselected_on"):
        assert column in message


def test_identifiers_in_the_csv_are_normalised():
    reg = Register.from_csv_text(
        csv_text(row(pnc="02/73319z", cro="65656/91h", noms="a1234bc", crn="x123456"))
    )
    entry = reg.entries()[0]
    assert entry.identifiers == {
        "pnc": "2002/0073319Z",
        "cro": "065656/91H",
        "noms": "A1234BC",
        "crn": "X123456",
    }
    assert reg.find({"cro": "065656/91H"}) is entry


def test_second_row_for_the_same_person_adds_a_period():
    reg = Register.from_csv_text(
        csv_text(
            row(selected="2024-01-01", deselected="2024-07-01", bcu="13-LD"),
            row(selected="2025-01-01", bcu="21-ST"),
        )
    )
    (entry,) = reg.entries()
    assert [p.home_bcu for p in entry.periods] == ["13-LD", "21-ST"]
    assert entry.on_register(date(2024, 3, 1)) and not entry.on_register(date(2024, 9, 1))
    assert entry.period_at(date(2025, 3, 1)).home_bcu == "21-ST"


def test_overlapping_rows_for_the_same_person_are_refused():
    message = load_error(csv_text(row(selected="2024-01-01"), row(selected="2025-01-01")))
    assert "line 3" in message and "overlaps" in message


def test_overlapping_rows_are_refused_in_either_order():
    load_error(csv_text(row(selected="2025-06-01"), row(selected="2025-01-01")))


def test_line_numbers_count_blank_lines():
    text = HEADER + "\n\n" + row(pnc="2002/0073319A") + "\n"
    assert "line 3" in load_error(text)


# --- select / deselect / move ------------------------------------------------------------------------------


def test_select_then_on_register_from_that_day():
    reg = Register()
    entry = reg.select(
        {"pnc": "2002/0073319Z"},
        date(2026, 3, 2),
        "13-LD",
        "deter",
        "PYO",
        "Sam",
        "Example",
        date(2010, 1, 20),
    )
    assert entry.person_id == "pnc:2002/0073319Z"
    assert not entry.on_register(date(2026, 3, 1)) and entry.on_register(date(2026, 3, 2))
    assert entry.period_at(date(2026, 3, 2)) == Period(date(2026, 3, 2), None, "13-LD", "deter", "PYO")
    assert (entry.given_name, entry.date_of_birth) == ("Sam", date(2010, 1, 20))
    assert reg.find({"pnc": "2002/0073319Z"}) is entry


def test_select_again_merges_identifiers_and_keeps_one_period():
    reg = Register()
    first = reg.select({"pnc": "2002/0073319Z"}, date(2026, 3, 2), "13-LD")
    again = reg.select({"pnc": "2002/0073319Z", "noms": "A1234BC"}, date(2026, 4, 1), "21-ST")
    assert again is first and len(reg) == 1
    assert again.identifiers == {"pnc": "2002/0073319Z", "noms": "A1234BC"}
    assert reg.find({"noms": "A1234BC"}) is first
    assert len(first.periods) == 1 and first.periods[0].home_bcu == "13-LD"  # already on: no new period


def test_deselect_takes_effect_on_the_day():
    reg = Register()
    entry = reg.select({"noms": "A1234BC"}, date(2026, 1, 5), "13-LD")
    assert reg.deselect(entry, date(2026, 3, 2), "long_custody", "IOM panel")
    assert entry.on_register(date(2026, 3, 1))
    assert not entry.on_register(date(2026, 3, 2))
    assert entry.periods[0].end_reason == "long_custody" and entry.periods[0].authority == "IOM panel"
    assert not reg.deselect(entry, date(2026, 4, 1), "other")  # nothing left to end


def test_deselect_on_selection_day_means_never_on_register():
    reg = Register()
    entry = reg.select({"noms": "A1234BC"}, date(2026, 3, 2), "13-LD")
    assert reg.deselect(entry, date(2026, 3, 2), "other")
    assert not entry.on_register(date(2026, 3, 2))


def test_reselection_after_deselection_opens_a_new_period():
    reg = Register()
    entry = reg.select({"noms": "A1234BC"}, date(2025, 1, 1), "13-LD")
    reg.deselect(entry, date(2025, 6, 1), "stopped_offending")
    reg.select({"noms": "A1234BC"}, date(2026, 1, 1), "21-ST")
    assert [(p.start, p.end, p.home_bcu) for p in entry.periods] == [
        (date(2025, 1, 1), date(2025, 6, 1), "13-LD"),
        (date(2026, 1, 1), None, "21-ST"),
    ]
    assert entry.on_register(date(2025, 5, 31)) and not entry.on_register(date(2025, 12, 31))
    assert entry.on_register(date(2026, 1, 1))


def test_move_splits_the_period():
    reg = Register()
    entry = reg.select({"pnc": "2002/0073319Z"}, date(2025, 1, 1), "13-LD", "deter")
    assert reg.move(entry, date(2026, 3, 2), "21-ST")
    assert [(p.start, p.end, p.home_bcu) for p in entry.periods] == [
        (date(2025, 1, 1), date(2026, 3, 2), "13-LD"),
        (date(2026, 3, 2), None, "21-ST"),
    ]
    assert entry.period_at(date(2026, 3, 1)).home_bcu == "13-LD"  # before the move: the old BCU
    assert entry.period_at(date(2026, 3, 2)).home_bcu == "21-ST"  # from the move date: the new one
    assert entry.periods[0].end_reason == "moved_area"
    assert entry.periods[1].strand == "deter"
    assert all(entry.on_register(date(2025, 1, 1) + timedelta(days=i)) for i in range(0, 500, 7))


def test_move_on_the_selection_day_changes_the_bcu_in_place():
    reg = Register()
    entry = reg.select({"pnc": "2002/0073319Z"}, date(2026, 3, 2), "13-LD")
    assert reg.move(entry, date(2026, 3, 2), "21-ST")
    assert [(p.start, p.home_bcu) for p in entry.periods] == [(date(2026, 3, 2), "21-ST")]


def test_move_that_changes_nothing_is_refused():
    reg = Register()
    entry = reg.select({"pnc": "2002/0073319Z"}, date(2026, 3, 2), "13-LD")
    assert not reg.move(entry, date(2026, 4, 1), "13-LD")  # same BCU
    assert not reg.move(entry, date(2026, 3, 1), "21-ST")  # not on the register that day
    assert len(entry.periods) == 1


def test_move_before_a_recorded_deselection_keeps_the_deselection():
    reg = Register()
    entry = reg.select({"pnc": "2002/0073319Z"}, date(2025, 1, 1), "13-LD")
    reg.deselect(entry, date(2025, 12, 31), "long_custody", "IOM panel")
    reg.move(entry, date(2025, 6, 1), "21-ST")  # reported late: it happened before the de-selection
    last = entry.last_period()
    assert (last.home_bcu, last.end, last.end_reason, last.authority) == (
        "21-ST",
        date(2025, 12, 31),
        "long_custody",
        "IOM panel",
    )
    assert entry.periods[0].authority is None


# --- put and identifier collisions -------------------------------------------------------------------------


def _entry(pid: str, **ids: str) -> RegisterEntry:
    return RegisterEntry(pid, ids, periods=[Period(date(2025, 1, 1), None, "13-LD")])


def test_put_refuses_an_identifier_that_belongs_to_someone_else():
    reg = Register()
    reg.put(_entry("pnc:A", pnc="A", noms="X"))
    reg.put(_entry("pnc:B", pnc="B"))
    with pytest.raises(RegisterError) as info:
        reg.put(_entry("pnc:B", pnc="B", noms="X"))
    assert "NOMS X already belongs to register entry pnc:A" in str(info.value)
    assert "pnc:B" in str(info.value)
    assert reg.find({"noms": "X"}).person_id == "pnc:A"


def test_put_replaces_an_entry_and_reindexes():
    reg = Register()
    reg.put(_entry("pnc:A", pnc="A", noms="X"))
    reg.put(_entry("pnc:A", pnc="A", noms="Y"))
    assert len(reg) == 1
    assert reg.find({"noms": "X"}) is None and reg.find({"noms": "Y"}).person_id == "pnc:A"


def test_refused_put_leaves_the_register_unchanged():
    reg = Register()
    reg.put(_entry("pnc:A", pnc="A", noms="X"))
    reg.put(_entry("pnc:B", pnc="B"))
    with pytest.raises(RegisterError):
        reg.put(_entry("pnc:B", pnc="B", noms="X"))
    assert reg.find({"pnc": "B"}) is not None


def test_select_refuses_identifiers_of_two_different_people():
    reg = Register()
    reg.select({"pnc": "2002/0073319Z"}, date(2025, 1, 1), "13-LD")
    reg.select({"noms": "A1234BC"}, date(2025, 1, 1), "13-LD")
    with pytest.raises(RegisterError, match="already belongs"):
        reg.select({"pnc": "2002/0073319Z", "noms": "A1234BC"}, date(2025, 2, 1), "13-LD")
    assert reg.find({"noms": "A1234BC"}).person_id == "noms:A1234BC"


def test_person_id_prefers_pnc_then_noms_then_crn_then_cro():
    assert person_id_for({"cro": "C", "crn": "R", "noms": "N", "pnc": "P"}) == "pnc:P"
    assert person_id_for({"cro": "C", "crn": "R", "noms": "N"}) == "noms:N"
    assert person_id_for({"cro": "C", "crn": "R"}) == "crn:R"
    assert person_id_for({"cro": "C"}) == "cro:C"
    with pytest.raises(RegisterError):
        person_id_for({})


# --- CSV round trip ----------------------------------------------------------------------------------------


def test_example_round_trips_through_csv(example_register):
    text = example_register.to_csv_text()
    # The contract's columns first, then the optional de-selection reason and authority (kept for C4).
    assert text.splitlines()[0] == HEADER + ",deselection_reason,deselection_authority"
    again = Register.from_csv_text(text)
    assert again.to_csv_text() == text
    assert [e.to_dict() for e in again.entries()] == [e.to_dict() for e in example_register.entries()]
    original = (EXAMPLE / "register.csv").read_text(encoding="utf-8-sig")
    contract_columns = "\n".join(",".join(line.split(",")[:12]) for line in text.splitlines()) + "\n"
    assert contract_columns == original.replace("\r\n", "\n")


def test_changes_round_trip_through_csv():
    reg = Register()
    a = reg.select(
        {"pnc": "2002/0073319Z", "cro": "065656/91H"},
        date(2025, 1, 1),
        "13-LD",
        "deter",
        "PYO, prolific",
        'Sam "Jr"',
        "O'Example",
        date(2010, 1, 20),
    )
    reg.move(a, date(2025, 6, 1), "21-ST")
    reg.deselect(a, date(2026, 1, 1), "other")
    reg.select({"crn": "X123456"}, date(2026, 2, 1), "21-ST")
    b = reg.select({"noms": "A1234BC"}, date(2026, 2, 1), "13-LD")
    reg.deselect(b, date(2026, 2, 1), "other")  # zero-length period
    text = reg.to_csv_text()
    again = Register.from_csv_text(text)
    assert again.to_csv_text() == text
    for entry in reg.entries():
        copy = again.get(entry.person_id)
        assert copy is not None and copy.identifiers == entry.identifiers
        assert (copy.given_name, copy.family_name, copy.date_of_birth) == (
            entry.given_name,
            entry.family_name,
            entry.date_of_birth,
        )
        assert [(p.start, p.end, p.home_bcu, p.strand, p.reason) for p in copy.periods] == [
            (p.start, p.end, p.home_bcu, p.strand, p.reason) for p in entry.periods
        ]
    moved = again.find({"cro": "065656/91H"})
    assert moved.period_at(date(2025, 5, 31)).home_bcu == "13-LD"
    assert moved.period_at(date(2025, 6, 1)).home_bcu == "21-ST"
    assert not moved.on_register(date(2026, 1, 1))


def test_entry_dict_round_trip(example_register):
    for entry in example_register.entries():
        assert RegisterEntry.from_dict(entry.to_dict()) == entry


@pytest.mark.parametrize(
    ("dob", "day", "age"),
    [
        (date(2008, 3, 2), date(2026, 3, 1), 17),
        (date(2008, 3, 2), date(2026, 3, 2), 18),
        (date(2008, 2, 29), date(2026, 2, 28), 17),
        (date(2008, 2, 29), date(2026, 3, 1), 18),
    ],
)
def test_age_on(dob, day, age):
    assert age_on(dob, day) == age


# --- directory ---------------------------------------------------------------------------------------------


def directory_mapping(**contacts: list[str]) -> dict:
    return {
        "recipient_domains": ["police.uk", "pnn.police.uk", "cjsm.net", "gov.uk", "justice.gov.uk"],
        "bcus": {
            "13-LD": {
                "name": "Leeds District",
                "force": "13",
                "contacts": contacts or {"ppo": ["leeds.ppo@westyorkshire.police.uk"]},
            }
        },
    }


def directory_error(raw) -> str:
    with pytest.raises(DirectoryError) as info:
        Directory.from_mapping(raw)
    return str(info.value)


def test_example_directory_loads():
    path = EXAMPLE / "directory.yaml"
    if not path.exists():
        pytest.skip("shared example directory not available")
    directory = Directory.load(path)
    assert directory.bcu_codes == ["13-LD", "21-ST"]
    assert directory.contacts("13-LD", "ppo") == ["leeds.ppo@westyorkshire.police.uk"]
    assert directory.contacts("21-ST", "yot") == ["yos@stoke.gov.uk"]
    assert directory.contacts("99-XX", "ppo") == [] and directory.contacts(None, "ppo") == []
    assert directory.contacts("13-LD", "court") == []
    assert directory.bcu("13-LD").force == "13" and directory.bcu("13-LD").name == "Leeds District"
    assert directory.allowed("anyone@westyorkshire.police.uk") and not directory.allowed("anyone@gmail.com")


def test_address_outside_the_domains_is_refused_naming_it_and_the_domains():
    message = directory_error(
        directory_mapping(ppo=["leeds.ppo@westyorkshire.police.uk", "someone@gmail.com"])
    )
    assert "someone@gmail.com" in message
    assert "bcus.13-LD.contacts.ppo" in message
    assert "police.uk, pnn.police.uk, cjsm.net, gov.uk, justice.gov.uk" in message
    assert "leeds.ppo@westyorkshire.police.uk" not in message


def test_every_offending_address_is_named():
    message = directory_error(
        directory_mapping(ppo=["a@gmail.com"], yot=["b@hotmail.co.uk"], warrants=["not-an-address"])
    )
    assert "a@gmail.com" in message and "b@hotmail.co.uk" in message and "not-an-address" in message


def test_directory_file_with_a_bad_address_is_refused(tmp_path):
    raw = directory_mapping(ppo=["someone@gmail.com"])
    path = tmp_path / "directory.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(DirectoryError, match="someone@gmail.com"):
        Directory.load(path)


@pytest.mark.parametrize(("where", "key"), [("top", "recipients"), ("bcu", "phone")])
def test_unknown_keys_are_refused(where, key):
    raw = directory_mapping()
    (raw if where == "top" else raw["bcus"]["13-LD"])[key] = "x"
    message = directory_error(raw)
    assert key in message


def test_unknown_role_is_refused_listing_the_roles():
    message = directory_error(
        directory_mapping(ppo=["a@westyorkshire.police.uk"], janitor=["b@westyorkshire.police.uk"])
    )
    assert "janitor" in message and "unknown role" in message
    for role in ROLES:
        assert role in message


@pytest.mark.parametrize("raw", [None, [], "text", {"bcus": {}}, {"recipient_domains": [], "bcus": {}}])
def test_malformed_directories_are_refused(raw):
    assert directory_error(raw)


def test_unreadable_and_invalid_yaml_files(tmp_path):
    with pytest.raises(DirectoryError, match="cannot read directory"):
        Directory.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("bcus: [unclosed\n", encoding="utf-8")
    with pytest.raises(DirectoryError, match="not valid YAML"):
        Directory.load(bad)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("x@westyorkshire.police.uk", True),  # subdomain of police.uk
        ("x@police.uk", True),  # the domain itself
        ("x@WestYorkshire.Police.UK", True),  # case does not matter
        ("x@leeds.cjsm.net", True),
        ("x@evilpolice.uk", False),  # a suffix that is not a subdomain
        ("x@police.uk.evil.com", False),
        ("x@gmail.com", False),
        ("x@gov.uk.attacker.net", False),
        ("no-at-sign.police.uk", False),
        ("x@", False),
    ],
)
def test_domain_matching(address, allowed):
    assert domain_allowed(address, ["police.uk", "cjsm.net", "gov.uk"]) is allowed


def test_subdomain_allowed_in_a_directory_but_lookalike_refused():
    ok = Directory.from_mapping(directory_mapping(ppo=["x@westyorkshire.police.uk"]))
    assert ok.contacts("13-LD", "ppo") == ["x@westyorkshire.police.uk"]
    assert "x@evilpolice.uk" in directory_error(directory_mapping(ppo=["x@evilpolice.uk"]))


def test_domains_in_the_allow_list_are_case_insensitive():
    raw = directory_mapping(ppo=["x@westyorkshire.police.uk"])
    raw["recipient_domains"] = ["POLICE.UK"]
    assert Directory.from_mapping(raw).allowed("y@leeds.police.uk")
