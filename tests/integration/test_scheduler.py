"""The scheduler on a real Kafka broker (and, where mail is the point, the notifier and a real SMTP server).

APScheduler runs on the wall clock, so timers here are a few seconds away; the acknowledgement window is injected
(`WatchPolicy.acknowledge_by`) rather than four working hours. C6 is driven through `fire_list_review` directly:
waiting for 09:00 on the first working day of a month is not the point. Kill -9, restarts and two instances are in
test_scheduler_failover.py.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import yaml

from ppo_alerts.runner import start_services, stop_services
from services.notifier.render import reference_for
from services.rules.rulebook import RuleBook, RuleTimings
from services.scheduler.digest import digest_at
from services.scheduler.main import SchedulerBusy, rebuild
from services.scheduler.service import SchedulerService
from services.scheduler.store import DIGEST_JOB, LIST_REVIEW_JOB
from services.scheduler.watch import ESCALATED, WatchPolicy
from shared import calendar as cal
from shared.ack import ack_secret, link
from shared.clock import SystemClock
from shared.directory import Directory
from shared.http import HttpServer, build_app
from shared.kafka import dumps, ensure_topics, make_broker, read_to_end
from shared.obligations import NotificationRequest, Obligation
from shared.register import Register
from shared.service import RunningService
from shared.settings import Settings
from shared.topics import Topics
from tests.rulebook_fixtures import ALEX, DIRECTORY, REGISTER_CSV, event, make_ledger
from tests.smtp_server import LoopbackSmtpServer

pytestmark = [pytest.mark.kafka]

LEEDS_PPO = "leeds.ppo@westyorkshire.police.uk"
LEEDS_PROBATION = "leeds.iom@justice.gov.uk"
LEEDS_DUTY = "leeds.duty@westyorkshire.police.uk"
STOKE_DUTY = "stoke.duty@staffordshire.police.uk"


# --- helpers ------------------------------------------------------------------------------------------------


async def wait_for(predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"condition not met in {timeout} s: {what}")


async def values(settings: Settings, topic: str) -> list[bytes]:
    return [v for _, v in await read_to_end(settings, topic) if v]


async def requests_by_id(settings: Settings) -> Counter[str]:
    found = [NotificationRequest.model_validate_json(v) for v in await values(settings, Topics(
        settings.topic_prefix).notifications)]
    return Counter(r.obligation.obligation_id for r in found)


async def latest_states(settings: Settings) -> dict[str, Obligation]:
    out: dict[str, Obligation] = {}
    for v in await values(settings, Topics(settings.topic_prefix).obligations):
        o = Obligation.model_validate_json(v)
        out[o.obligation_id] = o
    return out


def timed(obligation_id: str, send_in: float, rule: str = "A4", bcu: str = "13-LD", notify_in: float | None = None,
          recipients: tuple[str, ...] = (LEEDS_PPO,)) -> Obligation:
    now = datetime.now(UTC)
    send_at = now + timedelta(seconds=send_in)
    notify_by = now + timedelta(seconds=notify_in) if notify_in is not None else send_at + timedelta(minutes=15)
    return Obligation(obligation_id=obligation_id, rule=rule, source_paragraph="001 §7.5", person=None, bcu=bcu,
                      recipients=list(recipients), recipient_roles={r: "ppo" for r in recipients},
                      send_at=send_at, notify_by=notify_by, raised_at=now if send_in > 0 else send_at,
                      facts={"rule_title": "test"})


def new_id(rule: str = "A4") -> str:
    return f"{rule}-{uuid.uuid4().hex[:24]}"


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self.broker = make_broker(settings, "test-publisher")
        self.topics = Topics(settings.topic_prefix)

    async def obligation(self, o: Obligation) -> None:
        await self.broker.publish(dumps(o), self.topics.obligations, key=o.obligation_id.encode())


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    register = tmp_path / "register.csv"
    register.write_text(REGISTER_CSV)
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    return register, directory


@pytest.fixture
def smtp() -> Any:
    server = LoopbackSmtpServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def settings(kafka_bootstrap: str, files: tuple[Path, Path], smtp: Any, tmp_path: Path) -> Settings:
    register, directory = files
    s = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"s{uuid.uuid4().hex[:8]}", directory_file=directory,
        register_file=register, state_dir=tmp_path / "state", intake_allow_anonymous=True,
        intake_port=0, rules_port=0, scheduler_port=0, notifier_port=0,
        smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_tls_mode="plain", smtp_allow_plaintext=True,
        scheduler_lease_ttl_s=3.0, scheduler_deadline_grace_s=1.0,
    )
    await ensure_topics(s, Topics(s.topic_prefix))
    return s


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[Publisher]:
    p = Publisher(settings)
    await p.broker.connect()
    try:
        yield p
    finally:
        await p.broker.stop()


async def start_scheduler(settings: Settings, policy: WatchPolicy | None = None,
                          timings: RuleTimings | None = None) -> tuple[RunningService, SchedulerService]:
    broker = make_broker(settings, "ppo-scheduler")
    service = SchedulerService(settings, broker, SystemClock(), timings=timings, policy=policy)
    running = RunningService("scheduler", broker, HttpServer(build_app("scheduler", lambda: service.ready),
                                                             "127.0.0.1", 0),
                             after_broker=service.start, on_stop=[service.stop])
    await running.start()
    return running, service


@pytest.fixture
async def scheduler(settings: Settings) -> AsyncIterator[SchedulerService]:
    running, service = await start_scheduler(settings, WatchPolicy(deadline_grace=timedelta(seconds=1)))
    try:
        yield service
    finally:
        await running.stop()


# --- timers -------------------------------------------------------------------------------------------------


async def test_a_timed_obligation_fires_once_at_its_time(settings: Settings, publisher: Publisher,
                                                         scheduler: SchedulerService):
    assert scheduler.role == "active"
    o = timed(new_id(), send_in=3.0)
    await publisher.obligation(o)
    await publisher.obligation(o)  # the same record again (a replay): still one job, one request
    await wait_for(lambda: scheduler.store.get(o.obligation_id) is not None, what="tracked")
    job = scheduler.scheduler.get_job(o.obligation_id)  # type: ignore[union-attr]
    assert job is not None and job.next_run_time == o.send_at and job.args == (o.obligation_id,)
    await asyncio.sleep(1.0)
    assert (await requests_by_id(settings))[o.obligation_id] == 0  # not early
    await wait_for(lambda: _has_request(settings, o.obligation_id), what="fired")
    await asyncio.sleep(1.5)
    requests = [NotificationRequest.model_validate_json(v) for v in await values(settings, f"{settings.topic_prefix}"
                                                                                          ".notifications")]
    assert len(requests) == 1
    assert o.send_at <= requests[0].requested_at < o.send_at + timedelta(seconds=2)
    state = (await latest_states(settings))[o.obligation_id]
    assert [h.what for h in state.history] == ["sent for delivery by the scheduler"]  # on time: not "late"


async def _has_request(settings: Settings, obligation_id: str) -> bool:
    return (await requests_by_id(settings))[obligation_id] > 0


def _shifted(o: Obligation, send_in: float) -> Obligation:
    """A rules-service A4 obligation with its instants moved to a few seconds from now (APScheduler is wall-clock)."""
    send_at = datetime.now(UTC) + timedelta(seconds=send_in)
    return o.model_copy(update={"send_at": send_at, "notify_by": send_at + timedelta(minutes=15),
                                "raised_at": datetime.now(UTC)})


async def test_release_date_moved_earlier_later_or_withdrawn_gives_one_notice_or_none(
        settings: Settings, publisher: Publisher, scheduler: SchedulerService):
    r = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)

    def release_date_set(ledger: Any, release: str | None, occurred: str) -> Any:
        return ledger.on_event(event("prison.release_date_set", ALEX, occurred, prison_id="LEI",
                                     release_date=release, kind="crd"), r)

    expected: dict[str, int] = {}
    # Moved earlier: the first notice (due in 6 s) is cancelled, the replacement is due in 3 s.
    ledger = make_ledger()
    first = _shifted(release_date_set(ledger, "2027-08-03", "2026-11-01T09:00:00Z").raised[0], 6.0)
    moved = release_date_set(ledger, "2027-07-14", "2026-11-01T09:05:00Z")
    earlier = _shifted(moved.raised[0], 3.0)
    for o in (first, *moved.cancelled, earlier):
        await publisher.obligation(o)
    expected |= {first.obligation_id: 0, earlier.obligation_id: 1}
    # Moved later: the first (due in 4 s) is cancelled, the replacement is due in 7 s.
    ledger = make_ledger()
    first = _shifted(release_date_set(ledger, "2027-07-20", "2026-11-01T09:00:00Z").raised[0], 4.0)
    moved = release_date_set(ledger, "2027-09-01", "2026-11-01T09:05:00Z")
    later = _shifted(moved.raised[0], 7.0)
    for o in (first, *moved.cancelled, later):
        await publisher.obligation(o)
    expected |= {first.obligation_id: 0, later.obligation_id: 1}
    # Withdrawn: the notice due in 4 s is cancelled; nothing replaces it.
    ledger = make_ledger()
    first = _shifted(release_date_set(ledger, "2027-10-05", "2026-11-01T09:00:00Z").raised[0], 4.0)
    withdrawn = release_date_set(ledger, None, "2026-11-01T09:05:00Z")
    assert withdrawn.raised == [] and len(withdrawn.cancelled) == 1
    for o in (first, *withdrawn.cancelled):
        await publisher.obligation(o)
    expected |= {first.obligation_id: 0}

    await asyncio.sleep(9.0)
    counts = await requests_by_id(settings)
    assert {oid: counts[oid] for oid in expected} == expected
    assert sum(counts.values()) == 2


# --- deadlines and escalation (with the notifier and a real SMTP server) --------------------------------------


@pytest.fixture
async def notifier(settings: Settings) -> AsyncIterator[list[RunningService]]:
    running = await start_services(["notifier"], settings, SystemClock())
    try:
        yield running
    finally:
        await stop_services(running)


def escalation_mails(smtp: Any, to: str = LEEDS_DUTY) -> list[Any]:
    return [m for m in smtp.messages if to in m.rcpt_tos]


async def test_a_breached_obligation_is_escalated_once_with_its_history(
        settings: Settings, publisher: Publisher, scheduler: SchedulerService, notifier: Any, smtp: Any):
    # Raised, requested (by no one: the notifier never gets it), and its notify-by passes in 2 s.
    o = timed(new_id("A1"), send_in=0.0, rule="A1", notify_in=2.0)
    await publisher.obligation(o)
    await wait_for(lambda: len(escalation_mails(smtp)) >= 1, what="escalation mail")
    state = (await latest_states(settings))[o.obligation_id]
    assert state.status == "breached"
    assert any(h.what.startswith(f"{ESCALATED}: breached") for h in state.history)
    body = escalation_mails(smtp)[0].message.get_body(preferencelist=("plain",)).get_content()
    assert "breached" in body and "History" in body
    # The notifier's own copy, accepted late, arrives later without the escalation entry: no second escalation,
    # and the scheduler puts the whole state back on the topic.
    late = o.model_copy(deep=True)
    late.record_acceptance(datetime.now(UTC))
    await publisher.obligation(late)
    await publisher.obligation(o)  # and a stale redelivery of the first record
    await asyncio.sleep(3.0)
    assert len(escalation_mails(smtp)) == 1
    assert len(await values(settings, f"{settings.topic_prefix}.escalations")) == 1
    state = (await latest_states(settings))[o.obligation_id]
    assert state.status == "breached" and state.notified_at is not None
    assert any(h.what.startswith(ESCALATED) for h in state.history)


@pytest.fixture
async def stack(settings: Settings, smtp: Any) -> AsyncIterator[tuple[httpx.AsyncClient, SchedulerService]]:
    """intake, rules and notifier as `ppo-alerts run` builds them; the scheduler with a 5-second window for
    acknowledgements instead of four working hours."""
    running = await start_services(["intake", "rules", "notifier"], settings, SystemClock())
    policy = WatchPolicy(deadline_grace=timedelta(seconds=1), acknowledge_by=lambda t, _: t + timedelta(seconds=5))
    sched_running, service = await start_scheduler(settings, policy)
    intake = next(s for s in running if s.name == "intake")
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{intake.http.port}", timeout=30)
    try:
        yield client, service
    finally:
        await client.aclose()
        await sched_running.stop()
        await stop_services(running)


def reception(noms: str, at: str = "2026-11-23T09:00:00Z") -> dict[str, Any]:
    return {"id": f"t-{uuid.uuid4().hex[:10]}", "type": "prison.reception", "occurred_at": at, "source": "TEST",
            "person": {"noms": noms}, "data": {"prison_id": "LEI", "reason": "new"}}


def ack_link_in(mail: Any) -> str:
    body = mail.message.get_body(preferencelist=("plain",)).get_content()
    found = re.search(r"https?://\S+/ack\?\S+", body)
    assert found, body
    return found.group(0)


async def test_failure_is_escalated_at_once_and_once(settings: Settings, stack: Any, smtp: Any, publisher: Publisher):
    client, _ = stack
    smtp.refuse_recipient(LEEDS_PPO)
    smtp.refuse_recipient(LEEDS_PROBATION)
    assert (await client.post("/v1/events", json=reception("G1234HJ"))).status_code == 202
    await wait_for(lambda: len(escalation_mails(smtp)) >= 1, what="escalation of the failure")
    states = [o for o in (await latest_states(settings)).values() if o.rule == "A1"]
    assert len(states) == 1 and states[0].status == "failed"
    assert any(h.what.startswith(f"{ESCALATED}: failed") for h in states[0].history)
    await publisher.obligation(states[0])  # the failed record again (a replay)
    await asyncio.sleep(3.0)
    assert len(escalation_mails(smtp)) == 1
    mail = escalation_mails(smtp)[0].message
    assert mail["X-PPO-Obligation"] == f"{states[0].obligation_id}#escalation"
    ref = reference_for(f"{states[0].obligation_id}#escalation", "A1")
    assert mail["Subject"] == f"OFFICIAL-SENSITIVE: PPO alert escalation, ref {ref}"


async def test_acknowledgement_stops_escalation_and_a_forged_link_does_nothing(settings: Settings, stack: Any,
                                                                              smtp: Any):
    client, scheduler = stack
    assert (await client.post("/v1/events", json=reception("G1234HJ"))).status_code == 202  # Alex, Leeds
    assert (await client.post("/v1/events", json=reception("H2345JK"))).status_code == 202  # Sam, Stoke
    await wait_for(lambda: len([m for m in smtp.messages if m.message["X-PPO-Rule"] == "A1"]) >= 4, what="A1 mails")
    alex_ppo = next(m for m in smtp.messages if LEEDS_PPO in m.rcpt_tos)
    sam_ppo = next(m for m in smtp.messages if "stoke.ppo@staffordshire.police.uk" in m.rcpt_tos)
    good = ack_link_in(alex_ppo)
    assert good.startswith(settings.public_base_url + "/ack?")
    # Forged links for Sam's notice: another recipient, a later expiry, a made-up signature, another key.
    sam = {k: v[0] for k, v in parse_qs(urlsplit(ack_link_in(sam_ppo)).query).items()}
    key = ack_secret(settings)
    forged = [
        ({**sam, "r": "stoke.duty@staffordshire.police.uk"}, 403),
        ({**sam, "e": str(int(sam["e"]) + 86400)}, 403),
        ({**sam, "s": "0" * 64}, 403),
        ({k: v[0] for k, v in parse_qs(urlsplit(link("http://x", b"y" * 40, sam["o"], sam["r"],
                                                     int(sam["e"]))).query).items()}, 403),
        ({**sam, "s": "not-hex"}, 400),
        ({k: v[0] for k, v in parse_qs(urlsplit(link("http://x", key, sam["o"], sam["r"], 1_700_000_000))
                                       .query).items()}, 410),  # ours, but expired
    ]
    for query, status in forged:
        response = await client.get("/ack?" + urlencode(query))
        assert response.status_code == status, (query, response.text)
        assert "recorded" not in response.text.lower() or "nothing has been recorded" in response.text.lower()
        assert "PPO" not in response.text
    genuine_sam = urlsplit(ack_link_in(sam_ppo))
    assert (await client.head(genuine_sam.path + "?" + genuine_sam.query)).status_code == 200  # a link scanner
    # A link scanner (or a person) fetching the link gets a page with a button and records nothing
    for _ in range(3):
        page = await client.get(urlsplit(good).path + "?" + urlsplit(good).query)
        assert page.status_code == 200 and 'method="post"' in page.text and "PPO" not in page.text
    assert page.headers["cache-control"] == "no-store" and "frame-ancestors 'none'" in page.headers[
        "content-security-policy"]
    assert await values(settings, f"{settings.topic_prefix}.acknowledgements") == []
    # the button posts the four signed values; a forged post records nothing either
    signed = {k: v[0] for k, v in parse_qs(urlsplit(good).query).items()}
    assert (await client.post("/ack", data={**signed, "s": "0" * 64})).status_code == 403
    response = await client.post("/ack", data=signed)
    assert response.status_code == 200 and "Acknowledged" in response.text and "PPO" not in response.text
    again = await client.post("/ack", data=signed)  # pressed twice: intake publishes once
    assert again.status_code == 200 and "Already acknowledged" in again.text
    acks = await values(settings, f"{settings.topic_prefix}.acknowledgements")
    assert len(acks) == 1 and b'"recipient":"leeds.ppo@westyorkshire.police.uk"' in acks[0]
    # Sam's notice: nobody acknowledged it (forged links, and a HEAD of the real one): escalated, once, after the
    # 5-second window.
    await wait_for(lambda: len(escalation_mails(smtp, STOKE_DUTY)) == 1, timeout=20, what="Sam's escalation")
    await asyncio.sleep(3.0)
    assert len(escalation_mails(smtp, STOKE_DUTY)) == 1
    assert escalation_mails(smtp, LEEDS_DUTY) == []  # Alex's was acknowledged in time
    states = {o.person.noms if o.person else None: o for o in (await latest_states(settings)).values()
              if o.rule == "A1"}
    assert states["G1234HJ"].status == "acknowledged"
    assert [h.what for h in states["G1234HJ"].history].count(f"acknowledged by {LEEDS_PPO}") == 1
    assert states["H2345JK"].status == "notified"
    assert any(h.what.startswith(f"{ESCALATED}: not acknowledged") for h in states["H2345JK"].history)
    assert scheduler.scheduler.get_job(states["G1234HJ"].obligation_id) is None  # type: ignore[union-attr]


# --- C6 and the store ---------------------------------------------------------------------------------------


async def publish_register(settings: Settings, publisher: Publisher) -> None:
    for entry in Register.from_csv_text(REGISTER_CSV).entries():
        await publisher.broker.publish(dumps(entry.to_dict()), Topics(settings.topic_prefix).register,
                                       key=entry.person_id.encode())


async def test_list_review_lists_each_bcus_ppos_once_and_schedules_the_next(settings: Settings,
                                                                            publisher: Publisher):
    await publish_register(settings, publisher)
    started = datetime.now(UTC)
    running, service = await start_scheduler(settings)
    try:
        book = RuleBook(Register(), Directory.from_mapping(DIRECTORY))
        job = service.scheduler.get_job(LIST_REVIEW_JOB)  # type: ignore[union-attr]
        at, period = book.list_review_at(started)  # the calendar begins when the system starts
        assert job is not None and job.next_run_time == at and job.args == (at.isoformat(), period)
        assert at > started

        await service.fire_list_review(at, period)
        await service.fire_list_review(at, period)  # again (a job re-run after a crash): nothing new
        reviews = {o.bcu: o for o in (await latest_states(settings)).values() if o.rule == "C6"}
        assert set(reviews) == {"13-LD", "21-ST"}
        leeds = reviews["13-LD"]
        assert leeds.person is None and leeds.send_at == at and leeds.recipients == [
            "leeds.iom.coord@westyorkshire.police.uk"]
        assert [p["family_name"] for p in leeds.facts["ppos"]] == ["Sample"]  # Pat was de-selected in 2025
        assert [p["family_name"] for p in reviews["21-ST"].facts["ppos"]] == ["Junior"]
        counts = await requests_by_id(settings)
        assert {counts[o.obligation_id] for o in reviews.values()} == {1}
        nxt = service.scheduler.get_job(LIST_REVIEW_JOB)  # type: ignore[union-attr]
        assert nxt is not None and nxt.next_run_time == book.list_review_at(at)[0]
    finally:
        await running.stop()


async def test_list_review_can_be_quarterly(settings: Settings):
    quarterly = settings.model_copy(update={"scheduler_list_review_every_months": 3})
    running, service = await start_scheduler(quarterly)
    try:
        job = service.scheduler.get_job(LIST_REVIEW_JOB)  # type: ignore[union-attr]
        assert job is not None and job.next_run_time.month in (1, 4, 7, 10)
        day = job.next_run_time.astimezone(UTC).date()
        assert day.day <= 4 and date(day.year, day.month, 1) <= day
    finally:
        await running.stop()


async def test_the_store_is_rebuilt_from_the_topic_when_missing_and_on_demand(settings: Settings,
                                                                              publisher: Publisher):
    waiting = timed(new_id(), send_in=3600.0)
    done = timed(new_id(), send_in=0.0)  # a timed rule's notice, sent: nothing more to watch
    done.record_acceptance(done.send_at)
    for o in (waiting, done):
        await publisher.obligation(o)
    running, service = await start_scheduler(settings)  # a new state dir: the store is missing
    try:
        assert service.store.meta_get("built_at") is not None
        assert service.store.get(waiting.obligation_id) == waiting
        assert service.scheduler.get_job(waiting.obligation_id) is not None  # type: ignore[union-attr]
        with pytest.raises(SchedulerBusy, match="stop it first"):
            await rebuild(settings, SystemClock())  # refused while an instance is active
    finally:
        await running.stop()
    assert await rebuild(settings, SystemClock()) == 2
    running, service = await start_scheduler(settings)
    try:
        job = service.scheduler.get_job(waiting.obligation_id)  # type: ignore[union-attr]
        assert job is not None and job.next_run_time == waiting.send_at
        assert service.scheduler.get_job(done.obligation_id) is None  # type: ignore[union-attr]
    finally:
        await running.stop()
    (settings.state_dir / "scheduler-jobs.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (settings.state_dir / f"scheduler-jobs.sqlite{suffix}").unlink(missing_ok=True)
    running, service = await start_scheduler(settings)
    try:
        assert service.store.get(waiting.obligation_id) == waiting
    finally:
        await running.stop()


# --- D2: the weekly custody digest ---------------------------------------------------------------------------


async def publish_events(settings: Settings, publisher: Publisher, *events: Any) -> None:
    for e in events:
        await publisher.broker.publish(dumps(e), Topics(settings.topic_prefix).events,
                                       key=(e.person.noms or "").encode())


async def test_custody_digest_lists_each_bcus_ppos_in_custody_with_days_to_release(
        settings: Settings, publisher: Publisher, notifier: Any, smtp: Any):
    await publish_register(settings, publisher)
    now = datetime.now(UTC)
    released_on = (now + timedelta(days=40)).date()
    ago = (now - timedelta(days=3)).isoformat()
    # On the events topic before the scheduler starts (read from the beginning on becoming active): Alex received
    # into Leeds (HMP Leeds), Sam (Stoke) received and bailed, Pat (de-selected) received.
    await publish_events(
        settings, publisher,
        event("prison.reception", {"noms": "G1234HJ"}, ago, prison_id="LEI", reason="new"),
        event("prison.reception", {"noms": "H2345JK"}, ago, prison_id="WYI", reason="remand"),
        event("prison.release", {"noms": "H2345JK"}, (now - timedelta(days=1)).isoformat(), prison_id="WYI",
              reason="bail"),
        event("prison.reception", {"noms": "J3456KL"}, ago, prison_id="LEI", reason="new"))
    started = datetime.now(UTC)
    running, service = await start_scheduler(settings)
    try:
        assert service.custody.state("noms:G1234HJ") is not None  # the full picture on becoming active
        job = service.scheduler.get_job(DIGEST_JOB)  # type: ignore[union-attr]
        at = digest_at(started, settings.scheduler_digest_weekday)  # the calendar begins when the system starts
        assert job is not None and job.next_run_time == at and job.args == (at.isoformat(),)
        # Followed live: Alex's release date, set after the scheduler started.
        await publish_events(settings, publisher, event(
            "prison.release_date_set", {"noms": "G1234HJ"}, (now - timedelta(days=2)).isoformat(), prison_id="LEI",
            release_date=released_on.isoformat(), kind="crd"))
        await wait_for(lambda: service.custody.state("noms:G1234HJ").release_date == released_on,  # type: ignore
                       what="release date folded into the custody book")

        await service.fire_digest(at)
        await service.fire_digest(at)  # again (a job re-run after a crash): nothing new
        digests = {o.bcu: o for o in (await latest_states(settings)).values() if o.rule == "D2"}
        assert set(digests) == {"13-LD", "21-ST"}
        leeds, stoke = digests["13-LD"], digests["21-ST"]
        assert leeds.person is None and leeds.send_at == at
        assert leeds.recipient_roles == {"leeds.iom.coord@westyorkshire.police.uk": "coordinator", LEEDS_PPO: "ppo"}
        assert [(r["person_name"], r["prison"], r["release_date"]) for r in leeds.facts["rows"]] == [
            ("Alex SAMPLE", "LEI", released_on.isoformat())]  # Pat in custody too, but no longer a PPO
        assert stoke.facts["rows"] == []  # Sam was released
        counts = await requests_by_id(settings)
        assert {counts[o.obligation_id] for o in digests.values()} == {1}
        nxt = service.scheduler.get_job(DIGEST_JOB)  # type: ignore[union-attr]
        assert nxt is not None and nxt.next_run_time == digest_at(at, settings.scheduler_digest_weekday)

        def digest_mails(to: str) -> list[Any]:
            return [m for m in smtp.messages if to in m.rcpt_tos and m.message["X-PPO-Rule"] == "D2"]

        await wait_for(lambda: digest_mails(LEEDS_PPO) and digest_mails("stoke.ppo@staffordshire.police.uk"),
                       what="digest mails")
        mail = digest_mails(LEEDS_PPO)[0].message
        [attachment] = list(mail.iter_attachments())
        assert attachment.get_content_type() == "text/csv"
        today = cal.london_date(at)
        assert attachment.get_filename() == f"custody-countdown-13-LD-{today.isoformat()}.csv"
        text = attachment.get_payload(decode=True).decode("utf-8-sig")
        lines = text.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith("days_to_release,")
        assert lines[1].startswith(f"{(released_on - today).days},{released_on.isoformat()},")
        assert "G1234HJ" in lines[1] and "J3456KL" not in text
        await asyncio.sleep(1.0)
        assert len(digest_mails(LEEDS_PPO)) == 1
    finally:
        await running.stop()
