"""The worked examples, checked in-process: `tests/examples/` (ours) and `../shared/examples/` (when present).

Each folder is a scenario for `ppo-alerts simulate` (register.csv, directory.yaml, events.jsonl, expected.json),
in the format of `../shared/examples`; every expected instant in ours was worked out by hand from the rule
book (obligations.md), and each expectation says why. The comparison below is a port of
`../shared/tools/check-examples` (same rules, same messages), run on `ppo_alerts.simulate.run` without a
subprocess so that it needs nothing outside this repository. To run the shared tool itself on ours:

    ../shared/tools/check-examples tests/examples
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ppo_alerts import cli
from ppo_alerts.simulate import parse_instant, run
from shared.obligations import Obligation

ROOT = Path(__file__).resolve().parents[2]
OURS = ROOT / "tests" / "examples"
SHARED = ROOT.parent / "shared" / "examples"
SHARED_TOOL = ROOT.parent / "shared" / "tools" / "check-examples"

# Scenarios where the code, not the expectation, is known to be wrong: {name: what the rule book says}.
KNOWN_DISAGREEMENTS: dict[str, str] = {}


def _folders() -> list[Any]:
    found = []
    for base in (OURS, SHARED):
        if base.is_dir():
            for d in sorted(p for p in base.iterdir() if (p / "expected.json").is_file()):
                marks: list[pytest.MarkDecorator] = []
                if d.name in KNOWN_DISAGREEMENTS:
                    marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_DISAGREEMENTS[d.name]))
                found.append(pytest.param(d, id=f"{base.parent.name}/{d.name}", marks=marks))
    return found


# --- the comparison (a port of ../shared/tools/check-examples) --------------------------------------------


def norm_pnc(v: str) -> str:
    v = v.replace("/", "").upper()
    year_s, rest = (v[:4], v[4:]) if len(v) >= 12 else (v[:2], v[2:])
    year = int(year_s) % 100
    return f"{2000 + year if year <= 26 else 1900 + year}/{int(rest[:-1]):07d}{rest[-1]}"


def inst(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s.replace("Z", "+00:00")) if s else None


def ids_of(person: dict[str, Any] | None) -> set[tuple[str, str]]:
    out = set()
    for k, v in (person or {}).items():
        if v and k in ("pnc", "noms", "crn", "cro"):
            out.add((k, norm_pnc(v) if k == "pnc" else str(v).upper()))
    return out


def scenario_people(d: Path) -> list[dict[str, str]]:
    """Register rows named (by NOMS, PNC, short PNC or CRN) anywhere in the events."""
    with open(d / "register.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    text = (d / "events.jsonl").read_text(encoding="utf-8").upper()
    people = []
    for r in rows:
        keys = {("noms", r["noms"]), ("pnc", r["pnc"]), ("crn", r["crn"])}
        short = r["pnc"][2:4] + "/" + str(int(r["pnc"][5:12])) + r["pnc"][-1]
        if any(v and v.upper() in text for _, v in keys) or short in text:
            people.append({k: v for k, v in keys if v})
    return people


def compare(d: Path, out: Path, exp: dict[str, Any]) -> list[str]:
    """What differs between `out/obligations.jsonl` (and rejected.jsonl) and `expected.json`."""
    with open(out / "obligations.jsonl", encoding="utf-8") as f:
        obls = [json.loads(line) for line in f if line.strip()]
    people = scenario_people(d)
    errs: list[str] = []

    def in_scope(o: dict[str, Any]) -> bool:
        oi = ids_of(o.get("person"))
        return any(oi & {(k, v) for k, v in p.items()} for p in people)

    pool = [o for o in obls if in_scope(o)]
    personless = [o for o in obls if not ids_of(o.get("person"))]
    for e in exp["expect"] + (exp.get("extra") or []):
        eids = ids_of(e["person"])
        if e["person"] is None:
            cands = [o for o in personless if o.get("rule") == e["rule"]
                     and sorted(o.get("recipients") or []) == sorted(e["recipients"])]
        else:
            cands = [o for o in pool if o.get("rule") == e["rule"] and eids & ids_of(o.get("person"))]
        if e.get("send_at"):
            c2 = [o for o in cands if inst(o.get("send_at")) == inst(e["send_at"])]
            cands = c2 or cands
        if not cands:
            errs.append(f"missing {e['rule']} for {sorted(eids)}")
            continue
        o = cands[0]
        (personless if e["person"] is None else pool).remove(o)
        if "recipients" in e and sorted(o.get("recipients") or []) != sorted(e["recipients"]):
            errs.append(f"{e['rule']} recipients {o.get('recipients')} != {e['recipients']}")
        for when in ("send_at", "notify_by", "action_due"):
            if e.get(when) and inst(o.get(when)) != inst(e[when]):
                errs.append(f"{e['rule']} {when} {o.get(when)} != {e[when]}")
        if e.get("grade") and o.get("grade") != e["grade"]:
            errs.append(f"{e['rule']} grade {o.get('grade')} != {e['grade']}")
        if e.get("status") and o.get("status") != e["status"]:
            errs.append(f"{e['rule']} status {o.get('status')} != {e['status']}")
        if e.get("sent") and not o.get("notified_at"):
            errs.append(f"{e['rule']} was not sent")
        if e.get("sent") is False and o.get("notified_at"):
            errs.append(f"{e['rule']} was sent but should not have been")
        notified, notify_by = inst(o.get("notified_at")), inst(o.get("notify_by"))
        if e.get("late") and notified and notify_by and notified <= notify_by:
            errs.append(f"{e['rule']} should be late")
    for o in pool:
        if o.get("rule") in exp["rules"]:
            errs.append(f"unexpected {o.get('rule')} for {o.get('person')}")
    for o in personless + pool:
        if o.get("rule") in (exp.get("global_rules") or []):
            errs.append(f"unexpected {o.get('rule')} to {o.get('recipients')} at {o.get('send_at')}")
    if exp.get("rejected") is not None:
        rj = out / "rejected.jsonl"
        n = sum(1 for line in rj.read_text(encoding="utf-8").splitlines() if line.strip()) if rj.exists() else 0
        if n != exp["rejected"]:
            errs.append(f"rejected {n} lines, expected {exp['rejected']}")
    return errs


def check(d: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    exp = json.loads((d / "expected.json").read_text(encoding="utf-8"))
    if exp.get("bad_directory"):
        rc = cli.main(["simulate", "--register", str(d / "register.csv"), "--directory", str(d / "directory.yaml"),
                       "--events", str(d / "events.jsonl"), "--until", exp["until"], "--out", str(out)])
        captured = capsys.readouterr()
        msg = captured.out + captured.err
        if rc != 0 and "gmail.com" in msg and "Traceback" not in msg:
            return []
        return [f"bad directory not refused clearly (rc={rc}): {msg.strip()[-150:]}"]
    engine = run(d / "register.csv", d / "directory.yaml", d / "events.jsonl", parse_instant(exp["until"], "until"),
                 out)
    for o in engine.obligations():  # built without validation (shared.trusted): still exactly what it would give
        assert Obligation.model_validate(o.model_dump()) == o, o.obligation_id
        assert Obligation.model_validate_json(o.model_dump_json()) == o, o.obligation_id
    return compare(d, out, exp)


# --- the tests ---------------------------------------------------------------------------------------------


def test_there_are_enough_of_our_own_scenarios() -> None:
    ours = [p for p in OURS.iterdir() if (p / "expected.json").is_file()]
    assert len(ours) >= 25


@pytest.mark.parametrize("folder", _folders())
def test_example(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    errors = check(folder, tmp_path / "out", capsys)
    assert errors == [], f"{folder.name}: " + "; ".join(errors)


def test_our_scenarios_cover_every_rule() -> None:
    """Every rule of tables A, B and C has at least one worked example with exact instants."""
    known = {"A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "B1", "B2", "B3", "B4", "B5", "B6", "B8",
             "C1", "C2", "C3", "C4", "C5", "C6", "C7"}
    covered: set[str] = set()
    for d in OURS.iterdir():
        if not (d / "expected.json").is_file():
            continue
        exp = json.loads((d / "expected.json").read_text(encoding="utf-8"))
        assert exp["name"] == d.name
        assert set(exp["rules"]) <= known and set(exp.get("global_rules") or []) <= known
        covered |= {e["rule"] for e in exp["expect"]}
        for e in exp["expect"]:
            assert e["rule"] in known
    assert covered == known, f"rules without a worked example: {sorted(known - covered)}"


@pytest.mark.skipif(not SHARED_TOOL.is_file(), reason="../shared/tools/check-examples is not here")
def test_the_port_agrees_with_the_shared_checker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One scenario as written and one with a wrong deadline: the shared tool and the port give the same verdicts."""
    folder = tmp_path / "examples"
    shutil.copytree(OURS / "s03_a2_fta_easter_london_day", folder / "a_as_written")
    shutil.copytree(OURS / "s03_a2_fta_easter_london_day", folder / "b_wrong_deadline")
    wrong = folder / "b_wrong_deadline" / "expected.json"
    exp = json.loads(wrong.read_text(encoding="utf-8"))
    exp["name"] = "b_wrong_deadline"
    exp["expect"][0]["notify_by"] = "2026-04-02T22:59:59Z"  # what a UTC-date, no-holiday reading would give
    wrong.write_text(json.dumps(exp), encoding="utf-8")

    tool = subprocess.run([str(SHARED_TOOL), str(folder)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert tool.returncode == 1, tool.stdout + tool.stderr
    assert "1/2 examples pass" in tool.stdout
    assert "FAIL b_wrong_deadline: A2 notify_by 2026-04-07T22:59:59Z != 2026-04-02T22:59:59Z" in tool.stdout

    assert check(folder / "a_as_written", tmp_path / "out-a", capsys) == []
    assert check(folder / "b_wrong_deadline", tmp_path / "out-b", capsys) == [
        "A2 notify_by 2026-04-07T22:59:59Z != 2026-04-02T22:59:59Z"]
