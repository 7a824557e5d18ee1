"""Register administration on the real broker: a change made with `ppo-alerts register` (or a coordinator's
POST /v1/register/...) is applied by a running rules service within seconds and changes which events raise
obligations; a refused import changes nothing; concurrent changes to one person are both kept; the directory
file is reloaded while running, and a broken one is refused with the old one kept.

Intake and rules run in this process, each with its own Kafka clients, as `ppo-alerts run` runs them; the CLI
runs in-process (to time it) and as real processes (to run two at once).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from ppo_alerts import register_cli as rc
from ppo_alerts.cli import build_parser
from ppo_alerts.runner import build_service
from shared.clock import SystemClock
from shared.kafka import client_kwargs, ensure_topics
from shared.register import Register
from shared.settings import Settings
from shared.topics import Topics
from tests.rulebook_fixtures import DIRECTORY, REGISTER_CSV

pytestmark = [pytest.mark.kafka]

KIM = {"pnc": "2010/0123456T", "noms": "B2222CD"}  # not on the register at first
ALEX_NOMS, SAM_NOMS = "G1234HJ", "H2345JK"
REPO = Path(__file__).resolve().parents[2]


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> float:
    """Seconds it took for `predicate()` to hold."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: not met in {timeout} s")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def live(kafka_bootstrap, tmp_path):
    register = tmp_path / "register.csv"
    register.write_text(REGISTER_CSV)
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"r{uuid.uuid4().hex[:8]}", directory_file=directory,
        register_file=register, state_dir=tmp_path / "state", intake_port=0, rules_port=0,
        intake_tokens={sha("court-token"): "HMCTS"},
        intake_coordinator_tokens={sha("coord-token"): "Leeds IOM coordinator"}, directory_reload_s=0.2,
    )
    await ensure_topics(settings, Topics(settings.topic_prefix))
    started = []
    services = {}
    try:
        for name in ("rules", "intake"):
            running, service = build_service(name, settings, SystemClock())
            await running.start()
            started.append(running)
            services[name] = service
        intake_port = started[1].http.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{intake_port}", timeout=30) as client:
            yield settings, services["rules"], client
    finally:
        for running in reversed(started):
            await running.stop()


def reception(person: dict[str, str], event_id: str) -> dict:
    return {"id": event_id, "type": "prison.reception", "occurred_at": datetime.now(UTC).isoformat(),
            "source": "HMP-LEI", "person": person, "data": {"prison_id": "LEI", "reason": "new"}}


async def post_event(client: httpx.AsyncClient, body: dict) -> None:
    r = await client.post("/v1/events", json=body, headers={"Authorization": "Bearer court-token"})
    assert r.status_code == 202, r.text


def a1_for(rules, noms: str) -> list:
    return [o for o in rules.ledger.obligations.values()
            if o.rule == "A1" and o.person is not None and o.person.noms == noms]


