"""Rendered examples of every notifier template, from a fixed sample obligation per rule.

    python -m ppo_alerts.render_examples docs/emails                 # .txt and .html per rule, digest CSV
    python -m ppo_alerts.render_examples docs/emails --screenshots A2,D2   # plus PNGs (needs chromium)

The samples are fictional and fixed (same input, same files), so a template change shows up as a diff of
docs/emails/. Composes the rule book (for each rule's source paragraph and recipients) and the notifier's
renderer, so it sits above the services (style.md §2). The screenshot helper is also used by the tests.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from services.notifier.render import ESCALATION, RULES, RenderedMessage, Renderer
from services.rules.rulebook import RULES as RULE_SPECS
from shared.custody import DIGEST, CustodyRow, digest_obligation
from shared.obligations import HistoryEntry, Obligation, PersonRef

__all__ = [
    "CHROMIUM",
    "SAMPLE_NOW",
    "Example",
    "chromium_screenshot",
    "examples",
    "main",
    "sample_custody_rows",
    "sample_now",
    "sample_obligation",
    "write_examples",
]

CHROMIUM = Path("/usr/bin/chromium")  # Debian package `chromium`
SAMPLE_NOW = datetime(2026, 2, 10, 14, 5, tzinfo=UTC)  # Tuesday 10 February 2026, 14:05 in London (GMT)
OCCURRED = datetime(2026, 2, 10, 13, 52, tzinfo=UTC)
TIMED_SEND_AT = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)  # timed rules send at 09:00 London
EARLIER = datetime(2026, 1, 20, 11, 30, tzinfo=UTC)  # the event behind a timed notice about a release date
ACK_URL = "https://alerts.example.gov.uk/ack/A1B2C3D4E5F6"

PERSON = PersonRef(
    person_id="p-0001", pnc="2006/0777001G", cro="123456/06A", noms="G1234HJ", crn="L112233",
    given_name="Alex", family_name="Sample", date_of_birth=date(1988, 8, 8),
)
YOUTH = PersonRef(person_id="p-0002", pnc="2022/0031337W", noms="H2345JK", given_name="Sam",
                  family_name="Junior", date_of_birth=date(2010, 1, 20))

ADDRESSES = {
    "ppo": "leeds.ppo@westyorkshire.police.uk",
    "warrants": "warrants@westyorkshire.police.uk",
    "probation": "leeds.iom@justice.gov.uk",
    "yot": "yot@leeds.gov.uk",
    "coordinator": "leeds.iom.coord@westyorkshire.police.uk",
    "escalation": "leeds.duty@westyorkshire.police.uk",
    "court": "listing.leeds@justice.gov.uk",
}


def _end_of_day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=UTC)  # GMT in February: UTC = London


# rule -> (event type, facts, recipient role of the example, action_due, notify_by)
_SAMPLES: dict[str, tuple[str | None, dict[str, Any], str, datetime | None, datetime | None]] = {
    "A1": ("prison.reception", {"prison_id": "LEI", "reason": "recall"}, "ppo", None, None),
    # A2 as a Common Platform hearing gives it (the case, the hearing, the court's words); A3 from an agency's
    # canonical event, with its own warrant reference
    "A2": ("warrant.issued", {"warrant_id": "cp-warrant:9f2b61d04c7e4a3b8d15e0a2c6f7b931", "court_code": "B13AA00",
                              "kind": "fta", "backed_for_bail": False, "case_urn": "13XX1234526",
                              "hearing_date": "2026-02-10", "court_name": "Leeds Magistrates' Court",
                              "result_text": "Warrant not backed for bail issued"}, "warrants", None,
           _end_of_day(date(2026, 2, 11))),
    "A3": ("warrant.issued", {"warrant_id": "W-2026-0143", "court_code": "B13AA00", "kind": "breach",
                              "grade_given": "C"}, "warrants", None, _end_of_day(date(2026, 2, 11))),
    "A4": ("prison.release_date_set", {"prison_id": "LEI", "release_date": "2026-03-10", "kind": "crd"}, "ppo",
           None, None),
    "A5": ("prison.hdc_eligible", {"prison_id": "LEI", "eligibility_date": "2026-03-02",
                                   "decision_due": "2026-02-20"}, "ppo", _end_of_day(date(2026, 2, 20)), None),
    "A6": ("prison.release_date_set", {"prison_id": "LEI", "release_date": "2026-03-02", "kind": "hdc"},
           "ppo", None, None),
    "A7": ("prison.release", {"prison_id": "LEI", "reason": "licence"}, "ppo", None, None),
    "A8": ("prison.rotl_scheduled", {"prison_id": "LEI", "starts_at": "2026-02-13T08:00:00+00:00",
                                     "ends_at": "2026-02-13T17:00:00+00:00"}, "ppo", None,
           datetime(2026, 2, 13, 8, 0, tzinfo=UTC)),
    "B1": ("court.bail_decision", {"court_code": "B13AA00", "decision": "conditional_bail", "case_urn": "13XX1234526",
                                   "hearing_date": "2026-02-10", "court_name": "Leeds Magistrates' Court",
                                   "result_text": "RC - Remanded on conditional bail until the hearing on "
                                                  "24/02/2026 at 10:00"}, "ppo", None,
           OCCURRED + timedelta(hours=24)),
    "B2": ("court.outcome", {"court_code": "B13AA00", "outcome": "conviction", "case_ended": True}, "ppo",
           _end_of_day(date(2026, 2, 17)), _end_of_day(date(2026, 2, 10))),
    "B3": ("court.sentence", {"court_code": "C13AA00", "disposal": "custody", "custody_days": 400},
           "probation", _end_of_day(date(2026, 2, 15)), None),
    "B4": ("court.sentence", {"court_code": "C13AA00", "disposal": "community", "trigger": "community_order"},
           "probation", _end_of_day(date(2026, 2, 17)), None),
    "B5": ("breach.reported", {"order": "licence"}, "ppo", _end_of_day(date(2026, 2, 17)), None),
    "B6": ("prison.transfer", {"from_prison_id": "LEI", "to_prison_id": "WDI", "prison_id": "WDI"}, "ppo", None,
           None),
    "B8": ("court.outcome", {"court_code": "B13AA00", "outcome": "conviction", "youth": True}, "yot",
           _end_of_day(date(2026, 2, 24)), None),
    "C1": (None, {"anchor": "2025-08-08", "occurrence": 1}, "coordinator", None, None),
    "C2": (None, {"selected_on": "2024-02-09"}, "coordinator", None, None),
    "C3": ("court.sentence", {"court_code": "C13AA00", "disposal": "custody", "custody_days": 1095},
           "coordinator", None, None),
    "C4": ("prison.release_date_set", {"prison_id": "LEI", "release_date": "2026-05-10", "kind": "crd"},
           "coordinator", None, None),
    "C5": ("register.moved_area", {"from_bcu": "13-BD", "to_bcu": "13-LD"}, "coordinator", None, None),
    "C6": (None, {"period": "2026-02", "ppos": [
        {"given_name": "Alex", "family_name": "Sample", "pnc": "2006/0777001G", "noms": "G1234HJ",
         "strand": "catch_and_convict", "selected_on": "2025-06-01", "status": "in_custody",
         "reason": "NIM core nominal"},
        {"given_name": "Chris", "family_name": "Placeholder", "pnc": "2011/0456789K", "noms": None,
         "strand": "rehabilitate_and_resettle", "selected_on": "2025-09-15", "status": "offending_in_cjs",
         "reason": "Acquisitive crime"},
    ]}, "coordinator", None, None),
    "C7": ("offence.high_harm", {}, "coordinator", None, None),
}


def sample_obligation(rule: str) -> Obligation:
    """The fixed sample obligation of `rule` (A1 ... C7), as the rule book would raise it."""
    event_type, facts, role, action_due, notify_by = _SAMPLES[rule]
    spec = RULE_SPECS[rule]
    address = ADDRESSES[role]
    timed = event_type is None or rule in ("A4", "C4")
    send_at = TIMED_SEND_AT if timed else SAMPLE_NOW
    occurred = None if event_type is None else (EARLIER if timed else OCCURRED)
    return Obligation(
        obligation_id=f"{rule}-5a3c0e9d71f24b86a0c1d2e3",
        rule=rule,
        source_paragraph=spec.source,
        person=None if rule == "C6" else (YOUTH if rule == "B8" else PERSON),
        bcu="13-LD",
        recipients=[address],
        recipient_roles={address: role},
        send_at=send_at,
        notify_by=notify_by or send_at + timedelta(minutes=15),
        action_due=action_due,
        grade="A" if rule in ("A2", "A3") else None,
        raised_at=(occurred or send_at) + timedelta(minutes=1) if occurred else send_at,
        occurred_at=occurred,
        event_type=event_type,
        facts={**facts, "rule_title": spec.title, "source": "HMPPS" if rule[0] == "A" else "COMMON-PLATFORM"},
    )


def sample_now(rule: str) -> datetime:
    """When the sample is rendered: a minute after it was due to be sent (so none of them is late)."""
    return sample_obligation(rule).send_at + timedelta(minutes=1)


def sample_custody_rows() -> list[CustodyRow]:
    """A BCU's custody list: releases passed, this week, this month, later, and not known."""
    return [
        CustodyRow("Alex SAMPLE", {"noms": "G1234HJ", "pnc": "2006/0777001G"}, "LEI", date(2026, 3, 13), "crd"),
        CustodyRow("Chris PLACEHOLDER", {"noms": "K4567LM", "pnc": "2011/0456789K"}, "HHI", date(2026, 2, 13),
                   "confirmed"),
        CustodyRow("Dana EXEMPLAR", {"noms": "M5678NP"}, "WDI", date(2026, 2, 8), "crd"),
        CustodyRow("Eli DUMMY", {"noms": "N6789PQ", "pnc": "2015/0111222B"}, "LEI", date(2026, 2, 27), "hdc",
                   "at court"),
        CustodyRow("Frankie TESTCASE", {"noms": "P7890QR", "pnc": "2019/0333444C"}, "DMI", date(2026, 7, 1),
                   "ard"),
        CustodyRow("Gabi MOCKUP", {"noms": "Q8901RS"}, "HHI", None, None),
    ]


