"""`ppo-alerts report` and `ppo-alerts audit` against the real stack: events go in through HTTP intake, the
services raise and send the obligations over real Kafka and SMTP, and the reports read the topics back."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from ppo_alerts.cli import main as cli_main
from ppo_alerts.runner import SERVICES, start_services, stop_services
from shared.clock import LONDON, SystemClock
from shared.settings import Settings
from tests.rulebook_fixtures import DIRECTORY, REGISTER_CSV
from tests.smtp_server import LoopbackSmtpServer

pytestmark = [pytest.mark.kafka, pytest.mark.smtp]


@pytest.fixture
async def stack(kafka_bootstrap: str, tmp_path: Path):
    register = tmp_path / "register.csv"
    register.write_text(REGISTER_CSV)
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    smtp = LoopbackSmtpServer().start()
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}", directory_file=directory,
        register_file=register, smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_tls_mode="plain",
        smtp_allow_plaintext=True, state_dir=tmp_path / "state", intake_allow_anonymous=True,
        intake_port=0, rules_port=0, scheduler_port=0, notifier_port=0,
    )
    running = await start_services(list(SERVICES), settings, SystemClock())
    intake = next(s for s in running if s.name == "intake")
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{intake.http.port}", timeout=30)
    try:
        yield settings, client, smtp
    finally:
        await client.aclose()
        await stop_services(running)
        smtp.stop()


def event(kind: str, data: dict, noms: str = "G1234HJ") -> dict:
    at = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()
    return {"id": f"rep-{uuid.uuid4().hex[:10]}", "type": kind, "occurred_at": at, "source": "TEST",
            "person": {"noms": noms}, "data": data}


async def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, settings: Settings) -> tuple[int, str]:
    monkeypatch.setenv("PPO_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("PPO_TOPIC_PREFIX", settings.topic_prefix)
    out = io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out):
            return cli_main(argv)

    code = await asyncio.to_thread(call)  # the CLI runs its own event loop
    return code, out.getvalue()


async def test_reports_and_audit_read_what_the_services_did(stack, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path):
    settings, client, smtp = stack
    for body in (event("prison.reception", {"prison_id": "LEI", "reason": "new"}),
                 event("warrant.issued", {"warrant_id": "W-REP-1", "court_code": "B01LY", "kind": "fta"})):
        assert (await client.post("/v1/events", json=body)).status_code == 202
    deadline = time.monotonic() + 45
    while sum(m.message["X-PPO-Rule"] in ("A1", "A2") for m in smtp.messages) < 4:
        assert time.monotonic() < deadline, "the emails did not arrive"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)  # the notifier publishes the outcomes and the new state after sending

    today = datetime.now(UTC).astimezone(LONDON).date().isoformat()
    code, text = await run_cli(["report", "timeliness", "--from", today, "--to", today], monkeypatch, settings)
    assert code == 0
    rows = {r["rule"]: r for r in csv.DictReader(io.StringIO(text))}
    assert (rows["A1"]["total"], rows["A1"]["on_time"]) == ("1", "1")
    assert (rows["A2"]["total"], rows["A2"]["on_time"]) == ("1", "1")
    assert rows["A1"]["on_time_pct"] == "100.0"

    code, text = await run_cli(["report", "register", "--bcu", "13-LD"], monkeypatch, settings)
    assert code == 0
    people = list(csv.DictReader(io.StringIO(text)))
    alex = next(r for r in people if r["noms"] == "G1234HJ")
    assert (alex["section"], alex["custody"], alex["date_added"]) == ("current", "in custody (LEI)", "2025-06-01")
    assert any(r["section"] == "removed" and r["noms"] == "J3456KL" for r in people)

    code, text = await run_cli(["audit", "pnc:06/777001G", "--format", "csv"], monkeypatch, settings)
    assert code == 0
    lines = list(csv.DictReader(io.StringIO(text)))
    kinds = [(x["kind"], x["rule"], x["what"]) for x in lines]
    assert ("event", "", "prison.reception") in kinds and ("event", "", "warrant.issued") in kinds
    assert ("obligation", "A1", "raised") in kinds
    sent = [x for x in lines if x["kind"] == "message" and x["what"] == "sent" and x["rule"] in ("A1", "A2")]
    assert len(sent) == 4  # two recipients each (C1, raised at register load, is in the trail too)
    assert all(x["template_version"] and "@" in x["recipient"] for x in sent)
    assert [x["at"] for x in lines] == sorted(x["at"] for x in lines)

    out = tmp_path / "timeliness.html"
    code, _ = await run_cli(["report", "timeliness", "--from", today, "--to", today, "--format", "html",
                             "--out", str(out)], monkeypatch, settings)
    assert code == 0 and "<svg" in out.read_text(encoding="utf-8")
