"""No personal data in logs or metrics, end to end on the real stack.

All four services run in this process on a real Kafka broker with a real SMTP server on loopback, as in
test_pipeline_e2e.py. A person on the register is sent through every kind of input (canonical events that raise
immediate and timed obligations, an HMPPS event, invalid payloads that are refused and dead-lettered, a person
who is not on the register), with names and a date of birth in the payloads. Every log record of every logger,
at DEBUG, is captured as the JSON line our formatter writes, with its message and arguments; every service's
/metrics is scraped. None of them may contain the person's names, date of birth in any common format, or any of
their identifiers (PNC, CRO, NOMS, CRN, in any form): logs carry event and obligation ids only, and metric
labels are bounded (rule, outcome, reason...). The emails themselves name the person: that is their purpose.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from ppo_alerts.runner import SERVICES, start_services, stop_services
from shared.clock import SystemClock
from shared.identifiers import check_letter
from shared.logs import JsonFormatter, NoPayloadEcho
from shared.settings import Settings
from tests.rulebook_fixtures import DIRECTORY
from tests.smtp_server import LoopbackSmtpServer

pytestmark = [pytest.mark.kafka, pytest.mark.smtp]

GIVEN, FAMILY = "Zephyrine", "Quillfeather"
DOB = date(1991, 7, 23)
PNC = f"1991/0482117{check_letter(910482117)}"
PNC_SHORT = f"91/482117{check_letter(910482117)}"
CRO = f"048211/91{check_letter(91048211)}"
NOMS, CRN = "X4821QZ", "T654321"
NOT_ON_REGISTER = {"noms": "Y7777WV", "given_name": "Ottoline", "family_name": "Marchbanks",
                   "date_of_birth": "1985-02-11"}


def needles() -> list[str]:
    """Every form in which this person's data could leak."""
    d = DOB
    dates = {d.isoformat(), d.strftime("%d/%m/%Y"), f"{d.day}/{d.month}/{d.year}", d.strftime("%d-%m-%Y"),
             d.strftime("%d.%m.%Y"), d.strftime("%Y%m%d"), d.strftime("%d%m%Y"), d.strftime("%d %B %Y"),
             f"{d.day} {d:%B} {d.year}", d.strftime("%d %b %Y"), d.strftime("%B %d, %Y"), d.strftime("%m/%d/%Y"),
             d.strftime("%Y/%m/%d"), d.strftime("%d/%m/%y")}
    ids = {PNC, PNC_SHORT, PNC.replace("/", ""), PNC.split("/")[1], CRO, CRO.split("/")[0], NOMS, CRN}
    other = NOT_ON_REGISTER
    return sorted({GIVEN, FAMILY, f"{GIVEN} {FAMILY}", *dates, *ids, other["noms"], other["given_name"],
                   other["family_name"], other["date_of_birth"]})


def person() -> dict[str, str]:
    return {"pnc": PNC_SHORT, "noms": NOMS, "given_name": GIVEN, "family_name": FAMILY,
            "date_of_birth": DOB.isoformat()}


def canonical(kind: str, data: dict, who: dict | None = None, minutes_ago: int = 5) -> dict:
    at = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()
    return {"id": f"npd-{uuid.uuid4().hex[:12]}", "type": kind, "occurred_at": at, "source": "TEST",
            "person": who or person(), "data": data}


def hmpps_received() -> dict:
    at = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    return {"eventType": "prisoner-offender-search.prisoner.received", "version": 1, "occurredAt": at,
            "publishedAt": at, "description": "received",
            "additionalInformation": {"nomsNumber": NOMS, "prisonId": "LEI", "reason": "TRANSFERRED"},
            "personReference": {"identifiers": [{"type": "NOMS", "value": NOMS}]}}


