"""The history says when an escalation failed (issue 14): the scheduler writes "escalated" when it asks; when every
escalation contact refuses the message for good, the notifier adds that it failed, once, and publishes the state."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from services.notifier.service import ESCALATION_FAILED, NotifierService
from shared.ack import EscalationRequest
from shared.clock import FixedClock
from shared.obligations import DeliveryOutcome
from shared.settings import Settings
from tests.unit.test_intake_fuzz import RecordingBroker
from tests.unit.test_scheduler_watch import obligation

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
DUTY = "leeds.duty@westyorkshire.police.uk"


class Pipeline:
    """Answers an escalation as the real pipeline does: refused now, then 'refused earlier' on a redelivery."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.calls = 0
        self.sendlog = self

    async def escalate(self, o: Any, recipients: Any, reason: str, on_progress: Any = None) -> list[DeliveryOutcome]:
        self.calls += 1
        detail = "550 no such user" if self.calls == 1 else "refused earlier: 550 no such user"
        return [DeliveryOutcome(obligation_id=o.obligation_id, rule="escalation", recipient=DUTY,
                                outcome=self.outcome, at=NOW, detail=detail)]  # type: ignore[arg-type]

    def clear_redelivery(self, key: str) -> None:
        pass


class Message:
    def __init__(self, body: bytes) -> None:
        self.body = body


def handle(outcome: str, times: int = 1) -> list[dict[str, Any]]:
    broker = RecordingBroker()
    service = NotifierService(Settings(), broker, FixedClock(NOW), Pipeline(outcome))  # type: ignore[arg-type]
    request = EscalationRequest(obligation=obligation(status="failed"), reason="failed: refused",
                                recipients={DUTY: "escalation"}, requested_at=NOW)
    for _ in range(times):
        asyncio.run(service.on_escalation(Message(request.model_dump_json().encode())))  # type: ignore[arg-type]
    return [json.loads(m) for t, m in broker.published if t.endswith(".obligations")]


def test_an_escalation_refused_for_good_is_recorded_as_failed_once() -> None:
    states = handle("permanent-failure", times=2)
    assert len(states) == 1
    assert [h["what"] for h in states[0]["history"]][-1] == ESCALATION_FAILED


def test_an_escalation_sent_adds_nothing() -> None:
    assert handle("sent") == []
