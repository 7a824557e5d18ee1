"""Operations reports, read from the Kafka topics (rule book section D).

- `ppo-alerts report timeliness --from DATE --to DATE`: per rule, the obligations whose send time falls in the
  period (London dates, inclusive) by result — notified on time, late, breached, failed, cancelled, open — against
  the rule's standard (001 §5.3 monthly compliance reporting; 000 Section 11).
- `ppo-alerts report register --bcu BCU`: the per-area PPO list — reason for selection, date added, status — and
  the removals with date, reason and authority (002 §54, §37).
- `ppo-alerts audit IDENTIFIER`: everything about one person in time order — events, register changes,
  obligations and each message (who was told what, when, by which rule and template version).

The functions that build the rows are pure (lists of obligations, outcomes, events and register snapshots in,
rows out; `now` passed in). The CLI reads the topics with `shared.kafka.read_to_end` and writes CSV or one
self-contained HTML page (inline CSS and SVG, no script, nothing fetched).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import html
import io
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from services.rules.rulebook import COMMUNITY_RELEASES, RULES
from shared.calendar import london_date
from shared.clock import LONDON
from shared.events import EventBase, parse_event
from shared.identifiers import IDENTIFIER_KINDS, NORMALISERS
from shared.obligations import DeliveryOutcome, Obligation
from shared.register import Period, RegisterEntry

__all__ = [
    "AuditLine",
    "RegisterRow",
    "Sources",
    "TimelinessRow",
    "add_parsers",
    "audit_trail",
    "classify",
    "main_report",
    "parse_sources",
    "register_report",
    "render_csv",
    "resolve_identifier",
    "timeliness",
]

AT_RISK_WITHIN = timedelta(hours=1)

# The notify-by standard of each rule, in the rule book's words (../shared/spec/obligations.md, tables A-C).
STANDARDS: dict[str, str] = {
    "A1": "15 minutes after receipt",
    "A2": "end of the first working day after the warrant",
    "A3": "end of the first working day after the warrant",
    "A4": "09:00 on the last working day at least 28 days before release, + 15 minutes",
    "A5": "15 minutes after receipt",
    "A6": "15 minutes after receipt",
    "A7": "15 minutes after receipt",
    "A8": "before the temporary licence starts",
    "B1": "24 hours after the bail decision",
    "B2": "end of the London day of receipt",
    "B3": "15 minutes after receipt",
    "B4": "15 minutes after receipt",
    "B5": "15 minutes after receipt",
    "B6": "15 minutes after receipt",
    "B8": "15 minutes after receipt",
    "C1": "09:00 on the due working day, + 15 minutes",
    "C2": "09:00 on the due working day, + 15 minutes",
    "C3": "15 minutes after receipt",
    "C4": "09:00 on the last working day 3 months before release, + 15 minutes",
    "C5": "15 minutes after receipt",
    "C6": "09:00 on the first working day of the period, + 15 minutes",
    "C7": "15 minutes after receipt",
}

RESULTS = ("on_time", "late", "breached", "failed", "cancelled", "open")
RESULT_LABELS = {"on_time": "On time", "late": "Late", "breached": "Breached", "failed": "Failed",
                 "cancelled": "Cancelled", "open": "Open"}
RESULT_MEANING = {
    "on_time": "accepted by the mail server by its notify-by deadline",
    "late": "accepted by the mail server, after its deadline",
    "breached": "deadline passed and not yet accepted",
    "failed": "every recipient refused, or no one to send it to (escalated)",
    "cancelled": "no longer owed (release date withdrawn, person de-selected...)",
    "open": "pending, deadline still ahead",
}
COLOURS = {"on_time": "#2e7d32", "late": "#f9a825", "breached": "#c62828", "failed": "#6a1b1a",
           "cancelled": "#9e9e9e", "open": "#1565c0"}


# --- the sources: what the topics hold ------------------------------------------------------------------

@dataclass
class Sources:
    obligations: list[Obligation] = field(default_factory=list)  # latest state of each
    outcomes: list[DeliveryOutcome] = field(default_factory=list)
    events: list[EventBase] = field(default_factory=list)
    register: list[RegisterEntry] = field(default_factory=list)  # latest snapshot of each entry
    skipped: int = 0  # records that could not be read (counted, never shown: they may hold personal data)


Record = tuple[bytes | None, bytes | None]


def parse_sources(obligations: Iterable[Record] = (), outcomes: Iterable[Record] = (),
                  events: Iterable[Record] = (), register: Iterable[Record] = ()) -> Sources:
    """Records as `read_to_end` returns them (key, value), in topic order. Compacted topics keep the last value
    per key (a null value deletes it)."""
    out = Sources()

    def latest(records: Iterable[Record]) -> list[bytes]:
        by_key: dict[bytes, bytes | None] = {}
        unkeyed: list[bytes] = []
        for key, value in records:
            if key is None:
                if value:
                    unkeyed.append(value)
                continue
            by_key.pop(key, None)  # in the order of each key's latest record
            by_key[key] = value
        return [v for v in by_key.values() if v] + unkeyed

    for value in latest(obligations):
        try:
            out.obligations.append(Obligation.model_validate_json(value))
        except ValueError:
            out.skipped += 1
    for _, raw in outcomes:
        if raw:
            try:
                out.outcomes.append(DeliveryOutcome.model_validate_json(raw))
            except ValueError:
                out.skipped += 1
    for _, raw in events:
        if raw:
            try:
                out.events.append(parse_event(raw))
            except ValueError:
                out.skipped += 1
    for value in latest(register):
        try:
            out.register.append(RegisterEntry.from_dict(json.loads(value)))
        except (ValueError, KeyError, TypeError):
            out.skipped += 1
    return out


async def read_sources(settings: Any, which: Sequence[str] = ("obligations", "outcomes", "events", "register")
                       ) -> Sources:
    from shared.kafka import read_to_end
    from shared.topics import Topics

    topics = Topics(settings.topic_prefix)
    names = {"obligations": topics.obligations, "outcomes": topics.delivery_outcomes, "events": topics.events,
             "register": topics.register}
    records = {name: await read_to_end(settings, names[name]) for name in which}
    return parse_sources(**records)


# --- timeliness (001 §5.3) -------------------------------------------------------------------------------

def classify(o: Obligation, now: datetime) -> str:
    """One of RESULTS, as at `now`."""
    if o.status == "cancelled":
        return "cancelled"
    if o.status == "failed":
        return "failed"
    if o.notified_at is not None:
        return "late" if o.notified_at > o.notify_by else "on_time"
    if o.status == "breached" or o.notify_by < now:
        return "breached"
    return "open"


def at_risk(o: Obligation, now: datetime, within: timedelta = AT_RISK_WITHIN) -> bool:
    """Open, its send time come, its deadline within the hour (as `ppo_obligations_at_risk` counts it)."""
    return classify(o, now) == "open" and o.send_at <= now and o.notify_by <= now + within


@dataclass
class TimelinessRow:
    rule: str
    title: str
    standard: str
    source: str
    total: int = 0
    on_time: int = 0
    late: int = 0
    breached: int = 0
    failed: int = 0
    cancelled: int = 0
    open: int = 0
    at_risk: int = 0

    @property
    def on_time_pct(self) -> float | None:
        """Share notified on time among those whose result is known (cancelled and open left out)."""
        decided = self.on_time + self.late + self.breached + self.failed
        return round(100.0 * self.on_time / decided, 1) if decided else None


@dataclass
class Tally:
    """Obligations counted per rule and result, and how many of each rule's are at risk (what a timeliness report
    is made of: `timeliness` counts them one by one; the console's view from what it worked out beforehand)."""

    results: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, result) -> how many
    at_risk: Counter[str] = field(default_factory=Counter)
    sources: dict[str, str] = field(default_factory=dict)  # a rule the rule book does not have: its paragraph

    def add(self, o: Obligation, result: str, at_risk: bool) -> None:
        self.results[(o.rule, result)] += 1
        self.at_risk[o.rule] += at_risk
        self.sources.setdefault(o.rule, o.source_paragraph)


