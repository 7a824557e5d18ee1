"""Simulation throughput: a synthetic national-scale year through `simulate`'s pure core (SimulationEngine, no
outbox). Part of `ppo-alerts bench`; also runs on its own:

    .venv/bin/python -m ppo_alerts.bench.simulation                  # the full year: 5,000,000 events, minutes
    .venv/bin/python -m ppo_alerts.bench.simulation --events 200000  # a quick look (the register is still national)
    .venv/bin/python -m ppo_alerts.bench.simulation --profile        # where the time goes (needs pyinstrument)

The world it builds (`ppo_alerts.bench.data.National` and `EventStream`):

* a register of 100,000 people, about 16,000 of them PPOs today (the rest de-selected earlier), spread over
  150 BCUs in 43 forces, every one with a valid PNC and NOMS number, some with a CRN;
* 5,000,000 events over one year of virtual time, about 7% of them about a PPO (the rest about
  de-selected people or people never on the register), in the formats intake accepts:
  HMPPS receptions and releases (both feeds; the delayed feed often repeats the immediate one, half of
  those SNS-wrapped), canonical warrants, court outcomes and sentences, release dates (some changed
  later), arrests and intelligence, and a few Common Platform hearings.

Events are generated in chunks outside the timed section, then fed to `SimulationEngine.feed` exactly as
`ppo-alerts simulate` feeds a decoded line (full validation, the ledger, timers firing in virtual time;
only the outbox is left out). The figure is the events per second of the feeding alone.

`ppo-alerts bench` runs this in a child process (`--json`), so the bench's own memory and threads (Kafka clients,
the SMTP sink) stay out of it. `--profile` runs it under pyinstrument (`.venv/bin/pip install pyinstrument`; not a
project dependency) and prints where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from ppo_alerts.bench.data import START, YEAR, EventStream, National
from ppo_alerts.simulate import MessageSink, SimulationEngine, long_batch
from shared.directory import Directory
from shared.register import Register

EVENTS = 5_000_000
PEOPLE = 100_000
PPOS = 16_000
PPO_SHARE = 0.07


@dataclass(frozen=True)
class SimulationResult:
    events: int
    register: int  # people on the register
    ppos: int
    feed_s: float  # wall time feeding the events (the figure)
    feed_cpu_s: float
    setup_s: float  # building the world, loading the register and directory, starting the engine (C1/C2 timers)
    obligations: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.feed_s if self.feed_s else 0.0


def measure_simulation(events: int, people: int = PEOPLE, ppos: int = PPOS, log_file: Path | None = None,
                       timeout_s: float = 3600) -> SimulationResult:
    """Run the measurement in a child process (`python -m ppo_alerts.bench.simulation --json`)."""
    command = [sys.executable, "-m", "ppo_alerts.bench.simulation", "--json", "--events", str(events),
               "--people", str(people), "--ppos", str(ppos)]
    with open(log_file or "/dev/null", "ab") as err:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, timeout=timeout_s, check=False)
    if done.returncode != 0:
        tail = log_file.read_text(errors="replace")[-2000:] if log_file else ""
        raise RuntimeError(f"the simulation benchmark exited with {done.returncode}\n{tail}")
    r = json.loads(done.stdout)
    return SimulationResult(events=r["events"], register=r["register"], ppos=r["ppos"], feed_s=r["feed_s"],
                            feed_cpu_s=r["feed_cpu_s"], setup_s=r["world_s"] + r["load_s"] + r["init_s"],
                            obligations=sum(r["obligations"].values()))


def run(events: int, people: int, ppos: int, ppo_share: float, chunk: int, seed: int,
        span: timedelta = YEAR, gc_mode: str = "simulate") -> dict[str, Any]:
    t0 = time.perf_counter()
    world = National(people, ppos, outsiders=people * 2, seed=seed)
    t_world = time.perf_counter() - t0

    t0 = time.perf_counter()
    register = Register.from_csv_text(world.register_csv, "bench register")
    directory = Directory.from_mapping(world.directory, "bench directory")
    t_load = time.perf_counter() - t0
    with long_batch() if gc_mode == "simulate" else contextlib.nullcontext():  # as `simulate` runs
        return _feed(world, register, directory, events, ppo_share, chunk, seed, span, t_world, t_load)


def _feed(world: National, register: Register, directory: Directory, events: int, ppo_share: float, chunk: int,
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
    parser = argparse.ArgumentParser(prog="python -m ppo_alerts.bench.simulation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=EVENTS, help="events to feed (default 5,000,000: minutes)")
    parser.add_argument("--people", type=int, default=PEOPLE, help="people on the register (default 100,000)")
    parser.add_argument("--ppos", type=int, default=PPOS, help="of whom PPOs today (default 16,000)")
    parser.add_argument("--ppo-share", type=float, default=PPO_SHARE, help="share of events about a PPO (default 0.07)")
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
