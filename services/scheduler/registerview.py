"""The register as the scheduler needs it for C6: read from its compacted topic and kept current.

No consumer group: every instance (active or standby) reads the whole topic from the beginning and then follows
it, so a standby that takes over already has the register. `caught_up` is set once everything that was on the
topic when it started has been applied.
"""

from __future__ import annotations

import json

from shared import metrics
from shared.follow import Follower
from shared.register import Register, RegisterEntry, RegisterError
from shared.settings import Settings


class RegisterView:
    def __init__(self, settings: Settings, topic: str) -> None:
        self.register = Register()
        self._follower = Follower(settings, {topic: lambda _key, value: self.apply(value)}, "scheduler-register")
        self.caught_up = self._follower.caught_up

    async def start(self) -> None:
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def apply(self, value: bytes | None) -> None:
        if not value:
            return
        try:
            self.register.put(RegisterEntry.from_dict(json.loads(value)))
        except (ValueError, KeyError, TypeError, RegisterError):
            metrics.EVENTS_IGNORED.labels(service="scheduler", reason="invalid-register-record").inc()
