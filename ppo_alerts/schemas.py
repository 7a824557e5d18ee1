"""Generate the machine-readable JSON Schema of the canonical event (contract §1).

    .venv/bin/python -m ppo_alerts.schemas            # (re)write schemas/canonical-event.schema.json
    .venv/bin/python -m ppo_alerts.schemas --check    # exit 1 when the committed file is stale

The schema comes from the pydantic models in `shared.events`, so it cannot drift from what intake
accepts; `tests/unit/test_schema.py` fails when the committed file differs from the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared.events import event_json_schema

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "schemas" / "canonical-event.schema.json"
REGENERATE = ".venv/bin/python -m ppo_alerts.schemas"


def render() -> str:
    """The schema as committed: pretty-printed, keys sorted, one trailing newline."""
    return json.dumps(event_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppo_alerts.schemas", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=SCHEMA_PATH, help=f"where to write (default: {SCHEMA_PATH})"
    )
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 when the file is out of date"
    )
    args = parser.parse_args(argv)
    text = render()
    out: Path = args.out
    if args.check:
        current = out.read_text(encoding="utf-8") if out.exists() else None
        if current != text:
            print(f"{out} is out of date; regenerate with: {REGENERATE}", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
