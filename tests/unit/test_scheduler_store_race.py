"""Two schedulers starting together on one SQLite job store both create the tables: neither may fail on "table
already exists" (seen in CI: the second instance exited, and the failover test waited for it in vain). Separate
processes, as the schedulers are: threads of one process do not race on SQLite's schema this way."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect

from services.scheduler.store import WatchStore


def _open_store(url: str, barrier: Any, failures: Any) -> None:
    engine = create_engine(url)
    try:
        barrier.wait()
        WatchStore(engine)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        failures.put(f"{type(exc).__name__}: {exc}"[:200])
    finally:
        engine.dispose()


def test_stores_opening_one_new_file_together_in_several_processes_all_start(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    failures = ctx.Queue()
    for run in range(8):
        url = f"sqlite:///{tmp_path / f'jobs-{run}.sqlite'}"
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_store, args=(url, barrier, failures)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert {"ppo_scheduler_lease", "ppo_scheduler_watches"} <= set(inspect(create_engine(url)).get_table_names())
    found = []
    while not failures.empty():
        found.append(failures.get())
    assert found == []
