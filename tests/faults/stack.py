"""The real stack as separate processes, for fault injection: a local Kafka, a loopback SMTP server, and
`ppo-alerts run <service>` for each service, each killable with SIGKILL and restartable."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import yaml

from ppo_alerts.simulate import SimulationEngine
from services.rules.rulebook import RULES
from shared.directory import Directory
from shared.identifiers import check_letter
from shared.kafka import read_to_end
from shared.obligations import Obligation
from shared.register import Register
from shared.settings import Settings
from tests.faults import evidence
from tests.smtp_server import LoopbackSmtpServer

SERVICES = ("intake", "rules", "scheduler", "notifier")


class HasBootstrap(Protocol):
    """One broker (LocalKafka) or a cluster (LocalKafkaCluster): what the services are pointed at."""

    @property
    def bootstrap(self) -> str: ...
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pnc(year: int, serial: int) -> str:
    return f"{year}/{serial:07d}{check_letter(int(f'{year % 100:02d}{serial:07d}'))}"


DIRECTORY = {
    "recipient_domains": ["police.uk", "justice.gov.uk", "gov.uk"],
    "bcus": {
        code: {"name": name, "force": force, "contacts": {
            "ppo": [f"{slug}.ppo@{force_domain}"], "warrants": [f"warrants@{force_domain}"],
            "probation": [f"{slug}.iom@justice.gov.uk"], "yot": [f"yot@{slug}.gov.uk"],
            "coordinator": [f"{slug}.coord@{force_domain}"], "escalation": [f"{slug}.duty@{force_domain}"]}}
        for code, name, force, slug, force_domain in (
            ("13-LD", "Leeds District", "13", "leeds", "westyorkshire.police.uk"),
            ("21-ST", "Stoke-on-Trent", "21", "stoke", "staffordshire.police.uk"),
        )
    },
}


@dataclass
class Person:
    pnc: str
    noms: str
    bcu: str
    dob: date
    ppo: bool


def people(n_ppo: int = 24, n_other: int = 8) -> list[Person]:
    out = []
    for i in range(n_ppo + n_other):
        out.append(Person(
            pnc=pnc(2005 + i % 15, 10_000 + i), noms=f"F{1000 + i}{chr(65 + i % 26)}{chr(65 + (i // 26) % 26)}",
            bcu="13-LD" if i % 2 else "21-ST", dob=date(1980 + i % 30 if i % 5 else 2010, 1 + i % 12, 1 + i % 27),
            ppo=i < n_ppo))
    return out


def register_csv(persons: list[Person], today: date) -> str:
    rows = ["pnc,cro,noms,crn,given_name,family_name,date_of_birth,home_bcu,strand,selected_on,reason,deselected_on"]
    for i, p in enumerate(persons):
        if p.ppo:
            # selected recently, so no C1/C2 falls due during a run
            selected = today - timedelta(days=10 + i)
            rows.append(f"{p.pnc},,{p.noms},,Given{i},Family{i},{p.dob},{p.bcu},deter,{selected},test,")
    return "\n".join(rows) + "\n"


def events(persons: list[Person], count: int, now: datetime, seed: int = 7) -> list[dict[str, Any]]:
    """A few hundred payloads across every rule family, canonical and HMPPS; about 3 in 4 about PPOs."""
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(count):
        p = rnd.choice(persons)
        at = (now - timedelta(minutes=rnd.randint(1, 600), seconds=i)).isoformat()
        kind = i % 12
        person = {"pnc": p.pnc, "noms": p.noms}
        base = {"id": f"fault-{seed}-{i}", "occurred_at": at, "source": "FAULTS", "person": person}
        if kind == 0:
            out.append({"eventType": "prison-offender-events.prisoner.received", "version": 1, "occurredAt": at,
                        "additionalInformation": {"nomsNumber": p.noms, "prisonId": rnd.choice(["LEI", "WYI"]),
                                                  "reason": "ADMISSION", "nomisMovementReasonCode": "N"},
                        "personReference": {"identifiers": [{"type": "NOMS", "value": p.noms}]}})
        elif kind == 1:
            out.append({**base, "type": "prison.release", "data": {"prison_id": "LEI", "reason": "licence"}})
        elif kind == 2:
            out.append({**base, "type": "warrant.issued",
                        "data": {"warrant_id": f"W-{i}", "court_code": "B13AA00",
                                 "kind": rnd.choice(["fta", "breach"])}})
        elif kind == 3:
            out.append({**base, "type": "court.bail_decision", "data": {"court_code": "B21AA00",
                                                                        "decision": "conditional_bail"}})
        elif kind == 4:
            out.append({**base, "type": "court.outcome", "data": {"court_code": "B21AA00", "outcome": "conviction",
                                                                  "case_ended": True}})
        elif kind == 5:
            out.append({**base, "type": "court.sentence", "data": {"court_code": "C13AA00", "disposal": "custody",
                                                                   "custody_days": rnd.choice([300, 900])}})
        elif kind == 6:
            out.append({**base, "type": "breach.reported", "data": {"order": "licence"}})
        elif kind == 7:
            out.append({**base, "type": "prison.transfer", "data": {"from_prison_id": "LEI", "to_prison_id": f"P{i}"}})
        elif kind == 8:
            out.append({**base, "type": "offence.high_harm", "data": {}})
        elif kind == 9:
            release = (now + timedelta(days=rnd.randint(60, 400))).date().isoformat()
            out.append({**base, "type": "prison.release_date_set",
                        "data": {"prison_id": "LEI", "release_date": release, "kind": "crd"}})
        elif kind == 10:
            out.append({**base, "type": "prison.hdc_eligible",
                        "data": {"prison_id": "LEI",
                                 "eligibility_date": (now + timedelta(days=30)).date().isoformat()}})
        else:
            out.append({**base, "type": "prison.rotl_scheduled",
                        "data": {"prison_id": "LEI", "starts_at": (now + timedelta(days=3)).isoformat()}})
    return out


@dataclass
class Expectation:
    sent: dict[str, list[str]] = field(default_factory=dict)  # obligation id -> recipients (due now)
    pending: set[str] = field(default_factory=set)  # obligation ids due later


def expected(register_text: str, payloads: list[dict[str, Any]], now: datetime) -> Expectation:
    """The oracle: the same payloads through the pure core (what `simulate` does), in virtual time."""
    register = Register.from_csv_text(register_text)
    engine = SimulationEngine(register, Directory.from_mapping(DIRECTORY), now)
    for i, body in enumerate(payloads):
        engine.feed(now, body, i + 1)
    exp = Expectation()
    for o in engine.obligations():
        if o.rule == "C6" or o.status in ("cancelled", "failed"):
            continue
        if o.send_at <= now + timedelta(minutes=1):
            exp.sent[o.obligation_id] = list(o.recipients)
        else:
            exp.pending.add(o.obligation_id)
    return exp


class ProcessStack:
    """The services as processes. `instances` names each process and its service: by default one of each, named
    after its service, sharing one state folder (one host); the cluster shape gives every instance its own state
    folder, as if on its own host, and `env_extra` (bootstrap list, shared PostgreSQL, lease ttl)."""

    def __init__(self, workdir: Path, kafka: HasBootstrap, smtp: LoopbackSmtpServer, register_text: str,
                 topic_prefix: str, instances: dict[str, str] | None = None,
                 env_extra: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.kafka = kafka
        self.smtp = smtp
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "register.csv").write_text(register_text)
        (workdir / "directory.yaml").write_text(yaml.safe_dump(DIRECTORY))
        self.instances = instances or {name: name for name in SERVICES}
        self.single_host = instances is None
        self.ports = {name: free_port() for name in self.instances}
        self.prefix = topic_prefix
        self.env_extra = env_extra or {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: Counter[str] = Counter()  # by service
        self._next_intake = 0

    def state_dir(self, name: str) -> Path:
        return self.workdir / ("state" if self.single_host else f"state-{name}")

    def env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PPO_")}
        service = self.instances[name]
        env.update({
            "PPO_KAFKA_BOOTSTRAP": self.kafka.bootstrap, "PPO_TOPIC_PREFIX": self.prefix,
            "PPO_DIRECTORY_FILE": str(self.workdir / "directory.yaml"),
            "PPO_REGISTER_FILE": str(self.workdir / "register.csv"),
            "PPO_SMTP_HOST": "127.0.0.1", "PPO_SMTP_PORT": str(self.smtp.port), "PPO_SMTP_TLS_MODE": "plain",
            "PPO_SMTP_ALLOW_PLAINTEXT": "true", "PPO_STATE_DIR": str(self.state_dir(name)),
            "PPO_INTAKE_ALLOW_ANONYMOUS": "true", "PPO_LOG_LEVEL": "INFO",
            f"PPO_{service.upper()}_PORT": str(self.ports[name]),
        })
        if os.environ.get("PPO_FAULTS_FULL") != "1":
            # The short version (CI): a failing request is redelivered after 5 s, not 30, so an outage's recovery
            # is not mostly waiting; the long version keeps the production default.
            env["PPO_NOTIFIER_REDELIVER_AFTER_S"] = "5"
        env.update(self.env_extra)
        return env

    def of(self, service: str) -> list[str]:
        return [name for name, s in self.instances.items() if s == service]

    def launch(self, name: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "ppo_alerts.cli", "run", self.instances[name]], cwd=ROOT, env=self.env(name),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, name: str) -> None:
        self.launch(name)
        self.wait_healthy(name)

    def start_many(self, names: list[str]) -> None:
        """Launch together, then wait for each: start-up is mostly waiting for the broker."""
        for name in names:
            self.launch(name)
        for name in names:
            self.wait_healthy(name)

    def wait_healthy(self, name: str, timeout: float | None = None) -> None:
        # eight instances and three brokers starting on two loaded cores take longer than one of each
        timeout = timeout or (60.0 if self.single_host else 150.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text()[-2000:]
                raise RuntimeError(f"{name} exited with {self.procs[name].returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        text = (self.workdir / f"{name}.log").read_text(errors="replace")
        kept = ROOT / "test-artifacts" / "faults" / f"{self.workdir.name}-{name}.log"  # the whole log, for later
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(text)
        raise RuntimeError(f"{name} not healthy within {timeout} s; its whole log is in {kept}; it ends:\n"
                           f"{text[-3000:]}")

    def start_all(self, names: list[str] | None = None) -> None:
        self.start_many(names if names is not None else list(self.instances))

    def running(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.kills[self.instances[name]] += 1

    def restart(self, name: str) -> None:
        self.start(name)

    def lose_host(self, name: str) -> None:
        """SIGKILL, and the host's disk with it: the instance comes back with an empty state folder."""
        self.kill(name)
        shutil.rmtree(self.state_dir(name), ignore_errors=True)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def metric(self, name: str, metric: str) -> float:
        """The sum of one metric's samples on one instance's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(metric) and line[len(metric):len(metric) + 1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def post(self, body: Any, timeout: float = 120.0) -> None:
        """Post like an agency would: until an intake instance says 202 (a 4xx is final). Several intake instances
        take turns, as behind a load balancer; one that does not answer is skipped."""
        data = json.dumps(body).encode()
        intakes = self.of("intake")
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            name = intakes[self._next_intake % len(intakes)]
            self._next_intake += 1
            request = urllib.request.Request(f"http://127.0.0.1:{self.ports[name]}/v1/events", data=data,
                                             method="POST", headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    if r.status == 202:
                        return
                    last = f"{name} answered {r.status}"
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return
                last = f"{name} answered {exc.code}"
            except OSError as exc:
                last = f"{name}: {exc}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"intake did not accept a payload within {timeout:.0f} s; last: {last}")
            time.sleep(0.5 if len(intakes) == 1 else 0.1)


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Run:
    """One scenario: its people, register and payloads, the oracle's expectation, an SMTP server, the stack (on
    fresh topics), and the reconciliation that turns what happened into a row of docs/reliability.md."""

    def __init__(self, kafka: HasBootstrap, tmp: Path, n_events: int, seed: int, *,
                 instances: dict[str, str] | None = None, env_extra: dict[str, str] | None = None,
                 shape: str = "one node") -> None:
        self.shape = shape
        self.now = now_utc()
        self.persons = people()
        self.register = register_csv(self.persons, self.now.date())
        self.payloads = events(self.persons, n_events, self.now, seed)
        self.expect = expected(self.register, self.payloads, self.now)
        self.smtp = LoopbackSmtpServer().start()
        self.stack = ProcessStack(tmp, kafka, self.smtp, self.register, f"f{uuid.uuid4().hex[:8]}",
                                  instances=instances, env_extra=env_extra)
        self.settings = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=self.stack.prefix)
        self.injected = 0

    def drive(self, at: dict[int, Callable[[], None]] | None = None, payloads: list[Any] | None = None, *,
              post_timeout: float = 120.0) -> None:
        for i, body in enumerate(payloads if payloads is not None else self.payloads):
            if at and i in at:
                at[i]()
                self.injected += 1
            self.stack.post(body, post_timeout)

    def message_ids_of_duplicates(self) -> list[set[str]]:
        """For every (obligation, recipient) received more than once, the Message-IDs it came with."""
        seen: dict[tuple[str, str], set[str]] = {}
        counts = self.messages()
        for m in self.smtp.messages:
            key = (str(m.message["X-PPO-Obligation"]), m.rcpt_tos[0].lower())
            if counts.get(key, 0) > 1:
                seen.setdefault(key, set()).add(str(m.message["Message-ID"]))
        return list(seen.values())

    def messages(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for m in self.smtp.messages:
            rule = m.message["X-PPO-Rule"]
            if rule in RULES and rule != "C6":
                for rcpt in m.rcpt_tos:
                    counts[(str(m.message["X-PPO-Obligation"]), rcpt.lower())] += 1
        return counts

    def expected_pairs(self) -> set[tuple[str, str]]:
        return {(oid, r.lower()) for oid, rs in self.expect.sent.items() for r in rs}

    def reconcile(self, scenario: str, fault: str, timeout: float = 180.0, expected_dead: int = 0) -> dict[str, Any]:
        want = self.expected_pairs()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not want <= set(self.messages()):
            time.sleep(0.5)
        time.sleep(3.0)  # anything duplicated or unexpected would arrive now
        got = self.messages()
        latest: dict[str, Obligation] = {}
        for _, value in asyncio.run(read_to_end(self.settings, f"{self.stack.prefix}.obligations")):
            if value:
                try:
                    o = Obligation.model_validate_json(value)
                except ValueError:
                    continue  # an injected poison record
                latest[o.obligation_id] = o
        live = {oid for oid, o in latest.items() if o.rule != "C6" and o.status not in ("cancelled",)}
        expected_ids = set(self.expect.sent) | self.expect.pending
        dead = asyncio.run(read_to_end(self.settings, f"{self.stack.prefix}.dead-letter"))
        not_notified = [oid for oid in self.expect.sent if latest.get(oid) is None
                        or latest[oid].status not in ("notified", "breached", "acknowledged")]
        row = {
            "shape": self.shape, "scenario": scenario, "fault": fault,
            "injected": self.injected or sum(self.stack.kills.values()),
            "events": len(self.payloads), "obligations_expected": len(expected_ids),
            "obligations_found": len(expected_ids & set(latest)), "obligations_unexpected": len(live - expected_ids),
            "messages_expected": len(want), "messages_delivered": len(want & set(got)),
            "duplicates": sum(c - 1 for c in got.values() if c > 1), "losses": len(want - set(got)),
            "unexpected_messages": len(set(got) - want), "stuck": len(not_notified), "dead_letters": len(dead),
            "dead_letters_expected": expected_dead,
        }
        evidence.RESULTS.append(row)
        return row

    def close(self) -> None:
        self.stack.stop_all()
        self.smtp.stop()


def assert_clean(row: dict[str, Any], duplicate_window: int = 0) -> None:
    """`duplicate_window`: how many duplicates the documented residual window allows (a notifier killed between
    the server's acceptance and its send-log write resends the message in hand: at most its recipients)."""
    assert row["obligations_found"] == row["obligations_expected"], row
    assert row["obligations_unexpected"] == 0, row
    assert row["losses"] == 0 and row["unexpected_messages"] == 0, row
    assert row["duplicates"] <= duplicate_window, row
    assert row["stuck"] == 0, row
    assert row["dead_letters"] == row["dead_letters_expected"], row
