"""`ppo-alerts demo`: the whole system on this machine, no Docker.

Starts a local Kafka, a local SMTP sink that writes every message to a folder, all four services, replays
the sample events through HTTP intake, and says where the emails and the metrics are.

The samples (deploy/sample/events.jsonl) carry fixed dates; the demo moves them to just before now, keeping their
spacing, so the first emails go out on time as they would live. One event of its own is late on purpose (a day
release reported after it began), so an escalation to the duty inbox shows too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

from ppo_alerts.localkafka import LocalKafka, LocalKafkaError
from ppo_alerts.mailsink import MailSink
from ppo_alerts.runner import SERVICES, start_services, stop_services
from shared.calendar import london_date
from shared.clock import SystemClock
from shared.kafka import client_kwargs, ensure_topics
from shared.logs import configure_logging
from shared.service import RunningService
from shared.settings import Settings
from shared.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "deploy" / "sample"
LAST_EVENT_AGO = timedelta(minutes=2)  # the latest sample event happened this long before the demo posts it
# Moved with the events: instants (canonical and HMPPS field names) and calendar dates in event data. Not moved:
# anything else, such as a date of birth.
INSTANT_FIELDS = frozenset({"occurred_at", "occurredAt", "publishedAt", "starts_at", "ends_at"})
DATE_FIELDS = frozenset({"release_date", "eligibility_date", "decision_due"})
OCCURRED_FIELDS = frozenset({"occurred_at", "occurredAt"})  # when it happened: sets how far everything moves
LATE_ON_PURPOSE = ("late on purpose: a day release (ROTL) from HMP Leeds reported 10 minutes after it began; police "
                   "must be told before it starts, so its notice is late on arrival and the Leeds duty inbox gets an "
                   "escalation")


def late_rotl(now: datetime) -> dict[str, Any]:
    """A canonical event whose deadline passed before it arrived: A8's notify-by is the start of the release."""
    return {
        "id": f"demo-late-rotl-{now:%Y%m%d%H%M}", "type": "prison.rotl_scheduled", "source": "HMP-LEI",
        "occurred_at": (now - timedelta(minutes=12)).isoformat(timespec="seconds"),
        "person": {"pnc": "2011/0482913X", "noms": "K4567LM"},  # on the sample register, Leeds, in HMP Leeds
        "data": {"prison_id": "LEI", "starts_at": (now - timedelta(minutes=10)).isoformat(timespec="seconds"),
                 "ends_at": (now + timedelta(hours=6)).isoformat(timespec="seconds")},
    }


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _instants(body: Any, fields: frozenset[str]) -> list[datetime]:
    """Every instant under one of `fields`, anywhere in the payload."""
    if isinstance(body, dict):
        found = [t for k, v in body.items() if k in fields and (t := _instant(v)) is not None]
        return found + [t for v in body.values() for t in _instants(v, fields)]
    if isinstance(body, list):
        return [t for v in body for t in _instants(v, fields)]
    return []


def _moved(body: Any, by: timedelta, days: timedelta) -> Any:
    if isinstance(body, list):
        return [_moved(v, by, days) for v in body]
    if not isinstance(body, dict):
        return body
    out = {}
    for key, value in body.items():
        if key in INSTANT_FIELDS and (t := _instant(value)) is not None:
            out[key] = (t + by).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        elif key in DATE_FIELDS and isinstance(value, str):
            try:
                out[key] = (date.fromisoformat(value) + days).isoformat()
            except ValueError:
                out[key] = value
        else:
            out[key] = _moved(value, by, days)
    return out


def dated_from_now(bodies: list[Any], now: datetime) -> list[Any]:
    """The payloads moved in time so that the latest event happened LAST_EVENT_AGO before `now`: every instant by
    the same amount, and each event's dates by as many London days as its own occurrence moved (a release 27 days
    after its event stays 27 days after it, whichever side of midnight the move takes each event)."""
    occurred = [t for body in bodies for t in _instants(body, OCCURRED_FIELDS)]
    if not occurred:
        return bodies
    by = (now - LAST_EVENT_AGO) - max(occurred)

    def days_moved(body: Any) -> timedelta:
        when = max(_instants(body, OCCURRED_FIELDS), default=max(occurred))
        return london_date(when + by) - london_date(when)

    return [_moved(body, by, days_moved(body)) for body in bodies]


# The services' consumer groups as they write them (services/*/service.py; under the prefix: Topics.group): each is
# asked for its coordinator before they start.
GROUPS = ("ppo-intake", "ppo-rules-resolve", "ppo-rules", "ppo-scheduler", "ppo-scheduler-acks",
          "ppo-scheduler-custody", "ppo-notifier", "ppo-notifier-escalations")


