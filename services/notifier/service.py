"""The notifier service: notification requests in, emails out, outcomes recorded.

The offset of a request is committed only after the pipeline has written every recipient's outcome to the
send log and the outcomes and the obligation's new status are on Kafka. A redelivered request finds its
recipients in the send log and sends nothing twice.

Outcomes on the delivery-outcomes topic (key = obligation id), per recipient: `queued` before each SMTP
transaction (after the send log has it), `temporary-failure` for each failed attempt (interim ones say "retry in
N s"; the last one of a request says "retry scheduled at <instant> (redelivery n)"), then `sent`,
`permanent-failure` or `duplicate-suppressed`.

Temporary failures never hold the partition: after the pipeline's few in-call attempts, a request with a
recipient still failing temporarily is parked in the send log's `redelivery` table (durable, before the offset
is committed) and a background task republishes it on the notifications topic when it is due (30 s, then
doubling up to 15 minutes, `RetryPolicy.redelivery_delay`). The task sleeps until the next due instant: no busy
loop, no timer lost in a crash. A Kafka error in the handler is not acknowledged (NACK_ON_ERROR): the request is
read again, never committed past.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from services.notifier.pipeline import DeliveryPipeline, obligation_status
from services.notifier.sendlog import Redelivery
from shared import metrics
from shared.ack import EscalationRequest
from shared.clock import Clock
from shared.consumer_watch import WATCH
from shared.kafka import dead_letter_guard, dumps, records_as_they_are
from shared.obligations import DeliveryOutcome, NotificationRequest, history_entry
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger("ppo.notifier")

ESCALATION_FAILED = "escalation failed: every escalation contact refused it permanently (see the send log)"
PARTITION_WORKERS = 3  # the partitions of the notifications topic (shared.kafka.ensure_topics)


class NotifierService:
    def __init__(self, settings: Settings, broker: KafkaBroker, clock: Clock, pipeline: DeliveryPipeline) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.pipeline = pipeline
        self.topics = Topics(settings.topic_prefix)
        self.ready = False
        self.redelivery_poll_s = 30.0  # the longest the redelivery task sleeps without looking
        self._redelivery_task: asyncio.Task[None] | None = None
        self._parked = asyncio.Event()
        metrics.initialise("notifier")
        broker.subscriber(
            self.topics.notifications, group_id="ppo-notifier", auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,  # a Kafka error re-raised by the guard: read it again
            # One consumer per partition, each in order: a request waits on fsyncs, acknowledgements and the
            # mail server, so one at a time queued the rest (p99 over a second at 200 events/s, measured).
            max_workers=PARTITION_WORKERS, decoder=records_as_they_are,
        )(WATCH.watched("notifier", self.topics.notifications,
                        dead_letter_guard("notifier", broker, self.topics.dead_letter, self.on_request)))
        broker.subscriber(
            self.topics.escalations, group_id="ppo-notifier-escalations", auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR, decoder=records_as_they_are,
        )(WATCH.watched("notifier", self.topics.escalations,
                        dead_letter_guard("notifier", broker, self.topics.dead_letter, self.on_escalation)))

    async def on_request(self, message: KafkaMessage) -> None:
        body: bytes = message.body
        request = NotificationRequest.model_validate_json(body)
        o = request.obligation
        outcomes = await self.pipeline.deliver(o, on_progress=self.publish_outcome)
        if any(x.outcome == "temporary-failure" for x in outcomes):
            # Some recipient is still failing temporarily (even if others were sent): park, then ask again later.
            parked = await self.park(o.obligation_id, self.topics.notifications, body)
            note = f"; retry scheduled at {parked.due_at.isoformat()} (redelivery {parked.round})"
            outcomes = [x.model_copy(update={"detail": x.detail + note}) if x.outcome == "temporary-failure" else x
                        for x in outcomes]
        elif outcomes:
            await asyncio.to_thread(self.pipeline.sendlog.clear_redelivery, o.obligation_id)
        for out in outcomes:
            metrics.NOTIFICATIONS.labels(rule=o.rule, outcome=out.outcome).inc()
            await self.broker.publish(dumps(out), self.topics.delivery_outcomes, key=o.obligation_id.encode())
        status = obligation_status(outcomes)
        now = self.clock.now()
        if status == "notified" and o.status == "pending":
            # The first acceptance, as the send log recorded it (a redelivery or a replay finds the same one).
            entries = await asyncio.to_thread(self.pipeline.sendlog.entries, o.obligation_id)
            accepted = min((e.sent_at for e in entries if e.sent_at is not None), default=now)
            o.record_acceptance(accepted)
            if not any(x.outcome == "duplicate-suppressed" for x in outcomes):  # counted once, the first time
                metrics.DEADLINES.labels(rule=o.rule, result="met" if o.status == "notified" else "breached").inc()
                metrics.EVENT_TO_NOTIFICATION.labels(rule=o.rule).observe(
                    max(0.0, (accepted - o.raised_at).total_seconds()))
            await self.broker.publish(dumps(o), self.topics.obligations, key=o.obligation_id.encode())
        elif status == "failed":
            o.record_failure(now, "every recipient refused permanently")
            metrics.DEADLINES.labels(rule=o.rule, result="failed").inc()
            await self.broker.publish(dumps(o), self.topics.obligations, key=o.obligation_id.encode())
        log.info("request handled", extra={"obligation_id": o.obligation_id, "rule": o.rule,
                                           "status": status or "retrying"})

    async def on_escalation(self, message: KafkaMessage) -> None:
        """The scheduler asks for an escalation (breached, failed, or not acknowledged): send it to the BCU's duty
        contacts, once each (send-log key `<obligation id>#escalation`). Recording it in the obligation's state is
        the scheduler's part; temporary failures are parked and redelivered like requests."""
        body: bytes = message.body
        request = EscalationRequest.model_validate_json(body)
        o = request.obligation
        key = f"{o.obligation_id}#escalation"
        outcomes = await self.pipeline.escalate(o, request.recipients, request.reason, on_progress=self.publish_outcome)
        if any(x.outcome == "temporary-failure" for x in outcomes):
            await self.park(key, self.topics.escalations, body)
        elif outcomes:
            await asyncio.to_thread(self.pipeline.sendlog.clear_redelivery, key)
        for out in outcomes:
            await self.publish_outcome(out)
        refused_now = [x for x in outcomes if x.outcome == "permanent-failure" and not x.detail.startswith(
            "refused earlier")]  # a redelivered request reports the earlier refusal again: noted once
        if refused_now and all(x.outcome == "permanent-failure" for x in outcomes):
            # The scheduler wrote "escalated" when it asked; the history must not leave it at that.
            o.history.append(history_entry(self.clock.now(), ESCALATION_FAILED))
            await self.broker.publish(dumps(o), self.topics.obligations, key=o.obligation_id.encode())
        log.info("escalation handled", extra={"obligation_id": o.obligation_id, "rule": o.rule,
                                              "outcomes": sorted({x.outcome for x in outcomes})})

    # --- outcomes and redeliveries -------------------------------------------------------------------------

    async def publish_outcome(self, outcome: DeliveryOutcome) -> None:
        """One per-recipient outcome on the delivery-outcomes topic (also the pipeline's `on_progress`)."""
        await self.broker.publish(dumps(outcome), self.topics.delivery_outcomes, key=outcome.obligation_id.encode())

    async def park(self, delivery_key: str, topic: str, request: bytes) -> Redelivery:
        """Redeliver `request` on `topic` later (durably); the redelivery task wakes up to look."""
        parked = await asyncio.to_thread(
            self.pipeline.sendlog.park, delivery_key, topic, request, now=self.clock.now(),
            delay_s=self.pipeline.retry.redelivery_delay,
        )
        self._parked.set()
        return parked

    async def redeliver_due(self) -> int:
        """Republish every parked request that is due; how many were."""
        sendlog = self.pipeline.sendlog
        count = 0
        # Claimed, not just read: with several instances on one send log, each park is republished by one of them.
        while due := await asyncio.to_thread(sendlog.claim_redeliveries, self.clock.now()):
            for r in due:
                key = r.delivery_key.split("#", 1)[0]  # the topic's key is the obligation id
                await self.broker.publish(r.request, r.topic, key=key.encode())
                await asyncio.to_thread(sendlog.mark_redelivered, r.delivery_key, r.round, now=self.clock.now())
                count += 1
        return count

    async def run_redeliveries(self) -> None:
        """Sleep until the next parked request is due (or something is parked), republish, repeat."""
        while True:
            self._parked.clear()
            try:
                sent = await self.redeliver_due()
                if sent:
                    log.info("requests redelivered", extra={"count": sent})
                nxt = await asyncio.to_thread(self.pipeline.sendlog.next_redelivery_at)
                wait = self.redelivery_poll_s
                if nxt is not None:
                    wait = min(wait, max(0.05, (nxt - self.clock.now()).total_seconds()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Kafka or disk trouble: the parks stay, try again later
                log.warning("redelivery failed, will try again", extra={"error": type(exc).__name__})
                wait = min(self.redelivery_poll_s, 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._parked.wait(), timeout=wait)

    def start_redeliveries(self) -> None:
        if self._redelivery_task is None:
            self._parked = asyncio.Event()  # bound to the running loop
            self._redelivery_task = asyncio.create_task(self.run_redeliveries(), name="ppo-notifier-redelivery")

    async def stop_redeliveries(self) -> None:
        task, self._redelivery_task = self._redelivery_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
