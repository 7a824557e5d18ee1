"""Who may send what, and how often: per-agency scopes and a per-credential rate limit. Pure; time injected."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass


class ScopeRefused(Exception):
    """The credential may not submit this kind of event (403)."""


def allowed(event_type: str, scopes: Iterable[str] | None, coordinator: bool) -> bool:
    """Register changes only from coordinators; otherwise an agency with scopes may send only event types that
    start with one of them (e.g. `prison.`, `court.`, `warrant.`); an agency without scopes may send any
    non-register type (the deployment chose not to restrict it)."""
    if coordinator:
        return True
    if event_type.startswith("register."):
        return False
    if scopes is None:
        return True
    return any(event_type == s or event_type.startswith(s if s.endswith(".") else s + ".") for s in scopes)


def check_scopes(event_types: Iterable[str], agency: str, scopes: Iterable[str] | None, coordinator: bool) -> None:
    refused = sorted({t for t in event_types if not allowed(t, scopes, coordinator)})
    if refused:
        if any(t.startswith("register.") for t in refused):
            raise ScopeRefused("register changes need a coordinator token (docs/coordinators.md)")
        raise ScopeRefused(f"credential of {agency} may not submit {', '.join(refused)}")


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per credential: `rate` requests a second on average, bursts up to `burst`."""

    def __init__(self, rate: float, burst: int, monotonic: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.monotonic = monotonic
        self._buckets: dict[str, _Bucket] = {}

    def take(self, credential: str, cost: int = 1) -> float:
        """0 when `cost` (a request, or a batch's events) may go ahead, else the seconds to wait and try again.

        A batch larger than the burst goes ahead when the bucket is full and leaves it in debt, which later
        requests wait out: over any stretch, no credential gets more than `rate` a second plus one burst."""
        if self.rate <= 0 or cost <= 0:
            return 0.0
        now = self.monotonic()
        bucket = self._buckets.get(credential)
        if bucket is None:
            bucket = self._buckets[credential] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        needed = float(min(cost, self.burst))
        if bucket.tokens >= needed:
            bucket.tokens -= cost
            return 0.0
        return (needed - bucket.tokens) / self.rate

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