@dataclass(frozen=True)
class Example:
    name: str  # file stem in docs/emails
    message: RenderedMessage


def examples(renderer: Renderer | None = None) -> list[Example]:
    """Every rule for its usual recipient, one court recipient, an escalation and the custody digest."""
    r = renderer or Renderer()
    out = []
    for rule in RULES:
        o = sample_obligation(rule)
        [address] = o.recipients
        out.append(Example(rule, r.render(o, address, o.recipient_roles[address], ACK_URL, sample_now(rule))))
    a1 = sample_obligation("A1")  # the same notice as the offender manager reads it
    out.append(Example("A1-probation", r.render(a1, ADDRESSES["probation"], "probation", ACK_URL, sample_now("A1"))))
    court = sample_obligation("B1")
    out.append(Example("B1-court", r.render(court, ADDRESSES["court"], "court",
                                            "https://notices.example.gov.uk/ack/F6E5D4C3B2A1", sample_now("B1"))))
    breached = sample_obligation("A2").model_copy(update={
        "status": "breached",
        "history": [
            HistoryEntry(at=OCCURRED + timedelta(minutes=1), what="raised"),
            HistoryEntry(at=datetime(2026, 2, 11, 23, 59, 59, tzinfo=UTC),
                         what="notify_by passed without acceptance by the mail server"),
        ],
    })
    out.append(Example(ESCALATION, r.render(breached, ADDRESSES["escalation"], "escalation", ACK_URL,
                                            datetime(2026, 2, 12, 0, 5, tzinfo=UTC),
                                            escalation_reason="not delivered in time")))
    digest_at = datetime(2026, 2, 9, 9, 0, tzinfo=UTC)  # Monday 09:00 London
    digest = digest_obligation("13-LD", sample_custody_rows(), date(2026, 2, 9),
                               {ADDRESSES["coordinator"]: "coordinator"}, digest_at)
    out.append(Example(DIGEST, r.render(digest, ADDRESSES["coordinator"], "coordinator", ACK_URL, digest_at)))
    return out


