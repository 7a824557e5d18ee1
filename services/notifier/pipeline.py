"""The delivery pipeline, per recipient: allow-list -> dedup -> render -> send with bounded retry -> record.

One email per recipient (its own Message-ID; a refusal of one address never affects the others), recipients
handled concurrently. The outcome of every recipient is in the send log (fsync'd) before `deliver` returns, so
the caller may commit the Kafka offset as soon as it has the outcomes.

Outcomes as they happen: `deliver(o, on_progress=...)` awaits `on_progress` with a `queued` outcome after the
send log has recorded `queued` and before each SMTP transaction starts, and with a `temporary-failure` outcome
(detail "...; retry in N s") before each in-call backoff. The final outcome of each recipient is returned
(`sent`, `temporary-failure`, `permanent-failure` or `duplicate-suppressed`), not passed to `on_progress`.
If `on_progress` raises (e.g. Kafka is down), nothing is sent for that recipient and the error propagates: the
request is redelivered, and resumes from the send log.

Retry: a temporary failure (4xx, connection trouble) is retried in the same call with a short exponential
backoff, at most `RetryPolicy.max_attempts` SMTP attempts per call (default 3: about 3 seconds of waiting, so a
partition is never held for long). If the message is still not through, the outcome is `temporary-failure`
and the caller parks the request for a later redelivery (`RetryPolicy.redelivery_delay`: 30 s, 60 s, ... up to
15 minutes; see `NotifierService`); the redelivered request resumes from the send log. From the first attempt
for a (key, recipient), retries go on until `give_up_after`; after that the outcome is `permanent-failure`
("gave up").

Several instances (a shared send log, services/notifier/sendlog.py): a recipient whose row another instance has
claimed (`queued`, its claim still live) is not sent; the outcome is `temporary-failure` ("in progress at another
notifier instance ..."), so the caller parks the request and the redelivery finds the other's outcome. This side
keeps its own claim: an SMTP transaction starts only while the claim (`SendLog.claim_timeout`) has more than a
margin left (min(claim / 4, 5 s): clock skew between hosts and the commit), and is abandoned (a temporary failure)
when it would outlast it; the wait for a pooled connection counts.

Metric: `ppo_notifier_deliveries_total{outcome}` (Counter), outcome as in `DeliveryOutcome.outcome`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Literal

from prometheus_client import Counter

from services.notifier.render import Renderer, RenderError, delivery_key, validate_address
from services.notifier.sendlog import InProgressElsewhere, SendLog, SendLogEntry, decide, in_progress_elsewhere
from services.notifier.smtp import EmailSender, RecipientResult
from shared.clock import Clock
from shared.directory import domain_allowed
from shared.obligations import DeliveryOutcome, Obligation

__all__ = ["DELIVERIES", "AckUrlBuilder", "DeliveryPipeline", "Progress", "RetryPolicy", "obligation_status"]

log = logging.getLogger(__name__)

DELIVERIES = Counter(
    "ppo_notifier_deliveries_total",
    "Per-recipient delivery outcomes of the notifier",
    ["outcome"],
)

AckUrlBuilder = Callable[[str, str], str]  # (obligation_id, recipient) -> signed acknowledgement URL
Sleep = Callable[[float], Awaitable[None]]
Progress = Callable[[DeliveryOutcome], Awaitable[None]]  # queued / interim temporary-failure, as they happen
OutcomeName = Literal["queued", "sent", "temporary-failure", "permanent-failure", "duplicate-suppressed"]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3  # SMTP attempts per recipient in one deliver() call (the partition waits for them)
    initial_backoff_s: float = 1.0
    multiplier: float = 2.0
    max_backoff_s: float = 60.0
    give_up_after: timedelta = timedelta(hours=24)  # from the first attempt; then permanent-failure
    redeliver_initial_s: float = 30.0  # a request still failing after one call is redelivered this much later,
    redeliver_max_s: float = 900.0  # then doubling (multiplier) up to this

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise ValueError("backoff must be non-negative and the multiplier at least 1")
        if self.redeliver_initial_s <= 0 or self.redeliver_max_s < self.redeliver_initial_s:
            raise ValueError("redeliver_initial_s must be positive and at most redeliver_max_s")
        if self.give_up_after <= timedelta(0):
            raise ValueError("give_up_after must be positive")

    def backoff(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1, 2, ...)."""
        return float(min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry_number - 1)))

    def redelivery_delay(self, round_number: int) -> float:
        """Seconds before a request that is still failing is delivered again, for redelivery 1, 2, ..."""
        exponent = min(max(round_number, 1) - 1, 64)
        return float(min(self.redeliver_max_s, self.redeliver_initial_s * self.multiplier**exponent))


