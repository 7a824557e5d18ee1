"""The coordinator's pages: register changes, the quarterly record, the list review (C6).

Every change is checked with `shared.register_admin.Planner` exactly as the CLI and intake's HTTP routes check it,
against a working copy of the register entries the change can touch (`ConsoleView.register_for_change`), and only
an accepted change is published: its `register.*` event on `<prefix>.events`, keyed by the person key. The rules
service records it and publishes the entry's snapshot on `<prefix>.register`, which the view follows: the person
page shows the change once that snapshot arrives, not before.

A coordinator selects only into their own BCUs, and de-selects, moves or corrects only someone whose period today
(and on the change's date) is in one of their BCUs; anyone else is "not found", as an unknown person is, so person
ids cannot be probed. Form input is checked before the planner sees it (control characters, lengths, real dates,
fields the page does not have): a clear answer, never a 500. Logs carry ids only, never a name or a date of birth.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from services.console.web import NO_STORE, ConsolePages, StaffMember
from shared import calendar as cal
from shared.ack import Acknowledgement
from shared.identifiers import IDENTIFIER_KINDS
from shared.kafka import RECEIVED_AT_HEADER
from shared.register import Register, RegisterEntry
from shared.register_admin import (
    DESELECTION_REASONS,
    QUARTERLY_COLUMNS,
    Change,
    ChangeRefused,
    NothingToChange,
    Planner,
    csv_text,
    known_bcus,
    list_rows,
    normalise_ids,
    quarterly_rows,
)

log = logging.getLogger("ppo.console")

REVIEW_RULE = "C6"
REASON_LABELS = {
    "stopped_offending": "Stopped offending", "moved_area": "Moved out of the area",
    "long_custody": "A long custodial sentence", "two_year_review": "Two-year review",
    "high_harm": "Managed as high risk of harm (MAPPA)", "other": "Another reason",
}
LIMITS = {"given_name": 100, "family_name": 100, "strand": 60, "reason": 500, "authority": 200, "home_bcu": 40,
          "to_bcu": 40, "pnc": 20, "cro": 20, "noms": 20, "crn": 20}
# control characters, zero-width and bidirectional overrides: never part of a name, a reason or an identifier
_HOSTILE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_DATE_PARTS = ("day", "month", "year")
_PLANNER_FIELDS = {"selected_on": "on", "deselected_on": "on", "moved_on": "on", "person": "pnc"}
_FORMULA = ("=", "+", "-", "@", "\t", "\r")

SELECT_FIELDS = ("pnc", "cro", "noms", "crn", "given_name", "family_name", "home_bcu", "strand", "reason",
                 "authority")
DESELECT_FIELDS = ("reason", "authority")
MOVE_FIELDS = ("to_bcu", "reason", "authority")
IDENTIFIER_FIELDS = ("pnc", "cro", "noms", "crn", "given_name", "family_name", "reason")
SELECT_ORDER = ("pnc", "cro", "noms", "crn", "given_name", "family_name", "date_of_birth", "home_bcu", "strand",
                "reason", "authority", "on")
IDENTIFIER_ORDER = ("pnc", "cro", "noms", "crn", "given_name", "family_name", "date_of_birth", "reason")

IDENTIFIER_LABELS = {"pnc": "PNC number", "cro": "CRO number", "noms": "NOMS number", "crn": "CRN (nDelius)"}
FIELD_LABELS = {**IDENTIFIER_LABELS, "given_name": "Given name", "family_name": "Family name",
                "home_bcu": "Home BCU", "to_bcu": "BCU to move to", "strand": "Strand", "reason": "Reason",
                "authority": "Authority", "date_of_birth": "Date of birth", "on": "Date the change takes effect"}


@dataclass
class Checked:
    """A form read and checked: the values to show again, and every problem by field (in the form's order)."""

    values: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def problem(self, name: str, text: str) -> None:
        self.problems.setdefault(name, text)

    def text(self, form: dict[str, str], name: str) -> str | None:
        raw = form.get(name, "")
        limit = LIMITS.get(name, 200)
        label = FIELD_LABELS.get(name, name)
        self.values[name] = _HOSTILE.sub("", raw)[:limit]
        if _HOSTILE.search(raw):
            self.problem(name, f"{label} must not contain control or invisible formatting characters")
            return None
        value = raw.strip()
        if len(value) > limit:
            self.problem(name, f"{label} must be {limit} characters or fewer")
            return None
        return value or None

    def day(self, form: dict[str, str], name: str, *, past_only: bool = False, today: date | None = None) \
            -> date | None:
        label = FIELD_LABELS.get(name, name)
        parts = {}
        for part in _DATE_PARTS:
            raw = form.get(f"{name}-{part}", "")
            self.values[f"{name}-{part}"] = _HOSTILE.sub("", raw)[:4]
            parts[part] = raw.strip()
        if not any(parts.values()):
            return None
        if not all(parts.values()):
            missing = [p for p in _DATE_PARTS if not parts[p]]
            self.problem(name, f"{label} must include a {' and a '.join(missing)}")
            return None
        if not all(v.isascii() and v.isdigit() and len(v) <= 4 for v in parts.values()):
            self.problem(name, f"{label} must be a real date, in numbers, like 27 3 2026")
            return None
        year, month, dom = int(parts["year"]), int(parts["month"]), int(parts["day"])
        if not 1900 <= year <= 2100:
            self.problem(name, f"{label} must be a real date: the year has four digits, like 2026")
            return None
        try:
            day = date(year, month, dom)
        except ValueError:
            self.problem(name, f"{label} must be a real date")
            return None
        if past_only and today is not None and day > today:
            self.problem(name, f"{label} must be in the past")
            return None
        return day


class RegisterPages:
    def __init__(self, pages: ConsolePages) -> None:
        self.pages = pages

    # --- helpers --------------------------------------------------------------------------------------------

    def _today(self) -> date:
        return cal.london_date(self.pages.clock.now())

    def _not_found(self, request: Request) -> Response:
        return self.pages.refused(request, 404, "Person not found",
                                  "They may not be on the register today, or be on a BCU's register you do not "
                                  "work for.")

    def _expired(self, request: Request) -> Response:
        return self.pages.refused(request, 400, "Not sent", "The form had expired. Go back, reload the page and "
                                  "try again. Nothing was changed.")

    def _unknown_fields(self, request: Request, form: dict[str, str], allowed: Iterable[str],
                        dates: Iterable[str]) -> Response | None:
        known = {"csrf", *allowed, *(f"{d}-{p}" for d in dates for p in _DATE_PARTS)}
        if set(form) - known:
            log.info("register form refused: fields the page does not have",
                     extra={"path": request.url.path, "fields": len(set(form) - known)})
            return self.pages.refused(request, 400, "Not sent",
                                      "The form had fields this page does not have. Go back, reload the page "
                                      "and try again. Nothing was changed.")
        return None

    def _changeable(self, member: StaffMember, person_id: str) -> RegisterEntry | None:
        """The entry when the person's period today is in one of the member's BCUs; None otherwise."""
        entry = self.pages.view.entry(person_id)
        if entry is None:
            return None
        current = entry.period_at(self._today())
        return entry if current is not None and current.home_bcu in member.bcus else None

    def _planner(self, register: Register, member: StaffMember) -> Planner:
        return Planner(register, source=f"console:{member.sub}", now=self.pages.clock.now(),
                       known_bcus=known_bcus(self.pages.settings)[0], id_prefix="register-console")

    async def _send(self, request: Request, change: Change, member: StaffMember) -> Response:
        now = self.pages.clock.now()
        try:
            await self.pages.publish(self.pages.topics.events, json.dumps(change.event).encode(), change.key,
                                     [(RECEIVED_AT_HEADER, now.isoformat().encode())])
        except Exception:  # Kafka unreachable, timed out: nothing is known to be sent
            log.exception("register change not sent", extra={"action": change.action, "sub": member.sub,
                                                                "event_id": change.event["id"]})
            return self.pages.refused(request, 503, "Not sent", "The change could not be sent just now. Try again "
                                      "in a minute; if it keeps failing, tell the service's operators.")
        log.info("register change sent", extra={"action": change.action, "person_id": change.person_id,
                                                 "event_id": change.event["id"], "sub": member.sub})
        return RedirectResponse(f"/people/{quote(change.person_id)}?sent={change.action}", status_code=303)

    @staticmethod
    def _refusal(exc: ChangeRefused, checked: Checked, fields: Iterable[str]) -> list[tuple[str | None, str]]:
        """The planner's refusal as error-summary lines, and inline messages on the fields it names."""
        names = set(fields)
        lines: list[tuple[str | None, str]] = []
        first: str | None = None
        for p in exc.problems:
            name = _PLANNER_FIELDS.get(p["field"], p["field"].removeprefix("add."))
            if name in names:
                first = first or name
                checked.problem(name, p["problem"] if p["problem"] not in exc.message else exc.message)
        lines.append((_anchor(first) if first else None, exc.message))
        lines += [(_anchor(name), text) for name, text in checked.problems.items() if text != exc.message]
        return lines

    def _form(self, request: Request, template: str, status: int, checked: Checked,
              summary: list[tuple[str | None, str]] | None = None, **values: Any) -> Response:
        if summary is None:
            summary = [(_anchor(name), text) for name, text in checked.problems.items()]
        return self.pages.page(request, template, status, values=checked.values, field_errors=checked.problems,
                               summary=summary, reason_labels=REASON_LABELS, labels=FIELD_LABELS, **values)

    # --- the register: search, a person ---------------------------------------------------------------------

    async def register(self, request: Request) -> Response:
        member = self.pages.need(request, "coordinator")
        if not isinstance(member, StaffMember):
            return member
        query = request.query_params.get("q", "").strip()[:100]
        rows = self.pages.view.register_search(query, set(member.bcus), self.pages.clock.now()) if query else []
        return self.pages.page(request, "register.html", query=query, rows=rows)

    async def person(self, request: Request) -> Response:
        member = self.pages.need(request, "coordinator", "bcu")
        if not isinstance(member, StaffMember):
            return member
        person_id = request.path_params["person_id"]
        today = self._today()
        rows = self.pages.view.person_trail(person_id, set(member.bcus), self.pages.clock.now())
        entry = None
        if member.may("coordinator"):
            found = self.pages.view.entry(person_id)
            if found is not None and any(p.home_bcu in member.bcus for p in found.periods):
                entry = found  # someone who is, or was, on one of the coordinator's BCUs' registers
        current = entry.period_at(today) if entry is not None else None
        sent = request.query_params.get("sent")
        return self.pages.page(
            request, "person.html", rows=rows, person_id=person_id, entry=entry, current=current,
            periods=sorted(entry.periods, key=lambda p: p.start, reverse=True) if entry else [],
            changeable=current is not None and current.home_bcu in member.bcus,
            sent=sent if sent in ("select", "deselect", "move", "update") else None,
            reason_labels=REASON_LABELS)

    # --- select ---------------------------------------------------------------------------------------------

    def _select_page(self, request: Request, member: StaffMember, status: int, checked: Checked,
                     summary: list[tuple[str | None, str]] | None = None, notice: str | None = None) -> Response:
        return self._form(request, "register_select.html", status, checked, summary, bcus=sorted(member.bcus),
                          notice=notice)

    async def select(self, request: Request) -> Response:
        member = self.pages.need(request, "coordinator")
        if not isinstance(member, StaffMember):
            return member
        if request.method == "GET":
            checked = Checked()
            if len(member.bcus) == 1:
                checked.values["home_bcu"] = next(iter(member.bcus))
            return self._select_page(request, member, 200, checked)
        form = await self.pages.csrf_ok(request)
        if form is None:
            return self._expired(request)
        if (odd := self._unknown_fields(request, form, SELECT_FIELDS, ("date_of_birth", "on"))) is not None:
            return odd
        today = self._today()
        checked = Checked()
        raw_ids = {k: checked.text(form, k) for k in IDENTIFIER_KINDS}
        given, family = checked.text(form, "given_name"), checked.text(form, "family_name")
        born = checked.day(form, "date_of_birth", past_only=True, today=today)
        home = checked.text(form, "home_bcu")
        strand, reason = checked.text(form, "strand"), checked.text(form, "reason")
        authority = checked.text(form, "authority")
        on = checked.day(form, "on")
        ids: dict[str, str] = {}
        if not any(raw_ids.values()) and not any(k in checked.problems for k in IDENTIFIER_KINDS):
            checked.problem("pnc", "Enter at least one identifier: a PNC, CRO or NOMS number, or a CRN")
        else:
            try:
                ids = normalise_ids(dict(raw_ids))
            except ChangeRefused as exc:
                for p in exc.problems:
                    checked.problem(p["field"], f"{FIELD_LABELS[p['field']]}: {p['problem']}")
        if home is None and "home_bcu" not in checked.problems:
            checked.problem("home_bcu", "Choose the home BCU")
        elif home is not None and home not in member.bcus:
            checked.problem("home_bcu", "Choose one of your BCUs: you can select people only into them")
        if checked.problems:
            return self._select_page(request, member, 422, _ordered(checked, SELECT_ORDER))
        assert home is not None
        working = self.pages.view.register_for_change(ids)
        elsewhere = any(not any(p.home_bcu in member.bcus for p in e.periods) and e.periods
                        for e in working.entries())
        try:
            change = self._planner(working, member).select(
                dict(ids), home, on=on, strand=strand, reason=reason, authority=authority, given_name=given,
                family_name=family, date_of_birth=born)
        except NothingToChange as exc:
            return self._select_page(request, member, 200, checked, [], notice=exc.message)
        except ChangeRefused as exc:
            if elsewhere and exc.status == 409:  # someone of another BCU: do not show who
                exc = ChangeRefused("These identifiers belong to someone on another BCU's register. Check them "
                                    "against PNC, NOMIS and nDelius, or ask that BCU's coordinator.",
                                    [{"field": "pnc", "problem": "identifiers of someone on another BCU's register"}],
                                    status=409)
            log.info("register change refused", extra={"action": "select", "sub": member.sub, "status": exc.status})
            return self._select_page(request, member, exc.status, checked,
                                     self._refusal(exc, checked, (*SELECT_FIELDS, "on")))
        return await self._send(request, change, member)

    # --- de-select, move, correct identifiers: someone on one of the member's BCUs' registers --------------------

    def _person_form(self, request: Request, template: str, entry: RegisterEntry, status: int, checked: Checked,
                     summary: list[tuple[str | None, str]] | None = None, notice: str | None = None,
                     **values: Any) -> Response:
        return self._form(request, template, status, checked, summary, entry=entry,
                          current=entry.period_at(self._today()), notice=notice, **values)

    def _on_in_bcus(self, checked: Checked, entry: RegisterEntry, on: date | None, member: StaffMember) -> None:
        if on is None:
            return
        then = entry.period_at(on)
        if then is not None and then.home_bcu not in member.bcus:
            checked.problem("on", f"On {on} this person was on BCU {then.home_bcu}'s register, not one of yours: "
                                  "choose a later date")

    async def _person_change(self, request: Request, template: str, fields: tuple[str, ...],
                             dates: tuple[str, ...], **values: Any) \
            -> tuple[StaffMember, RegisterEntry, dict[str, str]] | Response:
        member = self.pages.need(request, "coordinator")
        if not isinstance(member, StaffMember):
            return member
        form: dict[str, str] = {}
        if request.method == "POST":
            posted = await self.pages.csrf_ok(request)
            if posted is None:
                return self._expired(request)
            form = posted
        entry = self._changeable(member, request.path_params["person_id"])
        if entry is None:
            return self._not_found(request)
        if request.method == "GET":
            return self._person_form(request, template, entry, 200, Checked(), **values)
        if (odd := self._unknown_fields(request, form, fields, dates)) is not None:
            return odd
        return member, entry, form

    async def _plan_and_send(self, request: Request, member: StaffMember, entry: RegisterEntry, template: str,
                             checked: Checked, fields: tuple[str, ...], plan: Any, **values: Any) -> Response:
        try:
            change = plan()
        except NothingToChange as exc:
            return self._person_form(request, template, entry, 200, checked, [], notice=exc.message, **values)
        except ChangeRefused as exc:
            log.info("register change refused", extra={"action": template, "person_id": entry.person_id,
                                                         "sub": member.sub, "status": exc.status})
            return self._person_form(request, template, entry, exc.status, checked,
                                     self._refusal(exc, checked, (*fields, "on")), **values)
        return await self._send(request, change, member)

    async def deselect(self, request: Request) -> Response:
        got = await self._person_change(request, "register_deselect.html", DESELECT_FIELDS, ("on",),
                                        reasons=DESELECTION_REASONS)
        if isinstance(got, Response):
            return got
        member, entry, form = got
        checked = Checked()
        reason = checked.text(form, "reason")
        authority = checked.text(form, "authority")
        on = checked.day(form, "on")
        if reason is None and "reason" not in checked.problems:
            checked.problem("reason", "Choose why they leave the register")
        elif reason is not None and reason not in DESELECTION_REASONS:
            checked.problem("reason", "Choose one of the reasons listed")
        if authority is None and "authority" not in checked.problems:
            checked.problem("authority", "Enter on whose authority they leave the register (002 §54)")
        self._on_in_bcus(checked, entry, on, member)
        if checked.problems:
            return self._person_form(request, "register_deselect.html", entry, 422,
                                     _ordered(checked, (*DESELECT_FIELDS, "on")), reasons=DESELECTION_REASONS)
        assert reason is not None
        planner = self._planner(self.pages.view.register_for_change(entry.identifiers), member)
        return await self._plan_and_send(
            request, member, entry, "register_deselect.html", checked, DESELECT_FIELDS,
            lambda: planner.deselect(dict(entry.identifiers), reason, authority, on=on), reasons=DESELECTION_REASONS)

    def _move_targets(self, entry: RegisterEntry) -> list[str] | None:
        bcus, _ = known_bcus(self.pages.settings)
        if bcus is None:
            return None  # the directory cannot be read: a code is typed, and not checked
        current = entry.period_at(self._today())
        return sorted(b for b in bcus if current is None or b != current.home_bcu)

    async def move(self, request: Request) -> Response:
        member = self.pages.need(request, "coordinator")
        targets = None
        if isinstance(member, StaffMember) and (entry := self._changeable(member, request.path_params["person_id"])):
            targets = self._move_targets(entry)
        got = await self._person_change(request, "register_move.html", MOVE_FIELDS, ("on",), targets=targets)
        if isinstance(got, Response):
            return got
        member, entry, form = got
        checked = Checked()
        to_bcu = checked.text(form, "to_bcu")
        reason, authority = checked.text(form, "reason"), checked.text(form, "authority")
        on = checked.day(form, "on")
        if to_bcu is None and "to_bcu" not in checked.problems:
            checked.problem("to_bcu", "Choose the BCU they move to")
        self._on_in_bcus(checked, entry, on, member)
        if checked.problems:
            return self._person_form(request, "register_move.html", entry, 422,
                                     _ordered(checked, (*MOVE_FIELDS, "on")), targets=targets)
        assert to_bcu is not None
        planner = self._planner(self.pages.view.register_for_change(entry.identifiers), member)
        return await self._plan_and_send(
            request, member, entry, "register_move.html", checked, MOVE_FIELDS,
            lambda: planner.move(dict(entry.identifiers), to_bcu, on=on, reason=reason, authority=authority),
            targets=targets)

    async def identifiers(self, request: Request) -> Response:
        got = await self._person_change(request, "register_identifiers.html", IDENTIFIER_FIELDS, ("date_of_birth",))
        if isinstance(got, Response):
            return got
        member, entry, form = got
        today = self._today()
        checked = Checked()
        raw_ids = {k: checked.text(form, k) for k in IDENTIFIER_KINDS}
        given, family = checked.text(form, "given_name"), checked.text(form, "family_name")
        born = checked.day(form, "date_of_birth", past_only=True, today=today)
        reason = checked.text(form, "reason")
        new: dict[str, str] = {}
        try:
            new = normalise_ids(dict(raw_ids))
        except ChangeRefused as exc:
            for p in exc.problems:
                checked.problem(p["field"], f"{FIELD_LABELS[p['field']]}: {p['problem']}")
        if not checked.problems and not new and not any((given, family, born)):
            first = next((k for k in IDENTIFIER_KINDS if k not in entry.identifiers), "reason")
            checked.problem(first, "Enter an identifier to add, or a name or date of birth the register lacks")
        if checked.problems:
            return self._person_form(request, "register_identifiers.html", entry, 422,
                                     _ordered(checked, IDENTIFIER_ORDER))
        planner = self._planner(self.pages.view.register_for_change({**entry.identifiers, **new}), member)
        working_elsewhere = [e for e in planner.register.entries() if e.person_id != entry.person_id]

        def plan() -> Change:
            try:
                return planner.update(dict(entry.identifiers), dict(new), given_name=given, family_name=family,
                                      date_of_birth=born, reason=reason)
            except NothingToChange:
                raise
            except ChangeRefused as exc:
                if exc.status == 409 and any(not any(p.home_bcu in member.bcus for p in e.periods)
                                             for e in working_elsewhere):
                    raise ChangeRefused("An identifier you entered belongs to someone on another BCU's register. "
                                        "Check it against PNC, NOMIS and nDelius, or ask that BCU's coordinator.",
                                        [{"field": k, "problem": "belongs to someone else"} for k in new][:1],
                                        status=409) from None
                raise

        return await self._plan_and_send(request, member, entry, "register_identifiers.html", checked,
                                         (*IDENTIFIER_FIELDS, "date_of_birth"), plan)

    # --- the quarterly record -------------------------------------------------------------------------------

    def _register_of(self, bcus: Iterable[str]) -> Register:
        register = Register()
        for entry in self.pages.view.entries_in(set(bcus)):
            register.put(entry)  # read only: quarterly_rows and list_rows change nothing
        return register

    async def quarterly(self, request: Request) -> Response:
        member = self.pages.need(request, "coordinator")
        if not isinstance(member, StaffMember):
            return member
        today = self._today()
        checked = Checked()
        year, quarter = today.year, (today.month - 1) // 3 + 1
        raw_year = request.query_params.get("year", "").strip()
        raw_quarter = request.query_params.get("quarter", "").strip()
        checked.values = {"year": _HOSTILE.sub("", raw_year)[:4], "quarter": _HOSTILE.sub("", raw_quarter)[:1]}
        if raw_year:
            if raw_year.isascii() and raw_year.isdigit() and len(raw_year) == 4 and 2000 <= int(raw_year) <= 2100:
                year = int(raw_year)
            else:
                checked.problem("year", "Year must be a year from 2000 to 2100, like 2026")
        if raw_quarter:
            if raw_quarter in ("1", "2", "3", "4"):
                quarter = int(raw_quarter)
            else:
                checked.problem("quarter", "Choose a quarter: 1, 2, 3 or 4")
        if checked.problems:
            return self._form(request, "register_quarterly.html", 400, checked, year=year, quarter=quarter,
                              rows=[], bcus=sorted(member.bcus))
        checked.values = {"year": str(year), "quarter": str(quarter)}
        register = self._register_of(member.bcus)
        rows = [r for bcu in sorted(member.bcus) for r in quarterly_rows(register, year, quarter, bcu)]
        if request.query_params.get("format") == "csv":
            text = csv_text(QUARTERLY_COLUMNS, ({k: _cell(v) for k, v in r.items()} for r in rows))
            name = f"ppo-quarterly-{year}-Q{quarter}.csv"
            log.info("quarterly record downloaded", extra={"sub": member.sub, "rows": len(rows)})
            return Response(text, media_type="text/csv; charset=utf-8",
                            headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{name}"'})
        return self._form(request, "register_quarterly.html", 200, checked, year=year, quarter=quarter, rows=rows,
                          bcus=sorted(member.bcus))

    # --- the list review (C6) -------------------------------------------------------------------------------

    def _latest_reviews(self, member: StaffMember) -> list[Any]:
        latest: dict[str, Any] = {}
        for o in self.pages.view.obligations_in(set(member.bcus)):
            if o.rule == REVIEW_RULE and o.bcu is not None:
                known = latest.get(o.bcu)
                if known is None or (o.raised_at, o.obligation_id) > (known.raised_at, known.obligation_id):
                    latest[o.bcu] = o
        now = self.pages.clock.now()
        details = [self.pages.view.obligation(latest[b].obligation_id, set(member.bcus), now) for b in sorted(latest)]
        return [d for d in details if d is not None]

    async def review(self, request: Request) -> Response:
        member = self.pages.need(request, "coordinator")
        if not isinstance(member, StaffMember):
            return member
        today = self._today()
        register = self._register_of(member.bcus)
        rows = [r for bcu in sorted(member.bcus) for r in list_rows(register, today, bcu)]
        done = request.query_params.get("done")
        return self.pages.page(request, "register_review.html", rows=rows, reviews=self._latest_reviews(member),
                               today=today, done=done == "reviewed")

    async def reviewed(self, request: Request) -> Response:
        member = self.pages.need(request, "coordinator")
        if not isinstance(member, StaffMember):
            return member
        if await self.pages.csrf_ok(request) is None:
            return self.pages.refused(request, 400, "Not recorded",
                                      "The form had expired. Go back, reload and try again.")
        oid = request.path_params["obligation_id"]
        now = self.pages.clock.now()
        detail = self.pages.view.obligation(oid, set(member.bcus), now)
        if detail is None or detail.obligation.rule != REVIEW_RULE:
            return self.pages.refused(request, 404, "List review not found",
                                      "It may belong to a BCU you do not work for.")
        if not detail.acknowledgements:
            ack = Acknowledgement(obligation_id=oid, recipient=member.email or f"{member.sub}@console",
                                  acknowledged_at=now, link_expires_at=now)
            await self.pages.publish(self.pages.topics.acknowledgements, ack.model_dump_json().encode(),
                                     oid.encode(), [])
            self.pages.view.apply_acknowledgement(oid.encode(), ack.model_dump_json().encode())  # shown at once
            log.info("acknowledged", extra={"obligation_id": oid, "sub": member.sub, "channel": "console"})
        return RedirectResponse("/register/review?done=reviewed", status_code=303)

    def routes(self) -> list[BaseRoute]:
        # person ids hold a slash (pnc:2006/0777001G): the path converter, the longer paths first
        return [
            Route("/register", self.register),
            Route("/register/select", self.select, methods=["GET", "POST"]),
            Route("/register/quarterly", self.quarterly),
            Route("/register/review", self.review),
            Route("/register/review/{obligation_id}/reviewed", self.reviewed, methods=["POST"]),
            Route("/people/{person_id:path}/deselect", self.deselect, methods=["GET", "POST"]),
            Route("/people/{person_id:path}/move", self.move, methods=["GET", "POST"]),
            Route("/people/{person_id:path}/identifiers", self.identifiers, methods=["GET", "POST"]),
            Route("/people/{person_id:path}", self.person),
        ]


def _anchor(name: str) -> str:
    """The id of a field's first input (a date's day, a set of radios' first)."""
    return f"{name}-day" if name in ("on", "date_of_birth") else name


def _ordered(checked: Checked, order: Iterable[str]) -> Checked:
    """Problems in the order of the form's fields, so the summary reads top to bottom."""
    rank = {name: i for i, name in enumerate(order)}
    checked.problems = dict(sorted(checked.problems.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    return checked


def _cell(value: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula (a name or reason starting "=", "+", "-", "@")."""
    return "'" + value if value.startswith(_FORMULA) else value
