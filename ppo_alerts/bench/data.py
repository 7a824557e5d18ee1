"""Synthetic data for the benchmarks, in one place: people with valid identifiers, registers, directories,
canonical events for the live stack, a national-scale world for `simulate`, pending obligations for the
scheduler and rendered emails for the notifier.

Everything is generated from a seed, so two runs feed the same inputs.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import yaml

from shared.identifiers import check_letter

__all__ = [
    "DIRECTORY", "EventStream", "National", "SENDER", "canonical_events", "noms", "obligation_records",
    "pnc", "rendered_emails", "write_reference",
]

SENDER = "ppo-alerts@notify.example.gov.uk"
NOMS_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"

# Ten BCUs with every role filled: every obligation has recipients (two for the immediate rules).
DIRECTORY: dict[str, Any] = {
    "recipient_domains": ["police.uk", "justice.gov.uk", "gov.uk"],
    "bcus": {f"B{i:02d}": {"name": f"BCU {i}", "contacts": {
        role: [f"{role}.{i}@force{i}.police.uk"] for role in ("ppo", "warrants", "coordinator", "escalation")
    } | {"probation": [f"pp{i}@justice.gov.uk"], "yot": [f"yot{i}@council{i}.gov.uk"]}} for i in range(10)},
}


# --- identifiers -----------------------------------------------------------------------------------------------

def pnc(serial: int, year: int = 2010) -> str:
    """A PNC number (long form) with a valid check letter."""
    return f"{year}/{serial:07d}{check_letter(int(f'{year % 100:02d}{serial:07d}'))}"


def noms(i: int) -> str:
    """A distinct, well-formed NOMS number for each i below 24 * 10,000 * 24."""
    letters = NOMS_LETTERS
    return f"{letters[i % 24]}{(i // 24) % 10000:04d}{letters[(i // 240000) % 24]}{letters[(i // 7) % 24]}"


# --- the live stack: a register, a directory, mixed canonical events ---------------------------------------------

def write_reference(folder: Path, people: int, ppo_share: float, today: date) -> tuple[Path, Path, list[int]]:
    """A register where `ppo_share` of `people` are PPOs (selected 30 days ago, so no C1/C2 falls due) and the
    directory; returns their paths and the PPOs' indices."""
    folder.mkdir(parents=True, exist_ok=True)
    ppos = list(range(0, people, max(1, round(1 / ppo_share))))
    rows = ["pnc,cro,noms,crn,given_name,family_name,date_of_birth,home_bcu,strand,selected_on,reason,deselected_on"]
    selected = today - timedelta(days=30)
    rows += [f"{pnc(i)},,{noms(i)},,G{i},F{i},1985-01-01,B{i % 10:02d},deter,{selected},bench," for i in ppos]
    register = folder / "register.csv"
    register.write_text("\n".join(rows) + "\n")
    directory = folder / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    return register, directory, ppos


def canonical_events(n: int, people: int, ppos: list[int], ppo_share: float, now: datetime,
                     seed: int = 1) -> list[dict[str, Any]]:
    """Mixed canonical events (receptions, FTA warrants, bail decisions, arrests), about `ppo_share` of them
    about a PPO. Ids are unique per seed."""
    rnd = random.Random(seed)
    ppo_set = set(ppos)
    others = [i for i in range(people) if i not in ppo_set] or [people + 1]
    out = []
    for k in range(n):
        i = rnd.choice(ppos) if rnd.random() < ppo_share else rnd.choice(others)
        at = (now - timedelta(seconds=rnd.randint(1, 3600))).isoformat()
        base = {"id": f"b-{seed}-{k}", "occurred_at": at, "source": "BENCH", "person": {"pnc": pnc(i), "noms": noms(i)}}
        kind = k % 4
        if kind == 0:
            out.append({**base, "type": "prison.reception", "data": {"prison_id": f"P{k % 997}", "reason": "new"}})
        elif kind == 1:
            out.append({**base, "type": "warrant.issued",
                        "data": {"warrant_id": f"W{seed}-{k}", "court_code": "B01AA00", "kind": "fta"}})
        elif kind == 2:
            out.append({**base, "type": "court.bail_decision",
                        "data": {"court_code": f"B{k % 97:02d}AA00", "decision": "custody"}})
        else:
            out.append({**base, "type": "police.arrest", "data": {"force_code": "13"}})
    return out