def obligation_status(outcomes: Iterable[DeliveryOutcome]) -> Literal["notified", "failed"] | None:
    """`notified` when at least one recipient's server accepted the message (now or before: a suppressed
    duplicate); `failed` when every recipient failed permanently; otherwise None (still trying)."""
    found = list(outcomes)
    if not found:
        return None
    if any(o.outcome in ("sent", "duplicate-suppressed") for o in found):
        return "notified"
    if all(o.outcome == "permanent-failure" for o in found):
        return "failed"
    return None


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for a in addresses:
        k = a.strip().lower()
        if k and k not in seen:
            seen.add(k)
            out.append(a.strip())
    return out


class DeliveryPipeline:
    def __init__(
        self,
        renderer: Renderer,
        sender: EmailSender,
        sendlog: SendLog,
        clock: Clock,
        allowed_domains: Collection[str],
        ack_url_builder: AckUrlBuilder | None = None,
        retry: RetryPolicy | None = None,
        *,
        from_address: str,
        court_from_address: str | None = None,
        is_court_recipient: Callable[[str], bool] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        domains = tuple(d.strip().lower().lstrip(".") for d in allowed_domains if d.strip())
        if not domains:
            raise ValueError("allowed_domains is empty: every recipient would be refused")
        self.renderer = renderer
        self.sender = sender
        self.sendlog = sendlog
        self.clock = clock
        self.allowed_domains = domains
        self.ack_url_builder = ack_url_builder
        self.retry = retry or RetryPolicy()
        self.from_address = from_address
        self.court_from_address = court_from_address
        self.is_court_recipient = is_court_recipient
        self.sleep = sleep
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # --- public API ----------------------------------------------------------------------------------

    async def deliver(self, obligation: Obligation, on_progress: Progress | None = None) -> list[DeliveryOutcome]:
        """Send the obligation's message to each of its recipients, at most once each; outcomes in recipient
        order, all recorded in the send log. A cancelled obligation is not sent (no outcomes). `on_progress`
        receives the `queued` and interim `temporary-failure` outcomes as they happen (module docstring)."""
        if obligation.status == "cancelled":
            log.info("notifier: not sending cancelled %s", obligation.log_ref())
            return []
        recipients = _unique(obligation.recipients)
        roles = {k.strip().lower(): v for k, v in obligation.recipient_roles.items()}
        return list(
            await asyncio.gather(
                *(self._deliver_one(obligation, r, roles.get(r.lower(), ""), None, on_progress) for r in recipients)
            )
        )

    async def escalate(
        self,
        obligation: Obligation,
        recipients: Mapping[str, str] | Sequence[str],
        reason: str,
        on_progress: Progress | None = None,
    ) -> list[DeliveryOutcome]:
        """Send the escalation message about `obligation` (breached, failed or unacknowledged) to the duty
        contacts, once each: send-log key `<obligation_id>#escalation`, outcomes with rule `escalation`."""
        roles = dict(recipients) if isinstance(recipients, Mapping) else {r: "escalation" for r in recipients}
        addresses = _unique(roles)
        lowered = {k.strip().lower(): v for k, v in roles.items()}
        return list(
            await asyncio.gather(
                *(
                    self._deliver_one(obligation, r, lowered.get(r.lower(), "escalation"), reason, on_progress)
                    for r in addresses
                )
            )
        )

    # --- one recipient -------------------------------------------------------------------------------

    async def _deliver_one(
        self,
        o: Obligation,
        recipient: str,
        role: str,
        escalation_reason: str | None,
        on_progress: Progress | None = None,
    ) -> DeliveryOutcome:
        escalation = escalation_reason is not None
        key = delivery_key(o.obligation_id, escalation)
        lock_key = (key, recipient.lower())
        lock = self._locks.get(lock_key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[lock_key] = lock
        async with lock:
            outcome = await self._deliver_locked(o, recipient, role, escalation_reason, key, on_progress)
        DELIVERIES.labels(outcome=outcome.outcome).inc()
        log.info(
            "notifier: %s%s role=%s outcome=%s",
            o.log_ref(),
            " escalation" if escalation else "",
            role or "-",
            outcome.outcome,
        )
        return outcome

    async def _deliver_locked(
        self,
        o: Obligation,
        recipient: str,
        role: str,
        escalation_reason: str | None,
        key: str,
        on_progress: Progress | None,
    ) -> DeliveryOutcome:
        rule = "escalation" if escalation_reason is not None else o.rule

        def outcome(
            name: OutcomeName, detail: str = "", entry: SendLogEntry | None = None
        ) -> DeliveryOutcome:
            return DeliveryOutcome(
                obligation_id=o.obligation_id,
                rule=rule,
                recipient=recipient,
                outcome=name,
                at=self.clock.now(),
                detail=detail,
                template_version=entry.template_version if entry else "",
                message_id=entry.message_id if entry else "",
            )

        async def fail(
            permanent: bool, detail: str, code: int | None = None, **extra: str
        ) -> DeliveryOutcome:
            entry = await asyncio.to_thread(
                self.sendlog.record_failure,
                key,
                recipient,
                permanent=permanent,
                error=detail,
                code=code,
                now=self.clock.now(),
                rule=rule,
                **extra,
            )
            return outcome("permanent-failure" if permanent else "temporary-failure", detail, entry)

        now = self.clock.now()
        previous = await asyncio.to_thread(self.sendlog.get, key, recipient)

        # 0. Another instance is sending it (a partition moved while it was): its outcome is the one that counts.
        if in_progress_elsewhere(previous, self.sendlog.holder, now, self.sendlog.claim_timeout):
            assert previous is not None
            return outcome("temporary-failure", str(InProgressElsewhere(previous, self.sendlog.claim_timeout)),
                           previous)

        # 1. The allow-list, again (the directory was checked at load; this is the last line of defence).
        refusal = self._address_refusal(recipient)
        if refusal is not None:
            if previous is not None and previous.state == "sent":
                return outcome("duplicate-suppressed", "already sent", previous)
            return await fail(True, refusal)

        # 2. Dedup.
        deadline = (previous.created_at if previous else now) + self.retry.give_up_after
        verdict = decide(previous, now, deadline)
        if verdict == "skip-already-sent":
            assert previous is not None
            sent_at = previous.sent_at.isoformat() if previous.sent_at else "earlier"
            return outcome("duplicate-suppressed", f"already sent at {sent_at}", previous)
        if verdict == "skip-permanent":
            assert previous is not None
            if previous.state == "permanent-failure":
                return outcome("permanent-failure", f"refused earlier: {previous.last_error}", previous)
            return await fail(
                True,
                f"gave up: retry deadline {deadline.isoformat()} passed; last error: "
                f"{previous.last_error or 'none recorded'}",
                previous.last_code,
            )

        # 3. Render (pure; a failure here is permanent: the same input renders the same way).
        court = role == "court" or bool(self.is_court_recipient and self.is_court_recipient(recipient))
        try:
            ack_url = self.ack_url_builder(o.obligation_id, recipient) if self.ack_url_builder else None
        except Exception as exc:  # configuration trouble (e.g. no signing key): not the message's fault
            log.error("notifier: acknowledgement link failed for %s: %s", o.log_ref(), type(exc).__name__)
            return await fail(False, f"ack-url: {type(exc).__name__}: {exc}")
        try:
            rendered = self.renderer.render(
                o, recipient, role, ack_url, now, court_recipient=court, escalation_reason=escalation_reason
            )
            sender = self.court_from_address if court and self.court_from_address else self.from_address
            message = rendered.to_email(sender)
        except RenderError as exc:
            log.error("notifier: cannot render %s: %s", o.log_ref(), exc.reason)
            return await fail(True, f"{exc.reason}: {exc}")
        except Exception as exc:  # a rendering bug: same input, same failure, so permanent (and escalated)
            log.exception("notifier: rendering raised for %s", o.log_ref())
            return await fail(True, f"render-error: {type(exc).__name__}: {exc}")

        # 4. Send with bounded retry; 5. record before returning.
        return await self._send_with_retry(
            o,
            recipient,
            key,
            rule,
            rendered.message_id,
            rendered.template_version,
            message,
            deadline,
            outcome,
            fail,
            on_progress,
        )

    async def _send_with_retry(
        self,
        o: Obligation,
        recipient: str,
        key: str,
        rule: str,
        message_id: str,
        template_version: str,
        message: EmailMessage,
        deadline: datetime,
        outcome: Callable[..., DeliveryOutcome],
        fail: Callable[..., Awaitable[DeliveryOutcome]],
        on_progress: Progress | None,
    ) -> DeliveryOutcome:
        ids = {"message_id": message_id, "template_version": template_version}
        claim_s = self.sendlog.claim_timeout.total_seconds()
        margin_s = min(claim_s / 4, 5.0)
        retries = 0
        while True:
            claimed = time.monotonic()  # before the write: the claim is no older than this
            try:
                queued = await asyncio.to_thread(
                    self.sendlog.record_queued, key, recipient, rule=rule, now=self.clock.now(), **ids
                )
            except InProgressElsewhere as busy:  # taken between our read and our claim
                return outcome("temporary-failure", str(busy), busy.entry)
            if on_progress is not None:  # recorded (on disk, then on Kafka) before the transaction starts
                await on_progress(outcome("queued", f"attempt {queued.attempts}", queued))
            budget_s = claim_s - margin_s - (time.monotonic() - claimed)
            try:
                if budget_s <= 0:  # a slow Kafka or database: another instance may take the row from now on
                    result = RecipientResult(recipient, "temporary", None,
                                             f"not started: the claim ({claim_s:g} s) ran out first")
                else:
                    sent = await asyncio.wait_for(self.sender.send(message, [recipient]), timeout=budget_s)
                    result = sent.for_recipient(recipient)
            except TimeoutError:
                result = RecipientResult(recipient, "temporary", None,
                                         f"abandoned: no reply within the claim ({claim_s:g} s)")
            except Exception as exc:  # a sender bug must not lose the outcome: temporary, retried
                log.exception("notifier: sender raised for %s", o.log_ref())
                result = RecipientResult(recipient, "temporary", None, f"{type(exc).__name__}: {exc}")
            if result.status == "accepted":
                entry = await asyncio.to_thread(
                    self.sendlog.record_sent, key, recipient, now=self.clock.now(), response=result.message
                )
                return outcome("sent", result.detail, entry)
            if result.status == "permanent":
                return await fail(True, result.detail, result.code, **ids)
            retries += 1
            delay = self.retry.backoff(retries)
            now = self.clock.now()
            if now + timedelta(seconds=delay) >= deadline:
                return await fail(
                    True,
                    f"gave up: retry deadline {deadline.isoformat()} reached; last error: {result.detail}",
                    result.code,
                    **ids,
                )
            if retries >= self.retry.max_attempts:
                return await fail(False, result.detail, result.code, **ids)
            interim = await fail(False, result.detail, result.code, **ids)
            if on_progress is not None:
                await on_progress(interim.model_copy(update={"detail": f"{interim.detail}; retry in {delay:g} s"}))
            await self.sleep(delay)

    def _address_refusal(self, recipient: str) -> str | None:
        try:
            validate_address(recipient)
        except RenderError as exc:
            return f"invalid-address: {exc}"
        if not domain_allowed(recipient, self.allowed_domains):
            return (
                f"domain-not-allowed: {recipient.rsplit('@', 1)[-1]} is outside the allowed recipient "
                f"domains ({', '.join(self.allowed_domains)})"
            )
        return None
