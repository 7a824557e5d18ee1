"""A preview of the Grafana dashboard without Grafana: the panel layout of deploy/grafana/dashboards/ppo-alerts.json
(rows, titles, descriptions, each query's PromQL) with live values read from running services' /metrics, as one
self-contained HTML page, optionally screenshotted with headless Chromium.

    python -m ppo_alerts.dashboard_preview --metrics intake=http://127.0.0.1:8080/metrics ... \
        --out preview.html [--screenshot docs/dashboard-preview.png]

It is not Grafana and does not evaluate PromQL: there is no Prometheus here, so no rates, ranges or quantiles.
For each query it shows the current value of every series the query selects (label matchers applied), summed
over the labels the query groups by — counters as totals since the services started.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ppo-alerts.json"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]

Samples = list[tuple[str, dict[str, str], float]]


def fetch(urls: list[str]) -> Samples:
    """Every sample of every /metrics page (name, labels, value); the job label says which page."""
    out: Samples = []
    for source in urls:
        job, _, url = source.rpartition("=") if "=" in source.split("//", 1)[0] else ("", "", source)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the operator's own services
                text = response.read().decode()
            up = 1.0
        except OSError:
            text, up = "", 0.0
        job = job or url.split("//", 1)[-1].split("/", 1)[0]
        out.append(("up", {"job": job}, up))
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.append((s.name, {**s.labels, "job": job}, float(s.value)))
    return out


_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_FUNCTIONS = {"sum", "max", "min", "avg", "count", "rate", "increase", "irate", "histogram_quantile", "by",
              "without", "on", "offset", "and", "or", "unless", "bool", "deriv", "min_over_time", "max_over_time"}


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric, matchers) of each series selector in a PromQL expression."""
    stripped = re.sub(r"\[[^\]]*\]", "", expr)
    out = []
    for m in _SELECTOR.finditer(stripped):
        name = m.group(1)
        before = stripped[m.start() - 1] if m.start() else " "
        after = stripped[m.end():].lstrip()
        if name in _FUNCTIONS or before in "$." or before.isdigit() or (after.startswith("(") and not m.group(2)):
            continue
        if re.fullmatch(r"[0-9.e]+", name) or name in ("le",):
            continue
        if re.search(r"\b(?:by|without)\s*\([^)]*\b" + re.escape(name) + r"\b[^)]*\)", stripped):
            continue  # a grouping label, not a metric
        out.append((name, _MATCHER.findall(m.group(2) or "")))
    return out


def group_labels(expr: str) -> list[str]:
    m = re.search(r"\bby\s*\(([^)]*)\)", expr)
    return [x.strip() for x in m.group(1).split(",") if x.strip() and x.strip() != "le"] if m else []


def evaluate(expr: str, samples: Samples) -> list[tuple[str, float]]:
    """Current values of what the query selects, summed over its grouping labels (see the module docstring)."""
    by = group_labels(expr)
    rows: list[tuple[str, float]] = []
    for name, matchers in selectors(expr):
        wanted = name.removesuffix("_bucket") + "_count" if name.endswith("_bucket") else name
        groups: dict[str, float] = defaultdict(float)
        for sample, labels, value in samples:
            if sample != wanted or not all(_match(labels.get(k, ""), op, v) for k, op, v in matchers):
                continue
            key = " ".join(f"{k}={labels.get(k, '')}" for k in by) if by else ""
            groups[key] += value
        label = wanted + ("{" + ",".join(f"{k}{op}\"{v}\"" for k, op, v in matchers) + "}" if matchers else "")
        for key, value in sorted(groups.items()):
            rows.append((f"{label} {key}".strip(), value))
        if not groups:
            rows.append((label, float("nan")))
    return rows


def _match(actual: str, op: str, wanted: str) -> bool:
    if op == "=":
        return actual == wanted
    if op == "!=":
        return actual != wanted
    hit = re.fullmatch(wanted, actual) is not None
    return hit if op == "=~" else not hit


