"""`ppo-alerts demo` as a person runs it (its own Kafka, the mail sink, the four services in one process): the
late case escalates and says so, no ERROR line from a broker seconds old, and Prometheus scraping the four
/metrics addresses it prints counts each email and each obligation once."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
PORT_SETTINGS = ("PPO_INTAKE_PORT", "PPO_RULES_PORT", "PPO_SCHEDULER_PORT", "PPO_NOTIFIER_PORT")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Demo:
    def __init__(self, workdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PPO_")}
        env.update(zip(PORT_SETTINGS, map(str, _free_ports(4)), strict=True))  # not 8080-8083: may be taken
        self.mail = workdir / "mail"
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from ppo_alerts.cli import main; sys.exit(main())", "demo",
             "--dir", str(workdir), "--exit-after", "120"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=lambda s=stream, x=lines: x.extend(s), daemon=True).start()

    def wait_for(self, text: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.out):
            assert self.process.poll() is None, f"demo exited {self.process.returncode}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout_s} s:\n{self.output()}"
            time.sleep(0.2)

    def output(self) -> str:
        return "".join(self.out) + "\n--- stderr\n" + "".join(self.err)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # the demo's own handler: services, sink, Kafka stopped
            try:
                return self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = Demo(tmp_path_factory.mktemp("demo") / "run")
    try:
        running.wait_for("send more:")
        yield running
    finally:
        running.stop()


def _scrape(urls: list[str]) -> list[dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    out = []
    with httpx.Client(timeout=10) as client:
        for url in urls:
            out.append({(s.name, tuple(sorted(s.labels.items()))): s.value
                        for f in text_string_to_metric_families(client.get(url).text) for s in f.samples})
    return out


def _total(ports: list[dict[tuple[str, tuple[tuple[str, str], ...]], float]], name: str, **match: str) -> float:
    return sum(v for port in ports for (n, labels), v in port.items()
               if n == name and all(dict(labels).get(k) == x for k, x in match.items()))


def test_the_late_case_escalates_and_the_screen_says_so(demo: Demo) -> None:
    text = "".join(demo.out)
    assert "late on purpose:" in text and re.search(r"emails: \d+ message\(s\) in .*, 1 of them escalation", text), \
        demo.output()
    escalations = [message_from_bytes(p.read_bytes()) for p in demo.mail.glob("*.eml")]
    escalations = [m for m in escalations if str(m.get("X-PPO-Obligation", "")).endswith("#escalation")]
    assert [m["X-PPO-Rule"] for m in escalations] == ["A8"]


def test_no_error_line_while_the_fresh_broker_elects(demo: Demo) -> None:
    errors = [line for line in demo.err if line.startswith("{") and json.loads(line)["level"] in ("error", "critical")]
    assert not errors, "".join(errors)


def test_scraping_the_four_addresses_counts_each_email_and_obligation_once(demo: Demo) -> None:
    urls = re.findall(r"^metrics: +\w+ +(http://\S+/metrics)", "".join(demo.out), re.M)
    assert len(urls) == 4, demo.output()
    deadline = time.monotonic() + 30
    while True:  # the last emails of the first batch may still be on their way
        files = [message_from_bytes(p.read_bytes()) for p in demo.mail.glob("*.eml")]
        notified = {str(m["X-PPO-Obligation"]) for m in files if not str(m["X-PPO-Obligation"]).endswith("#escalation")}
        ports = _scrape(urls)
        deliveries = _total(ports, "ppo_notifier_deliveries_total", outcome="sent")
        deadlines = _total(ports, "ppo_deadlines_total", result="met") + _total(ports, "ppo_deadlines_total",
                                                                               result="breached")
        if (deliveries, deadlines) == (len(files), len(notified)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert deliveries == len(files), f"{deliveries} deliveries counted over the four ports for {len(files)} emails"
    assert deadlines == len(notified), f"{deadlines} deadlines counted for {len(notified)} obligations notified"
    assert _total(ports, "ppo_obligations_raised_total") >= len(notified)
    # and each series on one port only
    keys = [k for port in ports for k in port]
    assert len(keys) == len(set(keys))