# --- a national-scale year for `simulate` -------------------------------------------------------------------------

START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
YEAR = timedelta(days=365)
PRISONS = ("LEI", "WYI", "DUR", "HUL", "DRI", "MAN", "LIV", "BMI", "PVI", "WWI", "NMI", "HMI")
COURTS = ("B13AA00", "B21AA00", "B01LY00", "C13AA00", "C21AA00", "B05KP00", "B20BL00", "C01CE00")


class National:
    """The register (PPOs today and people de-selected earlier, over 150 BCUs in 43 forces), the directory,
    and people never on the register."""

    def __init__(self, people: int, ppos: int, outsiders: int, seed: int) -> None:
        rnd = random.Random(seed)
        self.rnd = rnd
        self.bcus = [f"{force:02d}-{b}" for force in range(1, 44) for b in ("A", "B", "C", "D")][:150]
        rows = ["pnc,cro,noms,crn,given_name,family_name,date_of_birth,home_bcu,strand,selected_on,reason,"
                "deselected_on"]
        self.ppo: list[dict[str, str]] = []
        self.former: list[dict[str, str]] = []
        chosen = set(rnd.sample(range(people), ppos))
        for i in range(people):
            ident = {"pnc": pnc(100000 + i, 1980 + i % 40), "noms": noms(i)}
            crn = f"X{i:06d}" if i % 3 == 0 else ""
            dob = date(1970, 1, 1) + timedelta(days=rnd.randrange(365 * 38))
            selected = date(2020, 1, 1) + timedelta(days=rnd.randrange(365 * 6))
            deselected = ""
            if i in chosen:
                self.ppo.append(ident)
            else:
                deselected = (selected + timedelta(days=30 + rnd.randrange(700))).isoformat()
                if deselected > "2025-12-31":
                    deselected = "2025-12-31"
                    selected = min(selected, date(2025, 6, 1))
                self.former.append(ident)
            rows.append(f"{ident['pnc']},,{ident['noms']},{crn},Given{i},Family{i},{dob},"
                        f"{self.bcus[i % len(self.bcus)]},catch_and_convict,{selected},Core nominal,{deselected}")
        self.register_csv = "\n".join(rows) + "\n"
        self.outsiders = [{"pnc": pnc(5000000 + i, 1980 + i % 40), "noms": noms(people + i)}
                          for i in range(outsiders)]
        self.directory = {
            "recipient_domains": ["police.uk", "justice.gov.uk", "gov.uk"],
            "bcus": {code: {"name": f"BCU {code}", "force": code[:2], "contacts": {
                "ppo": [f"ppo.{code.lower()}@force{code[:2]}.police.uk"],
                "warrants": [f"warrants@force{code[:2]}.police.uk"],
                "probation": [f"iom.{code.lower()}@justice.gov.uk"],
                "yot": [f"yot.{code.lower()}@council.gov.uk"],
                "coordinator": [f"coord.{code.lower()}@force{code[:2]}.police.uk"],
                "escalation": [f"duty.{code.lower()}@force{code[:2]}.police.uk"],
            }} for code in self.bcus},
        }


