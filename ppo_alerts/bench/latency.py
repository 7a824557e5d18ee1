"""End-to-end latency: intake HTTP -> Kafka -> rules -> scheduler -> notifier -> SMTP accepted.

The four services run as separate processes, `python -m ppo_alerts.cli run <service>` each, configured by
`PPO_*` variables as in production (log level INFO, to files); the load generator and the SMTP sink stay in the
bench's process. On a small machine this matters: with everything in one event loop the figure would be the
generator's, not the system's.

The load is open-loop: event k is due at start + k / rate whatever happened to the ones before, and its latency
is counted from that instant (not from when a free connection sent it), so a stall shows in the figures rather
than slowing the load down. Events are mixed, about 5% about PPOs. Which events raise an immediate obligation, and
to how many recipients, comes from the pure core (the oracle `simulate` also uses); an obligation's latency runs
from its event's due instant to the moment the sink accepted the message to its last recipient.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ppo_alerts.bench.data import canonical_events, write_reference
from ppo_alerts.bench.sink import SmtpSink, free_port

log = logging.getLogger("ppo.bench")

SERVICES = ("intake", "rules", "scheduler", "notifier")
PEOPLE = 20_000
PPO_SHARE = 0.05
CONNECTIONS = 32  # keep-alive connections of the load generator


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (the smallest value with at least p% of values at or below it)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class LatencyResult:
    rate: float  # events per second asked for
    seconds: float
    sent: int
    achieved_rate: float  # events accepted (202) per second, over the time to the last answer
    errors: int  # answers other than 202, and connection errors
    expected: int  # immediate obligations the events raise (the oracle)
    delivered: int  # of which every recipient's message was accepted by the sink before the drain ended
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per process during the run


# --- the services, as processes ------------------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class ServiceProcesses:
    """`python -m ppo_alerts.cli run <name>` for each service, with their own ports and log files in `workdir`."""

    def __init__(self, workdir: Path, env: dict[str, str], names: tuple[str, ...] = SERVICES) -> None:
        self.workdir = workdir
        self.names = names
        self.ports = {name: free_port() for name in names}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PPO_")} | env | {
            f"PPO_{name.upper()}_PORT": str(port) for name, port in self.ports.items()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, timeout: float = 90.0) -> None:
        for name in self.names:  # all at once: their start-ups overlap
            with open(self.workdir / f"{name}.log", "ab") as out:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "ppo_alerts.cli", "run", name], cwd=self.workdir, env=self.env,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        for name in self.names:
            self._wait_healthy(name, deadline)

    def _wait_healthy(self, name: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.procs[name].returncode}:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not healthy in time:\n{self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def cpu_seconds(self) -> dict[str, float]:
        return {name: _cpu_seconds(p.pid) for name, p in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what we started
                proc.wait()


# --- the load generator: plain HTTP/1.1 over keep-alive connections ---------------------------------------------------

class _Connection:
    """Minimal HTTP/1.1 client for one keep-alive connection: a few microseconds a request, where a general
    client spends hundreds, which on two cores would be taken from the services."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), len(body), body))
        try:
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("connection closed")
            status = int(status_line.split()[1])
            length, close = 0, False
            while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                    close = True
            await self.reader.readexactly(length)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            await self.close()
            raise
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def open_loop(port: int, bodies: list[bytes], rate: float) -> tuple[dict[int, float], float, int]:
    """POST body k at start + k / rate; returns (k -> its due instant, for those answered 202), the seconds to the
    last answer, and how many were not accepted."""
    queue: asyncio.Queue[tuple[int, float, bytes] | None] = asyncio.Queue()
    due: dict[int, float] = {}
    errors = 0
    last = 0.0

    async def worker() -> None:
        nonlocal errors, last
        conn = _Connection("127.0.0.1", port)
        try:
            while (item := await queue.get()) is not None:
                k, at, body = item
                try:
                    status = await conn.post("/v1/events", body)
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    status = 0
                if status == 202:
                    due[k] = at
                else:
                    errors += 1
                last = time.perf_counter()
        finally:
            await conn.close()

    workers = [asyncio.create_task(worker()) for _ in range(CONNECTIONS)]
    started = time.perf_counter()
    for k, body in enumerate(bodies):
        at = started + k / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((k, at, body))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return due, (last or time.perf_counter()) - started, errors


# --- the measurement -------------------------------------------------------------------------------------------------

class _Oracle:
    """The pure core on the same register and directory: which event raises which immediate obligation, and to how
    many recipients. One ledger for the whole run, fed in the order events are posted."""

    def __init__(self, register: Path, directory: Path) -> None:
        from services.rules.ledger import Ledger
        from services.rules.rulebook import RuleBook
        from shared.directory import Directory
        from shared.register import Register

        self.ledger = Ledger(RuleBook(Register.load(register), Directory.load(directory)))

    def immediate(self, payloads: list[dict[str, Any]], now: datetime) -> dict[int, tuple[str, int]]:
        from shared.events import parse_event

        out: dict[int, tuple[str, int]] = {}
        for k, p in enumerate(payloads):
            for o in self.ledger.on_event(parse_event(p), now).raised:
                if o.send_at <= now and o.recipients:
                    out[k] = (o.obligation_id, len(o.recipients))
                    break
        return out


