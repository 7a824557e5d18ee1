"""Emails a police inbox can trust (issue 15): the marking, subjects on the wire, places by name, the case a
court event is about, and wording that reads right to each recipient."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ppo_alerts.render_examples import ADDRESSES, sample_now, sample_obligation
from services.intake.translate import translate
from services.notifier.render import COURT_FORBIDDEN, RULES, CourtDisclosureRefused, Renderer, reference_for
from services.rules.rulebook import RULES as RULE_SPECS
from shared.places import PLACES_FILE, Places, PlacesError, court_name, default_places, load_places, prison_name
from tests.rulebook_fixtures import DIRECTORY, make_ledger

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT.parent / "shared" / "real-samples"
SENDER = "PPO Alerts <alerts@notify.example.gov.uk>"
COURT_SENDER = "Offender notifications <notices@notify.example.gov.uk>"
PRISON_RULES = {"A1", "A4", "A5", "A6", "A7", "A8", "B6", "C4"}
COURT_RULES = {"A2", "A3", "B1", "B2", "B3", "B4", "B8", "C3"}


def roles_of(rule: str) -> list[str]:
    """Every role the rule book sends `rule` to (the offender manager is probation, or the youth offending team),
    and a court, which any court-facing notice may be copied to."""
    roles: list[str] = []
    for role in RULE_SPECS[rule].roles:
        roles += ["probation", "yot"] if role == "om" else [role]
    return [*roles, "court"]


RENDERER = Renderer()  # templates are compiled once per renderer


def render_for(rule: str, role: str, renderer: Renderer | None = None, **facts: Any) -> Any:
    o = sample_obligation(rule)
    if facts:
        o = o.model_copy(update={"facts": {**o.facts, **facts}})
    address = ADDRESSES.get(role, ADDRESSES["ppo"])
    return (renderer or RENDERER).render(o, address, role, None, sample_now(rule))


# --- 4. one deadline line, and nobody told to work with themselves --------------------------------------

DEADLINE = re.compile(r"^\s*Deadline:\s+(Act by \S.*|No action deadline)$", re.MULTILINE)


@pytest.mark.parametrize("rule", RULES)
def test_every_recipient_reads_exactly_one_deadline_line(rule: str) -> None:
    for role in roles_of(rule):
        try:
            m = render_for(rule, role)
        except CourtDisclosureRefused:
            assert role == "court"  # a list of PPOs is never sent to a court
            continue
        assert len(DEADLINE.findall(m.text)) == 1, (rule, role)
        assert m.text.count("Act by") + m.text.count("No action deadline") == 1, (rule, role)
        assert m.html.count("Act by") + m.html.count("No action deadline") == 1, (rule, role)
        for body in (m.text, m.html):
            assert "due to reach you" not in body and "none set" not in body, (rule, role)  # not late
        if "No action deadline" in m.text:
            assert "by your deadline" not in m.text, (rule, role)


def test_a_late_notice_says_so_once_in_the_past_tense() -> None:
    o = sample_obligation("A1")
    m = Renderer().render(o, ADDRESSES["ppo"], "ppo", None, o.notify_by.replace(hour=23))
    assert m.text.count("due to reach you") == 1 and "LATE: this notice was due to reach you by" in m.text


@pytest.mark.parametrize("rule", RULES)
def test_no_recipient_is_asked_to_work_with_their_own_role(rule: str) -> None:
    for role in roles_of(rule):
        try:
            m = render_for(rule, role)
        except CourtDisclosureRefused:
            continue
        action = m.text.split("What you need to do", 1)[1].split("What happened", 1)[0]
        if role in ("probation", "yot"):
            assert "offender manager" not in action, (rule, role, action)
        if role == "ppo":
            assert "PPO contact" not in action and "police view" not in action.replace("Send the police view", "")
        if role == "warrants":
            assert "warrants unit" not in action


def test_the_offender_manager_and_the_police_contact_read_each_other_named() -> None:
    police = render_for("A1", "ppo").text
    om = render_for("A1", "probation").text
    assert "agree with the establishment and the offender manager" in police
    assert "agree with the establishment and the police PPO contact" in om
    assert "with the establishment and the police PPO contact" in render_for("A4", "yot").text


# --- 1. the protective marking -------------------------------------------------------------------------


def test_the_default_marking_is_official_sensitive_everywhere() -> None:
    m = render_for("A1", "ppo")
    email = m.to_email(SENDER)
    assert m.marking == "OFFICIAL-SENSITIVE" and email["X-Classification"] == "OFFICIAL-SENSITIVE"
    assert m.subject.startswith("OFFICIAL-SENSITIVE: ")
    assert m.text.splitlines()[0] == "OFFICIAL-SENSITIVE" and m.text.rstrip().splitlines()[-1] == "OFFICIAL-SENSITIVE"


def test_a_marking_per_recipient_domain_subdomains_included_case_insensitive() -> None:
    renderer = Renderer(marking="OFFICIAL", marking_by_domain={
        "Police.UK": "OFFICIAL-SENSITIVE", "westyorkshire.police.uk": "OFFICIAL-SENSITIVE [PERSONAL]"})
    assert renderer.marking_for("a@WestYorkshire.Police.UK") == "OFFICIAL-SENSITIVE [PERSONAL]"  # longest wins
    assert renderer.marking_for("a@leeds.westyorkshire.police.uk") == "OFFICIAL-SENSITIVE [PERSONAL]"
    assert renderer.marking_for("a@met.police.uk") == "OFFICIAL-SENSITIVE"
    assert renderer.marking_for("a@notpolice.uk") == "OFFICIAL"  # a suffix that is not a subdomain
    assert renderer.marking_for("a@justice.gov.uk") == "OFFICIAL"
    m = render_for("A1", "ppo", renderer)  # leeds.ppo@westyorkshire.police.uk
    marking = "OFFICIAL-SENSITIVE [PERSONAL]"
    assert m.subject.startswith(marking + ": PPO in custody")
    assert m.text.splitlines()[0] == marking and m.text.rstrip().splitlines()[-1] == marking
    assert m.html.count(f">{marking}</p>") == 2 and m.to_email(SENDER)["X-Classification"] == marking
    court = Renderer(marking="OFFICIAL").render(sample_obligation("B1"), ADDRESSES["court"], "court", None,
                                                 sample_now("B1"))
    assert court.subject.startswith("OFFICIAL: Bail decision")
    assert court.to_email(COURT_SENDER)["X-Classification"] == "OFFICIAL"


@pytest.mark.parametrize("marking", ["", "OFFICIAL\nBcc: x@y.z", "official", "OFFICIAL-SENSITIVE\u2013X", "A" * 61])
def test_a_marking_that_could_not_head_a_subject_is_refused(marking: str) -> None:
    with pytest.raises(ValueError, match="marking"):
        Renderer(marking=marking)
    with pytest.raises(ValueError, match="marking"):
        Renderer(marking_by_domain={"police.uk": marking})


# --- 2. subjects: the rule, the site, a reference; on the wire ------------------------------------------


def wire_subject(m: Any) -> list[str]:
    """The Subject header's physical lines, as the SMTP client writes them."""
    from email import policy

    raw = m.to_email(COURT_SENDER if m.court_recipient else SENDER).as_bytes(policy=policy.SMTP).decode("ascii")
    lines = raw.split("\r\n\r\n", 1)[0].split("\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("Subject:"))
    end = start + 1
    while end < len(lines) and lines[end][:1] in (" ", "\t"):
        end += 1
    return lines[start:end]


# A typical site per rule: a prison the reference data names, a court by a plain code (most court codes are not in
# the package's file yet), or none.
TYPICAL = {**{r: {"prison_id": "LEI"} for r in PRISON_RULES}, **{r: {"court_code": "B01LY00"} for r in COURT_RULES}}
TYPICAL["B6"] = {"from_prison_id": "WDI", "to_prison_id": "LEI", "prison_id": "LEI"}


@pytest.mark.parametrize("rule", (*RULES, "escalation"))
def test_every_subject_fits_one_line_of_78_with_a_typical_site(rule: str) -> None:
    base = "A2" if rule == "escalation" else rule
    for role in ("usual", "court"):
        o = sample_obligation(base)
        o = o.model_copy(update={"facts": {**o.facts, **TYPICAL.get(base, {})}})
        [address] = o.recipients
        who, address = (("court", ADDRESSES["court"]) if role == "court" else (o.recipient_roles[address], address))
        try:
            m = RENDERER.render(o, address, who, None, sample_now(base),
                                  escalation_reason="not delivered in time" if rule == "escalation" else None)
        except CourtDisclosureRefused:
            continue
        lines = wire_subject(m)
        assert lines == [f"Subject: {m.subject}"], lines  # one line, the value right after "Subject: "
        assert len(lines[0]) <= 78, f"{rule} ({who}): {len(lines[0])} characters: {lines[0]}"
        if base in PRISON_RULES:
            assert " HMP Leeds, ref " in m.subject
        elif base in COURT_RULES and rule != "escalation":
            assert " at B01LY00, ref " in m.subject


def test_subjects_over_78_are_reported_and_folded_at_a_space_never_before_the_value() -> None:
    """A court the reference data names makes most court subjects longer than 78: they are folded at a space,
    the first word on the Subject line, and unfold to the subject (never a leading space)."""
    over: list[str] = []
    long_marking = Renderer(marking="OFFICIAL-SENSITIVE [PERSONAL]")
    for renderer in (Renderer(), long_marking):
        for rule in RULES:
            facts = {"court_code": "B13AA00"} if rule in COURT_RULES else TYPICAL.get(rule, {})
            m = render_for(rule, "ppo" if rule in RULE_SPECS and "ppo" in RULE_SPECS[rule].roles else "coordinator",
                           renderer, **facts)
            lines = wire_subject(m)
            assert lines[0].startswith(f"Subject: {m.marking}:")  # never "Subject:" alone, then the value
            assert all(len(line) <= 78 for line in lines) and all(line.strip() for line in lines)
            assert " ".join(line.strip() for line in lines) == f"Subject: {m.subject}"  # unfolds to itself
            if len(f"Subject: {m.subject}") > 78:
                over.append(f"{len(m.subject) + 9:3d} {m.subject}")
    print("Subject lines over 78 characters (folded at a space):", *over, sep="\n  ")  # pytest -s shows them
    assert "Leeds Magistrates' Court" in "\n".join(over)  # the long names are the ones reported


def test_a_subject_in_the_70_to_77_range_is_not_moved_to_a_continuation_line() -> None:
    # Python's own folding writes "Subject:" then " <value>" for a value of 70 to 77 characters.
    from email.message import EmailMessage

    value = "OFFICIAL-SENSITIVE: PPO release due from HMP Leeds, ref A4-79264c78 xx"
    assert 70 <= len(value) <= 77
    stock = EmailMessage()
    stock["Subject"] = value
    assert stock.as_bytes().startswith(b"Subject:\n OFFICIAL")  # what SubjectHeader prevents
    m = render_for("A4", "ppo")
    forced = type(m)(**{**m.__dict__, "subject": value})
    assert wire_subject(forced) == ["Subject: OFFICIAL-SENSITIVE: PPO release due from HMP Leeds, ref A4-79264c78",
                                    " xx"]


@pytest.mark.parametrize("rule", sorted(COURT_RULES))
def test_a_court_named_by_the_reference_data_is_named_in_the_subject(rule: str) -> None:
    m = render_for(rule, "ppo", court_code="B05KP00", court_name="A name from the feed\r\nBcc: x@y.z")
    assert " at Liverpool Crown Court, ref " in m.subject and "feed" not in m.subject
    assert "Liverpool Crown Court (B05KP00)" in m.text


@pytest.mark.parametrize("code", ["B01 LY00", "b01ly00", "B01LY00<script>", "X", "B01LY00\r\nBcc: a@b.c", "A" * 11])
def test_a_code_that_is_not_a_plain_code_is_left_out_of_the_subject(code: str) -> None:
    m = render_for("B1", "ppo", court_code=code)
    assert m.subject == f"OFFICIAL-SENSITIVE: PPO bail decision, ref {reference_for(m.delivery_key, 'B1')}"
    m = render_for("A1", "ppo", prison_id=code)
    assert m.subject.startswith("OFFICIAL-SENSITIVE: PPO in custody, ref ")


def test_a_court_recipient_never_reads_ppo_in_a_subject_with_a_site() -> None:
    for rule in sorted(COURT_RULES | PRISON_RULES):
        m = render_for(rule, "court")
        assert not COURT_FORBIDDEN.search(m.subject + m.text + m.html), rule


# --- 3a. places by name ---------------------------------------------------------------------------------


def test_the_package_file_names_the_prisons_and_courts_of_the_samples() -> None:
    places = default_places()
    assert places.version == json.loads(PLACES_FILE.read_text())["version"]
    for code, name in {"LEI": "HMP Leeds", "MDI": "HMP Moorland", "BMI": "HMP Birmingham", "WWI": "HMP Wandsworth",
                       "PVI": "HMP Pentonville", "SWI": "HMP Swansea", "WDI": "HMP Wakefield", "HHI": "HMP Holme House",
                       "WYI": "HMYOI Wetherby", "HMI": "HMP Humber", "HLI": "HMP Hull", "DMI": "HMP Durham"}.items():
        assert prison_name(code) == name
    for code, name in {"B05KP00": "Liverpool Crown Court", "B10JQ00": "Wimbledon Magistrates' Court",
                       "B13AA00": "Leeds Magistrates' Court", "C13AA00": "Leeds Crown Court"}.items():
        assert court_name(code) == name
    assert len(places.prisons) >= 100


@pytest.mark.parametrize("code", ["ZZI", "", None, 42, "lei "])
def test_a_look_up_never_raises(code: Any) -> None:
    assert prison_name(code) in ("ZZI", "", "HMP Leeds") and court_name(code) in ("ZZI", "", "lei")


def test_bodies_name_the_prison_with_its_code() -> None:
    assert "Received into custody at HMP Leeds (LEI)" in render_for("A1", "ppo").text
    assert "Moved from HMP Leeds (LEI) to HMP Wakefield (WDI)" in render_for("B6", "ppo").text
    assert "Where:    prison ZZI" in render_for("A1", "ppo", prison_id="ZZI").text


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "places.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def test_a_newer_places_file_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, {"version": "2027-01-15", "source": "test", "prisons": {"ZZI": "HMP Example"},
                            "courts": {"B99ZZ00": "Example Magistrates' Court"}})
    places = load_places(path)
    assert (places.version, places.prison_name("ZZI")) == ("2027-01-15", "HMP Example")
    assert places.prison_name("LEI") == "LEI"  # a file replaces the package's, it does not add to it
    m = render_for("A1", "ppo", Renderer(places=places), prison_id="ZZI")
    assert " at HMP Example, ref " in m.subject and "HMP Example (ZZI)" in m.text