def timeliness(obligations: Iterable[Obligation], start: date, end: date, now: datetime,
               rules: Sequence[str] | None = None) -> list[TimelinessRow]:
    """Per rule (every rule of the rule book, then any other rule met), the obligations whose send time falls on
    a London date from `start` to `end` inclusive, by result. A last row `all` sums them."""
    tally = Tally()
    for o in obligations:
        if start <= london_date(o.send_at) <= end:
            tally.add(o, classify(o, now), at_risk(o, now))
    return timeliness_rows(tally, rules)


def timeliness_rows(tally: Tally, rules: Sequence[str] | None = None) -> list[TimelinessRow]:
    rows: dict[str, TimelinessRow] = {}
    for rule in rules if rules is not None else RULES:
        spec = RULES.get(rule)
        rows[rule] = TimelinessRow(rule, spec.title if spec else "", STANDARDS.get(rule, "its notify-by deadline"),
                                   spec.source if spec else "")
    for (rule, result), n in sorted(tally.results.items()):
        row = rows.get(rule)
        if row is None:
            row = rows[rule] = TimelinessRow(rule, "", "its notify-by deadline", tally.sources.get(rule, ""))
        setattr(row, result, getattr(row, result) + n)
        row.total += n
    for rule, n in tally.at_risk.items():
        if rule in rows:
            rows[rule].at_risk += n
    total = TimelinessRow("all", "every rule", "", "")
    for row in rows.values():
        for name in ("total", *RESULTS, "at_risk"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
    return [*rows.values(), total]


# --- the per-area PPO list (002 §54, §37) ------------------------------------------------------------------

@dataclass
class RegisterRow:
    section: str  # current | removed
    person_id: str
    pnc: str
    noms: str
    crn: str
    given_name: str
    family_name: str
    strand: str
    reason_for_selection: str
    date_added: str
    status: str
    custody: str
    removed_on: str = ""
    removal_reason: str = ""
    authority: str = ""


PRESENCE = ("prison.reception", "prison.transfer", "prison.release_date_set", "prison.hdc_eligible",
            "prison.rotl_scheduled")


def custody_status(events: Iterable[EventBase], until: datetime | None = None) -> str:
    """What the latest prison event says: in custody (where), in the community, or not known. A release date,
    a transfer or HDC eligibility is enough to know the person is in custody there (rule book, notes)."""
    latest: EventBase | None = None
    for e in events:
        kind = getattr(e, "type", "")
        if kind not in (*PRESENCE, "prison.release") or (until is not None and e.occurred_at > until):
            continue
        if latest is None or (e.occurred_at, e.id) > (latest.occurred_at, latest.id):
            latest = e
    if latest is None:
        return "not known"
    data: Any = getattr(latest, "data", None)
    if getattr(latest, "type", "") == "prison.release" and data.reason in COMMUNITY_RELEASES:
        return "in the community"
    prison = getattr(data, "to_prison_id", None) or getattr(data, "prison_id", None) or ""
    return f"in custody ({prison})" if prison else "in custody"


def _matches(identifiers: dict[str, str], wanted: set[tuple[str, str]]) -> bool:
    return any((k, v) in wanted for k, v in identifiers.items())


def _register_row(e: RegisterEntry, p: Period, section: str, status: str, custody: str) -> RegisterRow:
    return RegisterRow(
        section=section, person_id=e.person_id, pnc=e.identifiers.get("pnc", ""),
        noms=e.identifiers.get("noms", ""), crn=e.identifiers.get("crn", ""),
        given_name=e.given_name or "", family_name=e.family_name or "", strand=p.strand or "",
        reason_for_selection=p.reason or "", date_added=p.start.isoformat(), status=status, custody=custody,
        removed_on=p.end.isoformat() if p.end else "",
        removal_reason=(p.end_reason or "") if p.end else "", authority=(p.authority or "") if p.end else "")


def register_report(entries: Iterable[RegisterEntry], bcu: str, on: date,
                    events: Iterable[EventBase] = ()) -> list[RegisterRow]:
    """The BCU's PPOs on `on` (section `current`), then every period in the BCU that ended on or before `on`
    (section `removed`, with date, reason and authority; a move to another area is a removal here)."""
    events = list(events)
    until = datetime.combine(on + timedelta(days=1), time(0), LONDON).astimezone(UTC)
    current: list[RegisterRow] = []
    removed: list[RegisterRow] = []
    for e in entries:
        mine = [p for p in e.periods if p.home_bcu == bcu]
        if not mine:
            continue
        wanted = set(e.identifiers.items())
        custody = custody_status((ev for ev in events if _matches(ev.person.identifiers(), wanted)), until)
        for p in mine:
            if p.covers(on):
                current.append(_register_row(e, p, "current", "on the register", custody))
            elif p.end is not None and p.end <= on:
                status = "moved to another area" if p.end_reason == "moved_area" else "removed"
                removed.append(_register_row(e, p, "removed", status, ""))
    current.sort(key=lambda r: (r.family_name.lower(), r.given_name.lower(), r.person_id))
    removed.sort(key=lambda r: (r.removed_on, r.person_id))
    return current + removed


def quarter(day: str) -> str:
    d = date.fromisoformat(day)
    return f"{d.year} Q{(d.month - 1) // 3 + 1}"


def additions_and_removals(rows: Iterable[RegisterRow]) -> list[tuple[str, int, int]]:
    """(quarter, additions, removals), oldest first: the quarterly record of 002 §37."""
    added: Counter[str] = Counter()
    gone: Counter[str] = Counter()
    for r in rows:
        added[quarter(r.date_added)] += 1
        if r.removed_on:
            gone[quarter(r.removed_on)] += 1
    return [(q, added[q], gone[q]) for q in sorted(set(added) | set(gone))]


# --- the audit trail of one person --------------------------------------------------------------------------

@dataclass
class AuditLine:
    at: datetime
    kind: str  # event | register | obligation | message
    rule: str
    what: str
    recipient: str = ""
    template_version: str = ""
    reference: str = ""  # event id, obligation id or message id
    detail: str = ""


def resolve_identifier(text: str) -> dict[str, str]:
    """The identifier(s) a text can be, normalised: `G1234HJ`, `noms:G1234HJ`, `06/777001G`, `L112233`...
    ValueError (saying what is accepted) when it is none of PNC, CRO, NOMS or CRN."""
    raw = text.strip()
    kinds: Sequence[str] = IDENTIFIER_KINDS
    if ":" in raw and raw.split(":", 1)[0].lower() in IDENTIFIER_KINDS:
        kind, raw = raw.split(":", 1)
        kinds = (kind.lower(),)
    found: dict[str, str] = {}
    for kind in kinds:
        try:
            found[kind] = NORMALISERS[kind](raw)
        except ValueError:
            continue
    if not found:
        raise ValueError(f"{text!r} is not a PNC ID, CRO number, NOMS number or CRN")
    return found


def _event_detail(e: EventBase) -> str:
    data: Any = getattr(e, "data", None)
    if data is None:
        return ""
    values = data.model_dump(mode="json", exclude_none=True)
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), LONDON).astimezone(UTC)


