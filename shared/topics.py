"""Kafka topic names: one place, so every service and the docs agree."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Prefix lets several deployments (or test runs) share one broker."""

    prefix: str = "ppo"

    def group(self, name: str) -> str:
        """A consumer group's id under this prefix: the services name their groups `ppo-<service>[-<what>]`, and
        with prefix `staging` that group is `staging-<service>[-<what>]`, so deployments (or test runs) sharing a
        broker never share a group, and never rebalance each other. The default prefix keeps the names as written."""
        return self.prefix + name.removeprefix("ppo") if name.startswith("ppo-") else name

    @property
    def intake_raw(self) -> str:  # agencies publish payloads in any accepted format here
        return f"{self.prefix}.intake.raw"

    @property
    def events(self) -> str:  # canonical events, key = person key
        return f"{self.prefix}.events"

    @property
    def events_by_person(self) -> str:  # the same records re-keyed by the rules' resolve stage, key = person:<id>
        return f"{self.prefix}.events.by-person"  # (or the identifier key for someone on no register)

    @property
    def register(self) -> str:  # compacted: register entries, key = register person id
        return f"{self.prefix}.register"

    @property
    def obligations(self) -> str:  # compacted: obligation state, key = obligation id
        return f"{self.prefix}.obligations"

    @property
    def notifications(self) -> str:  # requests to send one obligation now, key = obligation id
        return f"{self.prefix}.notifications"

    @property
    def delivery_outcomes(self) -> str:  # per recipient outcomes, key = obligation id
        return f"{self.prefix}.delivery-outcomes"

    @property
    def graded_warrants(self) -> str:  # Category A warrant grades for police systems (rule A3)
        return f"{self.prefix}.warrants.graded"

    @property
    def dead_letter(self) -> str:  # anything that could not be processed, with its reason
        return f"{self.prefix}.dead-letter"

    @property
    def acknowledgements(self) -> str:  # a recipient followed a signed link (intake -> scheduler), key = obligation id
        return f"{self.prefix}.acknowledgements"

    @property
    def escalations(self) -> str:  # escalate this obligation to the duty contact (scheduler -> notifier), key = id
        return f"{self.prefix}.escalations"

    def all(self) -> list[str]:
        return [
            self.intake_raw, self.events, self.events_by_person, self.register, self.obligations, self.notifications,
            self.delivery_outcomes, self.graded_warrants, self.dead_letter, self.acknowledgements, self.escalations,
        ]

    def compacted(self) -> set[str]:
        return {self.register, self.obligations}
