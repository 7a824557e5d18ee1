"""Rendering (services.notifier.render): every rule, London time, court recipients, injection, size."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any

import jinja2
import pytest

from services.notifier.render import (
    COURT_FORBIDDEN,
    RULES,
    CourtDisclosureRefused,
    HeaderInjectionRefused,
    MessageTooLarge,
    Renderer,
    TemplateFailed,
    UnknownRule,
    format_london,
    message_id_for,
    reference_for,
)
from shared.obligations import HistoryEntry, Obligation, PersonRef

PPO_ADDRESS = "leeds.ppo@westyorkshire.police.uk"
COURT_ADDRESS = "listing.leeds@justice.gov.uk"
ACK = "https://ack.alerts.example.gov.uk/a/0123456789abcdef"
NOW = datetime(2026, 2, 10, 14, 5, tzinfo=UTC)
OCCURRED = datetime(2026, 2, 10, 14, 0, tzinfo=UTC)  # GMT: London 14:00
DUE = datetime(2026, 2, 17, 23, 59, 59, tzinfo=UTC)

PERSON = PersonRef(
    person_id="person-1",
    pnc="2004/0012345D",
    cro="065656/91H",
    noms="A1234BC",
    crn="X123456",
    given_name="Sam",
    family_name="Example",
    date_of_birth=date(1990, 5, 1),
)

# Facts as the rule book produces them (event data as ISO strings, plus extra facts).
FACTS: dict[str, dict[str, Any]] = {
    "A1": {"prison_id": "LEI", "reason": "new"},
    "A2": {
        "warrant_id": "W-2026-0001",
        "court_code": "B01LY00",
        "kind": "fta",
        "grade_given": "C",
        "backed_for_bail": False,
    },
    "A3": {"warrant_id": "W-2026-0002", "court_code": "B01LY00", "kind": "breach"},
    "A4": {"prison_id": "LEI", "release_date": "2026-04-20", "kind": "crd"},
    "A5": {"prison_id": "LEI", "eligibility_date": "2026-03-01", "decision_due": "2026-02-17"},
    "A6": {"prison_id": "LEI", "release_date": "2026-03-15", "kind": "hdc"},
    "A7": {"prison_id": "LEI", "reason": "released"},
    "A8": {
        "prison_id": "LEI",
        "starts_at": "2026-02-12T09:00:00+00:00",
        "ends_at": "2026-02-12T17:00:00+00:00",
    },
    "B1": {"court_code": "B01LY00", "decision": "conditional_bail"},
    "B2": {"court_code": "B01LY00", "outcome": "conviction", "case_ended": True},
    "B3": {"court_code": "B01LY00", "disposal": "custody", "custody_days": 400},
    "B4": {"court_code": "B01LY00", "disposal": "community", "trigger": "community_order"},
    "B5": {"order": "licence"},
    "B6": {"from_prison_id": "LEI", "to_prison_id": "WDI", "prison_id": "WDI"},
    "B8": {"court_code": "B01LY00", "outcome": "conviction", "youth": True},
    "C1": {"anchor": "2025-08-01", "occurrence": 1},
    "C2": {"selected_on": "2024-02-10"},
    "C3": {"court_code": "B01LY00", "disposal": "custody", "custody_days": 900},
    "C4": {"prison_id": "LEI", "release_date": "2026-05-20"},
    "C5": {"from_bcu": "13-BD", "to_bcu": "13-LD"},
    "C6": {
        "period": "2026-02",
        "ppos": [
            {
                "given_name": "Sam",
                "family_name": "Example",
                "pnc": "2004/0012345D",
                "noms": "A1234BC",
                "strand": "premium",
                "selected_on": "2025-01-06",
                "status": "in_custody",
            },
            {
                "given_name": "Alex",
                "family_name": "Sample",
                "pnc": None,
                "noms": "B2345CD",
                "strand": None,
                "selected_on": "2025-06-02",
                "reason": "burglary",
            },
        ],
    },
    "C7": {},
}
PRISON_RULES = {
    "A1": "LEI",
    "A4": "LEI",
    "A5": "LEI",
    "A6": "LEI",
    "A7": "LEI",
    "A8": "LEI",
    "B6": "WDI",
    "C4": "LEI",
}
COURT_RULES = {"A2", "A3", "B1", "B2", "B3", "B4", "B8", "C3"}
WITH_ACTION_DUE = {"A5", "B2", "B3", "B4", "B5", "B8"}
WARRANTS = {"A2", "A3"}


def obligation(rule: str, **changes: Any) -> Obligation:
    fields: dict[str, Any] = dict(
        obligation_id=f"{rule}-0123456789abcdef01234567",
        rule=rule,
        source_paragraph=f"001 §7.5 (rule {rule})",
        person=None if rule == "C6" else PERSON,
        bcu="13-LD",
        recipients=[PPO_ADDRESS],
        recipient_roles={PPO_ADDRESS: "ppo"},
        send_at=OCCURRED,
        notify_by=OCCURRED + timedelta(minutes=15),
        action_due=DUE if rule in WITH_ACTION_DUE else None,
        grade="A" if rule in WARRANTS else None,
        raised_at=OCCURRED,
        occurred_at=None if rule == "C6" else OCCURRED,
        event_type=None,
        facts=dict(FACTS[rule]),
    )
    fields.update(changes)
    return Obligation(**fields)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def everything(message: Any) -> str:
    return "\n".join((message.subject, message.text, message.html))


# --- every rule ----------------------------------------------------------------------------------------


def test_every_rule_of_the_rule_book_has_a_template_pair(renderer: Renderer) -> None:
    assert set(RULES) == set(FACTS)
    assert "B7" not in RULES
    versions = {rule: renderer.template_version(rule) for rule in (*RULES, "escalation")}
    assert all(len(v) == 12 for v in versions.values())
    assert len(set(versions.values())) == len(versions)  # each rule's sources hash differently
    assert Renderer().template_version("A1") == versions["A1"]  # stable across instances


@pytest.mark.parametrize("rule", RULES)
def test_message_states_who_where_when_what_and_source(renderer: Renderer, rule: str) -> None:
    m = renderer.render(obligation(rule), PPO_ADDRESS, "ppo", ACK, NOW)
    for body in (m.text, m.html):
        assert "001 §7.5 (rule " + rule + ")" in body  # the source paragraph
        assert ACK in body
        if rule in WITH_ACTION_DUE:
            assert "Act by Tuesday 17 February 2026, 23:59" in body  # action_due, London time
        assert "due to reach you" not in body  # on time: nothing about when it was due
        if rule != "C6":
            assert "Sam EXAMPLE" in body
            for identifier in ("2004/0012345D", "065656/91H", "A1234BC", "X123456"):
                assert identifier in body
            assert "1 May 1990" in body
            assert "Tuesday 10 February 2026, 14:00" in body  # when it happened
        if rule in PRISON_RULES:
            assert PRISON_RULES[rule] in body
        if rule in COURT_RULES:
            assert "court B01LY00" in body  # a court the reference data does not name
    ref = reference_for(m.delivery_key, rule)
    assert m.subject.startswith(("OFFICIAL-SENSITIVE: PPO ", "OFFICIAL-SENSITIVE: Youth PPO ",
                                 "OFFICIAL-SENSITIVE: Review", "OFFICIAL-SENSITIVE: Re-selection"))
    assert m.subject.endswith(f", ref {ref}") and ref.startswith(f"{rule}-")
    assert "Sam" not in m.subject and "EXAMPLE" not in m.subject.upper()
    assert len(m.subject) < 120
    for body in (m.text, m.html):
        assert body.lstrip().startswith(("OFFICIAL-SENSITIVE", "<!DOCTYPE html>"))
        assert body.rstrip().endswith(("OFFICIAL-SENSITIVE", "</html>"))
        assert body.count("OFFICIAL-SENSITIVE") >= 2
        # the reference is near the top, where someone on the phone can find it
        assert ref in body[: body.index("What you need to do")]
    assert m.rule == rule and m.template_version == renderer.template_version(rule)
    assert "\n" not in m.subject


def test_subject_is_fixed_wording_rule_and_reference_only(renderer: Renderer) -> None:
    m = renderer.render(obligation("A1"), PPO_ADDRESS, "ppo", None, NOW)
    ref = reference_for("A1-0123456789abcdef01234567")
    assert ref == "865dc592" and len(ref) == 8  # first 8 hex digits of sha256 of the delivery key
    assert reference_for("A1-0123456789abcdef01234567", "A1") == "A1-865dc592"
    assert m.subject == "OFFICIAL-SENSITIVE: PPO in custody at HMP Leeds, ref A1-865dc592"
    assert "Ref A1-865dc592: quote this reference" in m.text.splitlines()[2]
    assert "Ref <strong>A1-865dc592</strong>: quote" in m.html


def test_warrant_subject_names_no_person_and_the_court_only_by_its_code(renderer: Renderer) -> None:
    m = renderer.render(obligation("A2"), PPO_ADDRESS, "ppo", None, NOW)
    ref = reference_for(m.delivery_key, "A2")
    assert m.subject == f"OFFICIAL-SENSITIVE: PPO Cat A FTA warrant at B01LY00, ref {ref}"


@pytest.mark.parametrize("rule", sorted(WARRANTS))
def test_warrants_say_category_a_whatever_the_court_gave(renderer: Renderer, rule: str) -> None:
    o = obligation(rule)
    m = renderer.render(o, PPO_ADDRESS, "warrants", None, NOW)
    assert "Cat A" in m.subject
    for body in (m.text, m.html):
        assert "Category A" in body
    if o.facts.get("grade_given"):
        assert "whatever grade the court gave (C)" in m.text


def test_action_due_and_notify_by_are_stated(renderer: Renderer) -> None:
    m = renderer.render(obligation("B5"), PPO_ADDRESS, "ppo", None, NOW)
    assert "Deadline: Act by Tuesday 17 February 2026, 23:59 (UK time)" in m.text
    assert "due to reach you" not in m.text and "LATE" not in m.text
    late = renderer.render(obligation("B5"), PPO_ADDRESS, "ppo", None, NOW + timedelta(hours=1))
    assert "LATE: this notice was due to reach you by Tuesday 10 February 2026, 14:15 (UK time)." in late.text
    assert late.text.count("due to reach you") == 1


def test_rotl_reported_at_release_is_late_by_construction(renderer: Renderer) -> None:
    o = obligation(
        "A8",
        event_type="prison.release",
        facts={"prison_id": "LEI", "reason": "rotl", "late_by_construction": True},
    )
    m = renderer.render(o, PPO_ADDRESS, "ppo", None, NOW)
    assert "late by construction" in m.text and "late by construction" in m.html


def test_no_ack_link_when_none_given(renderer: Renderer) -> None:
    m = renderer.render(obligation("A1"), PPO_ADDRESS, "ppo", None, NOW)
    assert "acknowledge receipt" not in m.text.lower()
    assert "href" not in m.html


def test_list_review_has_no_person_and_renders_a_table(renderer: Renderer) -> None:
    m = renderer.render(obligation("C6"), "coord@westyorkshire.police.uk", "coordinator", ACK, NOW)
    assert m.subject == f"OFFICIAL-SENSITIVE: PPO list review, ref {reference_for(m.delivery_key, 'C6')}"
    assert "13-LD" not in m.subject and "2026-02" not in m.subject and "2 people" not in m.subject
    assert "Sam EXAMPLE | 2004/0012345D | A1234BC | premium | Monday 6 January 2025 | in custody" in m.text
    assert "Alex SAMPLE | - | B2345CD | - | Monday 2 June 2025 | - | burglary" in m.text
    assert m.html.count('<tr style="border-bottom: 1px solid #b1b4b6;">') == 2  # one row a person
    assert "NOMS&nbsp;B2345CD" in m.html and "6 Jan 2025" in m.html and "in custody" in m.html
    empty = renderer.render(
        obligation("C6", facts={"period": "2026-03", "ppos": []}),
        "coord@westyorkshire.police.uk",
        "coordinator",
        None,
        NOW,
    )
    assert "nobody on the list" in empty.text


@pytest.mark.parametrize("rule", RULES)
def test_missing_facts_and_identifiers_still_render(renderer: Renderer, rule: str) -> None:
    thin = PersonRef(person_id="p-2", noms="A1234BC")
    o = obligation(rule, facts={}, person=None if rule == "C6" else thin, occurred_at=None)
    m = renderer.render(o, PPO_ADDRESS, "", None, NOW)
    assert m.subject and m.text and m.html
    assert "A1234BC" not in m.subject and m.subject.startswith("OFFICIAL-SENSITIVE: ")
    if rule != "C6":
        assert "A1234BC" in m.text
        assert "not recorded" in m.text  # name and date of birth


def test_escalation_message(renderer: Renderer) -> None:
    o = obligation(
        "A2",
        status="breached",
        history=[
            HistoryEntry(at=OCCURRED, what="raised"),
            HistoryEntry(at=OCCURRED + timedelta(days=2), what="notify_by passed without acceptance"),
        ],
    )
    m = renderer.render(
        o, "duty@westyorkshire.police.uk", "escalation", ACK, NOW, escalation_reason="not delivered in time"
    )
    ref = reference_for(f"{o.obligation_id}#escalation", "A2")
    assert m.subject == f"OFFICIAL-SENSITIVE: PPO alert escalation, ref {ref}"
    assert "not delivered in time" not in m.subject  # the reason is in the body
    assert "ESCALATION: not delivered in time" in m.text and ref in m.text
    assert f"The notice (ref {reference_for(o.obligation_id, 'A2')})" in m.text  # the original notice's reference
    assert "notify_by passed without acceptance" in m.text
    assert "Thursday 12 February 2026, 14:00: notify_by passed" in m.text
    assert "<li>" in m.html and ACK in m.html
    assert m.delivery_key == f"{o.obligation_id}#escalation"
    plain = renderer.render(o, "duty@westyorkshire.police.uk", "escalation", ACK, NOW)
    assert plain.message_id != m.message_id  # the escalation is a different message


# --- London time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (datetime(2026, 2, 10, 14, 0, tzinfo=UTC), "Tuesday 10 February 2026, 14:00"),
        (datetime(2026, 3, 29, 0, 59, tzinfo=UTC), "Sunday 29 March 2026, 00:59"),  # last minute of GMT
        (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "Sunday 29 March 2026, 02:00"),  # BST starts
        (datetime(2026, 7, 1, 13, 0, tzinfo=UTC), "Wednesday 1 July 2026, 14:00"),
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "Sunday 25 October 2026, 01:30"),  # first 01:30 (BST)
        (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "Sunday 25 October 2026, 01:30"),  # second 01:30 (GMT)
        (datetime(2026, 6, 30, 23, 30, tzinfo=UTC), "Wednesday 1 July 2026, 00:30"),  # the London date moves
        ("2026-06-30T23:30:00+00:00", "Wednesday 1 July 2026, 00:30"),
        ("2026-06-30T23:30:00Z", "Wednesday 1 July 2026, 00:30"),
        ("2026-04-20", "Monday 20 April 2026"),
        (date(2026, 4, 20), "Monday 20 April 2026"),
    ],
)
def test_london_time(instant: Any, expected: str) -> None:
    assert format_london(instant) == expected


def test_message_times_follow_the_clock_change(renderer: Renderer) -> None:
    before = obligation(
        "A1",
        occurred_at=datetime(2026, 3, 28, 14, 0, tzinfo=UTC),
        notify_by=datetime(2026, 3, 28, 14, 15, tzinfo=UTC),
    )
    after = obligation(
        "A1",
        occurred_at=datetime(2026, 3, 30, 14, 0, tzinfo=UTC),
        notify_by=datetime(2026, 3, 30, 14, 15, tzinfo=UTC),
    )
    now = datetime(2026, 3, 30, 14, 1, tzinfo=UTC)
    assert "Saturday 28 March 2026, 14:00" in renderer.render(before, PPO_ADDRESS, "ppo", None, now).text
    m = renderer.render(after, PPO_ADDRESS, "ppo", None, now)
    assert "Monday 30 March 2026, 15:00" in m.text
    assert "Monday 30 March 2026, 15:00" in m.html
    late = renderer.render(after, PPO_ADDRESS, "ppo", None, now + timedelta(hours=1))
    assert "due to reach you by Monday 30 March 2026, 15:15" in late.html  # notify_by, shown when late


# --- court recipients never read "PPO" -----------------------------------------------------------------


@pytest.mark.parametrize("rule", (*RULES, "escalation"))
@pytest.mark.parametrize("how", ["role", "flag"])
def test_court_recipient_never_sees_ppo(renderer: Renderer, rule: str, how: str) -> None:
    o = obligation("A2" if rule == "escalation" else rule)
    role, flag = ("court", False) if how == "role" else ("ppo", True)
    m = renderer.render(
        o,
        COURT_ADDRESS,
        role,
        ACK,
        NOW,
        court_recipient=flag,
        escalation_reason="not delivered in time" if rule == "escalation" else None,
    )
    assert m.court_recipient
    for part in (m.subject, m.text, m.html):
        assert not COURT_FORBIDDEN.search(part), part
        assert "prolific" not in part.lower() and "priority offender" not in part.lower()
    raw = bytes(m.to_email("Offender notifications <notices@alerts.example.gov.uk>"))
    assert not COURT_FORBIDDEN.search(raw.decode("utf-8", "replace"))
    email = m.to_email("notices@alerts.example.gov.uk")
    assert email["X-Alert-Rule"] == o.rule and email["X-PPO-Rule"] is None


def test_the_forbidden_words_are_caught_in_any_form() -> None:
    for text in (
        "PPO",
        "ppos",
        "a PPO's",
        "X-PPO-Rule",
        "ppo-alerts",
        "ppo_alerts",
        "Prolific",
        "Priority Offender",
        "priority-offenders",
    ):
        assert COURT_FORBIDDEN.search(text), text
    for text in ("support", "opportunity", "opposite", "priority", "offender"):
        assert not COURT_FORBIDDEN.search(text), text


def test_court_message_refused_when_a_fact_would_reveal_ppo(renderer: Renderer) -> None:
    o = obligation("B1", facts={"court_code": "B01LY00", "decision": "PPO_remand"})
    with pytest.raises(CourtDisclosureRefused):
        renderer.render(o, COURT_ADDRESS, "court", None, NOW)
    assert "PPO remand" in renderer.render(o, PPO_ADDRESS, "ppo", None, NOW).text  # fine for the police


def test_court_message_refused_with_a_sender_or_link_that_names_ppo(renderer: Renderer) -> None:
    m = renderer.render(obligation("B1"), COURT_ADDRESS, "court", None, NOW)
    with pytest.raises(CourtDisclosureRefused):
        m.to_email("PPO Alerts <alerts@notify.example.gov.uk>")
    with pytest.raises(CourtDisclosureRefused):
        renderer.render(
            obligation("B1"), COURT_ADDRESS, "court", "https://ppo-alerts.example.gov.uk/a/1", NOW
        )


# --- the email -----------------------------------------------------------------------------------------


def test_email_has_alternatives_headers_and_deterministic_message_id(renderer: Renderer) -> None:
    o = obligation("A1")
    m = renderer.render(o, PPO_ADDRESS, "ppo", ACK, NOW)
    email = m.to_email("PPO Alerts <alerts@notify.example.gov.uk>")
    assert email["To"] == PPO_ADDRESS
    assert email["Subject"] == m.subject
    assert email["X-PPO-Obligation"] == o.obligation_id
    assert email["X-PPO-Rule"] == "A1"
    assert email["X-Classification"] == "OFFICIAL-SENSITIVE"
    assert email["Message-ID"] == m.message_id == message_id_for(o.obligation_id, PPO_ADDRESS)
    assert email.get_content_type() == "multipart/alternative"
    kinds = [part.get_content_type() for part in email.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
    assert "Sam EXAMPLE" in email.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    again = Renderer().render(o, PPO_ADDRESS.upper(), "ppo", ACK, NOW + timedelta(hours=3))
    assert again.message_id == m.message_id  # (obligation, recipient) only
    other = renderer.render(o, "leeds.iom@justice.gov.uk", "probation", ACK, NOW)
    assert other.message_id != m.message_id
    assert m.message_id.startswith("<") and m.message_id.endswith("@ppo-alerts>")


def test_html_is_escaped_and_text_is_not(renderer: Renderer) -> None:
    person = PERSON.model_copy(update={"given_name": "<b>Sam</b>", "family_name": "O'Brien & Co"})
    m = renderer.render(obligation("A1", person=person), PPO_ADDRESS, "ppo", None, NOW)
    assert "&lt;b&gt;Sam&lt;/b&gt; O&#39;BRIEN &amp; CO" in m.html
    assert "<b>Sam</b> O'BRIEN & CO" in m.text


# --- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "recipient",
    [
        "leeds.ppo@westyorkshire.police.uk\r\nBcc: someone@example.com",
        "leeds.ppo@westyorkshire.police.uk\n",
        "Leeds <leeds.ppo@westyorkshire.police.uk>",
        "not-an-address",
    ],
)
def test_bad_recipient_refused(renderer: Renderer, recipient: str) -> None:
    with pytest.raises(HeaderInjectionRefused):
        renderer.render(obligation("A1"), recipient, "ppo", None, NOW)


def test_line_breaks_in_payload_values_cannot_reach_the_subject(renderer: Renderer) -> None:
    person = PERSON.model_copy(update={"given_name": "Eve\r\nBcc: x@example.com"})
    o = obligation("A1", person=person, facts={"prison_id": "LEI\r\nX: y", "reason": "new"})
    m = renderer.render(o, PPO_ADDRESS, "ppo", None, NOW)  # renders: nothing from the payload is in the subject
    email = m.to_email("PPO Alerts <alerts@notify.example.gov.uk>")
    subject = email["Subject"]
    ref = reference_for(o.obligation_id, "A1")
    # a prison code that is not a plain code is not shown: the subject names no site
    assert subject == m.subject == f"OFFICIAL-SENSITIVE: PPO in custody, ref {ref}"
    assert "\r" not in subject and "\n" not in subject
    assert "Eve" not in subject and "Bcc" not in subject and "LEI" not in subject and "X: y" not in subject
    raw = email.as_bytes()
    headers = raw.split(b"\n\n", 1)[0].decode()  # wire form: as the gateway would log it
    assert "Eve" not in headers and "\nBcc:" not in headers and "\nX: y" not in headers
    assert email["Bcc"] is None and email["X"] is None
    # The body has the name (escaped in the HTML), inside the text and not as a header.
    assert "Eve\r\nBcc: x@example.com" in m.text
    assert "Eve\r\nBcc: x@example.com" in m.html and "<script" not in m.html
    hostile = PERSON.model_copy(update={"given_name": "<script>Eve</script>"})
    escaped = renderer.render(obligation("A1", person=hostile), PPO_ADDRESS, "ppo", None, NOW)
    assert "&lt;script&gt;Eve&lt;/script&gt;" in escaped.html and "<script>" not in escaped.html


def test_line_break_in_subject_refused() -> None:
    # The defence stays: a subject with a line break (here from a template's own wording) is refused.
    source = '{% extends "base.txt.j2" %}{% block subject %}Received\nBcc: someone@example.com{% endblock %}'
    broken = jinja2.DictLoader({"rules/A1.txt.j2": source})
    renderer = Renderer(
        loader=jinja2.ChoiceLoader([broken, jinja2.PackageLoader("services.notifier", "templates")])
    )
    with pytest.raises(HeaderInjectionRefused):
        renderer.render(obligation("A1"), PPO_ADDRESS, "ppo", None, NOW)
    m = Renderer().render(obligation("A1"), PPO_ADDRESS, "ppo", None, NOW)
    with pytest.raises(HeaderInjectionRefused):
        dataclasses.replace(m, subject=m.subject + "\r\nBcc: someone@example.com").to_email(
            "alerts@notify.example.gov.uk"
        )


@pytest.mark.parametrize("name", ["person_label", "establishment", "facts", "person", "escalation_reason", "bcu"])
def test_the_subject_block_cannot_reach_payload_values(name: str) -> None:
    source = '{% extends "base.txt.j2" %}{% block subject %}PPO received: {{ ' + name + " }}{% endblock %}"
    broken = jinja2.DictLoader({"rules/A1.txt.j2": source})
    renderer = Renderer(
        loader=jinja2.ChoiceLoader([broken, jinja2.PackageLoader("services.notifier", "templates")])
    )
    with pytest.raises(TemplateFailed) as caught:
        renderer.render(obligation("A1"), PPO_ADDRESS, "ppo", None, NOW)
    assert isinstance(caught.value.__cause__, jinja2.UndefinedError)


def test_line_break_in_sender_or_ack_link_refused(renderer: Renderer) -> None:
    m = renderer.render(obligation("A1"), PPO_ADDRESS, "ppo", None, NOW)
    with pytest.raises(HeaderInjectionRefused):
        m.to_email("alerts@notify.example.gov.uk\r\nBcc: someone@example.com")
    with pytest.raises(HeaderInjectionRefused):
        renderer.render(obligation("A1"), PPO_ADDRESS, "ppo", ACK + "\r\nX: y", NOW)
    with pytest.raises(HeaderInjectionRefused):
        renderer.render(obligation("A1"), PPO_ADDRESS, "ppo", "javascript:alert(1)", NOW)


def test_oversized_message_refused() -> None:
    ppos = [
        {
            "given_name": f"Person{i}",
            "family_name": "Example",
            "pnc": "2004/0012345D",
            "noms": "A1234BC",
            "strand": "premium",
            "selected_on": "2025-01-06",
            "status": "in_custody",
        }
        for i in range(5000)
    ]
    with pytest.raises(MessageTooLarge, match="over the limit of 1000000 bytes"):
        Renderer().render(
            obligation("C6", facts={"period": "2026-02", "ppos": ppos}), PPO_ADDRESS, "coordinator", None, NOW
        )
    small = Renderer(max_message_bytes=2048)
    with pytest.raises(MessageTooLarge):
        small.render(obligation("C6"), PPO_ADDRESS, "coordinator", None, NOW)
    # The limit also holds for the whole RFC 5322 message (headers, MIME parts, encodings).
    m = Renderer().render(obligation("C6"), PPO_ADDRESS, "coordinator", None, NOW)
    with pytest.raises(MessageTooLarge):
        dataclasses.replace(m, max_message_bytes=len(m.text.encode()) + len(m.html.encode())).to_email(
            "alerts@notify.example.gov.uk"
        )


def test_strict_undefined_catches_a_missing_variable() -> None:
    source = '{% extends "base.txt.j2" %}{% block subject %}{{ no_such_variable }}{% endblock %}'
    broken = jinja2.DictLoader({"rules/A1.txt.j2": source})
    renderer = Renderer(
        loader=jinja2.ChoiceLoader([broken, jinja2.PackageLoader("services.notifier", "templates")])
    )
    with pytest.raises(TemplateFailed) as caught:
        renderer.render(obligation("A1"), PPO_ADDRESS, "ppo", None, NOW)
    assert isinstance(caught.value.__cause__, jinja2.UndefinedError)
    assert "no_such_variable" in str(caught.value)


def test_missing_fact_keys_are_fine_but_a_missing_template_is_not(renderer: Renderer) -> None:
    with pytest.raises(UnknownRule):
        renderer.render(obligation("A1").model_copy(update={"rule": "B7"}), PPO_ADDRESS, "ppo", None, NOW)


def test_renderer_refuses_a_naive_now(renderer: Renderer) -> None:
    with pytest.raises(ValueError):
        renderer.render(obligation("A1"), PPO_ADDRESS, "ppo", None, datetime(2026, 2, 10, 14, 5))


def test_the_notifier_takes_message_id_domains_from_its_senders():
    from services.notifier.main import message_id_domains
    from shared.settings import Settings

    assert message_id_domains(Settings(smtp_sender="Alerts <alerts@ppo-alerts.example.gov.uk>",
                                       smtp_court_sender="notices@justice-notices.example.gov.uk")) == {
        "message_id_domain": "ppo-alerts.example.gov.uk", "court_message_id_domain": "justice-notices.example.gov.uk"}
    # a court sender that names PPOs would reveal them in the Message-ID: a neutral domain instead
    assert message_id_domains(Settings(smtp_sender="alerts@ppo.example.gov.uk"))["court_message_id_domain"] \
        == "notices.invalid"
