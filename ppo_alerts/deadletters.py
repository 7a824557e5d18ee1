"""`ppo-alerts dead-letters list|show|replay`: read what the services parked on `<prefix>.dead-letter`, and put it
back on the topic it came from once the input or the mapping is mended.

`list` and `show` print no personal data (`show --show-personal-data` prints the payload). Every replay is
recorded on the dead-letter topic with who, when, which dead letter and where it went; a dead letter already
replayed is not replayed again without `--again`. The logic is `shared.dead_letters`, shared with intake's
`/v1/dead-letters` routes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ppo_alerts.register_cli import _operator
from shared.dead_letters import (
    Filter,
    detail,
    parse_id,
    parse_instant,
    plan_replay,
    read_dead_letters,
    replay_with_producer,
    summary,
    summary_line,
)
from shared.register_admin import EXIT_OK, EXIT_REFUSED
from shared.settings import Settings


def _instant_arg(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _id_arg(text: str) -> str:
    try:
        return parse_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--service", help="parked by this service (intake, rules, scheduler, notifier)")
    p.add_argument("--reason", help="reason contains this text (any case)")
    p.add_argument("--since", type=_instant_arg, metavar="INSTANT", help="parked at or after (ISO, with offset)")
    p.add_argument("--until", type=_instant_arg, metavar="INSTANT", help="parked before (ISO, with offset)")
    p.add_argument("--topic", help="came from this topic (e.g. ppo.intake.raw)")


def add_parser(sub: Any) -> None:
    d = sub.add_parser("dead-letters", help="list, show and replay what the services parked on the dead-letter topic",
                       description="Dead letters are named PARTITION-OFFSET on <prefix>.dead-letter.")
    cmds = d.add_subparsers(dest="dead_letters_command", required=True)

    p = cmds.add_parser("list", help="one line per dead letter: id, time, service, source, reason (no personal data)")
    _filters(p)
    p.add_argument("--json", action="store_true", help="JSON lines")

    p = cmds.add_parser("show", help="one dead letter, its payload redacted unless --show-personal-data")
    p.add_argument("id", type=_id_arg)
    p.add_argument("--show-personal-data", action="store_true", help="print the payload as it came")

    p = cmds.add_parser("replay", help="republish dead letters to the topic they came from; each replay is recorded")
    p.add_argument("ids", nargs="*", type=_id_arg, metavar="ID")
    p.add_argument("--all", action="store_true", help="every dead letter the filters match (they apply to --all only)")
    _filters(p)
    p.add_argument("--again", action="store_true", help="also those already replayed")
    p.add_argument("--payload-file", type=Path, metavar="FILE",
                   help="replay this mended body instead of the parked one (one ID only)")
    p.add_argument("--dry-run", action="store_true", help="say what would be replayed; publish nothing")
    p.add_argument("--by", help="your name, recorded with the replay (default: PPO_REGISTER_OPERATOR, else your "
                                "login name)")


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _filter_of(args: argparse.Namespace) -> Filter:
    return Filter(service=args.service, reason=args.reason, since=args.since, until=args.until, topic=args.topic)


async def run_dead_letters(args: argparse.Namespace, settings: Settings, now: datetime | None = None,
                           out: Callable[[str], None] = print) -> int:
    """`ppo-alerts dead-letters ...` (async, so tests can run it in their loop)."""
    letters = await read_dead_letters(settings)
    cmd = args.dead_letters_command
    if cmd == "list":
        where = _filter_of(args)
        shown = [letter for letter in letters.letters if where.matches(letter)]
        for letter in shown:
            replays = letters.replays.get(letter.id, [])
            out(json.dumps(summary(letter, replays)) if args.json else summary_line(letter, replays))
        _err(f"{len(shown)} dead letter(s)" + (f"; {letters.unreadable} unreadable record(s) skipped"
                                              if letters.unreadable else ""))
        return EXIT_OK
    if cmd == "show":
        found = letters.get(args.id)
        if found is None:
            _err(f"{args.id}: no such dead letter")
            return EXIT_REFUSED
        out(json.dumps(detail(found, letters.replays.get(found.id, []), args.show_personal_data), indent=2,
                       ensure_ascii=False))
        return EXIT_OK

    if bool(args.ids) == args.all:
        _err("replay: give dead-letter IDs, or --all (with filters), not both")
        return EXIT_REFUSED
    mended = None
    if args.payload_file is not None:
        try:
            mended = args.payload_file.read_bytes()
        except OSError as exc:
            _err(f"cannot read {args.payload_file}: {exc.strerror}")
            return EXIT_REFUSED
    decisions = plan_replay(letters, args.ids or None, _filter_of(args), again=args.again, mended=mended)
    for refused in (d for d in decisions if d.refused):
        _err(f"{refused.id}: not replayed: {refused.refused}")
    todo = [d for d in decisions if d.refused is None]
    if args.dry_run:
        for d in todo:
            out(f"{d.id}: would replay to {d.target_topic}" + (" (mended)" if d.mended else ""))
        return EXIT_OK if len(todo) == len(decisions) else EXIT_REFUSED
    done = await replay_with_producer(settings, todo, _operator(args, settings), now or datetime.now(UTC))
    for d in done:
        out(f"{d.id}: replayed to {d.target_topic}" + (" (mended)" if d.mended else ""))
    if not decisions:
        out("nothing to replay")
    return EXIT_OK if len(done) == len(decisions) else EXIT_REFUSED


def main_dead_letters(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from shared.settings import load_settings

    settings = load_settings()
    try:
        return asyncio.run(run_dead_letters(args, settings))
    except KafkaError as exc:
        _err(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}")
        return EXIT_REFUSED