class EventStream:
    """Decoded payloads as `simulate` has them after reading a line, (at, body), in the formats intake accepts:
    HMPPS receptions and releases (both feeds; the delayed feed often repeats the immediate one, half of those
    SNS-wrapped), canonical warrants, court outcomes and sentences, release dates, arrests and intelligence, and a
    few Common Platform hearings."""

    def __init__(self, world: National, total: int, ppo_share: float, seed: int, span: timedelta = YEAR) -> None:
        self.w = world
        self.total = total
        self.ppo_share = ppo_share
        self.rnd = random.Random(seed)
        self.step = span / total
        self.n = 0
        self.echoes: deque[tuple[int, dict[str, Any]]] = deque()  # (emit at index, body): delayed-feed repeats

    def person(self) -> dict[str, str]:
        r = self.rnd.random()
        if r < self.ppo_share:
            return self.rnd.choice(self.w.ppo)
        if r < self.ppo_share + (1 - self.ppo_share) / 2:
            return self.rnd.choice(self.w.former)
        return self.rnd.choice(self.w.outsiders)

    def chunk(self, size: int) -> list[tuple[datetime, Any]]:
        out: list[tuple[datetime, Any]] = []
        while len(out) < size and self.n < self.total:
            at = START + self.step * self.n
            if self.echoes and self.echoes[0][0] <= self.n:
                body = self.echoes.popleft()[1]
            else:
                body = self.event(at)
            out.append((at, body))
            self.n += 1
        return out

    def event(self, at: datetime) -> Any:
        rnd = self.rnd
        who = self.person()
        t = at - timedelta(minutes=rnd.randrange(1, 90))
        kind = rnd.random()
        if kind < 0.25:
            return self.movement(who, t, received=True)
        if kind < 0.43:
            return self.movement(who, t, received=False)
        eid = f"bench-{self.n}"
        ts = t.isoformat()
        person = {"pnc": who["pnc"]} if rnd.random() < 0.6 else {"noms": who["noms"]}
        if kind < 0.53:
            return {"id": eid, "type": "warrant.issued", "occurred_at": ts, "source": "HMCTS", "person": person,
                    "data": {"warrant_id": f"W-{self.n}", "court_code": rnd.choice(COURTS),
                             "kind": rnd.choice(("fta", "fta", "breach", "recall", "arrest")),
                             "grade_given": rnd.choice(("B", "C", None))}}
        if kind < 0.65:
            return {"id": eid, "type": "court.outcome", "occurred_at": ts, "source": "HMCTS", "person": person,
                    "data": {"court_code": rnd.choice(COURTS),
                             "outcome": rnd.choice(("conviction", "acquittal", "adjournment", "committal")),
                             "case_ended": rnd.random() < 0.3}}
        if kind < 0.70:
            disposal = rnd.choice(("custody", "community", "suspended", "fine"))
            data: dict[str, Any] = {"court_code": rnd.choice(COURTS), "disposal": disposal}
            if disposal == "custody":
                data["custody_days"] = rnd.choice((90, 180, 365, 730, 1095, 1460))
            return {"id": eid, "type": "court.sentence", "occurred_at": ts, "source": "HMCTS", "person": person,
                    "data": data}
        if kind < 0.80:
            release = (at + timedelta(days=rnd.randrange(5, 400))).date()
            return {"id": eid, "type": "prison.release_date_set", "occurred_at": ts, "source": "NOMIS",
                    "person": {"noms": who["noms"]},
                    "data": {"prison_id": rnd.choice(PRISONS),
                             "release_date": None if rnd.random() < 0.05 else release.isoformat(),
                             "kind": rnd.choice(("crd", "ard", "confirmed", "hdc"))}}
        if kind < 0.98:
            return {"id": eid, "type": rnd.choice(("police.arrest", "police.arrest", "police.intelligence")),
                    "occurred_at": ts, "source": "PNC", "person": {"pnc": who["pnc"]},
                    "data": {"force_code": "13"}}
        return self.hearing(who, t)

    def movement(self, who: dict[str, str], t: datetime, received: bool) -> dict[str, Any]:
        rnd = self.rnd
        reason = (rnd.choice(("ADMISSION", "ADMISSION", "TRANSFERRED", "RETURN_FROM_COURT",
                              "TEMPORARY_ABSENCE_RETURN")) if received
                  else rnd.choice(("RELEASED", "RELEASED", "TEMPORARY_ABSENCE_RELEASE", "SENT_TO_COURT",
                                   "TRANSFERRED")))
        prison = rnd.choice(PRISONS)
        occurred = t.isoformat()
        verb = "received" if received else "released"
        immediate = {
            "eventType": f"prisoner-offender-search.prisoner.{verb}", "version": 1, "occurredAt": occurred,
            "publishedAt": occurred, "description": "A prisoner movement",
            "additionalInformation": {"nomsNumber": who["noms"], "prisonId": prison,
                                      "reason": "NEW_ADMISSION" if reason == "ADMISSION" else reason},
            "personReference": {"identifiers": [{"type": "NOMS", "value": who["noms"]}]},
        }
        if rnd.random() < 0.4:  # the delayed feed reports the same movement about 45 minutes later
            delayed = {
                "eventType": f"prison-offender-events.prisoner.{verb}", "version": 1, "occurredAt": occurred,
                "publishedAt": occurred, "description": "A prisoner movement",
                "additionalInformation": {"nomsNumber": who["noms"], "prisonId": prison, "reason": reason,
                                          "currentLocation": "IN_PRISON", "nomisMovementReasonCode": "N",
                                          "currentPrisonStatus": "UNDER_PRISON_CARE", "details": "movement"},
                "personReference": {"identifiers": [{"type": "NOMS", "value": who["noms"]}]},
            }
            body: Any = delayed
            if rnd.random() < 0.5:
                body = {"Type": "Notification", "MessageId": f"m-{self.n}", "Message": json.dumps(delayed)}
            self.echoes.append((self.n + 400, body))
        return immediate

    def hearing(self, who: dict[str, str], t: datetime) -> dict[str, Any]:
        rnd = self.rnd
        cjs, code = rnd.choice((("4576", "BA76001"), ("4028", "TH68010"), ("1002", "TH68010"),
                                ("4027", "TH68010"), ("3010", "TH68010")))
        result: dict[str, Any] = {
            "judicialResultId": f"jr-{self.n}", "cjsCode": cjs, "label": "Result",
            "category": "FINAL" if cjs in ("1002", "3010") else "INTERMEDIARY",
            "isConvictedResult": cjs == "1002", "orderedDate": t.date().isoformat(),
        }
        if cjs == "1002":
            result["judicialResultPrompts"] = [{"label": "Total custodial period", "value": "3 Years",
                                                "type": "DURATION"}]
        return {"hearing": {
            "id": f"h-{self.n}", "jurisdictionType": "MAGISTRATES",
            "courtCentre": {"id": "c", "code": rnd.choice(COURTS), "name": "A court"},
            "hearingDays": [{"sittingDay": t.isoformat()}],
            "prosecutionCases": [{"id": f"pc-{self.n}", "defendants": [{
                "id": f"d-{self.n}", "pncId": who["pnc"],
                "personDefendant": {"personDetails": {"firstName": "A", "lastName": "B"}},
                "offences": [{"id": f"o-{self.n}", "offenceCode": code, "judicialResults": [result]}],
            }]}],
        }}