async def cli(settings: Settings, *argv: str) -> tuple[int, list[str]]:
    out: list[str] = []
    args = build_parser().parse_args(["register", *argv])
    try:
        code = await rc.run_register(args, settings, out=out.append)
    except rc.NothingToChange as exc:
        return 0, [exc.message]
    except rc.ChangeRefused as exc:
        return 1, [str(exc)]
    return code, out


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        assert tps
        return {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def test_cli_change_is_applied_within_seconds_and_changes_which_events_raise_obligations(live, monkeypatch):
    settings, rules, client = live
    # Not on the register: a reception raises nothing.
    ignored = metric("ppo_events_ignored_total", service="rules", reason="not-on-register")
    await post_event(client, reception({"noms": KIM["noms"]}, "before-1"))
    await wait_for(lambda: metric("ppo_events_ignored_total", service="rules", reason="not-on-register") > ignored,
                   what="reception of someone not on the register evaluated")
    assert a1_for(rules, KIM["noms"]) == []

    published: dict[str, float] = {}
    real_publish = rc.publish_changes

    async def timed_publish(s, changes, at):
        await real_publish(s, changes, at)
        published[changes[0].action] = time.monotonic()

    monkeypatch.setattr(rc, "publish_changes", timed_publish)

    # Select through the CLI; the rules service applies it.
    started = time.monotonic()
    code, out = await cli(settings, "select", "--pnc", KIM["pnc"], "--noms", KIM["noms"], "--bcu", "13-LD",
                          "--reason", "NIM core nominal", "--authority", "Supt Smith", "--given-name", "Kim",
                          "--family-name", "New", "--by", "Jo Bloggs", "--wait", "20")
    command_s = time.monotonic() - started
    assert code == 0, out
    assert out[-1].startswith("applied: select")
    in_ledger = time.monotonic() - published["select"]  # the command waited for the register topic: in force
    assert rules.ledger.register.find({"noms": KIM["noms"]}) is not None

    # A reception after the change raises A1 for Kim, to the 13-LD contacts.
    await post_event(client, reception({"noms": KIM["noms"]}, "after-1"))
    to_obligation = await wait_for(lambda: len(a1_for(rules, KIM["noms"])) == 1, what="A1 after selection")
    change_to_effect = time.monotonic() - published["select"]
    (a1,) = a1_for(rules, KIM["noms"])
    assert a1.source_event_ids == ["after-1"]
    assert "leeds.ppo@westyorkshire.police.uk" in a1.recipients

    # De-select: the next reception raises nothing.
    code, out = await cli(settings, "deselect", KIM["noms"], "--reason", "stopped_offending", "--authority",
                          "Leeds IOM panel", "--wait", "20")
    assert code == 0, out
    deselect_applied = time.monotonic() - published["deselect"]
    off = metric("ppo_events_ignored_total", service="rules", reason="not-on-register-at-event-time")
    await post_event(client, reception({"noms": KIM["noms"]}, "after-2"))
    await wait_for(lambda: metric("ppo_events_ignored_total", service="rules",
                                  reason="not-on-register-at-event-time") > off, what="reception after de-selection")
    assert len(a1_for(rules, KIM["noms"])) == 1

    # The change is on the events topic with who and why; the snapshot on the register topic.
    register = await rc.read_register(settings)
    kim = register.find({"noms": KIM["noms"]})
    assert kim is not None and kim.periods[0].end_reason == "stopped_offending"
    assert kim.periods[0].authority == "Leeds IOM panel"
    print(f"\n[register timing] CLI select: whole command {command_s:.2f} s; publish -> applied by the rules "
          f"service (snapshot on the register topic) {in_ledger:.2f} s; publish -> next reception raised A1 "
          f"{change_to_effect:.2f} s (reception posted -> A1 {to_obligation:.2f} s); "
          f"CLI deselect publish -> applied {deselect_applied:.2f} s")
    assert in_ledger < 5 and change_to_effect < 10
    # The register gauge follows live changes (recounted within half a second).
    await wait_for(lambda: metric("ppo_register_people", bcu="13-LD", strand="catch_and_convict") == 1,
                   what="gauge: Alex only, Kim off again")


async def test_refused_import_changes_nothing_and_a_good_one_is_applied(live, tmp_path):
    settings, rules, _ = live
    topics = Topics(settings.topic_prefix)
    header = "pnc,cro,noms,crn,given_name,family_name,date_of_birth,home_bcu,strand,selected_on,reason,deselected_on"
    good = [f"{KIM['pnc']},,{KIM['noms']},,Kim,New,1990-01-02,13-LD,catch_and_convict,2026-01-05,Core nominal,",
            f"2006/0777001G,,{ALEX_NOMS},L112233,Alex,Sample,1988-08-08,13-LD,,2025-06-01,,"]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([header, *good, "2006/0777001H,,,,X,Y,,13-LD,,2026-01-01,,"]) + "\n")
    before = (await end_offsets(settings, topics.events), await end_offsets(settings, topics.register))
    snapshot = sorted((await rc.read_register(settings)).to_csv_text().splitlines())

    code, _ = await cli(settings, "import", str(bad))
    assert code == rc.EXIT_REFUSED
    code, out = await cli(settings, "import", str(bad.with_name("nope.csv")))
    assert code == rc.EXIT_REFUSED
    ok = tmp_path / "ok.csv"
    ok.write_text("\n".join([header, *good]) + "\n")
    code, out = await cli(settings, "import", str(ok), "--dry-run")
    assert code == 0 and out[-1] == "dry run: would publish 1 select; 1 row(s) unchanged", out
    await asyncio.sleep(1.0)
    after = (await end_offsets(settings, topics.events), await end_offsets(settings, topics.register))
    assert after == before  # nothing published by the refused import nor the dry run
    assert sorted((await rc.read_register(settings)).to_csv_text().splitlines()) == snapshot

    code, out = await cli(settings, "import", str(ok), "--by", "Jo Bloggs")
    assert code == 0 and out[-1].startswith("applied: 1 select"), out
    assert rules.ledger.register.find({"pnc": KIM["pnc"]}).periods[0].reason == "Core nominal"
    code, out = await cli(settings, "import", str(ok))  # again: nothing to do
    assert code == 0 and out[-1].startswith("nothing to change"), out


