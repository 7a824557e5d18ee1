"""`ppo-alerts register ...` and `ppo-alerts directory check`: the register and the directory, managed by the
people who own them (docs/coordinators.md).

Every change to the register is a `register.*` canonical event on `<prefix>.events` (key: the person key, as
intake's), with who made it (`source`) and why (`reason`, `authority`). The rules service is the only writer
of the compacted `<prefix>.register` topic: it applies the event to its live register (so it takes effect for
the next event it evaluates) and republishes the person's snapshot there. Read-only commands read that topic.

Changes are checked here first, against the register as the topic has it, by applying them to a copy with the
same `Register` methods the rules service uses: an identity clash, a person not on the register, a date in the
future or a BCU the directory does not know is refused with an explanation and nothing is published. An import
is planned whole (every row checked, each against the rows before it) and published only when no row is
refused. The pure parts (`Planner`, `plan_import`, `quarterly_rows`, `check_directory`) are shared with intake's
`POST /v1/register/...` routes.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time as clock_time
from collections.abc import (
    Callable,
    Coroutine,
)
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from shared import (
    calendar as cal,
)
from shared.directory import (
    REQUIRED_ROLES,
    Directory,
)
from shared.identifiers import (
    IDENTIFIER_KINDS,
)
from shared.register import (
    Register,
    RegisterError,
)
from shared.register_admin import (
    DESELECTION_REASONS,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNCONFIRMED,
    LIST_COLUMNS,
    QUARTERLY_COLUMNS,
    Change,
    ChangeRefused,
    NothingToChange,
    Planner,
    RegisterWatch,
    _identity_refused,
    check_directory,
    csv_text,
    describe,
    known_bcus,
    list_rows,
    parse_identifier,
    plan_import,
    publish_changes,
    quarterly_rows,
    read_register,
    show_text,
)
from shared.settings import (
    Settings,
)

# --- the command line ------------------------------------------------------------------------------------------


def _date_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _common(p: argparse.ArgumentParser, wait: float = 15.0) -> None:
    p.add_argument(
        "--by",
        help="your name, recorded as the source of the change (default: PPO_REGISTER_OPERATOR, else your login name)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=wait,
        metavar="SECONDS",
        help=f"wait this long for the rules service to apply the change (default {wait:g}; 0: do not)",
    )


def _id_options(p: argparse.ArgumentParser, what: str) -> None:
    for kind, example in (("pnc", "2004/0012345D"), ("cro", "065656/91H"), ("noms", "A1234BC"), ("crn", "X123456")):
        p.add_argument(f"--{kind}", help=f"{what} {kind.upper()} (e.g. {example})")


def add_register_parser(sub: Any) -> None:
    reg = sub.add_parser(
        "register",
        help="the PPO register: list, show, export, import and change it",
        description="The PPO register (docs/coordinators.md). Changes are published as register.* "
        "events and applied by the rules service within seconds.",
    )
    cmds = reg.add_subparsers(dest="register_command", required=True)

    p = cmds.add_parser("list", help="people on the register (today, or every period with --all)")
    p.add_argument("--bcu", help="only this BCU")
    p.add_argument("--all", action="store_true", help="every period, current or not")

    p = cmds.add_parser("show", help="one person's entry and periods")
    p.add_argument("identifier", help="PNC, CRO, NOMS or CRN (or kind:value, e.g. noms:A1234BC)")
    p.add_argument("--json", action="store_true", help="the entry as JSON")

    p = cmds.add_parser("export", help="the register as CSV (contract §2, plus de-selection reason and authority)")
    p.add_argument("--out", help="write to this file (default: standard output)")

    p = cmds.add_parser(
        "import", help="add a register CSV's people and periods (--dry-run: only show what would change)"
    )
    p.add_argument("file")
    p.add_argument("--dry-run", action="store_true", help="check every row and show the changes; publish nothing")
    _common(p, wait=30.0)

    p = cmds.add_parser("select", help="put a person on the register")
    _id_options(p, "the person's")
    p.add_argument("--bcu", required=True, help="home BCU (a BCU code of the directory)")
    p.add_argument("--strand", help="e.g. catch_and_convict, rehabilitate_and_resettle, prevent_and_deter")
    p.add_argument("--reason", help="why selected (e.g. 'NIM core nominal')")
    p.add_argument("--authority", help="on whose authority (e.g. the BCU Commander)")
    p.add_argument("--given-name")
    p.add_argument("--family-name")
    p.add_argument("--dob", type=_date_arg, help="date of birth, YYYY-MM-DD (decides youth rules)")
    p.add_argument("--on", type=_date_arg, help="effective date (default: today; never in the future)")
    _common(p)

    p = cmds.add_parser("deselect", help="take a person off the register")
    p.add_argument("identifier")
    p.add_argument("--reason", required=True, choices=DESELECTION_REASONS)
    p.add_argument("--authority", required=True, help="on whose authority (002 §54)")
    p.add_argument("--on", type=_date_arg, help="effective date: off the register from that day (default: today)")
    _common(p)

    p = cmds.add_parser("move", help="move a person to another BCU (the receiving coordinator is told: C5)")
    p.add_argument("identifier")
    p.add_argument("--to-bcu", required=True)
    p.add_argument("--reason")
    p.add_argument("--authority")
    p.add_argument("--on", type=_date_arg, help="effective date (default: today)")
    _common(p)

    p = cmds.add_parser(
        "update", help="add identifiers (a NOMS on first reception, a CRN later), or a missing name or date of birth"
    )
    p.add_argument("identifier", help="an identifier the register already has for the person")
    _id_options(p, "new")
    p.add_argument("--given-name")
    p.add_argument("--family-name")
    p.add_argument("--dob", type=_date_arg)
    p.add_argument("--reason")
    _common(p)

    p = cmds.add_parser("quarterly", help="additions and removals per BCU in a quarter (002 §37), CSV")
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--quarter", type=int, required=True, choices=(1, 2, 3, 4))
    p.add_argument("--bcu")


def add_directory_parser(sub: Any) -> None:
    d = sub.add_parser("directory", help="the directory of contacts")
    cmds = d.add_subparsers(dest="directory_command", required=True)
    p = cmds.add_parser(
        "check",
        help="would this directory file be accepted; does every BCU with PPOs have the contacts the rules need?",
    )
    p.add_argument("file")
    p.add_argument("--register", help="check against this register CSV (default: the register topic on Kafka)")
    p.add_argument("--no-register", action="store_true", help="check the file alone")
    p.add_argument("--strict", action="store_true", help="exit 1 when a BCU with PPOs lacks a contact")


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _operator(args: argparse.Namespace, settings: Settings) -> str:
    if getattr(args, "by", None):
        return str(args.by)
    if settings.register_operator:
        return settings.register_operator
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown-operator"


async def run_register(
    args: argparse.Namespace, settings: Settings, now: datetime | None = None, out: Callable[[str], None] = print
) -> int:
    """`ppo-alerts register ...` (async, so tests can run it in their loop)."""
    now = now or datetime.now(UTC)
    today = cal.london_date(now)
    cmd = args.register_command
    register = await read_register(settings, warn=_err)

    if cmd == "list":
        rows = list_rows(register, today, args.bcu, args.all)
        out(csv_text(LIST_COLUMNS, rows).rstrip("\n"))
        _err(
            f"{len(rows)} {'period(s)' if args.all else 'person(s) on the register on ' + str(today)}"
            + (f" in {args.bcu}" if args.bcu else "")
        )
        return EXIT_OK
    if cmd == "show":
        ids = parse_identifier(args.identifier)
        try:
            entry = register.identify(ids)
        except RegisterError as exc:
            raise _identity_refused(exc) from None
        if entry is None:
            _err(f"{describe(ids)} is not on the register (and never was)")
            return EXIT_REFUSED
        out(json.dumps(entry.to_dict(), indent=2) if args.json else show_text(entry, today))
        return EXIT_OK
    if cmd == "export":
        text = register.to_csv_text()
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            _err(f"wrote {len(register)} person(s) to {args.out}")
        else:
            out(text.rstrip("\n"))
        return EXIT_OK
    if cmd == "quarterly":
        rows = quarterly_rows(register, args.year, args.quarter, args.bcu)
        out(csv_text(QUARTERLY_COLUMNS, rows).rstrip("\n"))
        return EXIT_OK

    bcus, why = known_bcus(settings)
    if why:
        _err(f"warning: {why}")
    planner = Planner(register, source=_operator(args, settings), now=now, known_bcus=bcus)
    if cmd == "import":
        try:
            text = Path(args.file).read_text(encoding="utf-8-sig")
        except OSError as exc:
            _err(f"cannot read {args.file}: {exc.strerror}")
            return EXIT_REFUSED
        plan = plan_import(text, planner, origin=args.file)
        if plan.refused:
            for p in plan.problems:
                _err(f"{p['field']}: {p['problem']}")
            _err(f"import refused: {len(plan.problems)} problem(s); nothing was changed")
            return EXIT_REFUSED
        for c in plan.changes:
            out(f"line {c.line}: {c.summary}")
        counts = ", ".join(f"{n} {a}" for a, n in sorted(plan.counts().items())) or "no changes"
        if args.dry_run:
            out(f"dry run: would publish {counts}; {plan.unchanged} row(s) unchanged")
            return EXIT_OK
        changes = plan.changes
    else:
        changes = [_plan_command(planner, args)]
        out(changes[0].summary)
        counts = changes[0].action
    if not changes:
        out(f"nothing to change; {plan.unchanged} row(s) already on the register")
        return EXIT_OK
    return await _publish_and_wait(settings, changes, now, args.wait, counts, out)


def _plan_command(planner: Planner, args: argparse.Namespace) -> Change:
    cmd = args.register_command
    if cmd == "select":
        ids = {k: getattr(args, k) for k in IDENTIFIER_KINDS}
        return planner.select(
            ids,
            args.bcu,
            on=args.on,
            strand=args.strand,
            reason=args.reason,
            authority=args.authority,
            given_name=args.given_name,
            family_name=args.family_name,
            date_of_birth=args.dob,
        )
    ids = dict(parse_identifier(args.identifier))
    if cmd == "deselect":
        return planner.deselect(ids, args.reason, args.authority, on=args.on)
    if cmd == "move":
        return planner.move(ids, args.to_bcu, on=args.on, reason=args.reason, authority=args.authority)
    if cmd == "update":
        add = {k: getattr(args, k) for k in IDENTIFIER_KINDS}
        return planner.update(
            ids,
            add,
            given_name=args.given_name,
            family_name=args.family_name,
            date_of_birth=args.dob,
            reason=args.reason,
        )
    raise ChangeRefused(f"unknown command {cmd}")


async def _publish_and_wait(
    settings: Settings, changes: list[Change], now: datetime, wait: float, counts: str, out: Callable[[str], None]
) -> int:
    started = clock_time.monotonic()
    if wait <= 0:
        await publish_changes(settings, changes, now)
        out(f"published {counts} ({len(changes)} event(s)); not waiting for the rules service")
        return EXIT_OK
    async with RegisterWatch(settings) as watch:
        await publish_changes(settings, changes, now)
        pending = await watch.wait(changes, wait)
    took = clock_time.monotonic() - started
    if pending:
        _err(
            f"published {counts}, but the rules service has not applied {len(pending)} of them within {wait:g} s: "
            "is it running? `ppo-alerts register show` will tell; its log says why a change was refused"
        )
        return EXIT_UNCONFIRMED
    out(f"applied: {counts} ({len(changes)} event(s)) in {took:.2f} s")
    return EXIT_OK


async def run_directory(
    args: argparse.Namespace, settings: Settings, now: datetime | None = None, out: Callable[[str], None] = print
) -> int:
    """`ppo-alerts directory check FILE`: exit 0 accepted (gaps are warnings unless --strict), 1 refused."""
    day = cal.london_date(now or datetime.now(UTC))
    register: Register | None = None
    if args.register:
        try:
            register = Register.load(args.register)
        except RegisterError as exc:
            _err(f"cannot check against the register: {exc}")
            return EXIT_REFUSED
    elif not args.no_register:
        try:
            register = await asyncio.wait_for(read_register(settings, warn=_err), timeout=30)
        except (OSError, TimeoutError, Exception) as exc:  # noqa: BLE001 - Kafka unreachable: check the file alone
            _err(f"warning: register not read from Kafka ({type(exc).__name__}); checking the file alone")
    result = check_directory(lambda: Directory.load(args.file), register, day)
    for line in result.report():
        out(line)
    if register is not None and result.ok:
        out(
            f"checked against {sum(result.ppos.values())} PPO(s) on the register in {len(result.ppos)} BCU(s); "
            f"roles needed: {', '.join(REQUIRED_ROLES)}"
        )
    if not result.ok or (args.strict and result.gaps):
        return EXIT_REFUSED
    return EXIT_OK


def main_register(args: argparse.Namespace) -> int:
    return _run(run_register, args)


def main_directory(args: argparse.Namespace) -> int:
    return _run(run_directory, args)


def _run(fn: Callable[..., Coroutine[Any, Any, int]], args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from shared.settings import load_settings

    settings = load_settings()
    try:
        return asyncio.run(fn(args, settings))
    except NothingToChange as exc:
        print(f"nothing to change: {exc.message}")
        return EXIT_OK
    except ChangeRefused as exc:
        _err(f"refused: {exc}")
        return EXIT_REFUSED
    except KafkaError as exc:
        _err(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}")
        return EXIT_REFUSED
