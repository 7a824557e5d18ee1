"""The notifier: dedup -> render -> send with bounded retry -> record outcome (style.md §4).

- `render`: pure rendering of one obligation for one recipient (Jinja2, compiled once).
- `smtp`: the `EmailSender` interface and its aiosmtplib implementations (pooled, one-shot).
- `sendlog`: the durable send log (SQLite) and the pure dedup decision.
- `pipeline`: `DeliveryPipeline.deliver(obligation)`, the async API the Kafka handler calls.

Nothing here connects or opens a file at import time.
"""

from __future__ import annotations

from services.notifier.pipeline import DeliveryPipeline, RetryPolicy, obligation_status
from services.notifier.render import RenderedMessage, Renderer, RenderError
from services.notifier.sendlog import SendLog, SendLogEntry, decide
from services.notifier.smtp import (
    EmailSender,
    OneShotSmtpSender,
    RecipientResult,
    SendResult,
    SmtpSender,
    SmtpSettings,
)

__all__ = [
    "DeliveryPipeline",
    "EmailSender",
    "OneShotSmtpSender",
    "RecipientResult",
    "RenderError",
    "RenderedMessage",
    "Renderer",
    "RetryPolicy",
    "SendLog",
    "SendLogEntry",
    "SendResult",
    "SmtpSender",
    "SmtpSettings",
    "decide",
    "obligation_status",
]
