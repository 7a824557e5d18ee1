"""docs/emails/ is what the templates render today (`python -m ppo_alerts.render_examples docs/emails`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppo_alerts.render_examples import examples, sample_obligation, write_examples
from services.notifier.render import COURT_FORBIDDEN, RULES

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
