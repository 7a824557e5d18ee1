"""Structured JSON log lines. Log event and obligation ids — never a person's names, date of birth or identifiers
(PNC, CRO, NOMS, CRN), never an input payload. tests/integration/test_no_personal_data.py checks this end to end."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__  # the type only: a message may carry input
        return json.dumps(line, default=str)


class NoPayloadEcho(logging.Filter):
    """Drop records below WARNING from libraries that echo what they carry, whatever their loggers' levels: at DEBUG
    aiokafka writes whole Kafka records (`Sending (key=... value=...)`) and aiosmtpd (`mail.log`, the local mail
    sink) every line of a message, both with people's names and identifiers."""

    ECHOING = ("aiokafka", "mail.log")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(self.ECHOING)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(NoPayloadEcho())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "faststream", "apscheduler", "uvicorn.access", "mail.log"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