class Capture(logging.Handler):
    """Every record that reaches the root logger, at DEBUG, as the services' handler writes it (same formatter,
    same filter: shared/logs.py configure_logging)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.formatter_ = JsonFormatter()
        self.addFilter(NoPayloadEcho())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.formatter_.format(record))
        except Exception as exc:  # noqa: BLE001 - a record that cannot be formatted is itself a finding
            self.lines.append(f"UNFORMATTABLE {record.name} {type(exc).__name__}")
        self.lines.append(repr(record.msg) + " " + repr(record.args))


@pytest.fixture
def captured_logs() -> Iterator[Capture]:
    root = logging.getLogger()
    handler = Capture()
    levels = {name: logging.getLogger(name).level for name in ("", "aiokafka", "faststream", "ppo", "uvicorn")}
    root.addHandler(handler)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
async def stack(kafka_bootstrap: str, tmp_path: Path, captured_logs: Capture):
    register = tmp_path / "register.csv"
    register.write_text(
        "pnc,cro,noms,crn,given_name,family_name,date_of_birth,home_bcu,strand,selected_on,reason,deselected_on\n"
        f"{PNC},{CRO},{NOMS},{CRN},{GIVEN},{FAMILY},{DOB.isoformat()},13-LD,catch_and_convict,2024-01-10,Core,\n")
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    smtp = LoopbackSmtpServer().start()
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}", directory_file=directory,
        register_file=register, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_tls_mode="plain",
        smtp_allow_plaintext=True, state_dir=tmp_path / "state", intake_allow_anonymous=True,
        intake_port=0, rules_port=0, scheduler_port=0, notifier_port=0, log_level="DEBUG",
    )
    running = await start_services(list(SERVICES), settings, SystemClock())
    intake = next(s for s in running if s.name == "intake")
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{intake.http.port}", timeout=30)
    try:
        yield settings, client, smtp, running, captured_logs
    finally:
        await client.aclose()
        await stop_services(running)
        smtp.stop()


async def wait_for(predicate, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.25)
    raise AssertionError("condition not met in time")


async def test_no_name_date_of_birth_or_identifier_in_logs_or_metrics(stack):
    settings, client, smtp, running, logs = stack
    release = (date.today() + timedelta(days=60)).isoformat()
    accepted = [
        canonical("prison.reception", {"prison_id": "LEI", "reason": "new"}),
        canonical("warrant.issued", {"warrant_id": "W-NPD-1", "court_code": "B01LY", "kind": "fta"}),
        canonical("court.bail_decision", {"court_code": "B01LY", "decision": "conditional_bail"}),
        canonical("prison.release_date_set", {"prison_id": "LEI", "release_date": release, "kind": "crd"}),
        [canonical("police.arrest", {}), hmpps_received()],
        canonical("prison.reception", {"prison_id": "LEI", "reason": "new"}, who=NOT_ON_REGISTER),
    ]
    for body in accepted:
        response = await client.post("/v1/events", json=body)
        assert response.status_code == 202, response.text
    refused = canonical("prison.reception", {"prison_id": "LEI", "reason": "holiday"})
    assert (await client.post("/v1/events", json=refused)).status_code == 422
    bad_person = canonical("prison.reception", {"prison_id": "LEI", "reason": "new"},
                           who={**person(), "pnc": PNC[:-1] + ("A" if PNC[-1] != "A" else "B")})
    assert (await client.post("/v1/events", json=bad_person)).status_code == 422
    not_json = f'{{"person": {{"given_name": "{GIVEN}", "family_name": "{FAMILY}", "noms": "{NOMS}"'.encode()
    assert (await client.post("/v1/events", content=not_json)).status_code == 400

    def immediate() -> list:
        return [m for m in smtp.messages if m.message["X-PPO-Rule"] in ("A1", "A2", "B1")]

    async def mail_sent() -> bool:
        return len(immediate()) >= 6  # A1, A2, B1: two recipients each

    await wait_for(mail_sent)
    texts = [m.message.get_body(preferencelist=("plain",)).get_content() for m in immediate()]
    assert all(FAMILY.lower() in t.lower() for t in texts)  # the messages name the person: their purpose

    async def scrape() -> str:
        out = []
        async with httpx.AsyncClient(timeout=10) as c:
            for service in running:
                out.append((await c.get(f"http://127.0.0.1:{service.http.port}/metrics")).text)
        return "\n".join(out)

    async def lag_reported() -> bool:
        text = await scrape()
        return f'topic="{settings.topic_prefix}.notifications"' in text and "ppo_consumer_lag{" in text

    await wait_for(lag_reported, timeout=60)
    await asyncio.sleep(1.0)
    metrics_text = await scrape()
    log_text = "\n".join(logs.lines)

    # The run did what it should, and said so in the logs and metrics (the checks below are not vacuous).
    assert "faststream_received_processed_messages_total{" in metrics_text
    assert 'ppo_deadlines_total{result="met",rule="A1"}' in metrics_text.replace(", ", ",")
    assert "event accepted" in log_text and "request handled" in log_text and "payload rejected" in log_text
    assert '"obligation_id": "A1-' in log_text and '"event_id": "npd-' in log_text
    assert len(logs.lines) > 50

    for needle in needles():
        for name, text in (("logs", log_text), ("metrics", metrics_text)):
            at = text.lower().find(needle.lower())
            assert at < 0, f"{needle!r} found in {name}: ...{text[max(0, at - 200):at + 100]}..."
    # Metric labels are bounded: no label value looks like an identifier, an address or an event id.
    for line in metrics_text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        labels = line[line.index("{"):line.rindex("}") + 1]
        assert "@" not in labels and "npd-" not in labels, line
    # Every JSON log line is one object, with an event or obligation id where it names one.
    for line in logs.lines[::2]:
        if line.startswith("{"):
            assert isinstance(json.loads(line), dict)
