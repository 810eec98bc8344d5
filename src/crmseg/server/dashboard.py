"""The dashboard under ``/ui``: server-rendered pages over the same workspace as the API.

No build step: pages are HTML from templates in this module, charts are plotly figures drawn by
the ``plotly.js`` that the plotly Python package ships (served at ``/ui/plotly.js``), and the
catalog's trend sparklines are inline SVG. Sign-in stores the API key in an HttpOnly,
SameSite=Strict cookie; every page checks it like the API checks its header, and a viewer's
pages show personal data masked and no approve buttons.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Callable
from string import Template
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from crmseg.errors import CrmsegError

if TYPE_CHECKING:
    from crmseg.server.app import Server
    from crmseg.server.keys import ApiKey

COOKIE = "crmseg_key"

PAGE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>$title · crmseg</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem}
header a{color:#fff;text-decoration:none}main{padding:1rem 1.2rem;max-width:1200px}
table{border-collapse:collapse;background:#fff;width:100%}td,th{padding:.35rem .6rem;
border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}th{background:#eef0f3}
.stale{color:#b3261e;font-weight:600}.fresh{color:#1e7d32}.num{text-align:right}
.card{background:#fff;padding:.8rem 1rem;margin:.8rem 0;border:1px solid #e3e6ea}
code,pre{background:#eef0f3;padding:.1rem .3rem}button{cursor:pointer}
section{background:#fff;padding:.8rem 1rem;margin:.8rem 0;border:1px solid #e3e6ea}
.lead,.note{color:#616e7c}.note{font-style:italic}.grid2{display:grid;
grid-template-columns:1fr 1fr;gap:1rem}.tag{padding:0 .4rem;border-radius:.6rem;
background:#e8eefc}.tag.bad{background:#fde8dd;color:#b3261e}.tag.good{background:#dcf5e3}
.bar{background:#3461c1;height:.7rem;display:inline-block}
</style><link rel="icon" href="data:,">$head</head><body><header><a href="/ui"><b>crmseg</b></a>
<a href="/ui">segments</a><a href="/ui/campaigns">campaigns</a><a href="/ui/rfm">RFM</a>
<a href="/ui/lifecycle">lifecycle</a><a href="/ui/quality">data quality</a>
<a href="/ui/runs">runs</a>
<span style="margin-left:auto">$who</span></header><main><h1>$title</h1>$body</main></body></html>
""")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def page(
    title: str, body: str, key: ApiKey | None = None, charts: bool = False, refresh: int = 0
) -> HTMLResponse:
    head = '<script src="/ui/plotly.js"></script>' if charts else ""
    if refresh:
        head += f'<meta http-equiv="refresh" content="{refresh}">'
    who = f"{_e(key.role)} key {_e(key.key_id)} · <a href='/ui/logout'>sign out</a>" if key else ""
    return HTMLResponse(PAGE.substitute(title=_e(title), head=head, who=who, body=body))


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def sparkline(values: list[int], width: int = 120, height: int = 24) -> str:
    """An inline SVG line of ``values`` (a segment's size per run)."""
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}"
        for i, v in enumerate(values)
    )
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="size per run">'
        f'<polyline fill="none" stroke="#3461c1" stroke-width="1.5" points="{points}"/></svg>'
    )


def _chart(figure: Any) -> str:
    return str(figure.to_html(full_html=False, include_plotlyjs=False))


