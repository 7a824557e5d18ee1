"""Throughput of `simulate`'s core: a synthetic national-scale year through SimulationEngine (no outbox).

Not a test. The world it builds:

* a register of 100,000 people, about 16,000 of them PPOs today (the rest de-selected earlier), spread over
  150 BCUs in 43 forces, every one with a valid PNC and NOMS number, some with a CRN;
* 5,000,000 events over one year of virtual time, about 7% of them about a PPO (the rest about
  de-selected people or people never on the register), in the formats intake accepts:
  HMPPS receptions and releases (both feeds; the delayed feed often repeats the immediate one, half of
  those SNS-wrapped), canonical warrants, court outcomes and sentences, release dates (some changed
  later), arrests and intelligence, and a few Common Platform hearings.

Events are generated in chunks outside the timed section, then fed to `SimulationEngine.feed` exactly as
`ppo-alerts simulate` feeds a decoded line (full validation, the ledger, timers firing in virtual time;
only the outbox is left out). It prints the events per second of the feeding alone, and the other phases.

    .venv/bin/python bench/simulate_bench.py                 # the full year: 5,000,000 events, several minutes
    .venv/bin/python bench/simulate_bench.py --events 200000 # a quick look (the register is still national)

For scale: on a 2-vCPU AMD EPYC VM (Python 3.11), the full year fed at about 37,000 events/s (134 s of
feeding, about 3 minutes in all with generating the events); before the rule book's hot path was worked on,
about 14,000 events/s (20,000 per CPU second). About 60% of what is left is intake's translation and
validation of each payload, which no event skips (see `--profile`).

`--profile` runs it under pyinstrument (`.venv/bin/pip install pyinstrument`; not a project dependency)
and prints where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import random
import sys
import time
from collections import deque
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppo_alerts.simulate import MessageSink, SimulationEngine, long_batch  # noqa: E402
from shared.directory import Directory  # noqa: E402
from shared.register import Register  # noqa: E402

CHECK = "ZABCDEFGHJKLMNPQRTUVWXY"
START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
YEAR = timedelta(days=365)
PRISONS = ("LEI", "WYI", "DUR", "HUL", "DRI", "MAN", "LIV", "BMI", "PVI", "WWI", "NMI", "HMI")
COURTS = ("B13AA00", "B21AA00", "B01LY00", "C13AA00", "C21AA00", "B05KP00", "B20BL00", "C01CE00")


def pnc(year: int, serial: int) -> str:
    return f"{year}/{serial:07d}{CHECK[int(f'{year % 100:02d}{serial:07d}') % 23]}"


def noms(i: int) -> str:
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    return f"{letters[i % 24]}{(i // 24) % 10000:04d}{letters[(i // 240000) % 24]}{letters[(i // 7) % 24]}"


class World:
    """The register, the directory and the people events are about."""

    def __init__(self, people: int, ppos: int, outsiders: int, seed: int) -> None:
        rnd = random.Random(seed)
        self.rnd = rnd
        self.bcus = [f"{force:02d}-{b}" for force in range(1, 44) for b in ("A", "B", "C", "D")][:150]
        rows = ["pnc,cro,noms,crn,given_name,family_name,date_of_birth,home_bcu,strand,selected_on,reason,"
                "deselected_on"]
        self.ppo: list[dict[str, str]] = []
        self.former: list[dict[str, str]] = []
        chosen = set(rnd.sample(range(people), ppos))
        for i in range(people):
            ident = {"pnc": pnc(1980 + i % 40, 100000 + i), "noms": noms(i)}
            crn = f"X{i:06d}" if i % 3 == 0 else ""
            dob = date(1970, 1, 1) + timedelta(days=rnd.randrange(365 * 38))
            selected = date(2020, 1, 1) + timedelta(days=rnd.randrange(365 * 6))
            deselected = ""
            if i in chosen:
                self.ppo.append(ident)
            else:
                deselected = (selected + timedelta(days=30 + rnd.randrange(700))).isoformat()
                if deselected > "2025-12-31":
                    deselected = "2025-12-31"
                    selected = min(selected, date(2025, 6, 1))
                self.former.append(ident)
            rows.append(f"{ident['pnc']},,{ident['noms']},{crn},Given{i},Family{i},{dob},"
                        f"{self.bcus[i % len(self.bcus)]},catch_and_convict,{selected},Core nominal,{deselected}")
        self.register_csv = "\n".join(rows) + "\n"
        self.outsiders = [{"pnc": pnc(1980 + i % 40, 5000000 + i), "noms": noms(people + i)}
                          for i in range(outsiders)]
        self.directory = {
            "recipient_domains": ["police.uk", "justice.gov.uk", "gov.uk"],
            "bcus": {code: {"name": f"BCU {code}", "force": code[:2], "contacts": {
                "ppo": [f"ppo.{code.lower()}@force{code[:2]}.police.uk"],
                "warrants": [f"warrants@force{code[:2]}.police.uk"],
                "probation": [f"iom.{code.lower()}@justice.gov.uk"],
                "yot": [f"yot.{code.lower()}@council.gov.uk"],
                "coordinator": [f"coord.{code.lower()}@force{code[:2]}.police.uk"],
                "escalation": [f"duty.{code.lower()}@force{code[:2]}.police.uk"],
            }} for code in self.bcus},
        }


class EventStream:
    """Decoded payloads, as `simulate` has them after reading a line: (at, body)."""

    def __init__(self, world: World, total: int, ppo_share: float, seed: int, span: timedelta = YEAR) -> None:
        self.w = world
        self.total = total
        self.ppo_share = ppo_share
        self.rnd = random.Random(seed)
        self.step = span / total
        self.n = 0
        self.echoes: deque[tuple[int, dict[str, Any]]] = deque()  # (emit at index, body): delayed-feed repeats

    def person(self) -> dict[str, str]:
        r = self.rnd.random()
        if r < self.ppo_share:
            return self.rnd.choice(self.w.ppo)
        if r < self.ppo_share + (1 - self.ppo_share) / 2:
            return self.rnd.choice(self.w.former)
        return self.rnd.choice(self.w.outsiders)

    def chunk(self, size: int) -> list[tuple[datetime, Any]]:
        out: list[tuple[datetime, Any]] = []
        while len(out) < size and self.n < self.total:
            at = START + self.step * self.n
            if self.echoes and self.echoes[0][0] <= self.n:
                body = self.echoes.popleft()[1]
            else:
                body = self.event(at)
            out.append((at, body))
            self.n += 1
        return out

    def event(self, at: datetime) -> Any:
        rnd = self.rnd
        who = self.person()
        t = at - timedelta(minutes=rnd.randrange(1, 90))
        kind = rnd.random()
        if kind < 0.25:
            return self.movement(who, t, received=True)
        if kind < 0.43:
            return self.movement(who, t, received=False)
        eid = f"bench-{self.n}"
        ts = t.isoformat()
        person = {"pnc": who["pnc"]} if rnd.random() < 0.6 else {"noms": who["noms"]}
        if kind < 0.53:
            return {"id": eid, "type": "warrant.issued", "occurred_at": ts, "source": "HMCTS", "person": person,
                    "data": {"warrant_id": f"W-{self.n}", "court_code": rnd.choice(COURTS),
                             "kind": rnd.choice(("fta", "fta", "breach", "recall", "arrest")),
                             "grade_given": rnd.choice(("B", "C", None))}}
        if kind < 0.65:
            return {"id": eid, "type": "court.outcome", "occurred_at": ts, "source": "HMCTS", "person": person,
                    "data": {"court_code": rnd.choice(COURTS),
                             "outcome": rnd.choice(("conviction", "acquittal", "adjournment", "committal")),
                             "case_ended": rnd.random() < 0.3}}
        if kind < 0.70:
            disposal = rnd.choice(("custody", "community", "suspended", "fine"))
            data: dict[str, Any] = {"court_code": rnd.choice(COURTS), "disposal": disposal}
            if disposal == "custody":
                data["custody_days"] = rnd.choice((90, 180, 365, 730, 1095, 1460))
            return {"id": eid, "type": "court.sentence", "occurred_at": ts, "source": "HMCTS", "person": person,
                    "data": data}
        if kind < 0.80:
            release = (at + timedelta(days=rnd.randrange(5, 400))).date()
            return {"id": eid, "type": "prison.release_date_set", "occurred_at": ts, "source": "NOMIS",
                    "person": {"noms": who["noms"]},
                    "data": {"prison_id": rnd.choice(PRISONS),
                             "release_date": None if rnd.random() < 0.05 else release.isoformat(),
                             "kind": rnd.choice(("crd", "ard", "confirmed", "hdc"))}}
        if kind < 0.98:
            return {"id": eid, "type": rnd.choice(("police.arrest", "police.arrest", "police.intelligence")),
                    "occurred_at": ts, "source": "PNC", "person": {"pnc": who["pnc"]},
                    "data": {"force_code": "13"}}
        return self.hearing(who, t)

    def movement(self, who: dict[str, str], t: datetime, received: bool) -> dict[str, Any]:
        rnd = self.rnd
        reason = (rnd.choice(("ADMISSION", "ADMISSION", "TRANSFERRED", "RETURN_FROM_COURT",
                              "TEMPORARY_ABSENCE_RETURN")) if received
                  else rnd.choice(("RELEASED", "RELEASED", "TEMPORARY_ABSENCE_RELEASE", "SENT_TO_COURT",
                                   "TRANSFERRED")))
        prison = rnd.choice(PRISONS)
        occurred = t.isoformat()
        verb = "received" if received else "released"
        immediate = {
            "eventType": f"prisoner-offender-search.prisoner.{verb}", "version": 1, "occurredAt": occurred,
            "publishedAt": occurred, "description": "A prisoner movement",
            "additionalInformation": {"nomsNumber": who["noms"], "prisonId": prison,
                                      "reason": "NEW_ADMISSION" if reason == "ADMISSION" else reason},
            "personReference": {"identifiers": [{"type": "NOMS", "value": who["noms"]}]},
        }
        if rnd.random() < 0.4:  # the delayed feed reports the same movement about 45 minutes later
            delayed = {
                "eventType": f"prison-offender-events.prisoner.{verb}", "version": 1, "occurredAt": occurred,
                "publishedAt": occurred, "description": "A prisoner movement",
                "additionalInformation": {"nomsNumber": who["noms"], "prisonId": prison, "reason": reason,
                                          "currentLocation": "IN_PRISON", "nomisMovementReasonCode": "N",
                                          "currentPrisonStatus": "UNDER_PRISON_CARE", "details": "movement"},
                "personReference": {"identifiers": [{"type": "NOMS", "value": who["noms"]}]},
            }
            body: Any = delayed
            if rnd.random() < 0.5:
                body = {"Type": "Notification", "MessageId": f"m-{self.n}", "Message": json.dumps(delayed)}
            self.echoes.append((self.n + 400, body))
        return immediate

    def hearing(self, who: dict[str, str], t: datetime) -> dict[str, Any]:
        rnd = self.rnd
        cjs, code = rnd.choice((("4576", "BA76001"), ("4028", "TH68010"), ("1002", "TH68010"),
                                ("4027", "TH68010"), ("3010", "TH68010")))
        result: dict[str, Any] = {
            "judicialResultId": f"jr-{self.n}", "cjsCode": cjs, "label": "Result",
            "category": "FINAL" if cjs in ("1002", "3010") else "INTERMEDIARY",
            "isConvictedResult": cjs == "1002", "orderedDate": t.date().isoformat(),
        }
        if cjs == "1002":
            result["judicialResultPrompts"] = [{"label": "Total custodial period", "value": "3 Years",
                                                "type": "DURATION"}]
        return {"hearing": {
            "id": f"h-{self.n}", "jurisdictionType": "MAGISTRATES",
            "courtCentre": {"id": "c", "code": rnd.choice(COURTS), "name": "A court"},
            "hearingDays": [{"sittingDay": t.isoformat()}],
            "prosecutionCases": [{"id": f"pc-{self.n}", "defendants": [{
                "id": f"d-{self.n}", "pncId": who["pnc"],
                "personDefendant": {"personDetails": {"firstName": "A", "lastName": "B"}},
                "offences": [{"id": f"o-{self.n}", "offenceCode": code, "judicialResults": [result]}],
            }]}],
        }}


def run(events: int, people: int, ppos: int, ppo_share: float, chunk: int, seed: int,
        span: timedelta = YEAR, gc_mode: str = "simulate") -> dict[str, Any]:
    t0 = time.perf_counter()
    world = World(people, ppos, outsiders=people * 2, seed=seed)
    t_world = time.perf_counter() - t0

    t0 = time.perf_counter()
    register = Register.from_csv_text(world.register_csv, "bench register")
    directory = Directory.from_mapping(world.directory, "bench directory")
    t_load = time.perf_counter() - t0
    with long_batch() if gc_mode == "simulate" else contextlib.nullcontext():  # as `simulate` runs
        return _feed(world, register, directory, events, ppo_share, chunk, seed, span, t_world, t_load)


def _feed(world: World, register: Register, directory: Directory, events: int, ppo_share: float, chunk: int,
          seed: int, span: timedelta, t_world: float, t_load: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    engine = SimulationEngine(register, directory, START, sink=MessageSink())
    t_init = time.perf_counter() - t0

    stream = EventStream(world, events, ppo_share, seed + 1, span)
    fed = 0
    t_feed = 0.0
    cpu_feed = 0.0
    t_gen = 0.0
    line = 0
    report_every = max(1, events // 10)
    next_report = report_every
    while fed < events:
        g0 = time.perf_counter()
        batch = stream.chunk(chunk)
        t_gen += time.perf_counter() - g0
        if not batch:
            break
        f0, c0 = time.perf_counter(), time.process_time()
        for at, body in batch:
            line += 1
            engine.feed(at, body, line)
        t_feed += time.perf_counter() - f0
        cpu_feed += time.process_time() - c0
        fed += len(batch)
        if fed >= next_report:
            next_report += report_every
            print(f"  {fed:>10,} events  {fed / t_feed:>10,.0f} events/s  virtual {engine.now:%Y-%m-%d}",
                  file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    engine.advance(START + span)
    t_drain = time.perf_counter() - t0
    statuses: dict[str, int] = {}
    for o in engine.ledger.obligations.values():
        statuses[o.status] = statuses.get(o.status, 0) + 1
    return {
        "events": fed, "register": len(register), "ppos": len(world.ppo), "bcus": len(world.bcus),
        "world_s": t_world, "load_s": t_load, "init_s": t_init, "generate_s": t_gen, "feed_s": t_feed,
        "drain_s": t_drain, "events_per_s": fed / t_feed if t_feed else 0.0, "feed_cpu_s": cpu_feed,
        "events_per_cpu_s": fed / cpu_feed if cpu_feed else 0.0,
        "canonical_events": engine.events_in, "rejected": len(engine.rejected), "ignored": dict(engine.ignored),
        "obligations": statuses,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000_000, help="events to feed (default 5,000,000: minutes)")
    parser.add_argument("--people", type=int, default=100_000, help="people on the register (default 100,000)")
    parser.add_argument("--ppos", type=int, default=16_000, help="of whom PPOs today (default 16,000)")
    parser.add_argument("--ppo-share", type=float, default=0.07, help="share of events about a PPO (default 0.07)")
    parser.add_argument("--chunk", type=int, default=50_000, help="events generated per untimed chunk")
    parser.add_argument("--days", type=int, default=365, help="virtual time the events span (default 365)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--gc", choices=("simulate", "default", "off"), default="simulate",
                        help="the cyclic collector as `simulate` runs it (default), Python's defaults, or off")
    parser.add_argument("--profile", action="store_true", help="run under pyinstrument and print the profile")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.gc == "off":
        gc.disable()
    profiler = None
    if args.profile:
        try:
            from pyinstrument import Profiler
        except ImportError:
            print("--profile needs pyinstrument: .venv/bin/pip install pyinstrument", file=sys.stderr)
            return 2
        profiler = Profiler(interval=0.0005)
        profiler.start()
    result = run(args.events, args.people, args.ppos, args.ppo_share, args.chunk, args.seed,
                 timedelta(days=args.days), args.gc)
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"register {result['register']:,} people ({result['ppos']:,} PPOs) in {result['bcus']} BCUs: "
          f"loaded in {result['load_s']:.1f} s; engine start (C1/C2 timers) {result['init_s']:.1f} s")
    print(f"fed {result['events']:,} events in {result['feed_s']:.1f} s: "
          f"{result['events_per_s']:,.0f} events/s  (CPU time {result['feed_cpu_s']:.1f} s: "
          f"{result['events_per_cpu_s']:,.0f} events per CPU second; generating the events took "
          f"{result['generate_s']:.1f} s, untimed)")
    print(f"drained the remaining timers in {result['drain_s']:.1f} s")
    print(f"canonical events {result['canonical_events']:,}, rejected lines {result['rejected']:,}, "
          f"obligations {sum(result['obligations'].values()):,} {result['obligations']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
