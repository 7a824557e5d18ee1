"""A real local PostgreSQL server (Debian's packages, no Docker) for the cluster-shape tests and local runs.

The cluster shape keeps the state that must outlive a host (the notifier's send log, the scheduler's job store and
lease) in one PostgreSQL that every instance shares, as GOV.UK Notify keeps its notification state. This module
starts one from the server binaries of the `postgresql` package, on 127.0.0.1, in a data dir of its own:

    ppo-alerts postgres start --data-dir /tmp/pg     # prints the SQLAlchemy URL
    ppo-alerts postgres stop --data-dir /tmp/pg

PostgreSQL refuses to run as root: when run as root, the server runs as the `postgres` user the package creates.
Authentication is `trust` on loopback only: a local test and development server, never a deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["LocalPostgres", "LocalPostgresError", "main"]

HOST = "127.0.0.1"
DATABASE = "ppo"
USER = "ppo"
_STATE = "localpostgres.json"


class LocalPostgresError(RuntimeError):
    """The local PostgreSQL could not be started or stopped; the message says what to do."""


def _bindir() -> Path:
    """The newest installed server version's binaries (/usr/lib/postgresql/<version>/bin)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not candidates:
        raise LocalPostgresError("the PostgreSQL server is not installed (no /usr/lib/postgresql/*/bin/postgres); "
                                 "run ./scripts/setup, or 'apt-get install postgresql'")
    return candidates[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """One PostgreSQL server on 127.0.0.1 with a database and user `ppo`; restarting on the same data dir keeps the
    port and the data."""

    def __init__(self, data_dir: str | os.PathLike[str], port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.bindir = _bindir()
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the `ppo` database."""
        if self.port is None:
            raise LocalPostgresError("the local PostgreSQL has not been started yet")
        return f"postgresql+psycopg://{USER}@{HOST}:{self.port}/{DATABASE}"

    @property
    def _pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def _run(self, tool: str, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            output = (proc.stderr or proc.stdout)[-800:]
            raise LocalPostgresError(f"{tool} failed (exit code {proc.returncode}): {output}")
        return proc

    def _read_state(self) -> dict:
        try:
            state = json.loads((self.data_dir / _STATE).read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def is_running(self) -> bool:
        if not (self._pgdata / "PG_VERSION").exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self._pgdata), check=False).returncode == 0

    def start(self, timeout: float = 60) -> str:
        """Initialise the data dir if new, start the server, create the `ppo` user and database; return the URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = self._read_state().get("port") or _free_port()
        if self._as_postgres:
            account = pwd.getpwnam("postgres")
            os.chown(self.data_dir, account.pw_uid, account.pw_gid)
        fresh = not (self._pgdata / "PG_VERSION").exists()
        if fresh:
            self._run("initdb", "-D", str(self._pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--no-instructions", timeout=120)
        (self.data_dir / _STATE).write_text(json.dumps({"port": self.port, "url": self.url}) + "\n")
        if not self.is_running():
            options = (f"-c listen_addresses={HOST} -p {self.port} -c unix_socket_directories='{self.data_dir}' "
                       "-c fsync=on -c synchronous_commit=on -c max_connections=200")
            self._run("pg_ctl", "start", "-D", str(self._pgdata), "-w", "-t", str(int(timeout)), "-o", options,
                      "-l", str(self.data_dir / "postgres.log"), timeout=timeout + 10)
        if fresh:
            self._psql(f"CREATE ROLE {USER} LOGIN")
            self._psql(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        return self.url

    def _psql(self, sql: str) -> None:
        self._run("psql", "-h", HOST, "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-v",
                  "ON_ERROR_STOP=1", "-q", "-c", sql)

    def stop(self, timeout: float = 30) -> None:
        if self.is_running():
            self._run("pg_ctl", "stop", "-D", str(self._pgdata), "-m", "fast", "-w", "-t", str(int(timeout)),
                      timeout=timeout + 10)

    def kill(self) -> None:
        """Stop at once, as a crash would (immediate mode: no checkpoint; recovery on the next start)."""
        if self.is_running():
            self._run("pg_ctl", "stop", "-D", str(self._pgdata), "-m", "immediate", "-w", timeout=40)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "python -m ppo_alerts.localpostgres",
                                     description="Local PostgreSQL (Debian's server binaries) on 127.0.0.1.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("start", "start it (initialised on first use) and print its URL"),
                       ("stop", "stop it"), ("status", "print its URL if running (exit 1 if not)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--data-dir", required=True)
        if name == "start":
            p.add_argument("--port", type=int)
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        server = LocalPostgres(args.data_dir, getattr(args, "port", None))
        if args.command == "start":
            t0 = time.monotonic()
            print(server.start(), flush=True)
            print(f"localpostgres: ready in {time.monotonic() - t0:.1f} s; log {server.data_dir}/postgres.log",
                  file=sys.stderr)
            return 0
        if args.command == "stop":
            server.stop()
            return 0
        if server.is_running():
            server.port = server._read_state().get("port")  # noqa: SLF001
            print(server.url)
            return 0
        print(f"localpostgres: not running (data dir {args.data_dir})", file=sys.stderr)
        return 1
    except (LocalPostgresError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"localpostgres: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def fresh_schema(url: str, prefix: str = "t") -> str:
    """Create an empty schema on the server at `url`; returns `url` with that schema first on the search path, so
    everything created through it lands there (one test's or one measurement's tables, apart from the rest)."""
    import uuid
    from urllib.parse import quote

    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{name}"'))
    finally:
        engine.dispose()
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-csearch_path={name}')}"
