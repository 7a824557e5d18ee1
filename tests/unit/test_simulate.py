"""`ppo-alerts simulate` as a program (contract §3): exit codes, outputs, progress, virtual time, the outbox.

The rule book itself is checked by the worked examples (test_examples.py) and the ledger tests
(test_rules.py); these tests use a few of the example folders as ready-made inputs.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ppo_alerts import cli
from ppo_alerts.simulate import (
    ACK_BASE_URL_VARIABLES,
    PLACEHOLDER_ACK_BASE_URL,
    SIMULATION_ACK_KEY,
    MessageSink,
    Refusal,
    SimulationEngine,
    parse_instant,
    run,
)
from services.notifier.render import Renderer, TemplateFailed, reference_for
from shared import ack
from shared.directory import Directory
from shared.obligations import Obligation
from shared.register import Register

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RECEPTIONS = EXAMPLES / "s01_a1_reception_reasons"  # three A1, to Leeds and Stoke
RELEASE_DATES = EXAMPLES / "s05_a4_release_date_set_changed_withdrawn_restored"  # one A4 cancelled, one sent
BAD_LINES = EXAMPLES / "s24_bad_lines_rejected"
BAD_DIRECTORY = EXAMPLES / "s23_bad_directory_gmail"
QUIET = EXAMPLES / "s19_c1_repeats_every_six_months"  # Eve: C1 every six months

CONTRACT_FIELDS = {"obligation_id", "rule", "person", "recipients", "send_at", "notify_by", "action_due", "grade",
                   "status", "notified_at", "source_event_ids"}


def utc(text: str) -> datetime:
    return parse_instant(text, "test")


def simulate(folder: Path, out: Path, until: str, *extra: str, events: Path | None = None,
             directory: Path | None = None) -> int:
    return cli.main(["simulate", "--register", str(folder / "register.csv"),
                     "--directory", str(directory or folder / "directory.yaml"),
                     "--events", str(events or folder / "events.jsonl"), "--until", until, "--out", str(out), *extra])


def obligations(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "obligations.jsonl").read_text().splitlines() if line.strip()]


def rejected(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines() if line.strip()]


def canonical(eid: str, type_: str, occurred_at: str, person: dict[str, str], **data: Any) -> dict[str, Any]:
    return {"id": eid, "type": type_, "occurred_at": occurred_at, "source": "TEST", "person": person, "data": data}


def write_lines(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


# --- exit codes and messages ------------------------------------------------------------------------------


def test_completes_with_exit_0_even_with_rejected_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate(BAD_LINES, tmp_path / "out", "2026-03-03T00:00:00Z") == 0
    summary = capsys.readouterr().out
    assert "7 rejected lines" in summary and str(tmp_path / "out") in summary


@pytest.mark.parametrize("missing", ["register", "directory", "events"])
def test_a_missing_file_is_exit_2_with_a_clear_message(missing: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    shutil.copytree(RECEPTIONS, folder)
    name = {"register": "register.csv", "directory": "directory.yaml", "events": "events.jsonl"}[missing]
    (folder / name).unlink()
    assert simulate(folder, tmp_path / "out", "2026-03-07T00:00:00Z") == 2
    err = capsys.readouterr().err
    assert err.startswith("ppo-alerts simulate: ") and f"cannot read {missing}" in err and name in err
    assert "No such file" in err and "Traceback" not in err


def test_a_bad_directory_is_refused_naming_the_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate(BAD_DIRECTORY, tmp_path / "out", "2026-03-03T00:00:00Z") == 2
    err = capsys.readouterr().err
    assert "leeds.ppo.team@gmail.com is outside the allowed recipient domains" in err
    assert "bcus.13-LD.contacts.ppo" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "obligations.jsonl").exists()


@pytest.mark.parametrize(("until", "says"), [
    ("next tuesday", "is not an ISO 8601 instant"),
    ("2026-13-01T00:00:00Z", "is not an ISO 8601 instant"),
    ("2026-03-07T00:00:00", "has no offset"),
])
def test_a_bad_until_is_exit_2_with_a_clear_message(until: str, says: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate(RECEPTIONS, tmp_path / "out", until) == 2
    err = capsys.readouterr().err
    assert "--until" in err and says in err and "Traceback" not in err


def test_an_events_file_without_a_usable_line_needs_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write_lines(tmp_path / "events.jsonl", ["not json", {"at": "yesterday", "body": {}}])
    assert simulate(RECEPTIONS, tmp_path / "out", "2026-03-07T00:00:00Z", events=events) == 2
    assert "--start" in capsys.readouterr().err
    assert simulate(RECEPTIONS, tmp_path / "out", "2026-03-07T00:00:00Z", "--start", "2026-03-01T00:00:00Z",
                    events=events) == 0
    assert [r["line"] for r in rejected(tmp_path / "out")] == [1, 2]


# --- outputs -----------------------------------------------------------------------------------------------


def test_rejected_lines_have_their_number_and_reason(tmp_path: Path) -> None:
    run(BAD_LINES / "register.csv", BAD_LINES / "directory.yaml", BAD_LINES / "events.jsonl",
        utc("2026-03-03T00:00:00Z"), tmp_path)
    by_line = {r["line"]: r for r in rejected(tmp_path)}
    assert sorted(by_line) == [2, 3, 4, 6, 7, 8, 9]  # line 5 is blank; 10 is an HMPPS type that is not mapped
    assert by_line[2]["reason"].startswith("not JSON: ") and "line 1" in by_line[2]["reason"]
    assert "'at' and 'body'" in by_line[3]["reason"]
    assert "has no offset" in by_line[4]["reason"]
    assert "goes back before 2026-03-02T10:00:00+00:00" in by_line[6]["reason"]
    assert by_line[7]["problems"][0]["field"] == "type" and "prison.escape" in by_line[7]["problems"][0]["problem"]
    assert by_line[8]["problems"] == [{"field": "person.pnc", "problem":
                                       "value is not a valid PNC ID: check character is H, expected G"}]
    assert by_line[9]["problems"][0]["field"] == "occurred_at"


def test_a_line_that_is_not_utf8_is_rejected_and_the_run_goes_on(tmp_path: Path) -> None:
    good = json.loads((RECEPTIONS / "events.jsonl").read_text().splitlines()[0])
    events = tmp_path / "events.jsonl"
    events.write_bytes(json.dumps(good).encode() + b"\n" + b'{"at": "2026-03-02T11:00:00Z", "body": "\xff\xfe"}\n')
    run(RECEPTIONS / "register.csv", RECEPTIONS / "directory.yaml", events, utc("2026-03-03T00:00:00Z"), tmp_path)
    assert [(r["line"], r["reason"][:13]) for r in rejected(tmp_path)] == [(2, "not UTF-8 tex")]
    assert [o["rule"] for o in obligations(tmp_path) if o["rule"] == "A1"] == ["A1"]


def test_obligations_have_the_contract_fields(tmp_path: Path) -> None:
    run(RECEPTIONS / "register.csv", RECEPTIONS / "directory.yaml", RECEPTIONS / "events.jsonl",
        utc("2026-04-02T00:00:00Z"), tmp_path)
    rows = obligations(tmp_path)
    assert rows and all(CONTRACT_FIELDS <= set(row) for row in rows)
    a1 = [row for row in rows if row["rule"] == "A1"]
    assert len(a1) == 3
    first = a1[0]
    assert first["person"]["pnc"] == "2006/0777001G" and first["person"]["noms"] == "G1234HJ"
    assert first["recipients"] == ["leeds.ppo@westyorkshire.police.uk", "leeds.iom@justice.gov.uk"]
    assert first["send_at"] == "2026-03-02T10:05:00Z" and first["notify_by"] == "2026-03-02T10:20:00Z"
    assert first["notified_at"] == "2026-03-02T10:05:00Z" and first["status"] == "notified"
    assert first["action_due"] is None and first["grade"] is None and first["source_event_ids"] == ["s01-1"]
    c6 = [row for row in rows if row["rule"] == "C6"]
    assert c6 and all(row["person"] is None for row in c6)


def test_the_same_input_gives_the_same_output(tmp_path: Path) -> None:
    for name in ("a", "b"):
        run(RELEASE_DATES / "register.csv", RELEASE_DATES / "directory.yaml", RELEASE_DATES / "events.jsonl",
            utc("2026-08-10T00:00:00Z"), tmp_path / name)
    assert (tmp_path / "a" / "obligations.jsonl").read_bytes() == (tmp_path / "b" / "obligations.jsonl").read_bytes()
    assert sorted(p.name for p in (tmp_path / "a" / "outbox").iterdir()) == sorted(
        p.name for p in (tmp_path / "b" / "outbox").iterdir())


# --- the outbox --------------------------------------------------------------------------------------------


def test_one_rfc5322_message_per_obligation_and_recipient(tmp_path: Path) -> None:
    run(RECEPTIONS / "register.csv", RECEPTIONS / "directory.yaml", RECEPTIONS / "events.jsonl",
        utc("2026-03-07T00:00:00Z"), tmp_path)
    sent = [o for o in obligations(tmp_path) if o["notified_at"]]
    expected = {f"{o['obligation_id']}__{r.replace('@', '_at_')}.eml": (o, r) for o in sent for r in o["recipients"]}
    files = {p.name: p for p in (tmp_path / "outbox").iterdir()}
    assert set(files) == set(expected)
    parser = BytesParser(policy=policy.default)
    for name, (o, recipient) in expected.items():
        msg = parser.parsebytes(files[name].read_bytes())
        assert msg["To"] == recipient and msg["From"] and msg["Message-ID"] and msg["Date"]
        subject = msg["Subject"].strip()
        assert subject.startswith("OFFICIAL-SENSITIVE: ")
        # the rule and the short reference end it, whatever the wording ("(A1, ref 1a2b3c4d)" or "ref A1-1a2b3c4d")
        assert re.search(rf"\b{o['rule']}\b.{{0,8}}{reference_for(o['obligation_id'])}\)?$", subject), subject
        assert msg["X-Classification"] == "OFFICIAL-SENSITIVE"
        assert msg.get_content_type() == "multipart/alternative"
        assert {part.get_content_type() for part in msg.iter_parts()} >= {"text/plain", "text/html"}
        assert o["obligation_id"] in (msg.get("X-PPO-Obligation") or "")
        assert msg["X-PPO-Rule"] == o["rule"]


def test_the_same_reception_from_two_feeds_is_one_message_per_recipient(tmp_path: Path) -> None:
    folder = EXAMPLES / "s02_a1_same_reception_two_feeds"
    run(folder / "register.csv", folder / "directory.yaml", folder / "events.jsonl", utc("2026-02-11T00:00:00Z"),
        tmp_path)
    a1 = [o for o in obligations(tmp_path) if o["rule"] == "A1"]
    assert len(a1) == 1 and len(a1[0]["source_event_ids"]) == 1
    assert sorted(p.name for p in (tmp_path / "outbox").glob("A1-*")) == sorted(
        f"{a1[0]['obligation_id']}__{r.replace('@', '_at_')}.eml" for r in a1[0]["recipients"])


def test_a_cancelled_release_notice_never_reaches_the_outbox(tmp_path: Path) -> None:
    run(RELEASE_DATES / "register.csv", RELEASE_DATES / "directory.yaml", RELEASE_DATES / "events.jsonl",
        utc("2026-08-10T00:00:00Z"), tmp_path)
    a4 = {o["status"]: o for o in obligations(tmp_path) if o["rule"] == "A4"}
    assert set(a4) == {"cancelled", "notified"}
    assert not list((tmp_path / "outbox").glob(f"{a4['cancelled']['obligation_id']}__*"))
    assert len(list((tmp_path / "outbox").glob(f"{a4['notified']['obligation_id']}__*"))) == 2
    assert a4["notified"]["notified_at"] == "2026-07-06T08:00:00Z"


def _ack_links(message_bytes: bytes) -> tuple[set[str], set[str]]:
    """The acknowledgement links in the text and the HTML part of a message."""
    msg = BytesParser(policy=policy.default).parsebytes(message_bytes)
    text = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content().replace("&amp;", "&")
    pattern = re.compile(r"https?://[^\s\"<>]+/ack\?[^\s\"<>]+")
    return set(pattern.findall(text)), set(pattern.findall(html))


def test_the_outbox_carries_the_acknowledgement_link_with_a_placeholder_base(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ACK_BASE_URL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert simulate(RECEPTIONS, tmp_path, "2026-03-07T00:00:00Z") == 0
    sent = {f"{o['obligation_id']}__{r.replace('@', '_at_')}.eml": (o, r)
            for o in obligations(tmp_path) if o["notified_at"] for r in o["recipients"]}
    assert sent
    for name, (o, recipient) in sent.items():
        in_text, in_html = _ack_links((tmp_path / "outbox" / name).read_bytes())
        assert in_text == in_html and len(in_text) == 1, name
        [url] = in_text
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == PLACEHOLDER_ACK_BASE_URL and parts.path == ack.LINK_PATH
        query = parse_qs(parts.query)
        assert query["o"] == [o["obligation_id"]] and query["r"] == [recipient]
        # the shape of a live link, valid for the live lifetime from the send, and signed with the simulation's
        # public key only: it acknowledges nothing live
        expires = int(query["e"][0])
        assert expires == ack.expiry(utc(o["notified_at"]), timedelta(days=30))
        assert query["s"] == [ack.signature(SIMULATION_ACK_KEY, o["obligation_id"], recipient, expires)]


def test_the_outbox_links_use_the_configured_base_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PPO_ACK_BASE_URL", raising=False)
    monkeypatch.setenv("PPO_PUBLIC_BASE_URL", "https://alerts.example.gov.uk/base")
    assert simulate(RECEPTIONS, tmp_path / "public", "2026-03-07T00:00:00Z") == 0
    monkeypatch.setenv("PPO_ACK_BASE_URL", "https://notices.example.gov.uk")  # ack's own wins, as live
    assert simulate(RECEPTIONS, tmp_path / "ack", "2026-03-07T00:00:00Z") == 0
    for out, base in (("public", "https://alerts.example.gov.uk/base/ack?"), ("ack", "https://notices.example.gov.uk/ack?")):
        files = list((tmp_path / out / "outbox").iterdir())
        assert files and all(
            all(u.startswith(base) for u in set.union(*_ack_links(f.read_bytes()))) for f in files)


def test_a_base_url_the_services_would_refuse_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PPO_ACK_BASE_URL", "https://ppo-alerts.example.gov.uk")  # court recipients see it
    assert simulate(RECEPTIONS, tmp_path, "2026-03-07T00:00:00Z") == 2
    err = capsys.readouterr().err
    assert "PPO_ACK_BASE_URL" in err and "says PPO" in err and "Traceback" not in err


def _render_failing_for(addresses: set[str]) -> Any:
    real = Renderer.render

    def render(self: Renderer, obligation: Obligation, recipient: str, *args: Any, **kwargs: Any) -> Any:
        if recipient in addresses or "*" in addresses:
            raise TemplateFailed(f"template {obligation.rule} failed: 'ppo' is undefined")
        return real(self, obligation, recipient, *args, **kwargs)

    return render


def test_a_render_error_for_one_recipient_is_recorded_and_the_rest_are_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Renderer, "render", _render_failing_for({"leeds.iom@justice.gov.uk"}))
    run(RECEPTIONS / "register.csv", RECEPTIONS / "directory.yaml", RECEPTIONS / "events.jsonl",
        utc("2026-03-07T00:00:00Z"), tmp_path)
    leeds = [o for o in obligations(tmp_path) if o["rule"] == "A1" and o["bcu"] == "13-LD"]
    assert len(leeds) == 2 and all(o["status"] == "notified" for o in leeds)
    for o in leeds:
        assert any(h["what"].startswith("not sent to leeds.iom@justice.gov.uk: template-error: template A1 failed")
                   for h in o["history"])
        names = sorted(p.name for p in (tmp_path / "outbox").glob(f"{o['obligation_id']}__*"))
        assert names == [f"{o['obligation_id']}__leeds.ppo_at_westyorkshire.police.uk.eml"]


def test_a_render_error_for_every_recipient_fails_the_obligation_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(Renderer, "render", _render_failing_for({"*"}))
    assert simulate(RECEPTIONS, tmp_path / "out", "2026-03-07T00:00:00Z") == 0
    rows = obligations(tmp_path / "out")
    a1 = [o for o in rows if o["rule"] == "A1"]
    assert len(a1) == 3 and all(o["status"] == "failed" and o["notified_at"] is None for o in a1)
    why = a1[0]["history"][-1]["what"]
    assert why.startswith("failed: every recipient refused permanently: leeds.ppo@westyorkshire.police.uk: "
                          "template-error: template A1 failed")
    assert not list((tmp_path / "out" / "outbox").iterdir())
    assert "failed" in capsys.readouterr().out


# --- virtual time ------------------------------------------------------------------------------------------


def test_start_before_the_first_line(tmp_path: Path) -> None:
    without, with_start = tmp_path / "without", tmp_path / "with"
    assert simulate(RECEPTIONS, without, "2026-03-07T00:00:00Z") == 0
    events = write_lines(tmp_path / "events.jsonl", [
        {"at": "2026-02-27T12:00:00Z", "body": canonical("early", "offence.high_harm", "2026-02-27T11:00:00Z",
                                                          {"pnc": "2006/0777001G"})},
        *[json.loads(line) for line in (RECEPTIONS / "events.jsonl").read_text().splitlines()],
    ])
    assert simulate(RECEPTIONS, with_start, "2026-03-07T00:00:00Z", "--start", "2026-03-01T00:00:00Z",
                    events=events) == 0

    def alex(out: Path, rule: str) -> list[dict[str, Any]]:
        return [o for o in obligations(out) if o["rule"] == rule and o["person"]["pnc"] == "2006/0777001G"]

    # The register is loaded when the clock starts: Alex's C1 (due since Dec 2025) is sent at that instant.
    assert [o["send_at"] for o in alex(without, "C1")][:1] == ["2026-03-02T10:05:00Z"]
    assert [o["send_at"] for o in alex(with_start, "C1")][:1] == ["2026-03-01T00:00:00Z"]
    # C6 begins when the system starts: March's review (Mon 2 Mar 09:00) only when started before it.
    assert not [o for o in obligations(without) if o["rule"] == "C6"]
    assert sorted(o["send_at"] for o in obligations(with_start) if o["rule"] == "C6") == ["2026-03-02T09:00:00Z"] * 2
    # A line before --start goes back in time: rejected, and the rest is the same.
    assert [(r["line"], "goes back" in r["reason"]) for r in rejected(with_start)] == [(1, True)]
    assert [o["send_at"] for o in obligations(with_start) if o["rule"] == "A1"] == [
        o["send_at"] for o in obligations(without) if o["rule"] == "A1"]


class Recorder(MessageSink):
    def __init__(self) -> None:
        self.sent: list[tuple[datetime, Obligation]] = []

    def deliver(self, o: Obligation, at: datetime) -> list[Refusal]:
        self.sent.append((at, o))
        return []


def test_timers_fire_in_virtual_time_in_order_across_a_long_until() -> None:
    register = Register.load(QUIET / "register.csv")
    directory = Directory.load(QUIET / "directory.yaml")
    sink = Recorder()
    start = utc("2026-02-02T09:00:00Z")
    engine = SimulationEngine(register, directory, start, sink=sink)
    line = json.loads((QUIET / "events.jsonl").read_text())
    engine.feed(utc(line["at"]), line["body"], 1)
    engine.advance(utc("2027-02-01T00:00:00Z"))
    times = [at for at, _ in sink.sent]
    assert times == sorted(times) and times[0] >= start and times[-1] <= utc("2027-02-01T00:00:00Z")
    for at, o in sink.sent:
        assert at == max(o.send_at, start) and o.notified_at == at  # on time, in virtual time
    eve = [at for at, o in sink.sent if o.rule == "C1" and o.person and o.person.pnc == "2005/0444555M"]
    assert eve == [utc("2026-07-15T08:00:00Z"), utc("2027-01-15T09:00:00Z")]
    c6 = [at for at, o in sink.sent if o.rule == "C6"]  # March 2026 to January 2027, two BCUs
    assert len(c6) == 2 * 11 and c6[0] == utc("2026-03-02T09:00:00Z") and c6[-1] == utc("2027-01-04T09:00:00Z")
    assert engine.now == utc("2027-02-01T00:00:00Z")


# --- progress ------------------------------------------------------------------------------------------------


def _long_input(path: Path, lines: int) -> Path:
    t0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()
    records = []
    for i in range(lines):
        at = datetime.fromtimestamp(t0 + 10 * i, UTC).isoformat()
        person = {"pnc": "2006/0777001G"} if i % 50 == 0 else {"noms": "Z9999ZZ"}
        records.append({"at": at, "body": canonical(f"long-{i}", "police.intelligence", at, person)})
    return write_lines(path, records)


def test_progress_appears_on_stderr_for_long_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = _long_input(tmp_path / "events.jsonl", 6001)
    assert simulate(RECEPTIONS, tmp_path / "out", "2026-03-03T00:00:00Z", events=events) == 0
    captured = capsys.readouterr()
    assert "5,000 lines" in captured.err and "lines/s" in captured.err and "virtual time 2026-03-02" in captured.err
    assert "done: 6,001 lines" in captured.err
    assert "lines/s" not in captured.out
    assert rejected(tmp_path / "out") == []


def test_no_progress_for_short_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    progress = io.StringIO()
    run(RECEPTIONS / "register.csv", RECEPTIONS / "directory.yaml", RECEPTIONS / "events.jsonl",
        utc("2026-03-07T00:00:00Z"), tmp_path, progress=progress)
    assert progress.getvalue() == ""
    assert simulate(RECEPTIONS, tmp_path / "cli", "2026-03-07T00:00:00Z") == 0
    assert capsys.readouterr().err == ""


def test_after_a_move_a_reload_of_the_register_raises_no_second_review() -> None:
    """A move splits the register period; the two-year review and the six months still run from selection,
    so loading the register again (a restart of the live service) finds the same C1 and C2."""
    folder = EXAMPLES / "s30_timers_follow_a_move_of_area"
    register = Register.load(folder / "register.csv")
    engine = SimulationEngine(register, Directory.load(folder / "directory.yaml"), utc("2026-02-02T09:00:00Z"))
    for number, text in enumerate((folder / "events.jsonl").read_text().splitlines(), start=1):
        line = json.loads(text)
        engine.feed(utc(line["at"]), line["body"], number)
    eve = register.find({"pnc": "2005/0444555M"})
    assert eve is not None and [p.home_bcu for p in eve.periods] == ["21-ST", "13-LD"]
    again = engine.ledger.on_register_loaded(eve, utc("2026-02-03T09:00:00Z"))
    assert again.raised == [] and {o.rule for o in engine.ledger.obligations.values()
                                    if o.person and o.person.person_id == eve.person_id} == {"A4", "C1", "C2", "C5"}


# --- the short paths decide nothing differently: a synthetic year, with and without them ------------------


def _synthetic_run(events: int = 12_000) -> tuple[list[dict[str, Any]], dict[str, int], int]:
    from ppo_alerts.bench.data import START, YEAR, EventStream, National

    world = National(3_000, 600, outsiders=3_000, seed=11)
    engine = SimulationEngine(Register.from_csv_text(world.register_csv, "synthetic"),
                              Directory.from_mapping(world.directory, "synthetic"), START, sink=MessageSink())
    stream = EventStream(world, events, 0.3, 12, YEAR / 4)
    for line, (at, body) in enumerate(stream.chunk(events), start=1):
        engine.feed(at, body, line)
    engine.advance(START + YEAR / 4)
    return [o.model_dump(mode="json") for o in engine.obligations()], dict(engine.ignored), len(engine.rejected)


def test_the_usual_movement_path_changes_no_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every HMPPS movement of a synthetic quarter the general way, then with the one-step path: same obligations
    # (every field, history included), same ignored counts.
    from services.intake.feeds import hmpps

    with monkeypatch.context() as m:
        m.setattr(hmpps, "usual_movement", lambda event: None)
        general = _synthetic_run()
    usual = _synthetic_run()
    assert len(general[0]) > 1_000  # a quarter's worth of obligations, of many rules
    assert len({o["rule"] for o in general[0]}) >= 10
    assert usual == general


def test_a_part_of_a_payload_not_taken_is_reported_and_the_rest_taken(tmp_path: Path) -> None:
    """As live intake answers 202 with `not_taken`: the good defendant's events count, the bad one is reported."""
    from tests.hostile.test_partial_payloads import two_defendants

    events = write_lines(tmp_path / "events.jsonl",
                         [{"at": "2026-03-02T11:00:00Z", "body": two_defendants("2004/0012345H")}])
    out = tmp_path / "out"
    run(RECEPTIONS / "register.csv", RECEPTIONS / "directory.yaml", events, utc("2026-03-03T00:00:00Z"), out)
    [report] = rejected(out)
    assert report["line"] == 1 and report["reason"] == "part of payload not taken"
    assert ["defendants[1].pncId" in p["field"] for p in report["problems"]] == [True]
