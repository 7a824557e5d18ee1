"""Identifiers of a person in the justice system, validated and normalised (formats.md §3).

Each parser returns the normal form or raises ValueError with a message a person can act on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from functools import lru_cache

CHECK_LETTERS = "ZABCDEFGHJKLMNPQRTUVWXY"  # 23 letters: no I, O, S

_NOMS = re.compile(r"^[A-Z][0-9]{4}[A-Z]{2}$")
_CRN = re.compile(r"^[A-Z][0-9]{6}$")
_PNC_SLASH = re.compile(r"^([0-9]{2}|[0-9]{4})/([0-9]{1,7})([A-Z])$")
_PNC_BARE = re.compile(r"^([0-9]{4})([0-9]{7})([A-Z])$|^([0-9]{2})([0-9]{7})([A-Z])$")
_CRO = re.compile(r"^([0-9]{1,6})/([0-9]{2})([A-Z])$")
_CRO_SF = re.compile(r"^SF([0-9]{2})/([0-9]{1,6})([A-Z])$")


def check_letter(number: int) -> str:
    return CHECK_LETTERS[number % 23]


def _full_year(two_digits: int, this_year: int) -> int:
    year = 2000 + two_digits
    return year if year <= this_year else year - 100


# Other forms (short years, lower case, stray spaces) are parsed in full and memoised, bounded; only successes
# are cached: a bad value raises (with its message) every time.
_CACHE_SIZE = 1 << 17


# Normal forms, as nearly every feed already sends them: recognised and checked without the general parse.
_PNC_NORMAL = re.compile(r"[0-9]{4}/[0-9]{7}[A-Z]")
_NOMS_NORMAL = re.compile(r"[A-Z][0-9]{4}[A-Z]{2}")
_CRN_NORMAL = re.compile(r"[A-Z][0-9]{6}")


def normalise_pnc(value: str, today: date | None = None) -> str:
    """`2004/0012345D`, `04/12345D`, `20040012345D` -> `2004/0012345D`, check character verified."""
    if _PNC_NORMAL.fullmatch(value) and CHECK_LETTERS[int(value[2:4] + value[5:12]) % 23] == value[12]:
        return value
    normal, yy, serial, letter = _pnc_parts(value)
    if normal is not None:
        return normal
    # A two-digit year depends on the current year (the check character does not): worked out each time.
    year = _full_year(yy, (today or date.today()).year)
    return f"{year:04d}/{serial:07d}{letter}"


@lru_cache(maxsize=_CACHE_SIZE)
def _pnc_parts(value: str) -> tuple[str | None, int, int, str]:
    """(normal form, or None when the year has two digits; the year as given; serial; check character)."""
    raw = value.strip().upper().replace(" ", "")
    if m := _PNC_SLASH.match(raw):
        year_s, serial_s, letter = m.groups()
    elif m := _PNC_BARE.match(raw):
        g = m.groups()
        year_s, serial_s, letter = (g[0], g[1], g[2]) if g[0] else (g[3], g[4], g[5])
    else:
        raise ValueError(f"{value!r} is not a PNC ID (expected YYYY/NNNNNNNC or YY/NNNNNNNC, e.g. 2004/0012345D)")
    year = int(year_s)
    serial = int(serial_s)
    expected = check_letter(int(f"{year % 100:02d}{serial:07d}"))
    if letter != expected:
        raise ValueError(f"{value!r} is not a valid PNC ID: check character is {letter}, expected {expected}")
    normal = f"{year:04d}/{serial:07d}{letter}" if len(year_s) == 4 else None
    return normal, year, serial, letter


@lru_cache(maxsize=_CACHE_SIZE)
def normalise_cro(value: str) -> str:
    """`65656/91H` -> `065656/91H`; `SF91/65656H` -> `SF91/065656H`; check character verified."""
    raw = value.strip().upper().replace(" ", "")
    if m := _CRO.match(raw):
        serial_s, yy, letter = m.groups()
        normal = f"{int(serial_s):06d}/{yy}{letter}"
    elif m := _CRO_SF.match(raw):
        yy, serial_s, letter = m.groups()
        normal = f"SF{yy}/{int(serial_s):06d}{letter}"
    else:
        raise ValueError(f"{value!r} is not a CRO number (expected NNNNNN/YYC or SFYY/NNNNNNC, e.g. 065656/91H)")
    expected = check_letter(int(f"{yy}{int(serial_s):06d}"))
    if letter != expected:
        raise ValueError(f"{value!r} is not a valid CRO number: check character is {letter}, expected {expected}")
    return normal


def is_normal_noms(value: str) -> bool:
    """Already a NOMS number in its normal form (`A1234BC`)."""
    return _NOMS_NORMAL.fullmatch(value) is not None


def normalise_noms(value: str) -> str:
    if _NOMS_NORMAL.fullmatch(value):
        return value
    return _normalise_noms(value)


@lru_cache(maxsize=_CACHE_SIZE)
def _normalise_noms(value: str) -> str:
    raw = value.strip().upper()
    if not _NOMS.match(raw):
        raise ValueError(f"{value!r} is not a NOMS number (expected a letter, 4 digits, 2 letters, e.g. A1234BC)")
    return raw


def normalise_crn(value: str) -> str:
    if _CRN_NORMAL.fullmatch(value):
        return value
    return _normalise_crn(value)


@lru_cache(maxsize=_CACHE_SIZE)
def _normalise_crn(value: str) -> str:
    raw = value.strip().upper()
    if not _CRN.match(raw):
        raise ValueError(f"{value!r} is not a CRN (expected a letter and 6 digits, e.g. X123456)")
    return raw


NORMALISERS: dict[str, Callable[[str], str]] = {
    "pnc": normalise_pnc, "cro": normalise_cro, "noms": normalise_noms, "crn": normalise_crn}
IDENTIFIER_KINDS = ("pnc", "cro", "noms", "crn")
