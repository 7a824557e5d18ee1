"""The weekly custody digest of one BCU: every PPO in custody with the days to release (rule book D; 001 §7.5,
the Holme House daily countdown spreadsheet). An HTML table sorted by days to release, and a CSV attachment.

Pure: rows and `today` in, an email out. The rows come from `shared.custody` (the `CustodyBook` folded from
prison events, joined with the register by whoever fires the digest). The digest travels like any other
notification: an obligation with rule `DIGEST` and the rows in its facts (`shared.custody.digest_obligation`),
sent by the notifier's pipeline (dedup, allow-list, bounded retry, outcomes). `build_digest` renders the same
message directly, for examples and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from email.message import EmailMessage

from services.notifier.digest_context import (
    CSV_COLUMNS,
    RELEASE_KINDS,
    SOON_DAYS,
    URGENT_DAYS,
    CustodyLine,
    custody_csv,
    custody_lines,
    digest_context,
    digest_filename,
)
from services.notifier.render import Renderer
from shared.clock import LONDON
from shared.custody import DIGEST, CustodyRow, digest_obligation

__all__ = [
    "CSV_COLUMNS",
    "DIGEST",
    "SOON_DAYS",
    "URGENT_DAYS",
    "RELEASE_KINDS",
    "CustodyLine",
    "build_digest",
    "custody_csv",
    "custody_lines",
    "digest_context",
    "digest_filename",
]


def build_digest(
    bcu: str,
    rows: Sequence[CustodyRow],
    today: date,
    renderer: Renderer,
    *,
    recipient: str,
    sender: str,
    role: str = "coordinator",
    now: datetime | None = None,
    ack_url: str | None = None,
) -> EmailMessage:
    """The digest email for one recipient: HTML table and text sorted by days to release, CSV attached.

    Pure: `now` (default 09:00 London on `today`) only stamps the Date header and the footer. Raises the
    renderer's `RenderError`s (e.g. a court recipient, who must never receive a PPO list).
    """
    stamp = now or datetime.combine(today, time(9, 0), tzinfo=LONDON).astimezone(UTC)
    o = digest_obligation(bcu, rows, today, {recipient: role}, stamp)
    return renderer.render(o, recipient, role, ack_url, stamp).to_email(sender)
