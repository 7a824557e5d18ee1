"""docs/emails/ is what the templates render today (`python -m ppo_alerts.render_examples docs/emails`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ppo_alerts.render_examples import (
    ADDRESSES,
    examples,
    sample_custody_rows,
    sample_now,
    sample_obligation,
    write_examples,
)
from services.notifier.render import COURT_FORBIDDEN, RULES, Renderer, reference_for
from shared.custody import DIGEST
from shared.obligations import Obligation

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "emails"


def test_every_rule_has_an_example_and_none_is_late() -> None:
    found = {ex.name: ex.message for ex in examples()}
    assert set(RULES) <= set(found) and {"B1-court", "escalation", "D2"} <= set(found)
    for name, m in found.items():
        if name != "escalation":
            assert "LATE" not in m.text, name
        assert m.subject and m.text and m.html
    assert not COURT_FORBIDDEN.search(found["B1-court"].text + found["B1-court"].html)
    assert [a.filename for a in found["D2"].attachments] == ["custody-countdown-13-LD-2026-02-09.csv"]


@pytest.mark.parametrize("rule", RULES)
def test_samples_are_fixed(rule: str) -> None:
    assert sample_obligation(rule) == sample_obligation(rule)


def test_docs_emails_is_up_to_date(tmp_path: Path) -> None:
    written = write_examples(tmp_path)
    stale = [p.name for p in written if not (DOCS / p.name).exists() or (DOCS / p.name).read_bytes() != p.read_bytes()]
    assert not stale, (
        f"docs/emails is out of date ({', '.join(stale[:5])}): run "
        "`python -m ppo_alerts.render_examples docs/emails --screenshots A2,D2`"
    )
    assert (DOCS / "A2.png").exists() and (DOCS / "D2.png").exists()


# Facts that are places, dates or free text (not the rule book's own codes such as kind "hdc" or "fta"). A prison's
# or court's code may name the site of a subject (services/notifier/render.py site_for), so it is checked there.
PAYLOAD_TEXT = frozenset({
    "prison_id", "from_prison_id", "to_prison_id", "court_code", "from_bcu", "to_bcu", "warrant_id", "reason",
    "release_date", "starts_at", "ends_at", "eligibility_date", "decision_due", "selected_on", "anchor", "period",
    "case_urn", "hearing_date", "court_name", "result_text",
})


def _personal_values(o: Obligation) -> set[str]:
    """What a subject must never carry: names, dates of birth, identifiers, establishments, courts, areas,
    dates and any other value the sample's payload holds (the C6 list's people included)."""
    values: set[str] = set()
    people: list[dict[str, Any]] = [p for p in o.facts.get("ppos", []) if isinstance(p, dict)]
    if o.person is not None:
        people.append(o.person.model_dump())
    for p in people:
        for key in ("given_name", "family_name", "pnc", "cro", "noms", "crn"):
            if p.get(key):
                values.add(str(p[key]))
        born = p.get("date_of_birth")
        if born:
            values |= {born.isoformat(), f"{born.day} ", str(born.year)}
    for key, value in o.facts.items():
        if key in PAYLOAD_TEXT and isinstance(value, str) and value:
            values.add(value)
    if o.bcu:
        values.add(o.bcu)
    return values


# Fixed words (the site taken out), the rule code and the reference.
SUBJECT = re.compile(r"OFFICIAL-SENSITIVE: [A-Za-z][A-Za-z0-9 :-]*, ref (?P<rule>[A-D][0-9])-[0-9a-f]{8}")


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("role", ["usual", "court"])
def test_no_subject_carries_personal_data_or_payload_text(rule: str, role: str) -> None:
    o = sample_obligation(rule)
    [address] = o.recipients
    if role == "court":
        address, role = ADDRESSES["court"], "court"
    else:
        role = o.recipient_roles[address]
    renderer = Renderer()
    m = renderer.render(o, address, role, None, sample_now(rule))
    subject = m.subject
    assert subject.startswith("OFFICIAL-SENSITIVE: ")
    assert subject.endswith(f", ref {reference_for(m.delivery_key, rule)}")
    site = renderer.site_for(rule, o.facts)  # only the reference data's name (or a plain code) of the place
    if site:
        subject = re.sub(f" (at|from|to) {re.escape(site)}, ref ", ", ref ", subject, count=1)
        assert site not in subject, m.subject  # it was where a site goes
    match = SUBJECT.fullmatch(subject)
    assert match and match["rule"] == rule, m.subject
    wording = subject[: subject.rindex(", ref ")]
    for value in _personal_values(o):
        assert value.strip().lower() not in wording.lower(), (value, subject)
        assert value.upper() not in subject, (value, subject)
    assert "\r" not in subject and "\n" not in subject


def test_no_example_subject_carries_personal_data() -> None:
    for ex in examples():
        m = ex.message
        assert m.subject.startswith("OFFICIAL-SENSITIVE: ") and ", ref " in m.subject, m.subject
        for marked in (m.text, m.html):
            assert marked.count("OFFICIAL-SENSITIVE") >= 2, ex.name
    escalation = next(ex.message for ex in examples() if ex.name == "escalation")
    assert "not delivered" not in escalation.subject
    digest = next(ex.message for ex in examples() if ex.name == DIGEST)
    for row in sample_custody_rows():
        assert row.person_name.split()[0] not in digest.subject and row.prison not in digest.subject
    assert "13-LD" not in digest.subject and "in custody" not in digest.subject
