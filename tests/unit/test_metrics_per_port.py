"""Four services in one process (as `ppo-alerts demo` runs them) serve their metrics on four ports: scraping all of
them must count every series once, and a process with one service must serve the whole registry as before."""

from __future__ import annotations

from collections import Counter

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from shared import metrics
from shared.http import HttpServer, build_app, services_up

SERVICES = ("intake", "rules", "scheduler", "notifier")


def _registry_samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in REGISTRY.collect() for s in f.samples}


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


async def _servers(names: tuple[str, ...]) -> list[HttpServer]:
    servers = [HttpServer(build_app(name, lambda: True), "127.0.0.1", 0) for name in names]
    for server in servers:
        await server.start()
    return servers


async def test_scraping_every_port_of_one_process_counts_each_series_once() -> None:
    # What the demo's first minute does: an obligation raised by rules, its notice sent by the notifier, a timer
    # fired by the scheduler, a payload taken by intake, a dead letter (labelled by service)
    metrics.OBLIGATIONS_RAISED.labels(rule="A1").inc()
    metrics.NOTIFICATIONS.labels(rule="A1", outcome="sent").inc()
    metrics.TIMERS_FIRED.labels(rule="A4", lateness="on_time").inc()
    metrics.EVENTS_RECEIVED.labels(format="canonical", channel="http").inc()
    metrics.DEAD_LETTERS.labels(service="rules", reason="unknown-bcu").inc()
    servers = await _servers(SERVICES)
    try:
        assert services_up() == list(SERVICES)
        scraped = {name: await _scrape(s.port) for name, s in zip(SERVICES, servers, strict=True)}
    finally:
        for server in servers:
            await server.stop()
    assert services_up() == []
    everything = _registry_samples()
    seen = Counter(key for port in scraped.values() for key in port)
    twice = sorted(k for k, n in seen.items() if n > 1)
    assert not twice, f"served on more than one port: {twice[:10]}"
    missing = sorted(k for k in everything if k not in seen)
    assert not missing, f"served on no port: {missing[:10]}"

    def total(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return sum(port.get(key, 0.0) for port in scraped.values())

    # Each obligation counted once across the ports, on the port of the service that counts it
    assert total("ppo_obligations_raised_total", rule="A1") == everything[
        ("ppo_obligations_raised_total", (("rule", "A1"),))]
    assert ("ppo_obligations_raised_total", (("rule", "A1"),)) in scraped["rules"]
    assert ("ppo_notifications_total", (("outcome", "sent"), ("rule", "A1"))) in scraped["notifier"]
    assert ("ppo_timers_fired_total", (("lateness", "on_time"), ("rule", "A4"))) in scraped["scheduler"]
    assert ("ppo_events_received_total", (("channel", "http"), ("format", "canonical"))) in scraped["intake"]
    assert ("ppo_dead_letters_total", (("reason", "unknown-bcu"), ("service", "rules"))) in scraped["rules"]
    # process-wide series (memory, CPU, GC) on the first service's port only
    assert any(name.startswith("process_") for name, _ in scraped["intake"])
    assert not any(name.startswith(("process_", "python_")) for port in ("rules", "scheduler", "notifier")
                   for name, _ in scraped[port])


async def test_one_service_in_the_process_serves_the_whole_registry() -> None:
    [server] = await _servers(("notifier",))
    try:
        scraped = await _scrape(server.port)
    finally:
        await server.stop()
    assert {name for name, _ in _registry_samples()} == {name for name, _ in scraped}


def test_faststream_and_lag_series_go_to_the_service_they_name() -> None:
    assert metrics.owner_of("faststream_received_messages", {"app_name": "ppo-scheduler-rebuild"}, SERVICES) \
        == "scheduler"
    assert metrics.owner_of("ppo_consumer_lag", {"group": "ppo-notifier-escalations", "topic": "t"}, SERVICES) \
        == "notifier"
    assert metrics.owner_of("ppo_consumer_stuck", {"service": "rules", "topic": "t"}, SERVICES) == "rules"
    # a family nobody named, or a service not in this process: the process's first service
    assert metrics.owner_of("ppo_something_new", {}, SERVICES) == "intake"
    assert metrics.owner_of("ppo_notifications", {"rule": "A1"}, ("scheduler", "rules")) == "scheduler"
