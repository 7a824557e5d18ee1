"""The notifier: dedup -> render -> send with bounded retry -> record outcome (style.md §4).

- `render`: pure rendering of one obligation for one recipient (Jinja2, compiled once).
- `smtp`: the `EmailSender` interface and its aiosmtplib implementations (pooled, one-shot).
- `sendlog`: the durable send log (SQLite on one node, a shared PostgreSQL for several) and the pure dedup decision.
- `pipeline`: `DeliveryPipeline.deliver(obligation)`, the async API the Kafka handler calls.
- `digest`: the weekly custody digest of one BCU (rule `DIGEST`): HTML table by days to release, CSV attached.

Nothing here connects or opens a file at import time.
"""

from __future__ import annotations

from services.notifier.digest import DIGEST, build_digest, custody_csv, custody_lines
from services.notifier.pipeline import DeliveryPipeline, RetryPolicy, obligation_status
from services.notifier.render import RenderedMessage, Renderer, RenderError
from services.notifier.sendlog import Redelivery, SendLog, SendLogEntry, decide
from services.notifier.smtp import (
    EmailSender,
    OneShotSmtpSender,
    RecipientResult,
    SendResult,
    SmtpSender,
    SmtpSettings,
)

__all__ = [
    "DIGEST",
    "DeliveryPipeline",
    "EmailSender",
    "OneShotSmtpSender",
    "RecipientResult",
    "Redelivery",
    "RenderError",
    "RenderedMessage",
    "Renderer",
    "RetryPolicy",
    "SendLog",
    "SendLogEntry",
    "SendResult",
    "SmtpSender",
    "SmtpSettings",
    "build_digest",
    "custody_csv",
    "custody_lines",
    "decide",
    "obligation_status",
]
