"""Common Platform hearing results (formats.md §2) → canonical events (formats.md §6).

Accepted: `{"hearing": {...}}` or the bare hearing object; problems are reported under the path they have
in the payload (`hearing.prosecutionCases[0].defendants[1].pncId`, or without `hearing.` when bare).

One canonical event per (defendant, relevant judicial result), identical events of one defendant in one
hearing merged (the same remand on three offences is one bail decision):

By `cjsCode` (the CJS result code):

* 4575, 4576, 4577 → `warrant.issued`: kind `fta` when the offence is `BA76001`/`BA76002` or the result
  text or label says the defendant failed to appear/attend/surrender, else `arrest`; `backed_for_bail`
  true for 4575 and 4577.
* 2509 → `warrant.withdrawn`.
* 4027 / 4047 / 4028, 4531 → `court.bail_decision` `conditional_bail` / `unconditional_bail` / `custody`.
* 4541 (remand in police custody) → `court.bail_decision` `custody` (decision: not in the §6 table).
* 4572, 4574 (bail conditions imposed / varied) → `court.bail_decision` `conditional_bail` (decision).
* 1002, 1024, 1081, 1501, 1507 → `court.sentence` `custody`, `custody_days` from the duration prompts.
* 1115 → `court.sentence` `suspended`.
* 4585, 4586 (warrants for a parent/guardian, or a witness) → nothing: not a warrant for the defendant
  (decision), even when `FINAL`.
* Any other result with `category` `FINAL` → `court.outcome`: `conviction` when `isConvictedResult`,
  else `other`; `case_ended` true.
* Anything else → ignored (`cp:result-not-mapped`).

Decisions not spelled out in formats.md:

* Warrants. A court issues one warrant for the defendant, recorded against each offence, so the warrant
  is identified by (hearing id, court, T, defendant, result code): `warrant_id` = `cp-warrant:` + a hash.
  The offences' results merge into one `warrant.issued`, of kind `fta` if any of them is an FTA. A warrant
  result held at defendant level (`defendant.defendantCaseJudicialResults[]`, or
  `hearing.defendantJudicialResults[]` matched on `masterDefendantId`) is `fta` when any of the
  defendant's offences is a Bail Act offence. A 2509 withdrawal names no warrant, so its `warrant_id` is
  built the same way and matches no earlier `warrant.issued`.
* Ids. `id` = `cp:` + a hash of (hearing id, defendant id and identifiers, type, T, data), so a replay gives
  the same ids and merged results share one id whatever order the offences come in.
* T is the earliest `sittingDay` of the hearing days not marked `isCancelled` (any day if all are), which
  must carry an offset; failing that the result's `orderedDate` at 00:00 Europe/London; a result with
  neither is a problem (`cp:no-date`).
* `custody_days`: prompts whose label mentions custody, imprisonment, detention or a term (not a
  suspension, licence, supervision or extension period), a "total" one preferred, else a prompt of type
  `DURATION`; values such as "6 Months", "2 Years", "18 Weeks", "14 Days" or "1 Year 6 Months" are summed
  with a year as 365 days and a month as 30 days (so "24 Months" is 720 days, below C3's 730).
* Results made at an earlier hearing. A hearing carries forward, on its offences, the results of earlier
  hearings of the case, each naming the hearing that made it (`orderedHearingId`): the large sample's
  results all come from five earlier hearings. Taken as results of this hearing they would be dated
  wrongly (this hearing's sitting day) and re-announce old decisions, under another court code, so a
  result whose `orderedHearingId` differs from the hearing's `id` is ignored
  (`cp:result-from-earlier-hearing`): it was reported by the hearing that made it. Results without an
  `orderedHearingId` belong to the hearing that carries them.
* Results flagged `isDeleted` are ignored (`cp:result-deleted`).
* Person: `pncId` (two-digit years resolved against the date received) and `croNumber`, normalised;
  `firstName`/`lastName` (cut to 100 characters) and `dateOfBirth` from `personDefendant.personDetails`.
  Each invalid identifier is a problem naming its field (never its value); a defendant with no usable
  identifier yields no events, a problem and `cp:no-identifier`; the rest of the hearing still translates.
* `court_code` = `courtCentre.code`; without one, events that need it are not produced (`cp:no-court-code`).
* What an officer can look up, on every warrant and court result (optional fields of the canonical data):
  `case_urn` = the case's `prosecutionCaseIdentifier.caseURN`, else its `prosecutionAuthorityReference` (at most
  40 characters, else left out); `hearing_date` = the London date of T; `court_name` = `courtCentre.name`;
  `result_text` = the result's `resultText`, else its `label` (the first of merged results). Text is cleaned of
  control characters (`clean_name`) and cut to the canonical bounds (100 and 500 characters), never refused.
* `source` = `common-platform`.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any

from pydantic import ValidationError

from services.intake.feeds import (
    MAX_EVENTS,
    FeedResult,
    digest,
    identifier_problem,
    parse_instant,
    text,
)
from shared.calendar import london_date
from shared.clock import LONDON
from shared.errors import InputRejected, problems_of
from shared.events import EVENT_MODELS, Person, clean_name
from shared.identifiers import normalise_cro, normalise_pnc
from shared.trusted import trusted_constructor

FORMAT = "common-platform"
SOURCE = "common-platform"

WARRANTS_ISSUED = {"4575": True, "4576": False, "4577": True}  # cjsCode -> backed for bail
WARRANT_WITHDRAWN = "2509"
BAIL_DECISIONS = {
    "4027": "conditional_bail",
    "4047": "unconditional_bail",
    "4028": "custody",
    "4531": "custody",
    "4541": "custody",
    "4572": "conditional_bail",
    "4574": "conditional_bail",
}
CUSTODY_SENTENCES = frozenset({"1002", "1024", "1081", "1501", "1507"})
SUSPENDED_SENTENCE = "1115"
NOT_FOR_THE_DEFENDANT = frozenset({"4585", "4586"})
FTA_OFFENCES = frozenset({"BA76001", "BA76002"})
_FTA_TEXT = re.compile(r"\bfail(?:ed|s|ure|ing)?\s+to\s+(?:appear|attend|surrender)", re.IGNORECASE)

_CUSTODY_LABEL = re.compile(r"custod|imprison|detention|\bterm\b", re.IGNORECASE)
_NOT_CUSTODY_LABEL = re.compile(r"suspen|licen[cs]e|supervis|extension|extended|curfew|defer", re.IGNORECASE)
_DURATION = re.compile(r"(\d{1,5})\s*(years?|yrs?|y|months?|mths?|m|weeks?|wks?|w|days?|d)\b", re.IGNORECASE)
_UNIT_DAYS = {"y": 365, "m": 30, "w": 7, "d": 1}
MAX_CUSTODY_DAYS = 100 * 366

MAX_LIST = 10_000  # cases, defendants, offences, results, prompts or hearing days looked at in one list
MAX_TEXT = 2_000
MAX_URN = 40
MAX_COURT_NAME = 100
MAX_RESULT_TEXT = 500


def looks_like_hearing(payload: dict[str, Any]) -> bool:
    return "hearing" in payload or "prosecutionCases" in payload or "courtCentre" in payload


def _list(value: Any) -> list[Any]:
    return value[:MAX_LIST] if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _code(value: Any) -> str:
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip()[:20]
    return ""


def _clean_text(value: Any, limit: int) -> str | None:
    """Feed text a message can show: cleaned of control characters (clean_name), cut to `limit`; None if blank."""
    if not isinstance(value, str):
        return None
    cleaned = clean_name(value[: limit * 4])  # bounded work for a huge field; cleaning only shortens
    return cleaned[:limit].rstrip() or None if isinstance(cleaned, str) else None


def _case_urn(case: dict[str, Any]) -> str | None:
    ident = _dict(case.get("prosecutionCaseIdentifier"))
    for raw in (ident.get("caseURN"), ident.get("prosecutionAuthorityReference")):
        urn = _clean_text(raw, MAX_TEXT)
        if urn is not None:
            return urn if len(urn) <= MAX_URN else None  # a longer one is not a reference to quote
    return None


def _date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    value = value.strip()[:10]  # "2024-10-21" or the date part of an ISO date-time
    try:
        return date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        return None


def custody_days(prompts: Any) -> int | None:
    """Days of custody stated by a result's duration prompts, or None (see the module docstring)."""
    labelled: list[tuple[bool, str]] = []
    typed: list[str] = []
    for prompt in _list(prompts):
        if not isinstance(prompt, dict):
            continue
        value = prompt.get("value")
        if not isinstance(value, str) or not value.strip():
            continue
        label = prompt.get("label")
        label = label[:MAX_TEXT] if isinstance(label, str) else ""
        if _NOT_CUSTODY_LABEL.search(label):
            continue
        if _CUSTODY_LABEL.search(label):
            labelled.append(("total" in label.lower(), value))
        elif isinstance(prompt.get("type"), str) and prompt["type"].upper() == "DURATION":
            typed.append(value)
    candidates = [v for total, v in labelled if total] + [v for total, v in labelled if not total] + typed
    for value in candidates:
        days = duration_days(value)
        if days is not None:
            return days
    return None


