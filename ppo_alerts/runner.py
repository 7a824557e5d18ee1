"""`ppo-alerts run SERVICE|all`: start services in one asyncio loop until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import sys
import time
from typing import Any

from shared.clock import Clock, SystemClock
from shared.kafka import TopicLayoutRefused, ensure_topics
from shared.logs import configure_logging
from shared.service import RunningService
from shared.settings import Settings, load_settings
from shared.topics import Topics

log = logging.getLogger("ppo.run")

SERVICES = ("intake", "rules", "scheduler", "notifier")


def build_service(name: str, settings: Settings, clock: Clock) -> tuple[RunningService, Any]:
    module = importlib.import_module(f"services.{name}.main")
    return module.build(settings, clock)  # type: ignore[no-any-return]


async def ensure_topics_when_reachable(settings: Settings) -> None:
    """ensure_topics, trying again while Kafka cannot be reached, for up to PPO_KAFKA_START_WAIT_S: services started
    beside their brokers (a cluster coming up, a host rebooting) wait for them instead of exiting."""
    from aiokafka.errors import KafkaConnectionError

    deadline = time.monotonic() + settings.kafka_start_wait_s
    while True:
        try:
            await ensure_topics(settings, Topics(settings.topic_prefix))
            return
        except KafkaConnectionError:
            if time.monotonic() >= deadline:
                raise
            log.warning("Kafka not reachable yet; trying again", extra={
                "bootstrap": settings.kafka_bootstrap, "seconds_left": round(deadline - time.monotonic())})
            await asyncio.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


async def start_services(names: list[str], settings: Settings, clock: Clock) -> list[RunningService]:
    await ensure_topics_when_reachable(settings)
    running: list[RunningService] = []
    try:
        for name in names:
            service, _ = build_service(name, settings, clock)
            await service.start()
            running.append(service)
            log.info("service started", extra={"service": name, "port": service.http.port})
    except BaseException:
        await stop_services(running)
        raise
    return running


async def stop_services(running: list[RunningService]) -> None:
    for service in reversed(running):
        try:
            await service.stop()
        except Exception:  # keep stopping the others
            log.exception("service did not stop cleanly", extra={"service": service.name})


async def _main(names: list[str], settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = await start_services(names, settings, SystemClock())
    await stop.wait()
    await stop_services(running)


def run_services(names: list[str]) -> int:
    settings = load_settings()  # a bad setting: one line each on stderr, exit 2
    configure_logging(settings.log_level)
    from aiokafka.errors import KafkaError

    from shared.directory import DirectoryError
    from shared.register import RegisterError

    # What the environment names and cannot be used: one line naming the setting, exit 2 (no traceback)
    try:
        asyncio.run(_main(names, settings))
    except KafkaError as exc:
        print(f"ppo-alerts: PPO_KAFKA_BOOTSTRAP: cannot reach Kafka at {settings.kafka_bootstrap} ({exc}): start "
              f"it, or point PPO_KAFKA_BOOTSTRAP at a broker", file=sys.stderr)
        return 2
    except DirectoryError as exc:
        print(f"ppo-alerts: PPO_DIRECTORY_FILE: {exc}", file=sys.stderr)
        return 2
    except RegisterError as exc:
        print(f"ppo-alerts: PPO_REGISTER_FILE: {exc}", file=sys.stderr)
        return 2
    except TopicLayoutRefused as exc:
        print(f"ppo-alerts: PPO_TOPIC_PREFIX={settings.topic_prefix}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ppo-alerts: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
