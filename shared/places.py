"""Names of prisons and courts from their codes: versioned reference data (`shared/reference/places.json`).

A feed names a place by its code (a NOMIS agency id such as `LEI`, a court's organisation unit code such as
`B05KP00`); officers know it by name ("HMP Leeds"). The package ships a dated file; a deployment can point
`PPO_PLACES_FILE` at a newer one of the same format, checked at start-up (`load_places` raises `PlacesError`,
one line naming the file and the problem). Look-ups never raise: an unknown code is shown as the code.

Names are checked when the file is loaded (one line, letters, digits and a little punctuation, bounded), so a
name from this file is safe wherever it is shown, the subject of an email included.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "CODE",
    "PLACES_FILE",
    "Places",
    "PlacesError",
    "court_name",
    "default_places",
    "load_places",
    "prison_name",
]

PLACES_FILE = Path(__file__).resolve().parent / "reference" / "places.json"
CODE = re.compile(r"^[A-Z0-9]{2,10}$")  # a code shown as it is when the file does not name it
NAME = re.compile(r"^[^\W_](?:[\w '&(),./-]*[\w).])?$")  # "HMP Leeds", "Wimbledon Magistrates' Court"
MAX_NAME = 80
MAX_FILE_BYTES = 5_000_000
_KEYS = frozenset({"version", "source", "prisons", "courts"})


class PlacesError(ValueError):
    """The places file cannot be used; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class Places:
    version: str
    source: str = ""
    prisons: Mapping[str, str] = field(default_factory=dict)
    courts: Mapping[str, str] = field(default_factory=dict)

    def prison(self, code: Any) -> str | None:
        """The prison's name, or None when the code is not in the file."""
        return self.prisons.get(code.strip().upper()) if isinstance(code, str) else None

    def court(self, code: Any) -> str | None:
        return self.courts.get(code.strip().upper()) if isinstance(code, str) else None

    def prison_name(self, code: Any) -> str:
        """'HMP Leeds' for 'LEI'; the code itself when unknown ('' for no code)."""
        return self.prison(code) or _as_text(code)

    def court_name(self, code: Any) -> str:
        return self.court(code) or _as_text(code)


def _as_text(code: Any) -> str:
    return code.strip() if isinstance(code, str) else ""


def _names(raw: Any, what: str, where: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise PlacesError(f"{where}: {what!r} must be an object of code -> name")
    out: dict[str, str] = {}
    for code, name in raw.items():
        if not CODE.match(code):
            raise PlacesError(f"{where}: {what} code {code[:20]!r} is not 2 to 10 capital letters or digits")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or not NAME.match(name):
            raise PlacesError(f"{where}: {what} {code}: the name must be one line of letters, digits, spaces and "
                              f"' & ( ) , . / - (at most {MAX_NAME} characters)")
        out[code] = name
    return out


def parse_places(document: Any, where: str = "places file") -> Places:
    """The reference data of a decoded places document; PlacesError naming `where` and the problem."""
    if not isinstance(document, dict):
        raise PlacesError(f"{where}: must be a JSON object with version, source, prisons and courts")
    if unknown := sorted(set(document) - _KEYS):
        raise PlacesError(f"{where}: unknown key {unknown[0][:40]!r} (keys: version, source, prisons, courts)")
    version = document.get("version")
    if not isinstance(version, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,40}", version):
        raise PlacesError(f"{where}: 'version' must be a short label such as \"2026-12-01\"")
    source = document.get("source", "")
    if not isinstance(source, str) or len(source) > 2000:
        raise PlacesError(f"{where}: 'source' must be text (at most 2000 characters)")
    return Places(version, source, _names(document.get("prisons", {}), "prisons", where),
                  _names(document.get("courts", {}), "courts", where))


def load_places(path: Path) -> Places:
    """The places file at `path`, checked; PlacesError (one line) when it is missing, unreadable or wrong."""
    where = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PlacesError(f"{where}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise PlacesError(f"{where}: larger than {MAX_FILE_BYTES} bytes")
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PlacesError(f"{where}: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise PlacesError(f"{where}: not JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_places(document, where)


@cache
def default_places() -> Places:
    """The package's own file (read once)."""
    return load_places(PLACES_FILE)


def prison_name(code: Any) -> str:
    """'HMP Leeds' for 'LEI', from the package's file; the code itself when unknown. Never raises."""
    return default_places().prison_name(code)


def court_name(code: Any) -> str:
    """'Liverpool Crown Court' for 'B05KP00', from the package's file; the code itself when unknown."""
    return default_places().court_name(code)
