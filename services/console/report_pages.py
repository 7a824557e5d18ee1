"""Reports for everyone with a role: the timeliness report and its chart.

`GET /reports/timeliness?from=YYYY-MM-DD&to=YYYY-MM-DD[&format=csv]` counts, per rule, the obligations of the
person's BCUs (an operator: every BCU) whose send time falls on a London date in the period, by result
(`ppo_alerts.reports.timeliness`, the same numbers as `ppo-alerts report timeliness`). Without dates: the current
London quarter so far. The chart is inline SVG drawn with presentation attributes only (the console's CSP refuses
inline style attributes, which the CLI report's legend uses), and the table beside it carries the same numbers.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Sequence
from datetime import date

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ppo_alerts.reports import TimelinessRow, render_csv, timeliness_chart
from services.console.web import NO_STORE, ConsolePages, StaffMember
from shared.calendar import london_date

EARLIEST_YEAR, LATEST_YEAR = 2000, 2100  # a date outside is a typing slip, not a period anyone reports on
LONGEST_PERIOD_DAYS = 3 * 366 + 1
FORMATS = ("", "html", "csv")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would read these cells as formulas


class BadPeriod(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.field = field
        self.problem = problem


def quarter_so_far(today: date) -> tuple[date, date]:
    return date(today.year, 3 * ((today.month - 1) // 3) + 1, 1), today


def parse_day(field: str, text: str) -> date:
    name = {"from": "The start date", "to": "The end date"}[field]
    if len(text) != 10 or not text.isascii():
        raise BadPeriod(field, f"{name} must be a date like 2026-01-31")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise BadPeriod(field, f"{name} must be a real date like 2026-01-31") from None
    if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
        raise BadPeriod(field, f"{name} must be between {EARLIEST_YEAR} and {LATEST_YEAR}")
    return day


def parse_period(start_text: str, end_text: str, today: date) -> tuple[date, date]:
    default_start, default_end = quarter_so_far(today)
    start = parse_day("from", start_text) if start_text else default_start
    end = parse_day("to", end_text) if end_text else (default_end if start <= default_end else start)
    if end < start:
        raise BadPeriod("to", "The end date must be the same as or after the start date")
    if (end - start).days > LONGEST_PERIOD_DAYS:
        raise BadPeriod("to", "The period must be at most three years")
    return start, end


def timeliness_svg(rows: Sequence[TimelinessRow]) -> Markup:
    return Markup(timeliness_chart(rows))  # noqa: S704 - the chart escapes every value it puts in


def _visible(text: str) -> str:
    """A value as the form may show it again: without control or formatting (bidi) characters."""
    return "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf"))


def _csv_safe(row: TimelinessRow) -> TimelinessRow:
    """Rule names and titles come from the obligations topic: none is read as a spreadsheet formula."""
    def safe(text: str) -> str:
        return f"'{text}" if text.startswith(_FORMULA_START) else text

    return dataclasses.replace(row, rule=safe(row.rule), title=safe(row.title), standard=safe(row.standard),
                               source=safe(row.source))


class ReportPages:
    def __init__(self, pages: ConsolePages) -> None:
        self.pages = pages

    async def timeliness(self, request: Request) -> Response:
        member = self.pages.need(request, "bcu", "coordinator", "operator")
        if not isinstance(member, StaffMember):
            return member
        now = self.pages.clock.now()
        start_text = request.query_params.get("from", "").strip()
        end_text = request.query_params.get("to", "").strip()
        output = request.query_params.get("format", "").lower()
        shown = {"from": _visible(start_text)[:10], "to": _visible(end_text)[:10]}  # what the form shows again
        bcus = member.bcus_seen()
        scope = "every BCU" if bcus is None else (", ".join(sorted(bcus)) or "no BCU")
        try:
            if output not in FORMATS:
                raise BadPeriod("format", "The format must be csv, or left out for this page")
            start, end = parse_period(start_text, end_text, london_date(now))
        except BadPeriod as exc:
            return self.pages.page(request, "report_timeliness.html", 400, error=exc, query=shown, rows=[],
                                   chart="", scope=scope, start=None, end=None, csv_link="")
        rows = self.pages.view.timeliness(bcus, start, end, now)  # = reports.timeliness of them (tested)
        if output == "csv":
            return Response(render_csv([_csv_safe(r) for r in rows]), media_type="text/csv; charset=utf-8",
                            headers={**NO_STORE, "Content-Disposition":
                                     f'attachment; filename="timeliness-{start}-to-{end}.csv"'})
        return self.pages.page(request, "report_timeliness.html", error=None,
                               query={"from": start.isoformat(), "to": end.isoformat()}, rows=rows,
                               chart=timeliness_svg(rows), scope=scope, start=start, end=end,
                               csv_link=f"/reports/timeliness?from={start}&to={end}&format=csv")

    def routes(self) -> list[BaseRoute]:
        return [Route("/reports/timeliness", self.timeliness)]
