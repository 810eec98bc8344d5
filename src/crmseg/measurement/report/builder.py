"""Build the HTML report from the workspace's measurements.

Each section is gathered through the Workspace's public methods and rendered on its own; a
section whose data is missing (no campaigns yet, a single run, no model) says why instead of
failing the whole report. Plotly is optional and imported here only.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from string import Template
from typing import Any

from crmseg.errors import MissingDependencyError
from crmseg.measurement.report.template import PAGE

Progress = Callable[[str, float], None]
_CONFIG = {"displaylogo": False, "responsive": True}


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:  # pragma: no cover - exercised by the missing-dependency test
        raise MissingDependencyError("plotly", "report") from None
    return go


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _pts(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.1f}"


def _num(value: float | None, digits: int = 2) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:,.{digits}f}")
    )


@dataclass
class Page:
    """Sections in order; charts become divs with plotly calls (JS inlined once)."""

    sections: list[tuple[str, str, str]] = field(default_factory=list)  # (id, title, html)
    charts: int = 0

    def chart(self, fig: Any, height: int = 420) -> str:
        self.charts += 1
        fig.update_layout(
            height=height,
            margin={"l": 60, "r": 20, "t": 40, "b": 50},
            template="plotly_white",
            font={"family": "system-ui, sans-serif", "size": 12},
        )
        out: str = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{self.charts}",
            config=_CONFIG,
        )
        return out

    def add(self, key: str, title: str, lead: str, body: str) -> None:
        inner = f'<h2>{_e(title)}</h2><p class="lead">{_e(lead)}</p>{body}'
        self.sections.append((key, title, f'<section id="{key}">{inner}</section>'))


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(
        f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _attempt(fn: Callable[[], str]) -> str:
    """A section's body, or a note saying why it is not available."""
    from crmseg.errors import CrmsegError

    try:
        return fn()
    except MissingDependencyError:
        raise
    except CrmsegError as exc:
        return _note(f"not available: {exc}")


