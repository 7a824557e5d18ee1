"""Composition point of the scheduler service, and `ppo-alerts scheduler rebuild`."""

from __future__ import annotations

from services.scheduler.service import SchedulerService
from shared.clock import Clock
from shared.http import HttpServer, build_app
from shared.kafka import make_broker
from shared.service import RunningService
from shared.settings import Settings


def build(settings: Settings, clock: Clock) -> tuple[RunningService, SchedulerService]:
    broker = make_broker(settings, "ppo-scheduler")
    service = SchedulerService(settings, broker, clock)
    app = build_app("scheduler", lambda: service.ready)  # a standby is healthy too
    running = RunningService("scheduler", broker, HttpServer(app, settings.http_host, settings.scheduler_port),
                             after_broker=service.start, on_stop=[service.stop])
    return running, service


class SchedulerBusy(RuntimeError):
    """Another scheduler instance holds the lease."""


async def rebuild(settings: Settings, clock: Clock) -> int:
    """Empty the job store and rebuild it from the obligations topic. Refused while a scheduler instance is active
    (stop it first); the jobs are made from the rebuilt store when an instance next becomes active."""
    import asyncio

    service = SchedulerService(settings, make_broker(settings, "ppo-scheduler-rebuild"), clock,
                               instance="ppo-alerts scheduler rebuild")
    try:
        if not await asyncio.to_thread(service.lease.try_acquire):
            current = service.lease.current()
            holder = f"{current[0]} (lease until {current[1].isoformat()})" if current else "another instance"
            raise SchedulerBusy(f"the scheduler {holder} is active: stop it first")
        try:
            return await service.rebuild(clear=True)
        finally:
            await asyncio.to_thread(service.lease.release)
    finally:
        service.close_database()


def main_rebuild() -> int:
    """`ppo-alerts scheduler rebuild` (settings from the environment, as for `ppo-alerts run`)."""
    import asyncio

    from shared.clock import SystemClock
    from shared.kafka import ensure_topics
    from shared.logs import configure_logging
    from shared.settings import load_settings
    from shared.topics import Topics

    settings = load_settings()
    configure_logging(settings.log_level)

    async def run() -> int:
        await ensure_topics(settings, Topics(settings.topic_prefix))
        return await rebuild(settings, SystemClock())

    try:
        count = asyncio.run(run())
    except SchedulerBusy as exc:
        print(f"ppo-alerts: {exc}")
        return 1
    print(f"ppo-alerts: scheduler job store rebuilt from {count} obligations; the jobs are made when the "
          "scheduler next starts")
    return 0