def audit_trail(identifiers: dict[str, str], sources: Sources) -> tuple[set[tuple[str, str]], list[AuditLine]]:
    """Every event, register change, obligation step and message about the person these identifiers name, in
    time order. The person's other identifiers (from the register and the events) are followed too. Returns the
    identifiers matched and the lines."""
    wanted = set(identifiers.items())
    person_ids: set[str] = set()
    changed = True
    while changed:  # close over identifiers the register and the events link together
        before = (len(wanted), len(person_ids))
        for entry in sources.register:
            if entry.person_id in person_ids or _matches(entry.identifiers, wanted):
                person_ids.add(entry.person_id)
                wanted |= set(entry.identifiers.items())
        for e in sources.events:
            ids = e.person.identifiers()
            if _matches(ids, wanted):
                wanted |= set(ids.items())
        changed = (len(wanted), len(person_ids)) != before

    lines: list[AuditLine] = []
    for e in sources.events:
        if _matches(e.person.identifiers(), wanted):
            lines.append(AuditLine(e.occurred_at, "event", "", getattr(e, "type", ""), reference=e.id,
                                   detail=f"source={e.source}; {_event_detail(e)}".rstrip("; ")))
    for entry in sources.register:
        if entry.person_id not in person_ids:
            continue
        for p in entry.periods:
            lines.append(AuditLine(_midnight(p.start), "register", "", f"selected in {p.home_bcu}",
                                   reference=entry.person_id,
                                   detail="; ".join(x for x in (p.strand and f"strand={p.strand}",
                                                                p.reason and f"reason={p.reason}") if x)))
            if p.end is not None:
                lines.append(AuditLine(_midnight(p.end), "register", "", f"de-selected from {p.home_bcu}",
                                       reference=entry.person_id,
                                       detail="; ".join(x for x in (p.end_reason and f"reason={p.end_reason}",
                                                                    p.authority and f"authority={p.authority}")
                                                        if x)))
    theirs: dict[str, Obligation] = {}
    for o in sources.obligations:
        if o.person is not None and (o.person.person_id in person_ids or _matches(o.person.identifiers(), wanted)):
            theirs[o.obligation_id] = o
    for o in theirs.values():
        roles = ", ".join(sorted(set(o.recipient_roles.values()))) or ", ".join(o.recipients)
        summary = (f"status={o.status}; send_at={o.send_at.isoformat()}; notify_by={o.notify_by.isoformat()}; "
                   f"to {roles}; {o.source_paragraph}")
        if not o.history:
            lines.append(AuditLine(o.raised_at, "obligation", o.rule, "raised", reference=o.obligation_id,
                                   detail=summary))
        for i, h in enumerate(o.history):
            lines.append(AuditLine(h.at, "obligation", o.rule, h.what, reference=o.obligation_id,
                                   detail=summary if i == 0 else ""))
    for out in sources.outcomes:
        about = theirs.get(out.obligation_id)
        if about is None:
            continue
        role = about.recipient_roles.get(out.recipient, "")
        lines.append(AuditLine(out.at, "message", out.rule, out.outcome,
                               recipient=f"{out.recipient} ({role})" if role else out.recipient,
                               template_version=out.template_version,
                               reference=out.message_id or out.obligation_id, detail=out.detail))
    order = {"event": 0, "register": 1, "obligation": 2, "message": 3}
    lines.sort(key=lambda x: (x.at, order.get(x.kind, 9), x.reference))
    return wanted, lines


