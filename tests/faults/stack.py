"""The real stack as separate processes, for fault injection: a local Kafka, a loopback SMTP server, and
`ppo-alerts run <service>` for each service, each killable with SIGKILL and restartable."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from ppo_alerts.localkafka import LocalKafka
from ppo_alerts.simulate import SimulationEngine
from shared.directory import Directory
from shared.identifiers import check_letter
from shared.register import Register
from tests.smtp_server import LoopbackSmtpServer

SERVICES = ("intake", "rules", "scheduler", "notifier")
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
    def __init__(self, workdir: Path, kafka: LocalKafka, smtp: LoopbackSmtpServer, register_text: str,
                 topic_prefix: str) -> None:
        self.workdir = workdir
        self.kafka = kafka
        self.smtp = smtp
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "register.csv").write_text(register_text)
        (workdir / "directory.yaml").write_text(yaml.safe_dump(DIRECTORY))
        self.ports = {name: free_port() for name in SERVICES}
        self.prefix = topic_prefix
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: Counter[str] = Counter()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PPO_")}
        env.update({
            "PPO_KAFKA_BOOTSTRAP": self.kafka.bootstrap, "PPO_TOPIC_PREFIX": self.prefix,
            "PPO_DIRECTORY_FILE": str(self.workdir / "directory.yaml"),
            "PPO_REGISTER_FILE": str(self.workdir / "register.csv"),
            "PPO_SMTP_HOST": "127.0.0.1", "PPO_SMTP_PORT": str(self.smtp.port), "PPO_SMTP_TLS_MODE": "plain",
            "PPO_SMTP_ALLOW_PLAINTEXT": "true", "PPO_STATE_DIR": str(self.workdir / "state"),
            "PPO_INTAKE_ALLOW_ANONYMOUS": "true", "PPO_LOG_LEVEL": "INFO",
            **{f"PPO_{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
        })
        if os.environ.get("PPO_FAULTS_FULL") != "1":
            # The short version (CI): a failing request is redelivered after 5 s, not 30, so an outage's recovery
            # is not mostly waiting; the long version keeps the production default.
            env["PPO_NOTIFIER_REDELIVER_AFTER_S"] = "5"
        return env

    def start(self, name: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "ppo_alerts.cli", "run", name], cwd=ROOT, env=self.env(), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_healthy(name)

    def wait_healthy(self, name: str, timeout: float = 60.0) -> None:
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
        raise RuntimeError(f"{name} not healthy within {timeout} s")

    def start_all(self) -> None:
        for name in SERVICES:
            self.start(name)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.kills[name] += 1

    def restart(self, name: str) -> None:
        self.start(name)

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

    def post(self, body: Any, timeout: float = 120.0) -> None:
        """Post like an agency would: until intake says 202 (a 4xx is final)."""
        data = json.dumps(body).encode()
        deadline = time.monotonic() + timeout
        while True:
            request = urllib.request.Request(f"http://127.0.0.1:{self.ports['intake']}/v1/events", data=data,
                                             method="POST", headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    if r.status == 202:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("intake did not accept a payload in time")
            time.sleep(0.5)


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
