"""The weekly custody digest (services.notifier.digest): sorted rows, the CSV attachment, the email."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import pytest

from services.notifier.digest import (
    CSV_COLUMNS,
    DIGEST,
    CustodyLine,
    build_digest,
    custody_csv,
    custody_lines,
    digest_filename,
)
from services.notifier.render import (
    COURT_FORBIDDEN,
    CourtDisclosureRefused,
    MessageTooLarge,
    Renderer,
    reference_for,
)
from shared.custody import CustodyRow, digest_obligation

TODAY = date(2026, 2, 9)  # a Monday
COORD = "leeds.iom.coord@westyorkshire.police.uk"
SENDER = "PPO Alerts <ppo-alerts@notify.example.gov.uk>"

ROWS = [
    CustodyRow("Alex SAMPLE", {"noms": "G1234HJ", "pnc": "2006/0777001G"}, "LEI", date(2026, 3, 13), "crd"),
    CustodyRow("Chris PLACEHOLDER", {"noms": "K4567LM"}, "HHI", date(2026, 2, 13), "confirmed"),
    CustodyRow("Dana EXEMPLAR", {"noms": "M5678NP"}, "WDI", date(2026, 2, 8), "crd"),
    CustodyRow("Gabi MOCKUP", {"noms": "Q8901RS"}, "HHI", None, None),
    CustodyRow("Bo ANOTHER", {"noms": "B1111BB"}, "LEI", date(2026, 2, 13), "hdc", "at court"),
    CustodyRow("Eli DUMMY", {"noms": "N6789PQ"}, "LEI", TODAY, "crd"),
]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def test_lines_are_sorted_by_days_to_release_unknown_last() -> None:
    lines = custody_lines(ROWS, TODAY)
    assert [(x.row.person_name, x.days) for x in lines] == [
        ("Dana EXEMPLAR", -1), ("Eli DUMMY", 0), ("Bo ANOTHER", 4), ("Chris PLACEHOLDER", 4),
        ("Alex SAMPLE", 32), ("Gabi MOCKUP", None),
    ]
    assert custody_lines(list(reversed(ROWS)), TODAY) == lines  # the input order does not matter


@pytest.mark.parametrize(("days", "label", "urgency"), [
    (None, "not known", "unknown"), (-3, "passed 3 days ago", "passed"), (-1, "passed 1 day ago", "passed"),
    (0, "today", "urgent"), (1, "1 day", "urgent"), (7, "7 days", "urgent"), (8, "8 days", "soon"),
    (28, "28 days", "soon"), (29, "29 days", "later"),
])
def test_days_label_and_urgency(days: int | None, label: str, urgency: str) -> None:
    line = CustodyLine(ROWS[0], days)
    assert (line.days_label, line.urgency) == (label, urgency)


def test_csv_is_sorted_rfc4180_with_a_bom_and_no_formulas() -> None:
    rows = [*ROWS, CustodyRow("=HYPERLINK(\"http://x\")", {"noms": "Z0000ZZ"}, "+LEI", date(2026, 2, 20), "crd")]
    data = custody_csv(rows, TODAY)
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    parsed = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert tuple(parsed[0]) == CSV_COLUMNS
    assert [r[0] for r in parsed[1:]] == ["-1", "0", "4", "4", "11", "32", ""]  # numbers stay numbers
    dana = parsed[1]
    assert dict(zip(CSV_COLUMNS, dana, strict=True)) == {
        "days_to_release": "-1", "release_date": "2026-02-08", "release_date_kind": "crd", "name": "Dana EXEMPLAR",
        "noms": "M5678NP", "pnc": "", "crn": "", "cro": "", "prison": "WDI",
        "note": "date passed, no release reported",
    }
    evil = next(r for r in parsed if "HYPERLINK" in r[3])
    assert evil[3].startswith("'=") and evil[8] == "'+LEI"  # a spreadsheet shows text, runs nothing
    assert parsed[-1][:4] == ["", "", "", "Gabi MOCKUP"]


def test_filename_is_plain() -> None:
    assert digest_filename("13-LD", TODAY) == "custody-countdown-13-LD-2026-02-09.csv"
    assert digest_filename("../etc/passwd\r\n", TODAY) == "custody-countdown-etc-passwd-2026-02-09.csv"


def test_build_digest_has_html_table_text_and_csv(renderer: Renderer) -> None:
    msg = build_digest("13-LD", ROWS, TODAY, renderer, recipient=COORD, sender=SENDER)
    assert msg.get_content_type() == "multipart/mixed"
    ref = reference_for(msg["X-PPO-Obligation"], "D2")
    assert msg["Subject"] == f"OFFICIAL-SENSITIVE: PPO custody list, ref {ref}"  # no area, date or count
    assert msg["X-Classification"] == "OFFICIAL-SENSITIVE"
    assert msg["X-PPO-Rule"] == DIGEST and msg["To"] == COORD
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "custody-countdown-13-LD-2026-02-09.csv"
    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_payload(decode=True) == custody_csv(ROWS, TODAY)
    # Soonest first in both parts; the countdown, the release dates and the identifiers are there.
    for body in (text, html):
        order = [body.index(name) for name in ("Dana EXEMPLAR", "Eli DUMMY", "Bo ANOTHER", "Alex SAMPLE",
                                               "Gabi MOCKUP")]
        assert order == sorted(order)
        for expected in ("passed 1 day ago", "32 days", "not known", "M5678NP", "2006/0777001G", "HHI",
                         "at court", "Fri 13 Mar 2026 (CRD)", "001 §7.5", "Monday 9 February 2026"):
            assert expected in body, expected
    assert "In custody:" in text and "6 people" in text
    assert text.startswith("OFFICIAL-SENSITIVE\n") and text.rstrip().endswith("OFFICIAL-SENSITIVE")
    assert f"Ref {ref}: quote this reference" in text and f"Ref <strong>{ref}</strong>" in html
    assert html.count("border-bottom: 1px solid #b1b4b6;\">") == len(ROWS)  # one table row each
    assert html.count("background-color: #f6d7d2") == 4  # passed and within 7 days: red
    soon = build_digest("13-LD", [CustodyRow("Alex SAMPLE", {"noms": "G1234HJ"}, "LEI", date(2026, 3, 1), "crd")],
                        TODAY, renderer, recipient=COORD, sender=SENDER).get_body(("html",))
    assert "background-color: #fff7bf" in soon.get_content()  # type: ignore[union-attr]  # within 28 days: yellow


def test_build_digest_is_deterministic(renderer: Renderer) -> None:
    one = build_digest("13-LD", ROWS, TODAY, renderer, recipient=COORD, sender=SENDER)
    two = build_digest("13-LD", list(reversed(ROWS)), TODAY, Renderer(), recipient=COORD, sender=SENDER)
    assert one["Message-ID"] == two["Message-ID"] and one["Date"] == two["Date"]
    assert one.get_body(("html",)).get_content() == two.get_body(("html",)).get_content()  # type: ignore[union-attr]


def test_empty_digest_says_so(renderer: Renderer) -> None:
    msg = build_digest("21-ST", [], TODAY, renderer, recipient="stoke.ppo.coord@staffordshire.police.uk",
                       sender=SENDER)
    assert msg["Subject"] == f"OFFICIAL-SENSITIVE: PPO custody list, ref {reference_for(msg['X-PPO-Obligation'], 'D2')}"
    assert "0 people" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Nobody from this area is in custody" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_digest_never_goes_to_a_court(renderer: Renderer) -> None:
    with pytest.raises(CourtDisclosureRefused):
        build_digest("13-LD", ROWS, TODAY, renderer, recipient="listing.leeds@justice.gov.uk", sender=SENDER,
                     role="court")


def test_digest_names_escaped_in_html(renderer: Renderer) -> None:
    rows = [CustodyRow("<script>x</script> O'NEIL", {"noms": "G1234HJ"}, "LEI", date(2026, 3, 1), "crd")]
    html = build_digest("13-LD", rows, TODAY, renderer, recipient=COORD, sender=SENDER).get_body(
        ("html",)).get_content()  # type: ignore[union-attr]
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_digest_counts_toward_the_size_limit() -> None:
    many = [CustodyRow(f"Person {i:05d} EXAMPLE", {"noms": f"A{i:04d}BC", "pnc": "2006/0777001G"}, "LEI",
                       date(2026, 3, 1), "crd") for i in range(3000)]
    with pytest.raises(MessageTooLarge):
        build_digest("13-LD", many, TODAY, Renderer(max_message_bytes=200_000), recipient=COORD, sender=SENDER)


def test_rendered_digest_carries_the_attachment(renderer: Renderer) -> None:
    now = datetime(2026, 2, 9, 9, 0, tzinfo=UTC)
    o = digest_obligation("13-LD", ROWS, TODAY, {COORD: "coordinator"}, now)
    m = renderer.render(o, COORD, "coordinator", "https://alerts.example.gov.uk/ack/1", now)
    [a] = m.attachments
    assert (a.filename, a.content_type) == ("custody-countdown-13-LD-2026-02-09.csv", "text/csv")
    assert not COURT_FORBIDDEN.search(a.data.decode("utf-8-sig"))  # the CSV itself names no scheme
    assert m.template_version == renderer.template_version(DIGEST)