_CSS = """
body{background:#111217;color:#d8d9da;font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
margin:0;padding:12px}
.banner{background:#3d2c00;color:#ffd27a;border:1px solid #7a5a00;padding:8px 12px;margin-bottom:10px;border-radius:3px}
h1{font-size:18px;margin:0 0 8px;color:#fff}
.grid{display:grid;grid-template-columns:repeat(24,1fr);grid-auto-rows:38px;gap:6px}
.panel{background:#181b1f;border:1px solid #2c3235;border-radius:3px;padding:6px 8px;overflow:hidden}
.row{grid-column:1/25;color:#fff;font-size:15px;font-weight:600;border-bottom:1px solid #2c3235;padding-top:6px}
.t{color:#fff;font-weight:600;margin-bottom:2px}.k{color:#8e8e8e;font-size:11px}
code{display:block;color:#9fc4ff;font-size:10.5px;white-space:pre-wrap;word-break:break-all;margin:3px 0}
table{border-collapse:collapse;width:100%;font-size:11.5px}td{padding:1px 4px;border-bottom:1px solid #22252b}
td.v{text-align:right;color:#73bf69;font-variant-numeric:tabular-nums}td.z{color:#8e8e8e}
.big{font-size:26px;color:#73bf69;font-weight:600}
"""


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "no data"
    return f"{value:.0f}" if value == int(value) and abs(value) < 1e12 else f"{value:.3g}"


def render(dashboard: dict[str, Any], samples: Samples, sources: list[str]) -> str:
    e = html.escape
    cells = []
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        style = f"grid-column:{g['x'] + 1}/span {g['w']};grid-row:{g['y'] + 1}/span {g['h']}"
        if panel["type"] == "row":
            cells.append(f'<div class="row" style="{style}">{e(panel["title"])}</div>')
            continue
        body = [f'<div class="t">{e(panel["title"])} <span class="k">{e(panel["type"])}</span></div>',
                f'<div class="k">{e(panel.get("description", ""))}</div>']
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            body.append(f"<code>{e(expr)}</code>")
            rows = [r for r in evaluate(expr, samples)]
            if panel["type"] == "stat" and len(rows) == 1:
                body.append(f'<div class="big">{e(_fmt(rows[0][1]))}</div>')
                continue
            shown = [r for r in rows if r[1] == r[1] and r[1] != 0][:8] or rows[:3]
            body.append("<table>" + "".join(
                f'<tr><td>{e(k)}</td><td class="{"v" if v == v and v else "v z"}">{e(_fmt(v))}</td></tr>'
                for k, v in shown) + "</table>")
        cells.append(f'<div class="panel" style="{style}">{"".join(body)}</div>')
    banner = ("PREVIEW — not Grafana. The layout, titles and PromQL of deploy/grafana/dashboards/ppo-alerts.json; "
              "values are the current samples from " + ", ".join(sources) + " (counters since start, summed as "
              "each query groups them). Rates, ranges and quantiles need Prometheus and Grafana.")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(dashboard["title"])} (preview)'
            f'</title><style>{_CSS}</style></head><body><div class="banner">{e(banner)}</div>'
            f'<h1>{e(dashboard["title"])}</h1><div class="grid">{"".join(cells)}</div></body></html>\n')


def screenshot(page: Path, png: Path, width: int = 1600, height: int = 2600) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install -y chromium)")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ppo-chromium-") as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png.resolve()}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppo_alerts.dashboard_preview", description=__doc__.split("\n")[0])
    parser.add_argument("--metrics", action="append", default=[],
                        help="[job=]URL of a service's /metrics, e.g. intake=http://127.0.0.1:8080/metrics (repeat)")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--out", type=Path, required=True, help="the HTML page to write")
    parser.add_argument("--screenshot", type=Path, default=None, help="also save a PNG of the page")
    parser.add_argument("--height", type=int, default=2600)
    args = parser.parse_args(argv)
    dashboard = json.loads(args.dashboard.read_text(encoding="utf-8"))
    args.out.write_text(render(dashboard, fetch(args.metrics), args.metrics), encoding="utf-8")
    if args.screenshot is not None:
        screenshot(args.out, args.screenshot, height=args.height)
    return 0


if __name__ == "__main__":
    sys.exit(main())
