"""The scheduler as separate processes, killed with SIGKILL: restarts, late timers, and two instances.

Each scheduler runs in its own Python process (the same SchedulerService `ppo-alerts run scheduler` runs, with a
one-second lateness threshold so "late" does not need a minute's wait) on a real Kafka broker. The instances of a
`cluster` test share one state dir, so one SQLite job store and one lease; those of a `pg_cluster` test have a state
dir each, as on separate machines, and share a PostgreSQL job store and lease (PPO_SCHEDULER_JOBSTORE_URL, a schema
of the test's own on the `postgres_url` server): the multi-host path.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.scheduler.store import WatchStore, make_engine
from shared.kafka import dumps, ensure_topics, make_broker, read_to_end
from shared.obligations import NotificationRequest, Obligation
from shared.settings import Settings
from shared.topics import Topics
from tests.pgschema import fresh_schema
from tests.rulebook_fixtures import DIRECTORY

pytestmark = [pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]

# One scheduler instance: SchedulerService in a RunningService, as services/scheduler/main.py builds it, with a
# policy that calls a timer late after 1 s. It writes its role to <state>/role-<instance> whenever it changes.
LAUNCHER = r"""
import asyncio, json, sys
from datetime import timedelta
from services.scheduler.service import SchedulerService
from services.scheduler.watch import WatchPolicy
from shared.clock import SystemClock
from shared.http import HttpServer, build_app
from shared.kafka import make_broker
from shared.logs import configure_logging
from shared.service import RunningService
from shared.settings import load_settings

async def main():
    opts = json.loads(sys.argv[1])
    settings = load_settings()
    configure_logging(settings.log_level)
    policy = WatchPolicy(deadline_grace=timedelta(seconds=3600), late_after=timedelta(seconds=1))
    broker = make_broker(settings, "ppo-scheduler")
    service = SchedulerService(settings, broker, SystemClock(), policy=policy, instance=opts["instance"])
    app = build_app("scheduler", lambda: service.ready)
    running = RunningService("scheduler", broker, HttpServer(app, "127.0.0.1", settings.scheduler_port),
                             after_broker=service.start, on_stop=[service.stop])
    await running.start()
    role = None
    while True:
        if service.role != role:
            role = service.role
            (settings.state_dir / f"role-{opts['instance']}").write_text(role)
        await asyncio.sleep(0.1)

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_RUNNING: list[Instance] = []  # of the current test: their logs are shown when a wait fails


