"""The notifier service: notification requests in, emails out, outcomes recorded.

The offset of a request is committed only after the pipeline has written every recipient's outcome to the
send log and the outcomes and the obligation's new status are on Kafka. A redelivered request finds its
recipients in the send log and sends nothing twice.
"""

from __future__ import annotations

import logging

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from services.notifier.pipeline import DeliveryPipeline, obligation_status
from shared import metrics
from shared.clock import Clock
from shared.kafka import dead_letter_guard, dumps
from shared.obligations import NotificationRequest
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger("ppo.notifier")


class NotifierService:
    def __init__(self, settings: Settings, broker: KafkaBroker, clock: Clock, pipeline: DeliveryPipeline) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.pipeline = pipeline
        self.topics = Topics(settings.topic_prefix)
        self.ready = False
        broker.subscriber(
            self.topics.notifications, group_id="ppo-notifier", auto_offset_reset="earliest",
            ack_policy=AckPolicy.ACK,
        )(dead_letter_guard("notifier", broker, self.topics.dead_letter, self.on_request))

    async def on_request(self, message: KafkaMessage) -> None:
        body: bytes = message.body
        request = NotificationRequest.model_validate_json(body)
        o = request.obligation
        outcomes = await self.pipeline.deliver(o)
        for out in outcomes:
            metrics.NOTIFICATIONS.labels(rule=o.rule, outcome=out.outcome).inc()
            await self.broker.publish(dumps(out), self.topics.delivery_outcomes, key=o.obligation_id.encode())
        status = obligation_status(outcomes)
        now = self.clock.now()
        if status == "notified" and o.status == "pending":
            accepted = min((x.at for x in outcomes if x.outcome == "sent"), default=now)
            o.record_acceptance(accepted)
            metrics.DEADLINES.labels(rule=o.rule, result="met" if o.status == "notified" else "late").inc()
            metrics.EVENT_TO_NOTIFICATION.labels(rule=o.rule).observe(
                max(0.0, (accepted - o.raised_at).total_seconds()))
            await self.broker.publish(dumps(o), self.topics.obligations, key=o.obligation_id.encode())
        elif status == "failed":
            o.record_failure(now, "every recipient refused permanently")
            await self.broker.publish(dumps(o), self.topics.obligations, key=o.obligation_id.encode())
        elif status is None and outcomes:
            # Still temporarily failing after the pipeline's bounded retries: ask again (it resumes from the
            # send log) rather than hold the partition.
            await self.broker.publish(body, self.topics.notifications, key=o.obligation_id.encode())
        log.info("request handled", extra={"obligation_id": o.obligation_id, "rule": o.rule,
                                           "status": status or "retrying"})
