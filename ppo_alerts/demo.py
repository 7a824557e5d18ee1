"""`ppo-alerts demo`: the whole system on this machine, no Docker.

Starts a local Kafka, a local SMTP sink that writes every message to a folder, all four services, replays
the sample events through HTTP intake, and says where the emails and the metrics are.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ppo_alerts.localkafka import LocalKafka, LocalKafkaError
from ppo_alerts.mailsink import MailSink
from ppo_alerts.runner import SERVICES, start_services, stop_services
from shared.clock import SystemClock
from shared.logs import configure_logging
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "deploy" / "sample"


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
    print(f"  Kafka at {bootstrap} ({time.monotonic() - started:.1f} s)")
    sink = MailSink(workdir / "mail")
    sink.start()
    settings = Settings(
        kafka_bootstrap=bootstrap, directory_file=SAMPLE / "directory.yaml", register_file=SAMPLE / "register.csv",
        smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls_mode="plain", smtp_allow_plaintext=True,
        state_dir=workdir / "state", intake_allow_anonymous=True, log_level="WARNING",
    )
    running = await start_services(list(SERVICES), settings, SystemClock())
    try:
        url = f"http://{settings.http_host}:{settings.intake_port}/v1/events"
        lines = [json.loads(x) for x in (SAMPLE / "events.jsonl").read_text().splitlines() if x.strip()]
        for body in lines:
            status, text = await asyncio.to_thread(post, url, body)
            print(f"  POST /v1/events -> {status} {text[:120]}")
        deadline = time.monotonic() + 30
        while sink.handler.count == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        print()
        print(f"emails: {sink.handler.count} message(s) in {workdir / 'mail'}")
        for name, port in (("intake", settings.intake_port), ("rules", settings.rules_port),
                           ("scheduler", settings.scheduler_port), ("notifier", settings.notifier_port)):
            print(f"metrics: {name:9} http://{settings.http_host}:{port}/metrics")
        print(f"send more: curl -X POST {url} -H 'content-type: application/json' -d @payload.json")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if exit_after is None:
            print("running; Ctrl-C stops everything")
            await stop.wait()
        else:
            await asyncio.wait_for(stop.wait(), exit_after) if exit_after > 0 else None
    except TimeoutError:
        pass
    finally:
        await stop_services(running)
        sink.stop()
        await asyncio.to_thread(kafka.stop)
    return 0 if sink.handler.count > 0 else 1


def main_demo(args: Any) -> int:
    try:
        return asyncio.run(demo(Path(args.dir), args.exit_after))
    except LocalKafkaError as exc:
        print(f"ppo-alerts demo: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ppo-alerts demo: cannot start: {exc}", file=sys.stderr)
        return 2