# --- the scheduler: pending timed obligations --------------------------------------------------------------------

def obligation_records(start: int, send_ats: Iterator[datetime] | list[datetime],
                       now: datetime) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) records of pending A4 obligations (release in 28 days), one per send time, numbered from
    `start`. Made from one validated Obligation and plain dicts, so a million of them cost seconds, not minutes,
    and are never all in memory at once."""
    from shared.obligations import Obligation

    template = Obligation(
        obligation_id="A4-0", rule="A4", source_paragraph="001 §7.5, §2.3", person=None, bcu="B00",
        recipients=["ppo.0@force0.police.uk", "pp0@justice.gov.uk"],
        recipient_roles={"ppo.0@force0.police.uk": "ppo", "pp0@justice.gov.uk": "probation"},
        send_at=now, notify_by=now + timedelta(minutes=15), raised_at=now,
        facts={"release_date": "2027-01-01", "prison_id": "LEI", "rule_title": "release in 28 days"},
        source_event_ids=["bench-0"], event_type="prison.release_date_set",
    ).model_dump(mode="json")
    for i, send_at in enumerate(send_ats, start=start):
        oid = f"A4-{i:024x}"
        record = dict(template, obligation_id=oid, send_at=send_at.isoformat(),
                      notify_by=(send_at + timedelta(minutes=15)).isoformat(), source_event_ids=[f"bench-{i}"])
        yield oid.encode(), json.dumps(record).encode()


# --- the notifier: rendered emails --------------------------------------------------------------------------------

_RENDERED: list[tuple[EmailMessage, str]] = []


def rendered_emails(n: int) -> list[tuple[EmailMessage, str]]:
    """`n` real A1 notices, one recipient each, rendered beforehand (so a send measures SMTP only) and kept for the
    next call."""
    from ppo_alerts.render_examples import sample_now, sample_obligation
    from services.notifier.render import Renderer

    if len(_RENDERED) >= n:
        return _RENDERED[:n]
    renderer = Renderer()
    o = sample_obligation("A1")
    out = _RENDERED
    for i in range(len(out), n):
        recipient = f"officer{i}@westyorkshire.police.uk"
        one = o.model_copy(update={"obligation_id": f"A1-bench-{i:06d}", "recipients": [recipient],
                                   "recipient_roles": {recipient: "ppo"}})
        out.append((renderer.render(one, recipient, "ppo", None, sample_now("A1")).to_email(SENDER), recipient))
    return out[:n]