async def test_concurrent_changes_to_one_person_are_both_kept(live):
    settings, rules, _ = live
    env = {**os.environ, "PPO_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "PPO_TOPIC_PREFIX": settings.topic_prefix,
           "PPO_DIRECTORY_FILE": str(settings.directory_file)}
    base = [sys.executable, "-m", "ppo_alerts.cli", "register"]
    commands = [
        [*base, "update", SAM_NOMS, "--crn", "X123456", "--reason", "nDelius case", "--by", "coordinator A"],
        [*base, "move", SAM_NOMS, "--to-bcu", "13-LD", "--reason", "moved to Leeds", "--by", "coordinator B"],
        [*base, "update", ALEX_NOMS, "--cro", "123457/12V", "--by", "coordinator A"],
        [*base, "deselect", ALEX_NOMS, "--reason", "two_year_review", "--authority", "panel", "--by", "coordinator B"],
    ]
    procs = [await asyncio.create_subprocess_exec(*c, env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE,
                                                  stderr=asyncio.subprocess.PIPE) for c in commands]
    results = [await p.communicate() for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, (out.decode(), err.decode())
        assert b"applied:" in out
    register = await rc.read_register(settings)
    sam = register.find({"noms": SAM_NOMS})
    today = datetime.now(UTC).date()
    assert sam.identifiers["crn"] == "X123456" and sam.period_at(today).home_bcu == "13-LD"
    alex = register.find({"noms": ALEX_NOMS})
    assert alex.identifiers["cro"] == "123457/12V" and alex.period_at(today) is None
    live_sam = rules.ledger.register.find({"crn": "X123456"})
    assert live_sam is not None and live_sam.period_at(today).home_bcu == "13-LD"
    # C5: the receiving BCU's coordinator is told of the move.
    assert any(o.rule == "C5" and o.person and o.person.noms == SAM_NOMS
               for o in rules.ledger.obligations.values())

    # A true race, in one process: both commands read the same register before either change is applied, then
    # both publish. A read-modify-write of the snapshot would lose one; events applied in turn keep both.
    code, out = await cli(settings, "select", "--pnc", KIM["pnc"], "--bcu", "21-ST", "--wait", "20")
    assert code == 0, out
    (c1, o1), (c2, o2) = await asyncio.gather(
        cli(settings, "update", KIM["pnc"], "--noms", KIM["noms"], "--by", "A", "--wait", "20"),
        cli(settings, "move", KIM["pnc"], "--to-bcu", "13-LD", "--by", "B", "--wait", "20"))
    assert (c1, c2) == (0, 0), (o1, o2)
    kim = (await rc.read_register(settings)).find({"pnc": KIM["pnc"]})
    assert kim.identifiers["noms"] == KIM["noms"] and kim.period_at(today).home_bcu == "13-LD"


async def test_coordinator_http_route_is_applied_and_agency_tokens_are_refused(live):
    settings, rules, client = live
    body = {"person": {"pnc": KIM["pnc"], "noms": KIM["noms"], "given_name": "Kim"}, "home_bcu": "21-ST",
            "strand": "deter", "reason": "PYO", "authority": "Head of YOS"}
    r = await client.post("/v1/register/select", json=body, headers={"Authorization": "Bearer court-token"})
    assert r.status_code == 403
    started = time.monotonic()
    r = await client.post("/v1/register/select", json=body, headers={"Authorization": "Bearer coord-token"})
    assert r.status_code == 202, r.text
    took = await wait_for(lambda: rules.ledger.register.find({"noms": KIM["noms"]}) is not None,
                          what="HTTP selection applied")
    print(f"\n[register timing] HTTP select: 202 in {time.monotonic() - started - took:.2f} s, applied by rules "
          f"{took:.2f} s after")
    clash = {**body, "person": {"pnc": KIM["pnc"], "noms": "Z9999ZZ"}}
    r = await client.post("/v1/register/select", json=clash, headers={"Authorization": "Bearer coord-token"})
    assert r.status_code == 409 and "whose NOMS is B2222CD, not Z9999ZZ" in r.json()["error"]
    await wait_for(lambda: metric("ppo_register_people", bcu="21-ST", strand="deter") == 2, what="Sam and Kim")


async def test_directory_is_reloaded_live_and_a_broken_file_is_refused(live):
    settings, rules, client = live
    path = Path(settings.directory_file)
    loaded = metric("ppo_directory_reloads_total", result="loaded")
    refused = metric("ppo_directory_reloads_total", result="refused")
    changed = json.loads(json.dumps(DIRECTORY))
    changed["bcus"]["13-LD"]["contacts"]["ppo"] = ["leeds.ppo.team@westyorkshire.police.uk"]
    del changed["bcus"]["21-ST"]["contacts"]["yot"]
    path.write_text(yaml.safe_dump(changed))
    took = await wait_for(lambda: metric("ppo_directory_reloads_total", result="loaded") > loaded,
                          what="directory reloaded")
    assert metric("ppo_directory_missing_contacts", bcu="21-ST", role="yot") == 1
    assert metric("ppo_directory_missing_contacts", bcu="13-LD", role="yot") == 0
    await post_event(client, reception({"noms": ALEX_NOMS}, "alex-1"))
    await wait_for(lambda: len(a1_for(rules, ALEX_NOMS)) == 1, what="A1 for Alex")
    assert "leeds.ppo.team@westyorkshire.police.uk" in a1_for(rules, ALEX_NOMS)[0].recipients

    broken = json.loads(json.dumps(changed))
    broken["bcus"]["13-LD"]["contacts"]["ppo"] = ["leeds@gmail.com"]
    path.write_text(yaml.safe_dump(broken))
    await wait_for(lambda: metric("ppo_directory_reloads_total", result="refused") > refused,
                   what="broken directory refused")
    assert rules.directory.contacts("13-LD", "ppo") == ["leeds.ppo.team@westyorkshire.police.uk"]
    print(f"\n[directory] file changed -> in force {took:.2f} s (poll every {settings.directory_reload_s} s)")

    # `ppo-alerts directory check` says the same, against the register on Kafka.
    out: list[str] = []
    args = build_parser().parse_args(["directory", "check", str(path)])
    assert await rc.run_directory(args, settings, out=out.append) == rc.EXIT_REFUSED
    assert out[0].startswith("REFUSED:") and "gmail.com" in out[0]
    path.write_text(yaml.safe_dump(changed))
    out.clear()
    assert await rc.run_directory(args, settings, out=out.append) == 0
    assert any("BCU 21-ST has 1 PPO(s) and has no yot contact" in line for line in out), out
    strict = build_parser().parse_args(["directory", "check", str(path), "--strict"])
    assert await rc.run_directory(strict, settings, out=out.append) == rc.EXIT_REFUSED


async def test_read_only_commands_read_the_register_topic(live, tmp_path):
    settings, _, _ = live
    code, out = await cli(settings, "list", "--bcu", "13-LD")
    assert code == 0 and out[0].startswith("person_id,") and len(out[0].splitlines()) == 2  # header + Alex
    code, out = await cli(settings, "show", "L112233")
    assert code == 0 and "pnc:2006/0777001G (Alex Sample)" in out[0]
    exported = tmp_path / "export.csv"
    code, _ = await cli(settings, "export", "--out", str(exported))
    assert code == 0
    assert sorted(Register.load(exported).to_csv_text().splitlines()) == sorted(
        (await rc.read_register(settings)).to_csv_text().splitlines())
    code, out = await cli(settings, "quarterly", "--year", "2025", "--quarter", "4")
    rows = out[0].splitlines()
    assert rows[0] == ",".join(rc.QUARTERLY_COLUMNS) and len(rows) == 3  # Pat removed, Sam added