def add(app: FastAPI, server: Server) -> None:
    """The dashboard's pages; none are in the API's OpenAPI description."""

    def signed_in(request: Request) -> ApiKey | None:
        text = request.cookies.get(COOKIE)
        return server.keys.check(text) if text else None

    def guarded(
        build: Callable[[Request, ApiKey], Response],
    ) -> Callable[[Request], Response]:
        def view(request: Request) -> Response:
            key = signed_in(request)
            if key is None:
                return RedirectResponse("/ui/login", status_code=303)
            try:
                with server.lock:
                    return build(request, key)
            except CrmsegError as exc:
                from crmseg.server.app import status_of

                body = f"<p class='stale'>{_e(exc)}</p><p><a href='/ui'>back</a></p>"
                response = page("Not possible", body, key)
                response.status_code = status_of(exc)
                return response

        return view

    @app.get("/ui/plotly.js", include_in_schema=False)
    def plotly_js() -> Response:
        from plotly.offline import get_plotlyjs

        headers = {"Cache-Control": "max-age=86400"}
        return Response(get_plotlyjs(), media_type="text/javascript", headers=headers)

    @app.get("/ui/login", include_in_schema=False)
    def login_form(request: Request, failed: int = 0) -> Response:
        note = "<p class='stale'>That key is unknown or revoked.</p>" if failed else ""
        form = (
            f"{note}<form method='post' action='/ui/login' class='card'>"
            "<label>API key <input name='key' type='password' size='60' autofocus></label> "
            "<button>Sign in</button></form><p>Make one with <code>crmseg keys create "
            "--role viewer</code>.</p>"
        )
        return page("Sign in", form)

    @app.post("/ui/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        fields = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        text = (fields.get("key") or [""])[0].strip()
        if server.keys.check(text) is None:
            return RedirectResponse("/ui/login?failed=1", status_code=303)
        response = RedirectResponse("/ui", status_code=303)
        response.set_cookie(COOKIE, text, httponly=True, samesite="strict")
        return response

    @app.get("/ui/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    def catalog(request: Request, key: ApiKey) -> Response:
        ws = server.ws
        q = request.query_params.get("q", "").strip().lower()
        owner = request.query_params.get("owner", "")
        fresh = {f.segment: f for f in ws.freshness()}
        rows = []
        for entry in ws.catalog():
            name = str(entry["name"])
            text = f"{name} {entry.get('description', '')} {entry.get('english', '')}".lower()
            if (q and q not in text) or (owner and entry.get("owner") != owner):
                continue
            sizes = [int(r["size"]) for r in ws.history(name)]
            f = fresh.get(name)
            state = (
                f"<span class='stale' title='{_e(f.reason)}'>stale</span>"
                if f and f.stale
                else "<span class='fresh'>fresh</span>"
            )
            rows.append([
                f"<a href='/ui/segments/{_e(name)}'>{_e(name)}</a>",
                _e(entry.get("owner")), _e(entry.get("layer")),
                f"<span class='num'>{_e(entry.get('size'))}</span>", sparkline(sizes),
                state + (f"<br><small>{_e(f.reason)}</small>" if f and f.stale else ""),
                _e(entry.get("english")),
            ])  # fmt: skip
        search = (
            f"<form class='card'><input name='q' value='{_e(q)}' placeholder='search'> "
            f"<input name='owner' value='{_e(owner)}' placeholder='owner'> <button>Filter</button>"
            "</form>"
        )
        headers = ["segment", "owner", "layer", "size", "trend", "freshness", "means"]
        return page("Segments", search + _table(headers, rows), key)

    def segment(request: Request, key: ApiKey) -> Response:
        import plotly.graph_objects as go

        ws = server.ws
        name = request.path_params["name"]
        seg = ws.segment(name)
        entry = next((e for e in ws.catalog() if e["name"] == name), {})
        history = ws.history(name)
        f = next((f for f in ws.freshness() if f.segment == name), None)
        state = (
            f"<span class='stale'>stale: {_e(f.reason if f else 'never run')}</span>"
            if f is None or f.stale
            else f"<span class='fresh'>fresh</span> (last run {f.last_as_of:%Y-%m-%d %H:%M}, "
            f"next due {f.next_due:%Y-%m-%d %H:%M} UTC)"
        )
        body = [f"<div class='card'><p>{_e(entry.get('english'))}</p>"
                f"<pre>{_e(seg.spec.rule or seg.spec.sql)}</pre>"
                f"<p>owner {_e(seg.spec.owner)} · refresh {_e(seg.spec.refresh)} · "
                f"{_e(seg.file)}:{seg.line}</p><p>{state}</p></div>"]  # fmt: skip
        if history:
            when = [r["as_of"] for r in history]
            fig = go.Figure()
            fig.add_scatter(x=when, y=[r["size"] for r in history], name="members")
            fig.add_bar(x=when, y=[r["entered"] for r in history], name="entered")
            fig.add_bar(x=when, y=[-r["exited"] for r in history], name="exited")
            fig.update_layout(height=320, margin={"t": 20, "b": 30}, barmode="relative")
            body.append(f"<div class='card'><h2>Size over time</h2>{_chart(fig)}</div>")
            body.append(_versions(ws.definitions(name)))
            sample = ws.members(name)[:20]
            links = ", ".join(f"<a href='/ui/customers/{_e(c)}'>{_e(c)}</a>" for c in sample)
            body.append(f"<div class='card'><h2>Sample members</h2><p>{links}</p></div>")
            body.append(_reach(server.kept(("reach", name, None), lambda: ws.reach(name))))
            body.append(_overlap(name, server.kept(("overlap", None), ws.overlap)))
        who = request.query_params.get("explain", "").strip()
        form = (f"<form class='card'><label>Explain customer <input name='explain' "
                f"value='{_e(who)}'></label> <button>Explain</button></form>")  # fmt: skip
        body.append(form)
        if who:
            found = ws.explain(name, who, mask=not key.allows("editor"))
            body.append(
                "<pre class='card'>" + _e("\n".join(found.lines(ws.config.timezone))) + "</pre>"
            )
        pending = [c for c in ws.changes("pending") if c.segment == name]
        for c in pending:
            i = c.impact
            button = (
                f"<form method='post' action='/ui/changes/{c.change_id}/approve'>"
                "<button>Approve</button></form>"
                if key.allows("editor") and (c.proposed_by != key.key_id or key.allows("admin"))
                else ""
            )
            body.append(
                f"<div class='card'><h2>Pending change {c.change_id}</h2><pre>{_e(c.text)}</pre>"
                f"<p>{i['before']} -> {i['after']} members: +{i['added']} / -{i['removed']} "
                f"(e.g. +{_e(', '.join(i['examples_added']))} "
                f"-{_e(', '.join(i['examples_removed']))})</p>{button}</div>"
            )
        return page(name, "".join(body), key, charts=bool(history))

    def customer(request: Request, key: ApiKey) -> Response:
        ws = server.ws
        found = ws.profile(request.path_params["customer_id"], mask=not key.allows("editor"))
        rows = [
            [_e(seg), _e(i["entered_at"]), _e(i["exited_at"] or "still in")]
            for seg, info in found["segments"].items()
            for i in info["intervals"]
        ]
        rows.sort(key=lambda r: r[1])
        records = [[_e(r.get("customer_id")), _e(r.get("email")), _e(r.get("phone"))]
                   for r in found["records"]]  # fmt: skip
        body = (
            f"<p>In {_e(', '.join(found['current']) or 'no segment')} at the last run.</p>"
            "<div class='card'><h2>Timeline</h2>"
            + _table(["segment", "entered", "exited"], rows)
            + "</div><div class='card'><h2>Records</h2>"
            + _table(["record", "email", "phone"], records)
            + "</div>"
        )
        return page(f"Customer {found['customer_id']}", body, key)

    def report(title: str, names: list[str]) -> Callable[[Request, ApiKey], Response]:
        """A page of the HTML report's sections (computed once until the next write)."""

        def build(request: Request, key: ApiKey) -> Response:
            from crmseg.measurement.report.builder import sections

            html_ = server.kept(("ui", *names), lambda: sections(server.ws, names))
            return page(title, html_, key, charts=True)

        return build

    def campaigns(request: Request, key: ApiKey) -> Response:
        ws = server.ws
        latest = {a["campaign"]: a for a in ws.activations()}
        rows = []
        for c in ws.campaigns:
            a = latest.get(c.name)
            rows.append([
                f"<a href='/ui/campaigns/{_e(c.name)}'>{_e(c.name)}</a>", _e(c.spec.segment),
                _e(c.spec.channel), _e(c.spec.owner), f"{c.spec.holdout:.0%}",
                _e(f"{a['as_of']:%Y-%m-%d %H:%M}") if a else "never",
                f"{a['treatment']:,} / {a['holdout']:,}" if a else "–",
            ])  # fmt: skip
        headers = ["campaign", "segment", "channel", "owner", "holdout", "last activated",
                   "treated / held out"]  # fmt: skip
        return page("Campaigns", _table(headers, rows), key)

    def campaign(request: Request, key: ApiKey) -> Response:
        ws = server.ws
        name = request.path_params["name"]
        c = ws.campaign(name)
        body = [f"<div class='card'><p>{_e(c.spec.description)}</p><p>segment "
                f"<code>{_e(c.spec.segment)}</code> · channel {_e(c.spec.channel)} · holdout "
                f"{c.spec.holdout:.0%} · owner {_e(c.spec.owner)} · {_e(c.file)}:{c.line}</p>"
                "</div>"]  # fmt: skip
        if any(a["campaign"] == name for a in ws.activations(name)):
            from crmseg.measurement.report.builder import sections

            body.append(
                server.kept(("ui", "campaign", name),
                            lambda: sections(ws, ["campaigns"], campaigns=[name]))
            )  # fmt: skip
        else:
            dry = server.kept(("ui", "dry", name), lambda: ws.activate(name, dry_run=True))
            body.append(_funnel(dry.summary()))
        return page(name, "".join(body), key, charts=True)

    def runs(request: Request, key: ApiKey) -> Response:
        ws = server.ws
        now = server.current
        going = (
            f"<div class='card'><b>Running</b> since {now['started_at']:%H:%M:%S} UTC "
            f"(by {_e(now['by'])}): {_e(now['step'])} "
            f"<span class='bar' style='width:{now['fraction'] * 200:.0f}px'></span> "
            f"{now['fraction']:.0%}</div>"
            if now
            else "<p class='note'>No run is going.</p>"
        )
        done = [[_e(r.run_id), _e(f"{r.as_of:%Y-%m-%d %H:%M}"),
                 _e(f"{(r.finished_at - r.started_at).total_seconds():.1f} s"),
                 f"{r.customers:,}"] for r in reversed(ws.runs()[-50:])]  # fmt: skip
        attempts = server.scheduler.store.attempts(10) if server.scheduler else []
        tries = [[_e(f"{a['started_at']:%Y-%m-%d %H:%M}"), _e(len(a["segments"])),
                  "<span class='fresh'>ok</span>" if a["ok"]
                  else f"<span class='stale'>failed</span> {_e(a['error'])}"]
                 for a in attempts]  # fmt: skip
        body = (
            going
            + "<div class='card'><h2>Runs</h2>"
            + _table(["run", "as of (UTC)", "took", "customers"], done)
            + "</div><div class='card'><h2>Scheduled attempts</h2>"
            + _table(["at (UTC)", "segments due", "outcome"], tries)
            + "</div>"
        )
        return page("Runs", body, key, refresh=2 if now else 0)  # follow a run as it goes

    def approve(request: Request, key: ApiKey) -> Response:
        change_id = int(request.path_params["change_id"])
        if not key.allows("editor"):
            response = page("Not possible", "<p class='stale'>Approving needs an editor key.</p>")
            response.status_code = 403
            return response
        done = server.ws.decide(change_id, True, key.key_id, key.allows("admin"))
        server.changed()
        return RedirectResponse(f"/ui/segments/{done.segment}", status_code=303)

    app.get("/ui", include_in_schema=False)(guarded(catalog))
    app.get("/ui/campaigns", include_in_schema=False)(guarded(campaigns))
    app.get("/ui/campaigns/{name}", include_in_schema=False)(guarded(campaign))
    app.get("/ui/runs", include_in_schema=False)(guarded(runs))
    for path, title, names in (
        ("/ui/rfm", "RFM", ["rfm"]),
        ("/ui/lifecycle", "Lifecycle", ["lifecycle"]),
        ("/ui/quality", "Data quality", ["quality"]),
    ):
        app.get(path, include_in_schema=False)(guarded(report(title, names)))
    app.get("/ui/segments/{name}", include_in_schema=False)(guarded(segment))
    app.get("/ui/customers/{customer_id}", include_in_schema=False)(guarded(customer))
    app.post("/ui/changes/{change_id}/approve", include_in_schema=False)(guarded(approve))


def _reach(found: dict[str, Any]) -> str:
    """Members each channel may contact (consent counted as rules count it)."""
    total = found["members"]
    rows = [[_e(ch), f"{n:,}", f"{n / total:.0%}" if total else "–",
             f"<span class='bar' style='width:{(n / total if total else 0) * 150:.0f}px'></span>"]
            for ch, n in found["channels"].items()]  # fmt: skip
    if not rows:
        return "<div class='card'><h2>Reach</h2><p class='note'>no consent data</p></div>"
    return (
        f"<div class='card'><h2>Reach per channel</h2><p class='lead'>Of {total:,} members, "
        "those with consent for each channel (before a campaign's suppression and caps).</p>"
        + _table(["channel", "with consent", "share", ""], rows)
        + "</div>"
    )


def _overlap(name: str, found: dict[str, Any]) -> str:
    """The segments sharing most members with ``name`` at the last run."""
    pairs = [(b, *found["matrix"][(name, b)]) for b in found["segments"] if b != name]
    pairs = sorted((p for p in pairs if p[1]), key=lambda p: (-p[2], p[0]))[:10]
    rows = [[f"<a href='/ui/segments/{_e(b)}'>{_e(b)}</a>", f"{shared:,}", f"{j:.2f}"]
            for b, shared, j in pairs]  # fmt: skip
    body = (
        _table(["segment", "shared members", "Jaccard"], rows)
        if rows
        else ("<p class='note'>no other segment shares a member</p>")
    )
    return f"<div class='card'><h2>Overlap</h2>{body}</div>"


def _funnel(summary: dict[str, Any]) -> str:
    """A dry run's funnel as a bar chart (nothing recorded or sent)."""
    import plotly.graph_objects as go

    labels = [s["step"] for s in summary["funnel"]] + ["treatment", "holdout"]
    counts = [s["count"] for s in summary["funnel"]] + [summary["treatment"], summary["holdout"]]
    fig = go.Figure(go.Bar(x=labels, y=counts, marker_color="#3461c1"))
    fig.update_layout(height=340, margin={"t": 20, "b": 60}, yaxis_title="customers")
    return (
        f"<div class='card'><h2>Audience funnel (preview at {summary['as_of']:%Y-%m-%d %H:%M} "
        "UTC; never activated, so no lift yet)</h2>" + _chart(fig) + "</div>"
    )


def _versions(versions: list[dict[str, Any]]) -> str:
    """The definitions a segment ran with, newest first, each with its diff."""
    rows = []
    for v in reversed(versions):
        since = (
            f"run {v['run_id']} at {v['as_of']:%Y-%m-%d %H:%M}" if v["run_id"] else "not run yet"
        )
        lines = "".join(
            f"<span class='{'stale' if ln[:1] == '-' else 'fresh' if ln[:1] == '+' else ''}'>"
            f"{_e(ln)}</span>\n"
            for ln in v["diff"].splitlines()[2:]  # the ---/+++ header says nothing here
        )
        shown = f"<pre>{lines}</pre>" if lines else f"<pre>{_e(v['text'])}</pre>"
        rows.append([_e(since), f"<code>{_e(v['definition_hash'])}</code>", shown])
    return (
        "<div class='card'><h2>Definition history</h2>"
        + _table(["since", "definition", "rule (changes from the one before)"], rows)
        + "</div>"
    )