def duration_days(value: str) -> int | None:
    """ "6 Months" -> 180, "2 Years" -> 730, "18 Weeks" -> 126, "14 Days" -> 14, "1 Year 6 Months" -> 545."""
    total = 0
    found = False
    for number, unit in _DURATION.findall(value[:200]):
        total += int(number) * _UNIT_DAYS[unit[0].lower()]
        found = True
    if not found or total > MAX_CUSTODY_DAYS:
        return None
    return total


_person_of = trusted_constructor(Person)


class _Hearing:
    """The translation of one hearing: state shared by its defendants."""

    def __init__(self, hearing: dict[str, Any], prefix: str, received_at: datetime) -> None:
        self.hearing = hearing
        self.prefix = prefix
        self.today = received_at.date() if isinstance(received_at, datetime) else None
        self.res = FeedResult()
        self.hearing_id = text(hearing.get("id")) or ""
        self.court = self._court()
        centre = hearing.get("courtCentre")
        self.court_name = _clean_text(centre.get("name"), MAX_COURT_NAME) if isinstance(centre, dict) else None
        self.sitting = self._sitting_day()
        # dedupe key -> (event type, fields); insertion order is the order of the payload
        self.collected: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.by_master_id = self._hearing_level_results()

    # --- hearing-level facts ----------------------------------------------------------------------

    def _court(self) -> str | None:
        centre = self.hearing.get("courtCentre")
        code = text(centre.get("code"), 20) if isinstance(centre, dict) else None
        if code is None:
            self.res.problem(
                f"{self.prefix}courtCentre.code",
                "missing or not a court code: events that need a court are not produced",
            )
        return code

    def _sitting_day(self) -> datetime | None:
        live: datetime | None = None
        any_day: datetime | None = None
        for i, day in enumerate(_list(self.hearing.get("hearingDays"))):
            if not isinstance(day, dict) or day.get("sittingDay") is None:
                continue
            try:
                instant = parse_instant(day.get("sittingDay"))
            except ValueError as exc:
                self.res.problem(f"{self.prefix}hearingDays[{i}].sittingDay", str(exc))
                continue
            if any_day is None or instant < any_day:
                any_day = instant
            if day.get("isCancelled") is not True and (live is None or instant < live):
                live = instant
        return live or any_day

    def _hearing_level_results(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for i, item in enumerate(_list(self.hearing.get("defendantJudicialResults"))):
            if not isinstance(item, dict):
                continue
            master = text(item.get("masterDefendantId"))
            result = item.get("judicialResult")
            if master is None or not isinstance(result, dict):
                continue
            out.setdefault(master, []).append(
                (f"{self.prefix}defendantJudicialResults[{i}].judicialResult", result)
            )
        return out

    # --- the walk ---------------------------------------------------------------------------------

    def translate(self) -> FeedResult:
        cases = self.hearing.get("prosecutionCases")
        if cases is None:
            self.res.ignored.append("cp:no-prosecution-cases")
        elif not isinstance(cases, list):
            raise InputRejected(
                "invalid hearing", [{"field": f"{self.prefix}prosecutionCases", "problem": "must be a list"}]
            )
        matched: set[str] = set()
        for ci, case in enumerate(_list(cases)):
            where_case = f"{self.prefix}prosecutionCases[{ci}]"
            if not isinstance(case, dict):
                self.res.problem(where_case, "must be an object")
                continue
            defendants = case.get("defendants")
            if not isinstance(defendants, list):
                if defendants is not None:
                    self.res.problem(f"{where_case}.defendants", "must be a list")
                continue
            for di, defendant in enumerate(_list(defendants)):
                where = f"{where_case}.defendants[{di}]"
                if not isinstance(defendant, dict):
                    self.res.problem(where, "must be an object")
                    continue
                self._defendant(defendant, where, f"#{ci}.{di}", matched, _case_urn(case))
        for master, results in self.by_master_id.items():
            if master not in matched:
                self.res.ignored.extend("cp:result-no-defendant" for _ in results)
        self._emit()
        return self.res.finish()

    def _defendant(
        self, d: dict[str, Any], where: str, position: str, matched: set[str], case_urn: str | None
    ) -> None:
        person = self._person(d, where)
        if person is None:
            self.res.ignored.append("cp:no-identifier")
            return
        defendant_id = text(d.get("id")) or position
        who = (defendant_id, person.pnc or "", person.cro or "")
        offences = [(oi, o) for oi, o in enumerate(_list(d.get("offences"))) if isinstance(o, dict)]
        offence_codes = {_code(o.get("offenceCode")).upper() for _, o in offences}
        any_bail_act = bool(offence_codes & FTA_OFFENCES)
        for oi, offence in offences:
            is_bail_act = _code(offence.get("offenceCode")).upper() in FTA_OFFENCES
            for ri, result in enumerate(_list(offence.get("judicialResults"))):
                self._result(
                    result, f"{where}.offences[{oi}].judicialResults[{ri}]", person, who, is_bail_act, case_urn
                )
        for ri, result in enumerate(_list(d.get("defendantCaseJudicialResults"))):
            self._result(
                result, f"{where}.defendantCaseJudicialResults[{ri}]", person, who, any_bail_act, case_urn
            )
        for key in {text(d.get("masterDefendantId")), text(d.get("id"))}:
            if key is not None and key in self.by_master_id and key not in matched:
                matched.add(key)
                for result_where, result in self.by_master_id[key]:
                    self._result(result, result_where, person, who, any_bail_act, case_urn)

    def _person(self, d: dict[str, Any], where: str) -> Person | None:
        ids: dict[str, str] = {}
        invalid = False
        for key, kind in (("pncId", "pnc"), ("croNumber", "cro")):
            raw = d.get(key)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                continue
            if not isinstance(raw, str):
                self.res.problem(f"{where}.{key}", "must be a string")
                invalid = True
                continue
            try:
                ids[kind] = normalise_pnc(raw, self.today) if kind == "pnc" else normalise_cro(raw)
            except ValueError as exc:
                self.res.problem(f"{where}.{key}", identifier_problem(exc, raw))
                invalid = True
        if not ids:
            if not invalid:
                self.res.problem(
                    f"{where}.pncId", "missing, and no croNumber: the defendant cannot be identified"
                )
            return None
        details = _dict(_dict(d.get("personDefendant")).get("personDetails"))
        given = details.get("firstName")
        family = details.get("lastName")
        dob_raw = details.get("dateOfBirth")
        dob = _date(dob_raw)
        if dob is None and dob_raw not in (None, ""):
            self.res.problem(
                f"{where}.personDefendant.personDetails.dateOfBirth", "not an ISO date (e.g. 1990-05-01)"
            )
        # Valid by construction: identifiers normalised above (at least one), names cleaned (clean_name) and cut
        # to the model's 100 characters, the date parsed. Constructed without validating again (shared.trusted).
        return _person_of({
            "pnc": ids.get("pnc"), "cro": ids.get("cro"), "noms": None, "crn": None,
            "given_name": (clean_name(given) or "")[:100].strip() or None if isinstance(given, str) else None,
            "family_name": (clean_name(family) or "")[:100].strip() or None if isinstance(family, str) else None,
            "date_of_birth": dob,
        })

    def _result(
        self,
        result: Any,
        where: str,
        person: Person,
        who: tuple[str, str, str],
        bail_act: bool,
        case_urn: str | None,
    ) -> None:
        if not isinstance(result, dict):
            return
        if result.get("isDeleted") is True:
            self.res.ignored.append("cp:result-deleted")
            return
        ordered_at = text(result.get("orderedHearingId"))
        if ordered_at is not None and self.hearing_id and ordered_at != self.hearing_id:
            self.res.ignored.append("cp:result-from-earlier-hearing")
            return
        cjs = _code(result.get("cjsCode"))
        category = result.get("category")
        category = category.strip().upper() if isinstance(category, str) else ""
        if cjs in WARRANTS_ISSUED:
            kind = "fta" if bail_act or self._says_fta(result) else "arrest"
            event_type = "warrant.issued"
        elif cjs == WARRANT_WITHDRAWN:
            event_type = "warrant.withdrawn"
        elif cjs in BAIL_DECISIONS:
            event_type = "court.bail_decision"
        elif cjs in CUSTODY_SENTENCES or cjs == SUSPENDED_SENTENCE:
            event_type = "court.sentence"
        elif cjs in NOT_FOR_THE_DEFENDANT or category != "FINAL":
            self.res.ignored.append("cp:result-not-mapped")
            return
        else:
            event_type = "court.outcome"
        occurred_at = self.sitting or self._ordered_midnight(result)
        if occurred_at is None:
            self.res.problem(
                f"{where}.orderedDate", "no sitting day and no ordered date: the result has no date"
            )
            self.res.ignored.append("cp:no-date")
            return
        if self.court is None and event_type != "warrant.withdrawn":
            self.res.ignored.append("cp:no-court-code")
            return
        court = self.court or ""
        instant = occurred_at.isoformat()
        data: dict[str, Any]
        if event_type == "warrant.issued":
            warrant_id = "cp-warrant:" + digest(self.hearing_id, court, instant, *who, cjs)
            key: tuple[Any, ...] = (who, event_type, warrant_id)
            existing = self.collected.get(key)
            if existing is not None:
                if kind == "fta":
                    existing["data"]["kind"] = "fta"
                self.res.ignored.append("cp:duplicate-result")
                return
            data = {
                "warrant_id": warrant_id,
                "court_code": court,
                "kind": kind,
                "backed_for_bail": WARRANTS_ISSUED[cjs],
            }
        elif event_type == "warrant.withdrawn":
            data = {"warrant_id": "cp-warrant:" + digest(self.hearing_id, court, instant, *who, cjs)}
            key = (who, event_type, instant, data["warrant_id"])
        elif event_type == "court.bail_decision":
            data = {"court_code": court, "decision": BAIL_DECISIONS[cjs]}
            key = (who, event_type, instant, court, data["decision"])
        elif event_type == "court.sentence":
            if cjs == SUSPENDED_SENTENCE:
                data = {"court_code": court, "disposal": "suspended"}
            else:
                data = {
                    "court_code": court,
                    "disposal": "custody",
                    "custody_days": custody_days(result.get("judicialResultPrompts")),
                }
            key = (who, event_type, instant, court, data["disposal"], data.get("custody_days"))
        else:
            outcome = "conviction" if result.get("isConvictedResult") is True else "other"
            data = {"court_code": court, "outcome": outcome, "case_ended": True}
            key = (who, event_type, instant, court, outcome)
        if key in self.collected:
            self.res.ignored.append("cp:duplicate-result")
            return
        if event_type != "warrant.withdrawn":
            # What an officer can look up; not part of the key, so merging and ids are as before.
            data.update(self._case_facts(result, occurred_at, case_urn))
        if len(self.collected) >= MAX_EVENTS:
            raise InputRejected(
                "hearing too large",
                [
                    {
                        "field": f"{self.prefix}prosecutionCases",
                        "problem": f"yields more than {MAX_EVENTS} events",
                    }
                ],
            )
        self.collected[key] = {
            "type": event_type,
            "occurred_at": occurred_at,
            "person": person,
            "data": data,
            "where": where,
        }

    def _case_facts(self, result: dict[str, Any], occurred_at: datetime, case_urn: str | None) -> dict[str, Any]:
        wording = _clean_text(result.get("resultText"), MAX_RESULT_TEXT) or _clean_text(
            result.get("label"), MAX_RESULT_TEXT
        )
        return {
            "case_urn": case_urn,
            "hearing_date": london_date(occurred_at),
            "court_name": self.court_name,
            "result_text": wording,
        }

    @staticmethod
    def _says_fta(result: dict[str, Any]) -> bool:
        for field in ("resultText", "label"):
            value = result.get(field)
            if isinstance(value, str) and _FTA_TEXT.search(value[:MAX_TEXT]):
                return True
        return False

    @staticmethod
    def _ordered_midnight(result: dict[str, Any]) -> datetime | None:
        day = _date(result.get("orderedDate"))
        return None if day is None else datetime.combine(day, time(0), tzinfo=LONDON)

    def _emit(self) -> None:
        for key, fields in self.collected.items():
            where = fields.pop("where")
            event_type = fields["type"]
            fields["id"] = "cp:" + digest(self.hearing_id, repr(key))
            fields["source"] = SOURCE
            try:
                self.res.events.append(EVENT_MODELS[event_type].__pydantic_validator__.validate_python(fields))
            except ValidationError as exc:  # not expected: a translated value the canonical model refuses
                for p in problems_of(exc, f"{where} (translated) "):
                    self.res.problem(p["field"], p["problem"])
                self.res.ignored.append("cp:invalid-event")


def translate(payload: dict[str, Any], received_at: datetime) -> FeedResult:
    """One resulted hearing, wrapped (`{"hearing": {...}}`) or bare."""
    if "hearing" in payload:
        hearing = payload["hearing"]
        if not isinstance(hearing, dict):
            raise InputRejected("invalid hearing", [{"field": "hearing", "problem": "must be an object"}])
        return _Hearing(hearing, "hearing.", received_at).translate()
    return _Hearing(payload, "", received_at).translate()
