"""One person, one partition: the resolve stage's key for an event, and what a rules instance takes from another
(register entries, obligations) without regressing what it holds. Pure: no Kafka."""

from __future__ import annotations

from services.rules.resolve import People, identifier_key
from shared.register import Register, RegisterEntry
from tests.rulebook_fixtures import REGISTER_CSV, event, make_ledger

FULL = {"pnc": "2006/0777001G", "cro": "123456/06Z", "noms": "G1234HJ", "crn": "L112233"}


def people_of(csv: str = REGISTER_CSV) -> People:
    people = People()
    for entry in Register.from_csv_text(csv).entries():
        people.learn_entry(entry)
    return people


def test_a_registered_person_is_keyed_by_their_register_id_whichever_identifier_an_event_carries():
    people = People()
    people.learn("pnc:2006/0777001G", FULL)
    for kind, value in FULL.items():
        assert people.key_for("prison.reception", {kind: value}) == b"person:pnc:2006/0777001G", kind
    # an identifier the register does not know, beside one it knows, still finds them
    assert people.key_for("court.result", {"noms": "Z9999ZZ", "crn": "L112233"}) == b"person:pnc:2006/0777001G"


def test_the_register_file_gives_the_same_ids_as_the_register():
    people = people_of()
    assert people.key_for("prison.reception", {"noms": "G1234HJ"}) == b"person:pnc:2006/0777001G"
    assert people.key_for("prison.reception", {"noms": "H2345JK"}) == b"person:pnc:2022/0031337W"
    # de-selected: still an entry (C4 needs it), still one partition
    assert people.key_for("prison.release_date_set", {"noms": "J3456KL"}) == b"person:pnc:1999/0001234X"


def test_someone_on_no_register_is_keyed_by_one_identifier_in_a_fixed_order():
    people = people_of()
    assert people.key_for("prison.reception", {"noms": "Z9999ZZ"}) == b"noms:Z9999ZZ"
    # the same pair of identifiers gives the same key whichever order they come in (intake's person_key order)
    assert people.key_for("court.result", {"crn": "X123456", "pnc": "2011/0000001A"}) == b"pnc:2011/0000001A"
    assert people.key_for("court.result", {"cro": "123456/06Z", "crn": "X123456"}) == b"crn:X123456"
    assert identifier_key({}) == b"-"


def test_a_selection_updates_the_view_at_once_so_the_next_event_by_another_identifier_follows_it():
    people = People()
    pnc, noms = "2010/0123456T", "B2222CD"
    assert people.key_for("prison.reception", {"noms": noms}) == b"noms:B2222CD"  # not selected yet
    assert people.key_for("register.selected", {"pnc": pnc, "noms": noms}) == b"person:pnc:2010/0123456T"
    assert people.key_for("prison.reception", {"noms": noms}) == b"person:pnc:2010/0123456T"
    assert people.key_for("court.result", {"pnc": pnc}) == b"person:pnc:2010/0123456T"
    # register.updated adds an identifier: events by it follow too
    assert people.key_for("register.updated", {"pnc": pnc, "crn": "Y998877"}) == b"person:pnc:2010/0123456T"
    assert people.key_for("probation.breach", {"crn": "Y998877"}) == b"person:pnc:2010/0123456T"
    # de-selection and moves are about the person already known
    assert people.key_for("register.deselected", {"noms": noms}) == b"person:pnc:2010/0123456T"


def test_a_selection_by_noms_alone_is_keyed_as_the_register_will_name_them():
    people = People()
    assert people.key_for("register.selected", {"noms": "B2222CD"}) == b"person:noms:B2222CD"
    assert people.key_for("police.arrest", {"noms": "B2222CD"}) == b"person:noms:B2222CD"


def test_an_update_of_someone_not_on_the_register_teaches_nothing():
    people = People()
    assert people.key_for("register.updated", {"pnc": "2010/0123456T", "noms": "B2222CD"}) == b"pnc:2010/0123456T"
    assert len(people) == 0


def test_a_clash_the_register_refuses_moves_nobodys_key():
    people = people_of()
    # Sam's NOMS given to Alex's PNC: the register refuses it; Sam's events stay on Sam's partition
    people.key_for("register.updated", {"pnc": "2006/0777001G", "noms": "H2345JK"})
    assert people.key_for("prison.reception", {"noms": "H2345JK"}) == b"person:pnc:2022/0031337W"


def test_a_registered_persons_events_resolve_to_the_id_the_ledger_matches():
    """The resolver's id is the id of the entry the ledger finds for that event (so the obligations are theirs)."""
    ledger = make_ledger()
    people = people_of()
    for person in ({"noms": "G1234HJ"}, {"crn": "L112233"}, {"pnc": "2006/0777001G"}, {"noms": "H2345JK"}):
        e = event("prison.reception", person, "2026-01-05T10:00:00Z", prison_id="LEI", reason="new")
        entry = ledger.register.find_person(e.person)
        assert entry is not None
        assert people.key_for(e.type, e.person.identifiers()) == f"person:{entry.person_id}".encode()


# --- what one instance takes from another ---------------------------------------------------------------------

def test_a_register_entry_from_another_instance_puts_the_person_on_this_ledgers_register():
    ledger = make_ledger()
    kim = RegisterEntry.from_dict({
        "person_id": "pnc:2010/0123456T", "identifiers": {"pnc": "2010/0123456T", "noms": "B2222CD"},
        "periods": [{"start": "2026-01-01", "end": None, "home_bcu": "13-LD"}]})
    reception = event("prison.reception", {"noms": "B2222CD"}, "2026-01-05T10:00:00Z", prison_id="LEI",
                      reason="new")
    assert ledger.on_event(reception, reception.occurred_at).ignored == "not-on-register"
    ledger.learn_register_entry(kim)
    again = event("prison.reception", {"noms": "B2222CD"}, "2026-01-05T10:00:00Z", prison_id="LEI", reason="new")
    assert [o.rule for o in ledger.on_event(again, again.occurred_at).raised] == ["A1"]


def test_an_obligation_from_another_instance_makes_a_replay_here_a_duplicate_and_never_regresses():
    there, here = make_ledger(), make_ledger()
    e = event("prison.reception", {"noms": "G1234HJ"}, "2026-01-05T10:00:00Z", event_id="r-1", prison_id="LEI",
              reason="new")
    raised = there.on_event(e, e.occurred_at).raised
    assert [o.rule for o in raised] == ["A1"]
    o = raised[0].model_copy(deep=True)
    assert here.learn(o)
    assert here.on_event(e, e.occurred_at).duplicates == [o.obligation_id]
    # a later state held here is not replaced by the older one read again
    later = o.model_copy(deep=True)
    later.status = "cancelled"
    later.history = [*later.history, *later.history]
    assert here.learn(later)
    assert not here.learn(o)
    assert here.get(o.obligation_id).status == "cancelled"  # type: ignore[union-attr]