async def _wait_delivered(sink: SmtpSink, wanted: dict[str, int], timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if all(len(sink.arrivals.get(key, ())) >= n for key, n in wanted.items()):
            return
        await asyncio.sleep(0.1)


async def _one_rate(stack: ServiceProcesses, oracle: _Oracle, sink: SmtpSink, people: int, ppos: list[int],
                    rate: float, seconds: float, drain_s: float, seed: int) -> LatencyResult:
    now = datetime.now(UTC)
    n = max(1, int(rate * seconds))
    payloads = canonical_events(n, people, ppos, PPO_SHARE, now, seed=seed)
    raises = oracle.immediate(payloads, now)
    bodies = [json.dumps(p).encode() for p in payloads]
    del payloads
    cpu_before, own_before = stack.cpu_seconds(), time.process_time()
    due, elapsed, errors = await open_loop(stack.ports["intake"], bodies, rate)
    wanted = {raises[k][0]: raises[k][1] for k in due if k in raises}
    await _wait_delivered(sink, wanted, drain_s)
    cpu_after, own_after = stack.cpu_seconds(), time.process_time()
    latencies = []
    for k, at in due.items():
        if k in raises:
            key, recipients = raises[k]
            arrived = sink.arrivals.get(key, [])
            if len(arrived) >= recipients:
                latencies.append((sorted(arrived)[recipients - 1] - at) * 1000)
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    cpu["load generator + sink"] = own_after - own_before
    return LatencyResult(
        rate=rate, seconds=seconds, sent=n, achieved_rate=len(due) / elapsed if elapsed else 0.0, errors=errors,
        expected=len(wanted), delivered=len(latencies), p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95), p99_ms=percentile(latencies, 99),
        max_ms=max(latencies) if latencies else float("nan"), cpu_s=cpu)


async def measure_latency(bootstrap: str, work: Path, sink: SmtpSink, rates: tuple[float, ...], seconds: float,
                          drain_s: float = 30.0, people: int = PEOPLE) -> list[LatencyResult]:
    """Start the four services as processes (once), warm them up, then hold each rate for `seconds`."""
    from shared.kafka import ensure_topics
    from shared.settings import Settings
    from shared.topics import Topics

    prefix = f"e2e{uuid.uuid4().hex[:6]}"
    folder = work / prefix
    now = datetime.now(UTC)
    register, directory, ppos = write_reference(folder, people, PPO_SHARE, now.date())
    env = {
        "PPO_KAFKA_BOOTSTRAP": bootstrap, "PPO_TOPIC_PREFIX": prefix, "PPO_REGISTER_FILE": str(register),
        "PPO_DIRECTORY_FILE": str(directory), "PPO_STATE_DIR": str(folder / "state"),
        "PPO_SMTP_HOST": sink.host, "PPO_SMTP_PORT": str(sink.port), "PPO_SMTP_TLS_MODE": "plain",
        "PPO_SMTP_ALLOW_PLAINTEXT": "true", "PPO_INTAKE_ALLOW_ANONYMOUS": "true",
        "PPO_INTAKE_RATE_PER_S": "0",  # the per-credential limit would refuse a single sender's load
        "PPO_LOG_LEVEL": "INFO",
    }
    await ensure_topics(Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix), Topics(prefix))
    oracle = _Oracle(register, directory)
    stack = ServiceProcesses(folder, env)
    try:
        await asyncio.to_thread(stack.start)
        # Warm-up: every consumer has joined its group and every connection is open before the clock runs.
        warm = canonical_events(40, people, ppos, 1.0, now, seed=999_999)
        raises = oracle.immediate(warm, now)
        due, _, _ = await open_loop(stack.ports["intake"], [json.dumps(p).encode() for p in warm], 50)
        wanted = {raises[k][0]: raises[k][1] for k in due if k in raises}
        await _wait_delivered(sink, wanted, 90)
        if not wanted or not all(len(sink.arrivals.get(key, ())) >= n for key, n in wanted.items()):
            tails = "\n".join(f"--- {name}\n{stack.log_tail(name, 1500)}" for name in SERVICES)
            raise RuntimeError(f"warm-up: the stack did not deliver {len(wanted)} notices in 90 s\n{tails}")
        results = []
        for i, rate in enumerate(rates):
            results.append(await _one_rate(stack, oracle, sink, people, ppos, rate, seconds, drain_s, seed=1000 + i))
            log.info("latency measured", extra={"rate": rate})
        return results
    finally:
        await asyncio.to_thread(stack.stop)
