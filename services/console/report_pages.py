"""Reports for everyone with a role: the timeliness report and its chart.

`GET /reports/timeliness?from=YYYY-MM-DD&to=YYYY-MM-DD[&format=csv]` counts, per rule, the obligations of the
person's BCUs (an operator: every BCU) whose send time falls on a London date in the period, by result
(`ppo_alerts.reports.timeliness`, the same numbers as `ppo-alerts report timeliness`). Without dates: the current
London quarter so far. The chart is inline SVG drawn with presentation attributes only (the console's CSP refuses
inline style attributes, which the CLI report's legend uses), and the table beside it carries the same numbers.
"""

from __future__ import annotations

import dataclasses
import html
import unicodedata
from collections.abc import Sequence
from datetime import date

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ppo_alerts.reports import COLOURS, RESULTS, TimelinessRow, render_csv
from services.console.web import NO_STORE, ConsolePages, StaffMember
from shared.calendar import london_date

EARLIEST_YEAR, LATEST_YEAR = 2000, 2100  # a date outside is a typing slip, not a period anyone reports on
LONGEST_PERIOD_DAYS = 3 * 366 + 1
FORMATS = ("", "html", "csv")
LABELS = {"on_time": "On time", "late": "Late", "breached": "Breached", "failed": "Failed",
          "cancelled": "Cancelled", "open": "Open"}
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
    """Horizontal stacked bars, one per rule with obligations, and a legend, as inline SVG: presentation
    attributes only (fill, font-size), no style attributes, so the console's CSP lets it draw."""
    shown = [r for r in rows if r.rule != "all" and r.total]
    width, label_w, bar_h, gap, legend_h = 900, 70, 20, 8, 40
    scale = max((r.total for r in shown), default=1)
    height = legend_h + max(1, len(shown)) * (bar_h + gap)
    e = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
             f'preserveAspectRatio="xMinYMin meet" role="img" aria-labelledby="timeliness-chart-title" '
             f'focusable="false"><title id="timeliness-chart-title">Obligations per rule by result: the table '
             f'below gives the same numbers</title>']
    x = 0
    for result in RESULTS:  # the legend
        parts.append(f'<rect x="{x}" y="4" width="16" height="16" fill="{COLOURS[result]}"/>'
                     f'<text x="{x + 22}" y="17" font-size="15" fill="#0b0c0c">{e(LABELS[result])}</text>')
        x += 22 + 9 * len(LABELS[result]) + 24
    for i, r in enumerate(shown):
        y = legend_h + i * (bar_h + gap)
        parts.append(f'<text x="0" y="{y + bar_h - 5}" font-size="15" fill="#0b0c0c">{e(r.rule)}</text>')
        left = float(label_w)
        for result in RESULTS:
            n = getattr(r, result)
            if not n:
                continue
            w = (width - label_w - 60) * n / scale
            parts.append(f'<rect x="{left:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{COLOURS[result]}">'
                         f'<title>{e(r.rule)}, {e(LABELS[result].lower())}: {n}</title></rect>')
            left += w
        parts.append(f'<text x="{left + 6:.1f}" y="{y + bar_h - 5}" font-size="14" fill="#505a5f">{r.total}</text>')
    if not shown:
        parts.append(f'<text x="0" y="{legend_h + 16}" font-size="15" fill="#505a5f">'
                     'No obligations in this period.</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value put in is escaped above


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
