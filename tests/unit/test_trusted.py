"""shared.trusted: models built from values that are already valid behave as validated ones do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from shared.events import Person
from shared.obligations import HistoryEntry, Obligation, history_entry
from shared.trusted import trusted_constructor

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _fields() -> dict:
    return {
        "obligation_id": "A1-0", "rule": "A1", "source_paragraph": "001 §7.5", "person": None, "bcu": "B01",
        "recipients": ["ppo@force.police.uk"], "recipient_roles": {"ppo@force.police.uk": "ppo"},
        "send_at": NOW, "notify_by": NOW + timedelta(minutes=15), "action_due": None, "grade": None,
        "status": "pending", "notified_at": None, "source_event_ids": ["e1"], "raised_at": NOW, "occurred_at": NOW,
        "event_type": "prison.reception", "facts": {"prison_id": "LEI"}, "replaces": None,
        "cancelled_reason": None, "history": [],
    }


def test_a_trusted_obligation_equals_the_validated_one_and_behaves_like_it():
    built = trusted_constructor(Obligation)(_fields())
    validated = Obligation.model_validate(_fields())
    assert built == validated
    assert built.model_dump() == validated.model_dump()
    assert Obligation.model_validate_json(built.model_dump_json()) == validated
    built.record_acceptance(NOW + timedelta(minutes=1))  # assignment works as on a validated model
    assert built.status == "notified" and built.notified_at == NOW + timedelta(minutes=1)
    assert built.model_copy(update={"status": "cancelled"}).status == "cancelled" and built.status == "notified"


def test_a_missing_field_is_refused_at_once():
    fields = _fields()
    del fields["history"]
    with pytest.raises(TypeError, match="history"):
        trusted_constructor(Obligation)(fields)


def test_frozen_models_stay_frozen():
    p = trusted_constructor(Person)({"pnc": None, "cro": None, "noms": "A1234BC", "crn": None, "given_name": None,
                                     "family_name": None, "date_of_birth": None})
    assert p == Person(noms="A1234BC")
    with pytest.raises(ValidationError):
        p.noms = "B1234CD"  # type: ignore[misc]


def test_history_lines_need_an_aware_instant():
    assert history_entry(NOW, "raised") == HistoryEntry(at=NOW, what="raised")
    with pytest.raises(ValueError, match="naive"):
        history_entry(NOW.replace(tzinfo=None), "raised")
