"""Text from outside is cleaned at intake (issue 14, part 1): a name with a line break raised an A1 whose message
could not be rendered (header injection, correctly refused), so the obligation failed and nobody was told."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.translate import translate_many
from shared.errors import InputRejected
from shared.events import clean_name

RECEIVED = datetime(2026, 3, 2, 12, tzinfo=UTC)
CONTROLS = "\r\n\t\x00\x0b\x0c\x1b\x7f\x85\u2028\u2029\u200b\u202e\ufeff"


def reception(**person: Any) -> dict[str, Any]:
    return {"id": "c-1", "type": "prison.reception", "occurred_at": "2026-03-02T10:00:00Z", "source": "HMP-LEI",
            "person": {"noms": "A1234BC", **person}, "data": {"prison_id": "LEI", "reason": "new"}}


def test_a_line_break_in_a_name_is_cleaned_and_the_event_taken() -> None:
    (t,) = translate_many(reception(given_name="Eve\r\nBcc: someone@example", family_name="SAMPLE\x00"), RECEIVED)
    person = t.events[0].person
    assert person.given_name == "Eve Bcc: someone@example" and person.family_name == "SAMPLE"


def test_a_name_of_control_characters_only_is_no_name() -> None:
    (t,) = translate_many(reception(given_name="\r\n\u200b", family_name="  "), RECEIVED)
    assert t.events[0].person.given_name is None and t.events[0].person.family_name is None


def test_common_platform_names_are_cleaned_too() -> None:
    hearing = {"hearing": {"id": "h-1", "courtCentre": {"code": "B05KP00"},
                           "hearingDays": [{"sittingDay": "2026-03-02T10:00:00Z"}],
                           "prosecutionCases": [{"defendants": [{
                               "pncId": "2004/0012345D",
                               "personDefendant": {"personDetails": {"firstName": "Eve\r\nBcc: x@y",
                                                                     "lastName": "\u202eSAMPLE"}},
                               "offences": [{"judicialResults": [{"cjsCode": "4028", "category": "FINAL"}]}]}]}]}}
    translations = translate_many(hearing, RECEIVED)
    people = [e.person for t in translations for e in t.events]
    assert people, translations
    for p in people:
        assert p.given_name is None or p.given_name.isprintable()
        assert p.family_name is None or p.family_name.isprintable()


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.one_of(st.sampled_from(CONTROLS), st.characters()), max_size=150))
def test_any_name_is_taken_printable_or_refused_with_the_field_named(name: str) -> None:
    try:
        (t,) = translate_many(reception(given_name=name, family_name=name), RECEIVED)
    except InputRejected as exc:
        assert {p["field"] for p in exc.problems} <= {"person.given_name", "person.family_name"}
    else:
        person = t.events[0].person
        for value in (person.given_name, person.family_name):
            assert value is None or (value.isprintable() and value == value.strip() and len(value) <= 100)


def test_clean_name_leaves_ordinary_names_alone() -> None:
    for name in ("Alex", "O'Brien-Smith", "Zoë Łukasz", "Mary Ann"):
        assert clean_name(name) == name