class Instance:
    def __init__(self, env: dict[str, str], state: Path, name: str) -> None:
        _RUNNING.append(self)
        self.name = name
        self.state = state
        self.port = free_port()
        self.log = (state.parent / f"{name}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, json.dumps({"instance": name})], cwd=ROOT,
            env={**env, "PPO_SCHEDULER_PORT": str(self.port)}, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def role(self) -> str | None:
        f = self.state / f"role-{self.name}"
        return f.read_text() if f.exists() else None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        (self.state / f"role-{self.name}").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # the launcher has no handler: ends at once, like a kill
            self.proc.wait(timeout=10)
        self.log.close()

    def log_tail(self, lines: int = 40) -> str:
        self.log.flush()
        text = (self.state.parent / f"{self.name}.log").read_text(errors="replace").splitlines()
        exited = "" if self.proc.poll() is None else f", exited with {self.proc.returncode}"
        return f"--- {self.name} (pid {self.proc.pid}{exited}, role {self.role}) ---\n" + "\n".join(text[-lines:])

    def metric(self, line_start: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        found = [ln for ln in text.splitlines() if ln.startswith(line_start)]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0


@pytest.fixture
def cluster(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[Settings, Any]]:
    yield from _cluster(kafka_bootstrap, tmp_path)


@pytest.fixture
def pg_cluster(kafka_bootstrap: str, tmp_path: Path, postgres_url: str) -> Iterator[tuple[Settings, Any]]:
    yield from _cluster(kafka_bootstrap, tmp_path, fresh_schema(postgres_url, "scheduler"))


def _cluster(kafka_bootstrap: str, tmp_path: Path, jobstore_url: str | None = None) -> Iterator[tuple[Settings, Any]]:
    """Instances started by `start(name)`: on one state dir, or (with `jobstore_url`) each on its own."""
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    state = tmp_path / "state"
    state.mkdir()
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"f{uuid.uuid4().hex[:8]}",
                        directory_file=directory, state_dir=state, scheduler_lease_ttl_s=3.0,
                        scheduler_jobstore_url=jobstore_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPO_")}
    env.update({"PPO_KAFKA_BOOTSTRAP": kafka_bootstrap, "PPO_TOPIC_PREFIX": settings.topic_prefix,
                "PPO_DIRECTORY_FILE": str(directory), "PPO_STATE_DIR": str(state),
                "PPO_SCHEDULER_LEASE_TTL_S": "3", "PPO_LOG_LEVEL": "INFO", "PYTHONPATH": str(ROOT)})
    if jobstore_url is not None:
        env["PPO_SCHEDULER_JOBSTORE_URL"] = jobstore_url
    started: list[Instance] = []

    def start(name: str) -> Instance:
        if jobstore_url is None:
            instance = Instance(env, state, name)
        else:  # a machine of its own: nothing shared but Kafka and the database
            own = tmp_path / f"state-{name}"
            own.mkdir(exist_ok=True)
            instance = Instance({**env, "PPO_STATE_DIR": str(own)}, own, name)
        started.append(instance)
        return instance

    asyncio.run(ensure_topics(settings, Topics(settings.topic_prefix)))
    try:
        yield settings, start
    finally:
        for instance in started:
            instance.stop()
        _RUNNING.clear()


def wait_until(predicate: Any, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    logs = "\n".join(i.log_tail() for i in _RUNNING)
    raise AssertionError(f"not within {timeout} s: {what}\n{logs}")


def timer(send_in: float) -> Obligation:
    now = datetime.now(UTC)
    send_at = now + timedelta(seconds=send_in)
    return Obligation(obligation_id=f"A4-{uuid.uuid4().hex[:24]}", rule="A4", source_paragraph="001 §7.5",
                      person=None, bcu="13-LD", recipients=["leeds.ppo@westyorkshire.police.uk"],
                      send_at=send_at, notify_by=send_at + timedelta(minutes=15), raised_at=now)


def publish(settings: Settings, *obligations: Obligation) -> None:
    async def go() -> None:
        broker = make_broker(settings, "test-publisher")
        await broker.connect()
        try:
            for o in obligations:
                await broker.publish(dumps(o), Topics(settings.topic_prefix).obligations, key=o.obligation_id.encode())
        finally:
            await broker.stop()

    asyncio.run(go())


def requests(settings: Settings) -> list[NotificationRequest]:
    records = asyncio.run(read_to_end(settings, Topics(settings.topic_prefix).notifications))
    return [NotificationRequest.model_validate_json(v) for _, v in records if v]


def states(settings: Settings) -> dict[str, Obligation]:
    out = {}
    for _, v in asyncio.run(read_to_end(settings, Topics(settings.topic_prefix).obligations)):
        if v:
            o = Obligation.model_validate_json(v)
            out[o.obligation_id] = o
    return out


def tracked(settings: Settings, *obligations: Obligation) -> bool:
    url = settings.scheduler_jobstore_url or f"sqlite:///{settings.state_dir / 'scheduler-jobs.sqlite'}"
    store = WatchStore(make_engine(url))
    try:
        return all(store.get(o.obligation_id) is not None for o in obligations)
    finally:
        store.close()


def test_a_timer_survives_kill_9_and_fires_once_on_time(cluster: tuple[Settings, Any]):
    settings, start = cluster
    first = start("a")
    wait_until(lambda: first.role == "active", what="a active")
    o = timer(send_in=15.0)
    publish(settings, o)
    wait_until(lambda: tracked(settings, o), what="tracked")
    first.kill9()  # no clean stop: the lease is not released, offsets are as they were
    second = start("b")
    wait_until(lambda: second.role == "active", timeout=30, what="b takes over after the lease expires")
    assert datetime.now(UTC) < o.send_at, "took over too slowly for this test"
    wait_until(lambda: len(requests(settings)) >= 1, timeout=30, what="fired")
    time.sleep(2.0)
    found = requests(settings)
    assert len(found) == 1
    assert o.send_at <= found[0].requested_at < o.send_at + timedelta(seconds=2)
    assert [h.what for h in states(settings)[o.obligation_id].history] == ["sent for delivery by the scheduler"]


def test_a_timer_due_while_the_scheduler_was_down_fires_once_on_start_up_marked_late(cluster: tuple[Settings, Any]):
    settings, start = cluster
    first = start("a")
    wait_until(lambda: first.role == "active", what="a active")
    o = timer(send_in=4.0)
    publish(settings, o)
    wait_until(lambda: tracked(settings, o), what="tracked")
    first.kill9()
    time.sleep(max(0.0, (o.send_at - datetime.now(UTC)).total_seconds()) + 3.0)  # it falls due while down
    assert requests(settings) == []
    second = start("b")
    wait_until(lambda: len(requests(settings)) >= 1, timeout=30, what="fired on start-up")
    time.sleep(2.0)
    found = requests(settings)
    assert len(found) == 1 and found[0].requested_at > o.send_at + timedelta(seconds=3)
    history = [h.what for h in states(settings)[o.obligation_id].history]
    assert len(history) == 1 and history[0].startswith("sent for delivery by the scheduler, late: it was due at")
    assert second.metric('ppo_timers_fired_total{lateness="late",rule="A4"}') == 1.0


def test_two_instances_fire_each_timer_once_and_the_standby_takes_over(cluster: tuple[Settings, Any]):
    two_instances_fire_each_timer_once_and_the_standby_takes_over(*cluster)


def test_two_hosts_on_one_postgresql_fire_each_timer_once_and_the_standby_takes_over(
    pg_cluster: tuple[Settings, Any],
):
    """The multi-host path: separate state dirs, one PostgreSQL job store and lease."""
    two_instances_fire_each_timer_once_and_the_standby_takes_over(*pg_cluster)


def two_instances_fire_each_timer_once_and_the_standby_takes_over(settings: Settings, start: Any) -> None:
    a, b = start("a"), start("b")
    wait_until(lambda: {a.role, b.role} == {"active", "standby"}, what="one active, one standby")
    active, standby = (a, b) if a.role == "active" else (b, a)
    timers = [timer(send_in=s) for s in (4.0, 6.0, 8.5, 10.0, 12.0, 16.0)]
    publish(settings, *timers)
    wait_until(lambda: tracked(settings, *timers), what="tracked")
    wait_until(lambda: len(requests(settings)) >= 2, timeout=20, what="the first two fired")
    assert standby.role == "standby"
    active.kill9()  # between the 6 s and the 8.5 s timers
    killed = time.monotonic()
    wait_until(lambda: standby.role in ("activating", "active"), timeout=30, what="the standby takes the lease")
    # Within the lease: it expires ttl after the last renewal, and the standby tries every ttl/3.
    took = time.monotonic() - killed
    assert took < settings.scheduler_lease_ttl_s * 4 / 3 + 1.0, f"lease taken {took:.1f} s after the kill"
    wait_until(lambda: standby.role == "active", timeout=30, what="the standby takes over")
    print(f"lease taken {took:.1f} s, active {time.monotonic() - killed:.1f} s after the kill")  # noqa: T201
    wait_until(lambda: len(requests(settings)) >= len(timers), timeout=40, what="every timer fired")
    time.sleep(3.0)
    counts = Counter(r.obligation.obligation_id for r in requests(settings))
    assert counts == Counter({o.obligation_id: 1 for o in timers})
    restarted = start(active.name)  # the old one comes back: it stands by, fires nothing
    wait_until(lambda: restarted.role == "standby", timeout=30, what="the old instance stands by")
    time.sleep(2.0)
    assert len(requests(settings)) == len(timers)


def test_cli_rebuild_refuses_while_an_instance_is_active(cluster: tuple[Settings, Any]):
    settings, start = cluster
    instance = start("a")
    wait_until(lambda: instance.role == "active", what="a active")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPO_")}
    env.update({"PPO_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "PPO_TOPIC_PREFIX": settings.topic_prefix,
                "PPO_DIRECTORY_FILE": str(settings.directory_file), "PPO_STATE_DIR": str(settings.state_dir)})
    cli = [sys.executable, "-m", "ppo_alerts.cli", "scheduler", "rebuild"]
    busy = subprocess.run(cli, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert busy.returncode == 1 and "stop it first" in busy.stdout
    publish(settings, timer(send_in=3600.0))
    instance.kill9()
    time.sleep(3.5)  # its lease expires
    done = subprocess.run(cli, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rebuilt from 1 obligations" in done.stdout
