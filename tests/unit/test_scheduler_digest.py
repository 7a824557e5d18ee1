"""When the weekly custody digest (D2) fires and whose PPOs it lists: services/scheduler/digest.py (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.scheduler.digest import digest_at, ppos_by_bcu
from shared.custody import CustodyBook, rows_for
from shared.register import Register
from shared.settings import Settings
from tests.rulebook_fixtures import REGISTER_CSV, event


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_weekly_at_nine_london_on_the_weekday():
    assert digest_at(utc(2026, 11, 24, 12)) == utc(2026, 11, 30, 9)  # Tuesday -> next Monday, 09:00 GMT
    assert digest_at(utc(2026, 11, 30, 8, 59)) == utc(2026, 11, 30, 9)  # the same Monday, not yet 09:00
    assert digest_at(utc(2026, 11, 30, 9)) == utc(2026, 12, 7, 9)  # strictly after
    assert digest_at(utc(2027, 6, 1, 12)) == utc(2027, 6, 7, 8)  # 09:00 BST
    assert digest_at(utc(2026, 11, 24, 12), "Wednesday") == utc(2026, 11, 25, 9)


def test_a_bank_holiday_monday_moves_the_digest_to_tuesday():
    # Monday 31 August 2026 is the summer bank holiday
    assert digest_at(utc(2026, 8, 28, 12)) == utc(2026, 9, 1, 8)  # Tuesday 09:00 BST
    assert digest_at(utc(2026, 8, 31, 12)) == utc(2026, 9, 1, 8)  # on the holiday itself: that Tuesday
    assert digest_at(utc(2026, 9, 1, 8)) == utc(2026, 9, 7, 8)  # after it: the Monday after
    # Christmas 2028: Monday 25 and Tuesday 26 December are both bank holidays -> Wednesday
    assert digest_at(utc(2028, 12, 22, 12)) == utc(2028, 12, 27, 9)


def test_weekday_setting():
    assert Settings().scheduler_digest_weekday == "monday"
    assert Settings(scheduler_digest_weekday="Friday").scheduler_digest_weekday == "friday"
    with pytest.raises(ValueError):
        Settings(scheduler_digest_weekday="saturday")


def test_rows_are_each_bcus_ppos_in_custody_whatever_identifier_the_events_carry():
    people = ppos_by_bcu(Register.from_csv_text(REGISTER_CSV), date(2026, 11, 30))
    assert set(people) == {"13-LD", "21-ST"}  # Pat was de-selected in 2025
    book = CustodyBook().apply_all([
        event("prison.reception", {"noms": "G1234HJ"}, "2026-11-01T09:00:00Z", prison_id="LEI", reason="new"),
        event("prison.release_date_set", {"noms": "G1234HJ"}, "2026-11-02T09:00:00Z", prison_id="LEI",
              release_date="2026-12-10", kind="crd"),
        event("prison.reception", {"noms": "J3456KL"}, "2026-11-01T09:00:00Z", prison_id="LEI", reason="new"),
        event("prison.reception", {"noms": "H2345JK"}, "2026-11-01T09:00:00Z", prison_id="WYI", reason="remand"),
        event("prison.release", {"noms": "H2345JK"}, "2026-11-03T09:00:00Z", prison_id="WYI", reason="bail"),
    ])
    [alex] = rows_for(book, people["13-LD"])
    assert alex.person_name == "Alex SAMPLE" and alex.identifiers["pnc"] == "2006/0777001G"
    assert alex.release_date == date(2026, 12, 10) and alex.days_to_release(date(2026, 11, 30)) == 10
    assert rows_for(book, people["21-ST"]) == []
