"""Small builders for rule-book tests: a register, a directory, canonical events."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from typing import Any

from services.rules.ledger import Ledger
from services.rules.rulebook import RuleBook, RuleTimings
from shared.directory import Directory
from shared.events import EventBase, parse_event
from shared.register import Register

REGISTER_CSV = """pnc,cro,noms,crn,given_name,family_name,date_of_birth,home_bcu,strand,selected_on,reason,deselected_on
2006/0777001G,,G1234HJ,L112233,Alex,Sample,1988-08-08,13-LD,catch_and_convict,2025-06-01,NIM core nominal,
2022/0031337W,,H2345JK,,Sam,Junior,2010-01-20,21-ST,deter,2025-11-01,PYO,
1999/0001234X,,J3456KL,,Pat,Former,1979-03-03,13-LD,catch_and_convict,2023-01-01,Core nominal,2025-12-31
"""

DIRECTORY = {
    "recipient_domains": ["police.uk", "pnn.police.uk", "cjsm.net", "gov.uk", "justice.gov.uk"],
    "bcus": {
        "13-LD": {"name": "Leeds District", "force": "13", "contacts": {
            "ppo": ["leeds.ppo@westyorkshire.police.uk"], "warrants": ["warrants@westyorkshire.police.uk"],
            "probation": ["leeds.iom@justice.gov.uk"], "yot": ["yot@leeds.gov.uk"],
            "coordinator": ["leeds.iom.coord@westyorkshire.police.uk"],
            "escalation": ["leeds.duty@westyorkshire.police.uk"]}},
        "21-ST": {"name": "Stoke-on-Trent", "force": "21", "contacts": {
            "ppo": ["stoke.ppo@staffordshire.police.uk"], "warrants": ["warrants@staffordshire.police.uk"],
            "probation": ["stoke.iom@justice.gov.uk"], "yot": ["yos@stoke.gov.uk"],
            "coordinator": ["stoke.ppo.coord@staffordshire.police.uk"],
            "escalation": ["stoke.duty@staffordshire.police.uk"]}},
    },
}

ALEX = {"pnc": "2006/0777001G"}  # adult, 13-LD, selected 2025-06-01
SAM = {"noms": "H2345JK"}  # born 2010-01-20, 21-ST, selected 2025-11-01
PAT = {"noms": "J3456KL"}  # de-selected 2025-12-31
NOBODY = {"noms": "Z9999ZZ"}

LEEDS_PPO = "leeds.ppo@westyorkshire.police.uk"
LEEDS_WARRANTS = "warrants@westyorkshire.police.uk"
LEEDS_PROBATION = "leeds.iom@justice.gov.uk"
LEEDS_COORD = "leeds.iom.coord@westyorkshire.police.uk"
STOKE_PPO = "stoke.ppo@staffordshire.police.uk"
STOKE_YOT = "yos@stoke.gov.uk"
STOKE_COORD = "stoke.ppo.coord@staffordshire.police.uk"

_ids = count(1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def event(type_: str, person: dict[str, str], occurred_at: str, event_id: str | None = None,
          **data: Any) -> EventBase:
    return parse_event({
        "id": event_id or f"t-{next(_ids)}", "type": type_, "occurred_at": occurred_at, "source": "TEST",
        "person": person, "data": data,
    })


def make_ledger(register_csv: str = REGISTER_CSV, timings: RuleTimings | None = None) -> Ledger:
    register = Register.from_csv_text(register_csv)
    directory = Directory.from_mapping(DIRECTORY)
    return Ledger(RuleBook(register, directory, timings))


def only(decision: Any, rule: str) -> Any:
    found = [o for o in decision.raised if o.rule == rule]
    assert len(found) == 1, f"expected one {rule}, got {[o.rule for o in decision.raised]}"
    return found[0]
