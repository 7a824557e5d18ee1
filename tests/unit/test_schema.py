"""The committed JSON Schema of the canonical event is exactly what the models generate (contract §1)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from ppo_alerts import schemas
from shared.events import EVENT_TYPES, event_json_schema

VALID: list[dict[str, Any]] = [
    {
        "id": "hmpps-1",
        "type": "prison.reception",
        "occurred_at": "2026-03-02T10:15:00+00:00",
        "source": "HMP-LEI",
        "person": {
            "pnc": "2004/0012345D",
            "cro": None,
            "noms": "A1234BC",
            "crn": None,
            "given_name": "Sam",
            "family_name": "Example",
            "date_of_birth": "1990-05-01",
        },
        "data": {"prison_id": "LEI", "reason": "new"},
    },
    {
        "id": "cp-1",
        "type": "warrant.issued",
        "occurred_at": "2026-03-06T10:00:00Z",
        "source": "CP",
        "person": {"pnc": "2002/0073319Z"},
        "data": {"warrant_id": "W-1", "court_code": "B01LY00", "kind": "fta", "backed_for_bail": False},
    },
    {
        "id": "nomis-7",
        "type": "prison.release_date_set",
        "occurred_at": "2026-03-02T10:15:00+00:00",
        "source": "NOMIS",
        "person": {"noms": "A1234BC"},
        "data": {"prison_id": "LEI", "release_date": None, "kind": "hdc"},
    },
    {
        "id": "pol-3",
        "type": "offence.high_harm",
        "occurred_at": "2026-03-02T10:15:00+00:00",
        "source": "WYP",
        "person": {"crn": "X123456"},
        "data": {},
    },
]


def test_committed_schema_matches_the_models():
    path = schemas.SCHEMA_PATH
    assert path.exists(), f"{path} is missing; generate it with: {schemas.REGENERATE}"
    committed = path.read_text(encoding="utf-8")
    assert committed == schemas.render(), (
        f"{path} differs from what shared/events.py generates; regenerate it with: {schemas.REGENERATE}"
    )


def test_render_is_pretty_sorted_and_ends_with_one_newline():
    text = schemas.render()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert json.loads(text) == event_json_schema()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert schemas.render() == text  # deterministic


def test_main_writes_the_file_and_check_mode_reports_staleness(tmp_path, capsys):
    out = tmp_path / "nested" / "schema.json"
    assert schemas.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == schemas.render()
    assert schemas.main(["--out", str(out), "--check"]) == 0
    out.write_text("{}\n", encoding="utf-8")
    assert schemas.main(["--out", str(out), "--check"]) == 1
    assert "ppo_alerts.schemas" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "{}\n"  # --check never writes


def test_schema_names_every_event_type():
    schema = event_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["discriminator"]["mapping"]) == set(EVENT_TYPES)
    consts = set()
    for ref in schema["oneOf"]:
        model = schema["$defs"][ref["$ref"].rsplit("/", 1)[1]]
        consts.add(model["properties"]["type"]["const"])
        assert model["additionalProperties"] is False
        assert {"id", "type", "occurred_at", "source", "person", "data"} <= set(model["required"])
        assert model["properties"]["occurred_at"]["format"] == "date-time"
    assert consts == set(EVENT_TYPES)


# --- validation with the jsonschema package, when it is installed ------------------------------------------


@pytest.fixture(scope="module")
def validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(schemas.SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("body", VALID, ids=[b["type"] for b in VALID])
def test_valid_payloads_validate_against_the_schema(validator, body):
    errors = list(validator.iter_errors(body))
    assert not errors, [e.message for e in errors]


def _broken(index: int, change: Any) -> dict[str, Any]:
    body = copy.deepcopy(VALID[index])
    change(body)
    return body


INVALID = {
    "unknown type": _broken(0, lambda b: b.update(type="prison.escape")),
    "bad reason": _broken(0, lambda b: b["data"].update(reason="escaped")),
    "missing data field": _broken(1, lambda b: b["data"].pop("kind")),
    "extra top-level field": _broken(0, lambda b: b.update(priority="high")),
    "extra person field": _broken(0, lambda b: b["person"].update(nickname="x")),
    "extra data field": _broken(3, lambda b: b["data"].update(anything=1)),
    "missing person": _broken(2, lambda b: b.pop("person")),
    "empty id": _broken(1, lambda b: b.update(id="")),
}


@pytest.mark.parametrize("body", list(INVALID.values()), ids=list(INVALID))
def test_invalid_payloads_fail_against_the_schema(validator, body):
    assert list(validator.iter_errors(body))
