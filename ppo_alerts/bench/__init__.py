"""`ppo-alerts bench`: the performance figures of issue #8, measured on a local Kafka and SMTP sink.

One module per measurement, each a function returning a small dataclass:

- `rules.measure_ratio`: the rules service against a bare consumer on the same topic (throughput and ratio);
- `latency.measure_latency`: intake HTTP to SMTP accepted, at steady rates, services as processes;
- `simulation.measure_simulation`: events per second through `simulate`'s pure core (child process);
- `scheduler.measure_scheduler`: start-up, memory and timer lateness with N pending timers (child process);
- `notifier.measure_notifier`: pooled SMTP sender against one connection per message.

`data` makes the synthetic inputs, `sink` is the SMTP sink, `report` writes `docs/performance.md` and `command`
runs them all in order (`run_bench`, with the `FULL` and `QUICK` sizes).
"""

from __future__ import annotations

__all__ = ["FULL", "QUICK", "Sizes", "run_bench"]


def __getattr__(name: str) -> object:  # the CLI imports this package; keep `ppo-alerts --help` light
    if name in __all__:
        from ppo_alerts.bench import command

        return getattr(command, name)
    raise AttributeError(name)
