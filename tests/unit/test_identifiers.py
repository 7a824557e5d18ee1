"""Identifiers (formats.md §3): PNC, CRO, NOMS and CRN are normalised, or refused with a reason."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.identifiers import (
    CHECK_LETTERS,
    IDENTIFIER_KINDS,
    NORMALISERS,
    check_letter,
    normalise_crn,
    normalise_cro,
    normalise_noms,
    normalise_pnc,
)

TODAY = date(2026, 3, 2)

PNC_LONG = re.compile(r"^[0-9]{4}/[0-9]{7}[A-Z]$")
CRO_LONG = re.compile(r"^[0-9]{6}/[0-9]{2}[A-Z]$|^SF[0-9]{2}/[0-9]{6}[A-Z]$")
NOMS = re.compile(r"^[A-Z][0-9]{4}[A-Z]{2}$")
CRN = re.compile(r"^[A-Z][0-9]{6}$")


def pnc_letter(year: int, serial: int) -> str:
    """The check character computed straight from the spec, independently of the code under test."""
    return "ZABCDEFGHJKLMNPQRTUVWXY"[int(f"{year % 100:02d}{serial:07d}") % 23]


def cro_letter(yy: int, serial: int) -> str:
    return "ZABCDEFGHJKLMNPQRTUVWXY"[int(f"{yy:02d}{serial:06d}") % 23]


# --- the check-letter alphabet -----------------------------------------------------------------------------


def test_check_letters_are_23_letters_without_i_o_s():
    assert len(CHECK_LETTERS) == 23 == len(set(CHECK_LETTERS))
    assert not set("IOS") & set(CHECK_LETTERS)
    assert CHECK_LETTERS[0] == "Z" and check_letter(23) == "Z" and check_letter(1) == "A"


# --- PNC ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("long_form", ["2002/0073319Z", "2004/0012345D"])
def test_pnc_spec_examples_are_valid(long_form):
    assert normalise_pnc(long_form, today=TODAY) == long_form


@pytest.mark.parametrize(
    "raw",
    [
        "2004/0012345D",  # long form
        "04/0012345D",  # short form
        "04/12345D",  # short form, leading zeros of the serial missing
        "2004/12345D",  # long form, leading zeros missing
        "20040012345D",  # long form without the slash
        "040012345D",  # short form without the slash
        "2004/0012345d",  # lower case
        "  2004 / 0012345 D ",  # stray spaces
    ],
)
def test_pnc_forms_normalise_to_long_form(raw):
    assert normalise_pnc(raw, today=TODAY) == "2004/0012345D"


def test_pnc_short_form_of_the_other_example():
    assert normalise_pnc("02/73319Z", today=TODAY) == "2002/0073319Z"
    assert normalise_pnc("020073319z", today=TODAY) == "2002/0073319Z"


@pytest.mark.parametrize("wrong", [c for c in CHECK_LETTERS if c != "D"] + ["I", "O", "S"])
def test_pnc_wrong_check_letter_is_refused_naming_the_expected_letter(wrong):
    with pytest.raises(ValueError, match=r"expected D\b") as info:
        normalise_pnc(f"2004/0012345{wrong}", today=TODAY)
    assert f"2004/0012345{wrong}" in str(info.value)  # names the input too


def test_pnc_wrong_check_letter_in_short_form_names_expected_letter():
    with pytest.raises(ValueError, match=r"expected Z\b"):
        normalise_pnc("02/73319A", today=TODAY)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "2004/",
        "2004/0012345",
        "2004/00123456D",
        "204/0012345D",
        "20040012345",
        "2004-0012345D",
        "2004/0012345DD",
        "X004/0012345D",
        "2004/001234SD",
        "A1234BC",
        "065656/91H",
    ],
)
def test_pnc_malformed_is_refused_with_the_expected_shape(bad):
    with pytest.raises(ValueError, match="PNC"):
        normalise_pnc(bad, today=TODAY)


@pytest.mark.parametrize(
    ("yy", "today", "year"),
    [
        ("04", date(2026, 3, 2), 2004),
        ("26", date(2026, 1, 1), 2026),  # the current year is "not after the current year"
        ("26", date(2026, 12, 31), 2026),
        ("27", date(2026, 12, 31), 1927),  # after the current year -> 19YY
        ("27", date(2027, 1, 1), 2027),
        ("99", date(2026, 3, 2), 1999),
        ("00", date(2026, 3, 2), 2000),
        ("85", date(2026, 3, 2), 1985),
    ],
)
def test_pnc_two_digit_year(yy, today, year):
    serial = 12345
    letter = pnc_letter(year, serial)
    assert normalise_pnc(f"{yy}/{serial}{letter}", today=today) == f"{year}/{serial:07d}{letter}"


def test_pnc_two_digit_year_defaults_to_the_real_today():
    # 00 is never after the current year, whenever this test runs.
    letter = pnc_letter(2000, 1)
    assert normalise_pnc(f"00/1{letter}") == f"2000/0000001{letter}"


# --- CRO ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("065656/91H", "065656/91H"),
        ("65656/91H", "065656/91H"),
        ("065656/91h", "065656/91H"),
        (" 065656 / 91H ", "065656/91H"),
        ("SF91/065656H", "SF91/065656H"),
        ("SF91/65656H", "SF91/065656H"),
        ("sf91/65656h", "SF91/065656H"),
    ],
)
def test_cro_both_forms(raw, normal):
    assert normalise_cro(raw) == normal


@pytest.mark.parametrize("raw", ["065656/91A", "SF91/065656A"])
def test_cro_wrong_check_letter_names_expected_letter(raw):
    with pytest.raises(ValueError, match=r"expected H\b"):
        normalise_cro(raw)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "065656/91",
        "0656567/91H",
        "065656/9H",
        "065656-91H",
        "SF9/065656H",
        "XF91/065656H",
        "2004/0012345D",
    ],
)
def test_cro_malformed_is_refused(bad):
    with pytest.raises(ValueError, match="CRO"):
        normalise_cro(bad)


def test_cro_normal_form_is_ascii_or_refused():
    raw = "065656/\u0669\u0661H"  # Arabic-Indic 9 and 1: \d matches them
    try:
        out = normalise_cro(raw)
    except ValueError:
        return
    assert out == "065656/91H"


# --- NOMS and CRN ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"), [("A1234BC", "A1234BC"), ("a1234bc", "A1234BC"), (" G1234HJ ", "G1234HJ")]
)
def test_noms_valid(raw, normal):
    assert normalise_noms(raw) == normal


@pytest.mark.parametrize(
    "bad", ["", "A1234B", "A12345C", "11234BC", "AB234BC", "A1234B1", "A1234BCD", "A 1234BC", "X123456"]
)
def test_noms_invalid(bad):
    with pytest.raises(ValueError, match="NOMS"):
        normalise_noms(bad)


@pytest.mark.parametrize(
    ("raw", "normal"), [("X123456", "X123456"), ("l112233", "L112233"), (" X123456\n", "X123456")]
)
def test_crn_valid(raw, normal):
    assert normalise_crn(raw) == normal


@pytest.mark.parametrize("bad", ["", "X12345", "X1234567", "XX23456", "1234567", "X12345A", "A1234BC"])
def test_crn_invalid(bad):
    with pytest.raises(ValueError, match="CRN"):
        normalise_crn(bad)


def test_normalisers_cover_every_kind():
    assert set(NORMALISERS) == set(IDENTIFIER_KINDS) == {"pnc", "cro", "noms", "crn"}


# --- properties --------------------------------------------------------------------------------------------

years = st.integers(min_value=1900, max_value=2099)
pnc_serials = st.integers(min_value=0, max_value=9_999_999)
cro_serials = st.integers(min_value=0, max_value=999_999)
two_digits = st.integers(min_value=0, max_value=99)


@settings(max_examples=150, deadline=None)
@given(year=years, serial=pnc_serials)
def test_pnc_computed_check_letter_round_trips_every_form(year, serial):
    letter = check_letter(int(f"{year % 100:02d}{serial:07d}"))
    assert letter == pnc_letter(year, serial)
    long_form = f"{year:04d}/{serial:07d}{letter}"
    today = date(year, 6, 1)  # in `year` itself, YY means `year` whether it is 19YY or 20YY
    for raw in (
        long_form,
        f"{year}/{serial}{letter}",
        f"{year:04d}{serial:07d}{letter}",
        f"{year % 100:02d}/{serial}{letter}",
        f"{year % 100:02d}{serial:07d}{letter}",
        long_form.lower(),
    ):
        assert normalise_pnc(raw, today=today) == long_form, raw


@settings(max_examples=100, deadline=None)
@given(year=years, serial=pnc_serials, wrong=st.sampled_from(CHECK_LETTERS))
def test_pnc_any_other_letter_is_refused(year, serial, wrong):
    right = pnc_letter(year, serial)
    if wrong == right:
        return
    with pytest.raises(ValueError, match=f"expected {right}"):
        normalise_pnc(f"{year:04d}/{serial:07d}{wrong}", today=TODAY)


@settings(max_examples=100, deadline=None)
@given(yy=two_digits, today=st.dates(min_value=date(1990, 1, 1), max_value=date(2098, 12, 31)))
def test_pnc_two_digit_year_is_the_latest_year_not_after_today(yy, today):
    out = normalise_pnc(f"{yy:02d}/1{pnc_letter(yy, 1)}", today=today)
    year = int(out[:4])
    assert year % 100 == yy
    assert year in (1900 + yy, 2000 + yy)
    assert year == (2000 + yy if 2000 + yy <= today.year else 1900 + yy)


@settings(max_examples=150, deadline=None)
@given(yy=two_digits, serial=cro_serials)
def test_cro_computed_check_letter_round_trips_both_forms(yy, serial):
    letter = check_letter(int(f"{yy:02d}{serial:06d}"))
    assert letter == cro_letter(yy, serial)
    normal = f"{serial:06d}/{yy:02d}{letter}"
    assert normalise_cro(normal) == normal
    assert normalise_cro(f"{serial}/{yy:02d}{letter}") == normal
    sf = f"SF{yy:02d}/{serial:06d}{letter}"
    assert normalise_cro(sf) == sf
    assert normalise_cro(f"sf{yy:02d}/{serial}{letter.lower()}") == sf
    for wrong in CHECK_LETTERS:
        if wrong != letter:
            with pytest.raises(ValueError, match=f"expected {letter}"):
                normalise_cro(f"{serial:06d}/{yy:02d}{wrong}")
            break


# Text close to the real formats, so the property gets past the first regex as well as refusing junk.
identifierish = st.text(alphabet="0123456789/ SFsfAZDHHXYabc-\n\t\u0669\uff11", max_size=16)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(IDENTIFIER_KINDS), text=st.one_of(st.text(max_size=20), identifierish))
@example(kind="pnc", text="2004/0012345D")
@example(kind="cro", text="SF91/65656H")
@example(kind="noms", text="a1234bc")
@example(kind="crn", text="x123456")
def test_any_text_normalises_or_raises_value_error(kind, text):
    normalise = (lambda v: normalise_pnc(v, today=TODAY)) if kind == "pnc" else NORMALISERS[kind]
    try:
        out = normalise(text)
    except ValueError as exc:
        assert str(exc)  # a message a person can act on
        return
    # Whatever was accepted is in normal form, and normalising again changes nothing.
    assert normalise(out) == out
    shape = {"pnc": PNC_LONG, "noms": NOMS, "crn": CRN}.get(kind)
    if shape is not None:
        assert shape.match(out), out
    else:
        assert re.match(r"^\d{6}/\d{2}[A-Z]$|^SF\d{2}/\d{6}[A-Z]$", out), out


# --- the normal-form fast paths agree with the full parse ---------------------------------------------------


def _full_parse(normaliser, value):
    """The general parse, bypassing the normal-form match: its answer, or its refusal."""
    try:
        return normaliser(value)
    except ValueError as exc:
        return ("refused", str(exc))


@settings(max_examples=500, deadline=None)
@given(year=st.integers(min_value=1900, max_value=2099), serial=st.integers(min_value=0, max_value=9_999_999),
       letter=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
def test_pnc_in_normal_form_is_checked_as_the_full_parse_checks_it(year, serial, letter):
    from shared import identifiers

    value = f"{year:04d}/{serial:07d}{letter}"
    full = _full_parse(lambda v: identifiers._pnc_parts.__wrapped__(v)[0], value)
    assert _full_parse(normalise_pnc, value) == full
    assert (full == value) == (letter == pnc_letter(year, serial))


@settings(max_examples=300, deadline=None)
@given(value=st.from_regex(r"\A[A-Z][0-9]{4}[A-Z]{2}\Z") | st.text(max_size=9))
def test_noms_fast_path_agrees_with_the_full_parse(value):
    from shared import identifiers

    assert _full_parse(normalise_noms, value) == _full_parse(identifiers._normalise_noms.__wrapped__, value)


@settings(max_examples=300, deadline=None)
@given(value=st.from_regex(r"\A[A-Z][0-9]{6}\Z") | st.text(max_size=8))
def test_crn_fast_path_agrees_with_the_full_parse(value):
    from shared import identifiers

    assert _full_parse(normalise_crn, value) == _full_parse(identifiers._normalise_crn.__wrapped__, value)