# --- output: CSV, text and one self-contained HTML page ----------------------------------------------------

def _cells(row: Any) -> dict[str, Any]:
    values = asdict(row)
    if isinstance(row, TimelinessRow):
        values["on_time_pct"] = "" if row.on_time_pct is None else row.on_time_pct
    for k, v in values.items():
        if isinstance(v, datetime):
            values[k] = v.astimezone(UTC).isoformat()
    return values


def render_csv(rows: Sequence[Any], columns: Sequence[str] | None = None) -> str:
    out = io.StringIO()
    if not rows and columns is None:
        return ""
    cols = list(columns) if columns is not None else list(_cells(rows[0]))
    writer = csv.DictWriter(out, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(_cells(row))
    return out.getvalue()


def render_text(lines: Sequence[AuditLine]) -> str:
    out = []
    for x in lines:
        london = x.at.astimezone(LONDON).strftime("%Y-%m-%d %H:%M:%S %Z")
        parts = [london, x.kind, x.rule or "-", x.what]
        if x.recipient:
            parts.append(f"to {x.recipient}")
        if x.template_version:
            parts.append(f"template {x.template_version}")
        if x.reference:
            parts.append(f"[{x.reference}]")
        if x.detail:
            parts.append(f"({x.detail})")
        out.append("  ".join(parts))
    return "\n".join(out) + ("\n" if out else "")


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1b1b1b;margin:24px;
max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
p.meta{color:#505a5f;margin:0 0 16px}
table{border-collapse:collapse;width:100%;margin:8px 0 16px}
th,td{border-bottom:1px solid #d8dde0;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f2f1;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:700;border-top:2px solid #0b0c0c}
footer{color:#505a5f;font-size:12px;margin-top:24px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _page(title: str, subtitle: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_e(title)}</h1><p class=\"meta\">{_e(subtitle)}</p>{body}"
            "<footer>ppo-alerts: generated from the Kafka topics. OFFICIAL-SENSITIVE where it names people.</footer>"
            "</body></html>\n")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Iterable[int] = (),
           classes: Iterable[str] = ()) -> str:
    num = set(numeric)
    head = "".join(f"<th class=\"n\">{_e(h)}</th>" if i in num else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    rows, tags = list(rows), list(classes)
    for i, row in enumerate(rows):
        cls = tags[i] if i < len(tags) else ""
        cells = "".join(f"<td class=\"n\">{_e(v)}</td>" if i in num else f"<td>{_e(v)}</td>"
                        for i, v in enumerate(row))
        body.append(f"<tr class=\"{cls}\">{cells}</tr>" if cls else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def timeliness_chart(rows: Sequence[TimelinessRow]) -> str:
    """Horizontal stacked bars, one per rule with obligations, and a legend, as inline SVG (the report's HTML and
    the console's page): presentation attributes only (fill, font-size), no style attributes, so a page whose CSP
    forbids inline styles (the console's) lets it draw."""
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
                     f'<text x="{x + 22}" y="17" font-size="15" fill="#0b0c0c">{e(RESULT_LABELS[result])}</text>')
        x += 22 + 9 * len(RESULT_LABELS[result]) + 24
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
                         f'<title>{e(r.rule)}, {e(RESULT_LABELS[result].lower())}: {n}</title></rect>')
            left += w
        parts.append(f'<text x="{left + 6:.1f}" y="{y + bar_h - 5}" font-size="14" fill="#505a5f">{r.total}</text>')
    if not shown:
        parts.append(f'<text x="0" y="{legend_h + 16}" font-size="15" fill="#505a5f">'
                     'No obligations in this period.</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars_chart(series: Sequence[tuple[str, int, int]], labels: tuple[str, str]) -> str:
    """Grouped vertical bars (two values per category) as inline SVG."""
    colours = ("#1565c0", "#c62828")
    height, bar_w, group_gap, top = 160, 16, 36, 10
    scale = max((max(a, b) for _, a, b in series), default=1) or 1
    width = max(300, len(series) * (2 * bar_w + group_gap) + 20)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" role="img" '
             f'aria-label="{_e(labels[0])} and {_e(labels[1])} by quarter">']
    for i, (name, a, b) in enumerate(series):
        x = 10 + i * (2 * bar_w + group_gap)
        for j, value in enumerate((a, b)):
            h = height * value / scale
            parts.append(f'<rect x="{x + j * bar_w}" y="{top + height - h:.1f}" width="{bar_w - 2}" '
                         f'height="{h:.1f}" fill="{colours[j]}"><title>{_e(name)} {_e(labels[j])}: {value}</title>'
                         f'</rect>')
        parts.append(f'<text x="{x}" y="{top + height + 16}" font-size="11">{_e(name)}</text>')
    parts.append("</svg>")
    legend = "".join(f'<span><i style="background:{c}"></i>{_e(t)}</span>' for c, t in zip(colours, labels,
                                                                                             strict=True))
    return f'<div class="legend">{legend}</div>{"".join(parts)}'


def timeliness_html(rows: Sequence[TimelinessRow], start: date, end: date, now: datetime) -> str:
    headers = ["rule", "what", "standard (notify by)", "total", "on time", "late", "breached", "failed",
               "cancelled", "open", "at risk", "on time %"]
    body_rows = [[r.rule, r.title, r.standard, r.total, r.on_time, r.late, r.breached, r.failed, r.cancelled,
                  r.open, r.at_risk, "" if r.on_time_pct is None else f"{r.on_time_pct:.1f}"] for r in rows]
    classes = ["total" if r.rule == "all" else "" for r in rows]
    meaning = "".join(f"<li><b>{_e(k.replace('_', ' '))}</b>: {_e(v)}</li>" for k, v in RESULT_MEANING.items())
    body = (f"<h2>Obligations by rule and result</h2>{timeliness_chart(rows)}"
            f"<h2>Against the standards</h2>{_table(headers, body_rows, range(3, 12), classes)}"
            f"<ul>{meaning}<li><b>at risk</b>: open, due to be sent, deadline within the hour</li>"
            "<li><b>on time %</b>: on time among on time, late, breached and failed</li></ul>")
    subtitle = (f"Obligations whose send time falls from {start.isoformat()} to {end.isoformat()} (London dates), "
                f"as at {now.astimezone(LONDON):%Y-%m-%d %H:%M %Z}. 001 §5.3 monthly compliance reporting.")
    return _page("PPO notifications: timeliness against the standards", subtitle, body)


def register_html(rows: Sequence[RegisterRow], bcu: str, on: date) -> str:
    current = [r for r in rows if r.section == "current"]
    removed = [r for r in rows if r.section == "removed"]
    cur = _table(["family name", "given name", "PNC", "NOMS", "CRN", "strand", "reason for selection",
                  "date added", "status", "custody"],
                 [[r.family_name, r.given_name, r.pnc, r.noms, r.crn, r.strand, r.reason_for_selection,
                   r.date_added, r.status, r.custody] for r in current])
    rem = _table(["family name", "given name", "PNC", "NOMS", "CRN", "date added", "removed on", "reason",
                  "authority", "status"],
                 [[r.family_name, r.given_name, r.pnc, r.noms, r.crn, r.date_added, r.removed_on, r.removal_reason,
                   r.authority, r.status] for r in removed])
    chart = bars_chart(additions_and_removals(rows), ("additions", "removals"))
    body = (f"<h2>PPOs on the register ({len(current)})</h2>{cur}"
            f"<h2>Removals ({len(removed)})</h2>{rem}"
            f"<h2>Additions and removals by quarter (002 §37)</h2>{chart}"
            "<p class=\"meta\">The register records the reason for selection, not the offending status of 002 "
            "§54 (anti-social, offending in or out of the CJS...): custody is what the latest prison event says."
            "</p>")
    return _page(f"PPO list for {bcu}", f"As on {on.isoformat()} (002 §54, §37).", body)


def audit_html(identifiers: set[tuple[str, str]], lines: Sequence[AuditLine]) -> str:
    ids = ", ".join(f"{k.upper()} {v}" for k, v in sorted(identifiers))
    table = _table(["when (London)", "kind", "rule", "what", "recipient", "template", "reference", "detail"],
                   [[x.at.astimezone(LONDON).strftime("%Y-%m-%d %H:%M:%S"), x.kind, x.rule, x.what, x.recipient,
                     x.template_version, x.reference, x.detail] for x in lines])
    return _page("Audit trail", f"Everything about {ids}, in time order ({len(lines)} lines).", table)


# --- CLI -----------------------------------------------------------------------------------------------------

def _date_arg(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _instant_arg(value: str) -> datetime:
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an instant (e.g. 2026-11-30T12:00:00Z)") from None
    if instant.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no offset (add Z or +01:00)")
    return instant.astimezone(UTC)


def add_parsers(sub: Any) -> None:
    """The `report` and `audit` subcommands (settings from PPO_* variables, as the services)."""
    report = sub.add_parser("report", help="operations reports from the Kafka topics (CSV or HTML)")
    kinds = report.add_subparsers(dest="report", required=True)
    t = kinds.add_parser("timeliness", help="per rule: notified on time, late, breached, failed, cancelled, open")
    t.add_argument("--from", dest="start", type=_date_arg, required=True, help="first London date (send time)")
    t.add_argument("--to", dest="end", type=_date_arg, required=True, help="last London date, inclusive")
    r = kinds.add_parser("register", help="the per-area PPO list with removals")
    r.add_argument("--bcu", required=True)
    r.add_argument("--on", type=_date_arg, default=None, help="as on this London date (default: today)")
    for p in (t, r):
        p.add_argument("--format", choices=("csv", "html"), default="csv")
        p.add_argument("--out", default=None, help="file to write (default: standard output)")
        p.add_argument("--as-of", dest="as_of", type=_instant_arg, default=None, help=argparse.SUPPRESS)
    audit = sub.add_parser("audit", help="everything about one person, in time order")
    audit.add_argument("identifier", help="PNC, CRO, NOMS or CRN (optionally kind:value)")
    audit.add_argument("--format", choices=("text", "csv", "html"), default="text")
    audit.add_argument("--out", default=None)


def build_report(args: Any, sources: Sources, now: datetime) -> str:
    """The text of the report the parsed arguments ask for (pure, given the sources)."""
    if args.command == "audit":
        wanted, lines = audit_trail(resolve_identifier(args.identifier), sources)
        if args.format == "html":
            return audit_html(wanted, lines)
        if args.format == "csv":
            return render_csv(lines, [f.name for f in fields(AuditLine)])
        return render_text(lines)
    if args.report == "timeliness":
        rows = timeliness(sources.obligations, args.start, args.end, now)
        if args.format == "html":
            return timeliness_html(rows, args.start, args.end, now)
        return render_csv(rows, [*(f.name for f in fields(TimelinessRow)), "on_time_pct"])
    on = args.on or now.astimezone(LONDON).date()
    rows_r = register_report(sources.register, args.bcu, on, sources.events)
    if args.format == "html":
        return register_html(rows_r, args.bcu, on)
    return render_csv(rows_r, [f.name for f in fields(RegisterRow)])


def main_report(args: Any) -> int:
    from shared.settings import load_settings

    if args.command == "report" and args.report == "timeliness" and args.end < args.start:
        print("ppo-alerts report: --to is before --from", file=sys.stderr)
        return 2
    if args.command == "audit":
        try:
            resolve_identifier(args.identifier)
        except ValueError as exc:
            print(f"ppo-alerts audit: {exc}", file=sys.stderr)
            return 2
    settings = load_settings()
    which = {"audit": ("obligations", "outcomes", "events", "register")}.get(args.command) or (
        ("obligations",) if args.report == "timeliness" else ("register", "events"))
    try:
        sources = asyncio.run(asyncio.wait_for(read_sources(settings, which), timeout=120))
    except Exception as exc:  # noqa: BLE001 - Kafka unreachable, timeouts: say so, no stack trace
        print(f"ppo-alerts: cannot read the topics at {settings.kafka_bootstrap}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2
    now = getattr(args, "as_of", None) or datetime.now(UTC)
    text = build_report(args, sources, now)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if sources.skipped:
        print(f"ppo-alerts: {sources.skipped} record(s) could not be read and were left out", file=sys.stderr)
    return 0