@pytest.mark.parametrize(("document", "problem"), [
    ("{not json", "not JSON"),
    ([], "must be a JSON object"),
    ({"prisons": {}}, "'version'"),
    ({"version": "1", "extra": 1}, "unknown key 'extra'"),
    ({"version": "1", "prisons": {"lei": "HMP Leeds"}}, "not 2 to 10 capital letters"),
    ({"version": "1", "prisons": {"LEI": "HMP Leeds\nBcc: x@y.z"}}, "one line"),
    ({"version": "1", "courts": {"B01": "x" * 81}}, "at most 80"),
    ({"version": "1", "courts": []}, "must be an object"),
])
def test_a_places_file_that_cannot_be_used_is_one_line_naming_the_file(tmp_path: Path, document: Any,
                                                                        problem: str) -> None:
    path = write(tmp_path, document)
    with pytest.raises(PlacesError) as caught:
        load_places(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and problem in message and "\n" not in message


def test_ppo_places_file_is_checked_at_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from shared.settings import Settings, settings_problems

    for key in [k for k in __import__("os").environ if k.upper().startswith("PPO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PPO_PLACES_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(ValidationError) as caught:
        Settings()
    [line] = settings_problems(caught.value)
    assert line.startswith(f"PPO_PLACES_FILE: {tmp_path / 'missing.json'}: cannot be read")
    monkeypatch.setenv("PPO_PLACES_FILE", str(write(tmp_path, {"version": "2027-01-15"})))
    assert Settings().places_file == tmp_path / "places.json"


def test_marking_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from shared.settings import Settings, settings_problems

    for key in [k for k in __import__("os").environ if k.upper().startswith("PPO_")]:
        monkeypatch.delenv(key)
    assert (Settings().marking, Settings().marking_by_domain) == ("OFFICIAL-SENSITIVE", {})
    monkeypatch.setenv("PPO_MARKING_BY_DOMAIN", '{"Met.Police.UK": "OFFICIAL-SENSITIVE [PERSONAL]"}')
    assert Settings().marking_by_domain == {"met.police.uk": "OFFICIAL-SENSITIVE [PERSONAL]"}
    for name, value, problem in [
        ("PPO_MARKING", "OFFICIAL\tX", "one line"),
        ("PPO_MARKING", "x" * 61, "1 to 60"),
        ("PPO_MARKING_BY_DOMAIN", '{"met.police.uk": "a\\nb"}', "met.police.uk: a marking is one line"),
        ("PPO_MARKING_BY_DOMAIN", '{"not a domain": "OFFICIAL"}', "is not a domain name"),
        ("PPO_MARKING_BY_DOMAIN", "met.police.uk=OFFICIAL", "not JSON"),
    ]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError) as caught:
            Settings()
        [line] = settings_problems(caught.value)
        assert line.startswith(f"{name}: ") and problem in line, line
        monkeypatch.delenv(name)


# --- 3b. the case a court event is about, from the real samples ------------------------------------------

R = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REGISTER = """pnc,cro,noms,crn,given_name,family_name,date_of_birth,home_bcu,strand,selected_on,reason,deselected_on
2004/0012345D,,A3695EA,,Sam,Example,1990-05-01,13-LD,catch_and_convict,2018-01-01,Core nominal,
"""


def through_the_rule_book(payload: dict[str, Any], rule: str) -> Any:
    ledger = make_ledger(REGISTER)
    [event] = translate(payload, R).events
    [o] = [o for o in ledger.on_event(event, R).raised if o.rule == rule]
    return event, o


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared/real-samples not available")
def test_a_warrant_from_the_real_hearing_names_the_case_the_hearing_and_the_court() -> None:
    payload = json.loads((SAMPLES / "common-platform" / "hearing-1.json").read_text())
    defendant = payload["prosecutionCases"][0]["defendants"][0]
    defendant["pncId"] = "2004/0012345D"
    [offence] = defendant["offences"][:1]
    offence["judicialResults"][0].update({"cjsCode": "4576", "label": "Warrant not backed for bail",
                                          "resultText": "Warrant not backed for bail\r\nissued",
                                          "category": "INTERMEDIARY"})
    event, o = through_the_rule_book(copy.deepcopy(payload), "A3")
    assert (event.data.case_urn, event.data.court_name) == ("74GD8837719", "Liverpool Crown Court")
    assert event.data.result_text == "Warrant not backed for bail issued"  # cleaned: one line
    assert o.facts["case_urn"] == "74GD8837719" and o.facts["hearing_date"] == "2019-01-28"
    address = DIRECTORY["bcus"]["13-LD"]["contacts"]["warrants"][0]  # type: ignore[index]
    m = Renderer().render(o, address, "warrants", None, R)
    case = "Case URN 74GD8837719, hearing on Monday 28 January 2019, at Liverpool Crown Court"
    assert case in m.text and case in m.html
    assert event.data.warrant_id in m.text  # the service's own id, kept as a secondary reference
    assert m.subject.startswith("OFFICIAL-SENSITIVE: PPO Cat A warrant at Liverpool Crown Court, ref A3-")
    assert "74GD8837719" not in m.subject and "2019" not in m.subject


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared/real-samples not available")
def test_a_reception_from_the_real_hmpps_sample_names_the_prison() -> None:
    import yaml

    from tests.unit.test_real_samples import example

    name = "prison-offender-events_prisoner-received.yaml"
    doc = yaml.safe_load((SAMPLES / "hmpps-domain-events" / name).read_text())
    payload = example(doc["payload"])
    payload["additionalInformation"]["nomsNumber"] = "A3695EA"
    payload["personReference"] = {"identifiers": [{"type": "NOMS", "value": "A3695EA"}]}
    _, o = through_the_rule_book(payload, "A1")
    m = Renderer().render(o, DIRECTORY["bcus"]["13-LD"]["contacts"]["ppo"][0], "ppo", None, R)  # type: ignore[index]
    assert "Received into custody at HMP Swansea (SWI)" in m.text
    assert m.subject.startswith("OFFICIAL-SENSITIVE: PPO in custody at HMP Swansea, ref A1-")


def test_places_is_a_plain_value() -> None:
    assert Places("v1").prison_name("LEI") == "LEI"


def test_the_notifier_builds_its_renderer_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from services.notifier.main import renderer
    from shared.settings import Settings

    for key in [k for k in __import__("os").environ if k.upper().startswith("PPO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PPO_MARKING", "OFFICIAL")
    monkeypatch.setenv("PPO_MARKING_BY_DOMAIN", '{"police.uk": "OFFICIAL-SENSITIVE"}')
    places_file = write(tmp_path, {"version": "2027-01-15", "prisons": {"LEI": "HMP Leeds"}})
    monkeypatch.setenv("PPO_PLACES_FILE", str(places_file))
    settings = Settings()
    with caplog.at_level(logging.INFO, logger="ppo.notifier"):
        built = renderer(settings)
    assert built.marking_for("a@justice.gov.uk") == "OFFICIAL"
    assert built.marking_for("a@westyorkshire.police.uk") == "OFFICIAL-SENSITIVE"
    assert built.places.version == "2027-01-15"
    [record] = [r for r in caplog.records if r.getMessage() == "places loaded"]
    assert record.places_version == "2027-01-15"  # type: ignore[attr-defined]
    (tmp_path / "places.json").write_text("{", encoding="utf-8")  # changed since the settings were checked
    with pytest.raises(SystemExit) as stopped:
        renderer(settings)
    assert stopped.value.code == 2