def build_report(
    ws: Any, path: Path, window_days: int = 14, progress: Progress | None = None
) -> Path:
    go = _plotly()
    from plotly.offline import get_plotlyjs

    report = progress or (lambda step, fraction: None)
    page = Page()
    last = ws.last_run()
    runs = ws.runs()
    context: dict[str, Any] = {"window_days": window_days, "go": go}
    for i, (name, step) in enumerate(SECTIONS.items()):
        report(name, i / len(SECTIONS))
        step(page, ws, context)
    report("write", 1.0)
    cards = [
        ("customers", f"{last.customers:,}" if last else "–"),
        ("runs", f"{len(runs):,}"),
        ("segments", f"{len(ws.segments):,}"),
        ("campaigns measured", f"{len(context.get('lift_campaigns', [])):,}"),
    ]
    overview = (
        '<div class="cards">'
        + "".join(f"<div class='card'><b>{_e(v)}</b><span>{_e(k)}</span></div>" for k, v in cards)
        + "</div>"
    )
    page.sections.insert(
        0, ("overview", "Overview", f'<section id="overview">{overview}</section>')
    )
    subtitle = (
        f"as of {last.as_of:%Y-%m-%d %H:%M} UTC · {len(runs)} runs from "
        f"{runs[0].as_of:%Y-%m-%d} · written {datetime.now():%Y-%m-%d %H:%M}"
        if last and runs
        else "no runs yet"
    )
    text = Template(PAGE).substitute(
        title=_e(f"{ws.config.name or ws.root.name} · crmseg report"),
        subtitle=_e(subtitle),
        plotly=get_plotlyjs(),
        nav="".join(f'<a href="#{k}">{_e(t)}</a>' for k, t, _ in page.sections),
        body="\n".join(s for _, _, s in page.sections),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def sections(
    ws: Any, names: list[str], window_days: int = 14, campaigns: list[str] | None = None
) -> str:
    """The HTML of the named sections alone (the dashboard's pages): charts call plotly,
    which the embedding page loads; ``campaigns`` narrows the campaigns section."""
    page = Page()
    context: dict[str, Any] = {"window_days": window_days, "go": _plotly(), "only": campaigns}
    for name in names:
        SECTIONS[name](page, ws, context)
    return "\n".join(html for _, _, html in page.sections)


# --- sections ---------------------------------------------------------------------------------


def _review(page: Page, ws: Any, ctx: dict[str, Any]) -> None:
    def body() -> str:
        findings = ws.measure_review(window_days=ctx["window_days"])
        ctx["findings"] = findings
        if not findings:
            return _note("nothing to flag: every segment is used, sizeable, stable and measured")
        kinds = {"unused": "", "tiny": "bad", "unmeasurable": "bad", "unstable": "bad",
                 "no_lift": "bad"}  # fmt: skip
        by: dict[str, list[dict[str, Any]]] = {}
        for f in findings:
            by.setdefault(f["subject"], []).append(f)
        rows = [
            [_e(subject),
             " ".join(f'<span class="tag {kinds.get(f["kind"], "")}">{_e(f["kind"])}</span>'
                      for f in items),
             "<br>".join(_e(f["detail"]) for f in items),
             "<br>".join(_e(f["action"]) for f in items)]
            for subject, items in by.items()
        ]  # fmt: skip
        return _table(["segment / campaign", "findings", "why", "suggested action"], rows)

    page.add(
        "review",
        "Review: what to prune or fix",
        "Segments nobody uses, too small to measure, or unstable, and campaigns without "
        "measurable lift. Review quarterly.",
        _attempt(body),
    )


def _campaigns(page: Page, ws: Any, ctx: dict[str, Any]) -> None:
    go = ctx["go"]

    def body() -> str:
        only = ctx.get("only")
        lift = ws.measure_campaigns(ctx["window_days"], only)
        ctx["lift_campaigns"] = sorted({r["campaign"] for r in lift})
        if not lift:
            return _note("no campaign with a holdout in the send log yet")
        parts = []
        for metric, label, scale, unit in (
            ("conversion", "Conversion lift (points)", 100.0, " pts"),
            ("revenue_per_member", "Revenue per member lift", 1.0, ""),
        ):
            rows = [r for r in lift if r["metric"] == metric]
            fig = go.Figure(
                go.Scatter(
                    x=[r["lift"] * scale for r in rows],
                    y=[r["campaign"] for r in rows],
                    mode="markers",
                    marker={
                        "size": 11,
                        "color": ["#15803d" if r["significant"] else "#616e7c" for r in rows],
                    },
                    error_x={
                        "type": "data",
                        "color": "#334e68",
                        "symmetric": False,
                        "array": [(r["upper"] - r["lift"]) * scale for r in rows],
                        "arrayminus": [(r["lift"] - r["lower"]) * scale for r in rows],
                    },
                    hovertemplate="%{y}: %{x:.2f}" + unit + "<extra></extra>",
                )
            )
            fig.add_vline(x=0, line_dash="dash", line_color="#9aa5b1")
            fig.update_layout(title=f"{label}, 95% CI", xaxis_title=label)
            parts.append(page.chart(fig, height=140 + 50 * len(rows)))
        table_rows = []
        for r in lift:
            conv = r["metric"] == "conversion"
            fmt = _pct if conv else _num
            diff = _pts if conv else (lambda v: _num(v))
            sig = "good" if r["significant"] else ""
            table_rows.append([
                _e(r["campaign"]), _e("conversion" if conv else "revenue / member"),
                f"{r['treatment_n']:,} / {r['holdout_n']:,}", fmt(r["treatment"]),
                fmt(r["holdout"]), diff(r["lift"]), f"{diff(r['lower'])} to {diff(r['upper'])}",
                _pct(r["relative"], 0) if r["relative"] is not None else "–",
                f"{r['p_value']:.3f}",
                f'<span class="tag {sig}">{"yes" if r["significant"] else "no"}</span>'
                + ("" if r["complete"] else ' <span class="tag bad">window open</span>'),
            ])  # fmt: skip
        table = _table(
            ["campaign", "metric", "treated / held out", "treatment", "holdout",
             "lift (pts or €)", "95% CI", "relative", "p", "significant"],
            table_rows,
            {2, 3, 4, 5, 6, 7, 8},
        )  # fmt: skip
        funnels = _funnels(page, ws, go, only)
        return f'<div class="grid2">{parts[0]}{parts[1]}</div>{table}{funnels}'

    page.add(
        "campaigns",
        "Campaigns: funnels and incremental lift",
        f"Treatment vs holdout on ordering within {ctx['window_days']} days of the send "
        "(Newcombe interval) and revenue per member (Welch interval).",
        _attempt(body),
    )


def _funnels(page: Page, ws: Any, go: Any, only: list[str] | None = None) -> str:
    acts = [a for a in ws.activations() if only is None or a["campaign"] in only]
    if not acts:
        return ""
    by: dict[str, Any] = {}
    for a in acts:
        by[a["campaign"]] = a  # the latest activation of each campaign
    fig = go.Figure()
    for name, a in by.items():
        labels = [s.label for s in a["funnel"]] + ["treatment", "holdout"]
        counts = [s.count for s in a["funnel"]] + [a["treatment"], a["holdout"]]
        fig.add_trace(go.Bar(x=labels, y=counts, name=f"{name} ({a['as_of']:%Y-%m-%d})"))
    fig.update_layout(title="Audience funnels (latest activation of each campaign)",
                      barmode="group", yaxis_title="customers")  # fmt: skip
    return page.chart(fig, height=380)


def _catalog(page: Page, ws: Any, ctx: dict[str, Any]) -> None:
    def body() -> str:
        entries = ws.catalog()
        rows = [
            [f"<b>{_e(c['name'])}</b><br><span class='note'>{_e(c['description'])}</span>",
             _e(c["owner"]), _e(c["english"] or c["rule"] or c["sql"]),
             _num(c["size"], 0) if c["size"] is not None else "–",
             _e(", ".join(c["used_by"]) or "–")]
            for c in entries
        ]  # fmt: skip
        return _table(["segment", "owner", "rule in English", "size", "used by"], rows, {3})

    page.add("catalog", "Segment catalog", "Every segment with its rule in plain English and its "
             "size at the last run.", _attempt(body))  # fmt: skip


def _sizes(page: Page, ws: Any, ctx: dict[str, Any]) -> None:
    go = ctx["go"]

    def body() -> str:
        fig = go.Figure()
        for seg in ws.segments:
            rows = ws.history(seg.name)
            fig.add_trace(go.Scatter(x=[r["as_of"] for r in rows], y=[r["size"] for r in rows],
                                     mode="lines+markers", name=seg.name))  # fmt: skip
        fig.update_layout(title="Members per run", yaxis_title="members")
        return page.chart(fig, height=480)

    page.add("sizes", "Size over time", "Members of each segment at every run (click a legend "
             "entry to hide it).", _attempt(body))  # fmt: skip


def _outcomes(page: Page, ws: Any, ctx: dict[str, Any]) -> None:
    go = ctx["go"]
    window = 30

    def body() -> str:
        rows = [r for r in ws.measure_outcomes(window) if r["complete"]]
        if not rows:
            return _note(f"no run is {window} days older than the latest one yet")
        charts = []
        for metric, label in (("conversion_rate", "Conversion rate"),
                              ("revenue_per_member", "Revenue per member")):  # fmt: skip
            fig = go.Figure()
            for seg in sorted({r["segment"] for r in rows}):
                pts = [r for r in rows if r["segment"] == seg]
                fig.add_trace(go.Scatter(x=[r["as_of"] for r in pts], y=[r[metric] for r in pts],
                                         mode="lines+markers", name=seg))  # fmt: skip
            fig.update_layout(
                title=f"{label} in the {window} days after each run",
                yaxis_tickformat=".0%" if metric == "conversion_rate" else None,
            )
            charts.append(page.chart(fig, height=460))
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:
            latest[r["segment"]] = r
        table = _table(
            ["segment", "as of", "members", "conversion", "revenue / member", "AOV", "repeat",
             "churn", "unsubscribe", "complaint", "messages / member"],
            [[_e(s), f"{r['as_of']:%Y-%m-%d}", f"{r['members']:,}", _pct(r["conversion_rate"]),
              _num(r["revenue_per_member"]), _num(r["aov"]), _pct(r["repeat_rate"]),
              _pct(r["churn_rate"]), _pct(r["unsubscribe_rate"], 2),
              _pct(r["complaint_rate"], 2), _num(r["messages_per_member"])]
             for s, r in sorted(latest.items())],
            set(range(2, 11)),
        )  # fmt: skip
        return "".join(charts) + "<h3>Latest complete window per segment</h3>" + table

    page.add("outcomes", "Outcomes by segment over time",
             "What members did after each run: the most useful view is outcomes by segment over "
             "time, not isolated campaign wins.", _attempt(body))  # fmt: skip


def _lifecycle(page: Page, ws: Any, ctx: dict[str, Any]) -> None:
    go = ctx["go"]

    def body() -> str:
        t = ws.measure_transitions("lifecycle.stage")
        labels = [f"{v} ({t['from_as_of']:%Y-%m-%d})" for v in t["from"]] + [
            f"{v} ({t['to_as_of']:%Y-%m-%d})" for v in t["to"]
        ]
        n = len(t["from"])
        src, dst, val = [], [], []
        for i, row in enumerate(t["counts"]):
            for j, count in enumerate(row):
                if count:
                    src.append(i)
                    dst.append(n + j)
                    val.append(count)
        fig = go.Figure(go.Sankey(node={"label": labels, "pad": 12}, arrangement="snap",
                                  link={"source": src, "target": dst, "value": val}))  # fmt: skip
        fig.update_layout(title="Lifecycle flow between the last two runs")
        return page.chart(fig, height=520) + _heat(page, go, t, "Lifecycle transitions")

    page.add("lifecycle", "Lifecycle flow", "Who moved between lifecycle stages from the "
             "previous run to the last one (e.g. loyal to at risk).", _attempt(body))  # fmt: skip


def _heat(page: Page, go: Any, t: dict[str, Any], title: str) -> str:
    fig = go.Figure(
        go.Heatmap(z=t["counts"], x=t["to"], y=t["from"], colorscale="Blues",
                   text=t["counts"], texttemplate="%{text}",
                   hovertemplate="%{y} → %{x}: %{z}<extra></extra>")
    )  # fmt: skip
    fig.update_layout(
        title=title,
        xaxis_title=f"at {t['to_as_of']:%Y-%m-%d}",
        yaxis_title=f"at {t['from_as_of']:%Y-%m-%d}",
        yaxis_autorange="reversed",
    )
    return page.chart(fig, height=460)


def _rfm(page: Page, ws: Any, ctx: dict[str, Any]) -> None:
    go = ctx["go"]

    def body() -> str:
        last = ws.last_run()
        values = ws._trait_values(
            ["rfm.recency_score", "rfm.fm_score", "rfm.monetary_score"], last.as_of
        ).to_pandas()
        values = values.dropna(subset=["rfm.recency_score", "rfm.fm_score"])
        if values.empty:
            return _note("no customer with orders yet")
        grid = values.groupby(["rfm.fm_score", "rfm.recency_score"]).size().unstack(fill_value=0)
        grid = grid.reindex(index=range(5, 0, -1), columns=range(1, 6), fill_value=0)
        fig = go.Figure(
            go.Heatmap(
                z=grid.to_numpy(),
                x=[f"R{c}" for c in grid.columns],
                y=[f"FM{i}" for i in grid.index],
                colorscale="YlGnBu",
                text=grid.to_numpy(),
                texttemplate="%{text}",
                hovertemplate="%{x} %{y}: %{z} customers<extra></extra>",
            )
        )
        fig.update_layout(title=f"Customers by recency and frequency-monetary score "
                                f"({last.as_of:%Y-%m-%d})",
                          xaxis_title="recency score (5 = most recent)",
                          yaxis_title="frequency-monetary score")  # fmt: skip
        chart = page.chart(fig, height=460)
        try:
            t = ws.measure_transitions("rfm.segment")
        except Exception:
            return chart
        return chart + _heat(page, go, t, "RFM segment transitions between the last two runs")

    page.add("rfm", "RFM grid", "Customers by RFM score at the last run, and how they moved "
             "between RFM segments.", _attempt(body))  # fmt: skip


def _clv(page: Page, ws: Any, ctx: dict[str, Any]) -> None:
    go = ctx["go"]

    def body() -> str:
        last = ws.last_run()
        try:
            values = ws._trait_values(["clv.value_12m"], last.as_of).column("clv.value_12m")
        except Exception as exc:
            return _note(f"not available: the CLV model could not be fitted ({exc})")
        data = [v for v in values.to_pylist() if v is not None]
        if not data:
            return _note("no CLV values")
        data.sort()
        cap = data[int(0.99 * (len(data) - 1))]
        fig = go.Figure(go.Histogram(x=[min(v, cap) for v in data], nbinsx=60,
                                     marker_color="#2f6fde"))  # fmt: skip
        fig.update_layout(
            title="Predicted 12-month value per customer (top 1% capped)",
            xaxis_title="predicted value",
            yaxis_title="customers",
            bargap=0.02,
        )
        mean = sum(data) / len(data)
        top = data[int(0.8 * (len(data) - 1)) :]
        share = sum(top) / sum(data) if sum(data) else 0.0
        return page.chart(fig) + _note(
            f"mean {mean:,.2f}; median {data[len(data) // 2]:,.2f}; the top 20% of customers "
            f"hold {share:.0%} of predicted value"
        )

    page.add("clv", "CLV distribution", "BG/NBD + Gamma-Gamma predicted value of the next 12 "
             "months at the last run.", _attempt(body))  # fmt: skip


def _overlap(page: Page, ws: Any, ctx: dict[str, Any]) -> None:
    go = ctx["go"]

    def body() -> str:
        o = ws.overlap()
        names = o["segments"]
        z = [[o["matrix"][(a, b)][1] for b in names] for a in names]
        shared = [[o["matrix"][(a, b)][0] for b in names] for a in names]
        fig = go.Figure(
            go.Heatmap(
                z=z,
                x=names,
                y=names,
                customdata=shared,
                colorscale="Reds",
                zmin=0,
                zmax=1,
                hovertemplate="%{y} & %{x}: Jaccard %{z:.2f}, %{customdata} shared<extra></extra>",
            )
        )
        fig.update_layout(title=f"Overlap at {o['as_of']:%Y-%m-%d} (Jaccard)",
                          yaxis_autorange="reversed")  # fmt: skip
        return page.chart(fig, height=640)

    page.add("overlap", "Overlap", "Pairwise Jaccard similarity of segment members at the last "
             "run: near-duplicates are candidates to merge.", _attempt(body))  # fmt: skip


def _cohorts(page: Page, ws: Any, ctx: dict[str, Any]) -> None:
    go = ctx["go"]

    def body() -> str:
        c = ws.measure_cohorts(12)
        if not c["cohorts"]:
            return _note("no orders yet")
        y = [f"{k} (n={n:,})" for k, n in zip(c["cohorts"], c["size"], strict=True)]
        fig = go.Figure(
            go.Heatmap(
                z=c["retention"],
                x=[f"M{a}" for a in c["ages"]],
                y=y,
                colorscale="Greens",
                zmin=0,
                zmax=1,
                text=[[None if v is None else f"{v:.0%}" for v in row] for row in c["retention"]],
                texttemplate="%{text}",
                hovertemplate="%{y} month %{x}: %{z:.1%}<extra></extra>",
            )
        )
        fig.update_layout(
            title="Share of each cohort ordering N months after its first order",
            xaxis_title="months since first order",
            yaxis_autorange="reversed",
        )
        curves = go.Figure()
        for label, row in zip(c["cohorts"], c["cumulative_revenue_per_customer"], strict=True):
            curves.add_trace(go.Scatter(x=c["ages"], y=row, mode="lines", name=label))
        curves.update_layout(title="Cumulative revenue per customer by cohort",
                             xaxis_title="months since first order",
                             yaxis_title="revenue per customer")  # fmt: skip
        return page.chart(fig, height=520) + page.chart(curves, height=420)

    page.add("cohorts", "Acquisition cohorts", "Customers by month of first order: retention and "
             "revenue as the cohort ages.", _attempt(body))  # fmt: skip


def _power(page: Page, ws: Any, ctx: dict[str, Any]) -> None:
    def body() -> str:
        rows = ws.measure_power(0.1)
        return _table(
            ["segment", "size", "baseline conversion (30d)", "MDE (points)", "relative MDE",
             "measurable"],
            [[_e(r["segment"]), f"{r['size']:,}", _pct(r["baseline"]), f"{r['mde'] * 100:.1f}",
              _pct(r["relative_mde"], 0),
              '<span class="tag bad">too small</span>' if r["too_small"]
              else '<span class="tag good">yes</span>']
             for r in rows],
            {1, 2, 3, 4},
        )  # fmt: skip

    page.add("power", "Power: what a holdout test could detect",
             "Minimum detectable conversion lift per segment with a 10% holdout (alpha 0.05, "
             "power 0.8).", _attempt(body))  # fmt: skip


def _quality(page: Page, ws: Any, ctx: dict[str, Any]) -> None:
    def body() -> str:
        trend = ws.quality_trend(1)
        if trend:
            rows = [(r["check"], r["table"], r["column"], r["level"], r["affected"], r["total"])
                    for r in trend]  # fmt: skip
        else:
            last = ws.last_run()
            found = ws.quality(as_of=last.as_of if last else None).findings
            rows = [(f.check, f.table, f.column, f.level, f.affected, f.total) for f in found]
        rows = [r for r in rows if r[4]]
        if not rows:
            return _note("no data-quality problems found")
        return _table(
            ["check", "table", "column", "level", "affected rows", "share"],
            [[_e(c), _e(t), _e(col or "–"), _e(lvl), f"{a:,}", _pct(a / n if n else 0.0, 2)]
             for c, t, col, lvl, a, n in rows],
            {4, 5},
        )  # fmt: skip

    page.add("quality", "Data quality", "Checks on the source data at the last run.",
             _attempt(body))  # fmt: skip


# In the report's order; the dashboard renders them one or a few at a time.
SECTIONS: dict[str, Callable[[Page, Any, dict[str, Any]], None]] = {
    "campaigns": _campaigns,
    "catalog": _catalog,
    "sizes": _sizes,
    "outcomes": _outcomes,
    "lifecycle": _lifecycle,
    "rfm": _rfm,
    "clv": _clv,
    "overlap": _overlap,
    "cohorts": _cohorts,
    "power": _power,
    "quality": _quality,
    "review": _review,
}