async def wait_until_ready(settings: Settings, groups: tuple[str, ...] = GROUPS, timeout_s: float = 60.0) -> None:
    """Until the fresh broker can serve the services: their topics exist with a leader for every partition, and
    every consumer group has a coordinator (the first FindCoordinator creates the offsets topic, whose partitions
    then elect leaders). Consumers started earlier log ERROR lines on every retry until then (aiokafka's
    GroupCoordinatorNotAvailableError, NotLeaderForPartitionError), which on a broker seconds old are only noise."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    topics = Topics(settings.topic_prefix).all()
    await ensure_topics(settings, Topics(settings.topic_prefix))  # start_services checks them again: no-op
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    deadline = time.monotonic() + timeout_s
    try:
        waiting: list[str] = ["topics", *(Topics(settings.topic_prefix).group(g) for g in groups)]
        while waiting:
            try:
                if waiting[0] == "topics":
                    described = await admin.describe_topics(topics)
                    if len(described) < len(topics) or any(
                            t["error_code"] or any(p["error_code"] or p["leader"] < 0 for p in t["partitions"])
                            for t in described):
                        raise KafkaError("a partition has no leader yet")
                else:
                    await admin.find_coordinator(waiting[0])
                waiting.pop(0)
            except KafkaError:
                if time.monotonic() > deadline:
                    what = "a leader for every partition" if waiting[0] == "topics" else \
                        f"a group coordinator for {waiting[0]}"
                    raise LocalKafkaError(f"Kafka at {settings.kafka_bootstrap} has no {what} after "
                                          f"{timeout_s:.0f} s") from None
                await asyncio.sleep(0.1)
    finally:
        await admin.close()


def escalations_in(folder: Path) -> int:
    """Escalation emails the sink wrote (their delivery key, in X-PPO-Obligation, ends in #escalation)."""
    count = 0
    for path in folder.glob("*.eml"):
        message = message_from_bytes(path.read_bytes())
        key = message.get("X-PPO-Obligation") or message.get("X-Alert-Obligation") or ""
        count += str(key).endswith("#escalation")
    return count


def post(url: str, body: Any) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def demo(workdir: Path, exit_after: float | None) -> int:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    configure_logging("WARNING")
    kafka = LocalKafka(workdir / "kafka")
    print("starting a local Apache Kafka 3.9.1 (first run downloads it from Maven Central)...", flush=True)
    started = time.monotonic()
    bootstrap = await asyncio.to_thread(kafka.start)
    sink = MailSink(workdir / "mail")
    running: list[RunningService] = []
    try:
        sink.start()
        settings = Settings(
            kafka_bootstrap=bootstrap, directory_file=SAMPLE / "directory.yaml",
            register_file=SAMPLE / "register.csv", smtp_host="127.0.0.1", smtp_port=sink.port,
            smtp_tls_mode="plain", smtp_allow_plaintext=True, state_dir=workdir / "state",
            intake_allow_anonymous=True, log_level="WARNING",
        )
        await wait_until_ready(settings)
        print(f"  Kafka at {bootstrap}, topics and consumer groups ready ({time.monotonic() - started:.1f} s)")
        running = await start_services(list(SERVICES), settings, SystemClock())
        await _replay(settings, sink, workdir / "mail")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if exit_after is None:
            print("running; Ctrl-C stops everything")
            await stop.wait()
        elif exit_after > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), exit_after)
    finally:
        await stop_services(running)
        sink.stop()
        await asyncio.to_thread(kafka.stop)
    return 0 if sink.handler.count > 0 else 1


async def _replay(settings: Settings, sink: MailSink, mail: Path) -> None:
    """Post the samples (dated from now) and the late case, wait for the emails, say where everything is."""
    url = f"http://{settings.http_host}:{settings.intake_port}/v1/events"
    now = datetime.now(UTC)
    samples = [json.loads(x) for x in (SAMPLE / "events.jsonl").read_text().splitlines() if x.strip()]
    print(f"posting the {len(samples)} sample events of {SAMPLE / 'events.jsonl'}, moved to the last few hours "
          f"(the latest {LAST_EVENT_AGO.seconds // 60} minutes ago):")
    for body in dated_from_now(samples, now):
        status, text = await asyncio.to_thread(post, url, body)
        print(f"  POST /v1/events -> {status} {text[:120]}")
    print(LATE_ON_PURPOSE + ":")
    status, text = await asyncio.to_thread(post, url, late_rotl(now))
    print(f"  POST /v1/events -> {status} {text[:120]}")
    deadline = time.monotonic() + 30
    while (sink.handler.count == 0 or escalations_in(mail) == 0) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # the rest of the first batch
    print()
    print(f"emails: {sink.handler.count} message(s) in {mail}, {escalations_in(mail)} of them escalation(s)")
    for name, port in (("intake", settings.intake_port), ("rules", settings.rules_port),
                       ("scheduler", settings.scheduler_port), ("notifier", settings.notifier_port)):
        print(f"metrics: {name:9} http://{settings.http_host}:{port}/metrics  ({name}'s own: scrape all four)")
    print(f"send more: curl -X POST {url} -H 'content-type: application/json' -d @payload.json")


def main_demo(args: Any) -> int:
    try:
        return asyncio.run(demo(Path(args.dir), args.exit_after))
    except LocalKafkaError as exc:
        print(f"ppo-alerts demo: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ppo-alerts demo: cannot start: {exc}", file=sys.stderr)
        return 2