def write_examples(folder: Path, renderer: Renderer | None = None) -> list[Path]:
    """`<name>.txt` (headers and text part), `<name>.html`, and any attachment, for every example."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for ex in examples(renderer):
        m = ex.message
        head = f"Subject: {m.subject}\nTo: {m.recipient} ({m.role or 'no role'})\nTemplate: {m.template_version}\n\n"
        for path, content in ((folder / f"{ex.name}.txt", head + m.text), (folder / f"{ex.name}.html", m.html)):
            path.write_text(content, encoding="utf-8")
            written.append(path)
        for a in m.attachments:
            path = folder / a.filename
            path.write_bytes(a.data)
            written.append(path)
    index = folder / "README.md"
    index.write_text(_index(examples(renderer)), encoding="utf-8")
    written.append(index)
    return written


def _index(found: list[Example]) -> str:
    lines = [
        "# Rendered emails",
        "",
        "Generated by `python -m ppo_alerts.render_examples docs/emails --screenshots A2,D2` from fixed, fictional",
        "sample obligations (`ppo_alerts/render_examples.py`); do not edit by hand. Each message has a text part",
        "(`.txt`, with its subject and recipient on top) and an HTML part (`.html`); the PNGs are the HTML part as",
        "headless Chromium shows it at 900x1200. Times are London time.",
        "",
        "| file | recipient | subject |",
        "|---|---|---|",
    ]
    for ex in found:
        m = ex.message
        extra = "".join(f", [{a.filename}]({a.filename})" for a in m.attachments)
        subject = m.subject.replace("|", "\\|")
        files = f"[{ex.name}.txt]({ex.name}.txt), [{ex.name}.html]({ex.name}.html){extra}"
        lines.append(f"| {files} | {m.role} | {subject} |")
    return "\n".join(lines) + "\n"


def chromium_screenshot(html: Path, png: Path, width: int = 900, height: int = 1200, timeout_s: float = 60.0,
                        chromium: Path = CHROMIUM) -> Path:
    """Render `html` in headless Chromium (no network, throwaway profile) and save a PNG of the window."""
    if not chromium.exists():
        raise FileNotFoundError(f"{chromium} not found: install the Debian package `chromium`")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ppo-chromium-") as profile:
        subprocess.run(
            [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png.resolve()}",
             f"--window-size={width},{height}", html.resolve().as_uri()],
            check=True, capture_output=True, timeout=timeout_s,
        )
    if not png.exists():
        raise RuntimeError(f"chromium wrote no screenshot for {html}")
    return png


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppo_alerts.render_examples", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="where to write the examples (e.g. docs/emails)")
    parser.add_argument("--screenshots", default="", help="comma-separated example names to screenshot, e.g. A2,D2")
    args = parser.parse_args(argv)
    written = write_examples(args.folder)
    for name in filter(None, (x.strip() for x in args.screenshots.split(","))):
        if not CHROMIUM.exists() and shutil.which("chromium") is None:
            print(f"skipping screenshots: {CHROMIUM} not found (apt-get install chromium)", file=sys.stderr)
            break
        written.append(chromium_screenshot(args.folder / f"{name}.html", args.folder / f"{name}.png"))
    print(f"wrote {len(written)} files to {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
