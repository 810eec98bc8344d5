"""The ``crmseg`` command line: thin typer commands over :class:`crmseg.workspace.Workspace`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from crmseg.cli.console import console, err_console, error, lines, progress_bar
from crmseg.errors import CrmsegError

if TYPE_CHECKING:
    from crmseg.config import Every

app = typer.Typer(
    name="crmseg",
    help="CRM segmentation as code: segments with history, consent-safe audiences, measurement.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}

P = ParamSpec("P")
R = TypeVar("R")

MaskOpt = Annotated[
    bool,
    typer.Option(
        "--mask", help="Mask personal data (emails, phones, names, addresses) in the output."
    ),
]
ProjectOpt = Annotated[
    Path,
    typer.Option(
        "--project",
        "-p",
        help="Project folder (the one with crmseg.yml).",
        envvar="CRMSEG_PROJECT",
        file_okay=False,
    ),
]
JsonFormatOpt = Annotated[str, typer.Option("--format", "-f", help="text or json.")]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Instant to compute at: 2026-01-31 (midnight in the project's timezone), "
        "2026-01-31T12:00 (wall time there) or 2026-01-31T12:00+02:00.",
    ),
]


def handled(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn crmseg errors into one red line and a non-zero exit (tracebacks only with --debug)."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CrmsegError as exc:
            if _state["debug"]:
                raise
            lines = exc.lines()
            error(lines[0], *lines[1:])
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if _state["debug"]:
                raise
            text = (str(exc).strip().splitlines() or [""])[0]
            error(f"internal error: {type(exc).__name__}: {text} (rerun with --debug for details)")
            raise typer.Exit(2) from None

    return wrapper


def _check_format(fmt: str, *allowed: str) -> None:
    if fmt not in allowed:
        listed = ", ".join(allowed[:-1]) + f" or {allowed[-1]}"
        raise CrmsegError(f"--format: expected {listed}, got {fmt!r}")


def _print_json(data: Any, **options: Any) -> None:
    """Machine-readable output: plain JSON on stdout, dates as ISO text."""
    sys.stdout.write(json.dumps(data, **{"default": str, **options}) + "\n")


def parse_as_of(
    value: str | None, timezone: str = "UTC", option: str = "--as-of"
) -> datetime | None:
    """A user's instant: a date is midnight and a time without an offset is wall time, both in
    the project's timezone; an explicit offset (``+02:00``, ``Z``) is honoured."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CrmsegError(
            f"{option}: expected a date like 2026-01-31 or 2026-01-31T12:00:00, got {value!r}"
        ) from None
    if at.tzinfo is None:
        from zoneinfo import ZoneInfo

        at = at.replace(tzinfo=ZoneInfo(timezone))
    return at


def _as_of(ws: Any, value: str | None) -> datetime | None:
    return parse_as_of(value, ws.config.timezone)


def when(at: datetime, timezone: str, seconds: bool = True) -> str:
    """An instant (naive UTC) as the project's wall time with its zone, and UTC beside it."""
    from crmseg.config import when as shown

    return shown(at, timezone, seconds)


def local(at: datetime, timezone: str, shape: str = "%Y-%m-%d %H:%M") -> str:
    """An instant (naive UTC) as the project's wall time, for table cells whose header or
    title names the zone."""
    from crmseg.config import local_time

    return f"{local_time(at, timezone):{shape}}"


def _open(project: Path) -> Any:
    from crmseg.workspace import Workspace

    return Workspace.open(project)


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """crmseg: segment definitions as code, computed on your customer data."""
    _state["debug"] = debug
    if version:
        from crmseg import __version__

        console.print(__version__)
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit(0)


@app.command()
@handled
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the project in.")] = Path("."),
    demo: Annotated[bool, typer.Option("--demo", help="Generate a demo shop with data.")] = False,
    customers: Annotated[
        int, typer.Option("--customers", min=10, help="Demo shop size (customers).")
    ] = 5000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the demo data.")] = 42,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite the project files of an existing project.")
    ] = False,
) -> None:
    """Create a project (an empty skeleton, or a complete demo shop with --demo)."""
    from crmseg.demo.scaffold import init_project

    with progress_bar("init") as cb:
        written = init_project(
            directory, demo=demo, customers=customers, seed=seed, force=force, progress=cb
        )
    console.print(f"created [bold]{directory}[/] ({len(written)} files)")
    if demo:
        console.print(f"next: crmseg run --project {directory}")


@app.command()
@handled
def validate(
    project: ProjectOpt = Path("."),
    strict: Annotated[
        bool, typer.Option("--strict", help="Treat lint warnings as errors.")
    ] = False,
) -> None:
    """Check crmseg.yml, sources, traits and segments without changing anything."""
    ws = _open(project)
    with ws, progress_bar("validate") as cb:
        report = ws.validate(cb)
    for line in report.warnings:
        err_console.print(f"[yellow]warning:[/] {line}", markup=True, highlight=False)
    if not report.ok:
        error(report.problems[0], *report.problems[1:])
        raise typer.Exit(1)
    if strict and report.warnings:
        error(f"{len(report.warnings)} lint warning(s) with --strict")
        raise typer.Exit(1)
    tables = ", ".join(f"{n} ({c} columns)" for n, c in report.sources.items())
    counts = f"{report.traits} traits, {report.segments} segments, {report.campaigns} campaigns"
    console.print(f"[green]ok[/]: {tables}; {counts}")


@app.command()
@handled
def run(
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
    select: Annotated[
        list[str] | None, typer.Option("--select", "-s", help="Only these segments (repeatable).")
    ] = None,
    activate: Annotated[
        bool,
        typer.Option("--activate", help="Then activate every campaign due at the run's as_of."),
    ] = False,
) -> None:
    """Load sources, compute every segment and record the run."""
    ws = _open(project)
    with ws:
        with progress_bar("run") as cb:
            result = ws.run(as_of=_as_of(ws, as_of), select=select, progress=cb)
        _print_run(result, ws.config.timezone)
        if activate:
            activations = ws.activate_due(as_of=result.as_of)
            if not activations:
                console.print("no campaign is due")
            for r in activations:
                _print_activation(r, ws.config.timezone)
            failed = [d for r in activations for d in r.destinations if d.error]
            if failed:
                error(f"{len(failed)} destination(s) failed: {failed[0].error}")
                raise typer.Exit(1)


@app.command()
@handled
def runs(project: ProjectOpt = Path("."), fmt: JsonFormatOpt = "text") -> None:
    """List recorded runs: instant, customers, what each loaded or reused, which model fits
    it scored with, and seconds per step."""
    _check_format(fmt, "text", "json")
    ws = _open(project)
    with ws:
        records = ws.runs()
    if fmt == "json":
        _print_json(
            [
                {
                    "run_id": r.run_id,
                    "as_of": r.as_of,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                    "customers": r.customers,
                    "sources": r.sources,
                    **{k: v for k, v in r.details.items() if k not in ("uses", "thresholds")},
                }
                for r in records
            ]
        )
        return
    if not records:
        console.print("no runs yet: run 'crmseg run'")
        return
    from rich.table import Table

    zone = ws.config.timezone
    table = Table(title="runs" + (f" (times in {zone})" if zone != "UTC" else ""))
    for col in ("run", "as of", "customers", "sources", "identity", "quality", "models", "s"):
        table.add_column(col)
    for r in records:
        d = r.details
        table.add_row(
            str(r.run_id),
            local(r.as_of, zone),
            f"{r.customers:,}",
            _did(d.get("sources", {})),
            d.get("identity", ""),
            d.get("quality", ""),
            _fits(d.get("models", {})),
            f"{(r.finished_at - r.started_at).total_seconds():.0f}",
        )
    console.print(table)


def _did(sources: dict[str, str]) -> str:
    loaded = [n for n, s in sources.items() if s == "loaded"]
    if not sources:
        return ""
    if not loaded:
        return "all unchanged"
    return "loaded " + ", ".join(loaded)


def _fits(models: dict[str, Any]) -> str:
    return ", ".join(
        f"{g} {'fitted' if m.get('fitted') else 'fit ' + str(m.get('fit'))}"
        for g, m in sorted(models.items())
    )


def _print_run(result: Any, timezone: str = "UTC") -> None:
    from rich.table import Table

    table = Table(title=f"run {result.run_id} as of {when(result.as_of, timezone)}")
    table.add_column("segment")
    table.add_column("members", justify="right")
    table.add_column("share", justify="right")
    table.add_column("+entered", justify="right")
    table.add_column("-exited", justify="right")
    for name, size in result.sizes.items():
        share = size / result.customers if result.customers else 0.0
        table.add_row(
            name,
            f"{size:,}",
            f"{share:.1%}",
            f"{result.entered[name]:,}",
            f"{result.exited[name]:,}",
        )
    console.print(table)
    console.print(
        f"{result.customers:,} customers, {len(result.sizes)} segments in {result.seconds:.1f}s"
    )
    d = result.details
    did = [
        _did(d.get("sources", {})),
        *(f"{k} {d[k]}" for k in ("identity", "quality") if d.get(k) and d[k] != "off"),
    ]
    if d.get("models"):
        did.append("models: " + _fits(d["models"]))
    if d.get("purged"):
        rows = ", ".join(f"{n} {k:,}" for n, k in d["purged"].items())
        did.append(f"purged past retention: {rows}")
    if any(did):
        console.print("; ".join(x for x in did if x), markup=False)


@app.command()
@handled
def members(
    segment: Annotated[str, typer.Argument(help="Segment name, e.g. value.vip.")],
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="text, csv or json.")] = "text",
) -> None:
    """List a segment's members (from history when a run exists)."""
    _check_format(fmt, "text", "csv", "json")
    ws = _open(project)
    with ws:
        ids = ws.members(segment, as_of=_as_of(ws, as_of))
    if fmt == "json":
        _print_json({"segment": segment, "members": ids})
    elif fmt == "csv":
        sys.stdout.write("customer_id\n" + "".join(f"{i}\n" for i in ids))
    else:
        lines(ids)


@app.command()
@handled
def preview(
    segment: Annotated[str, typer.Argument(help="Segment name.")],
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
    sql: Annotated[bool, typer.Option("--sql", help="Also print the compiled SQL.")] = False,
) -> None:
    """Size, share, sample members and the plain-English rule of a segment."""
    ws = _open(project)
    with ws:
        p = ws.preview(segment, as_of=_as_of(ws, as_of), sql=sql)
    console.print(f"[bold]{p.segment}[/]: {p.english}")
    at = when(p.as_of, ws.config.timezone) + (
        f" (run {p.run_id})" if p.run_id is not None else " (computed on the loaded data)"
    )
    console.print(f"{p.size:,} of {p.customers:,} customers ({p.share:.1%}) as of {at}")
    console.print("sample: " + (", ".join(p.sample) or "(none)"))
    for name, value in p.thresholds.items():
        console.print(f"threshold {name} = {value:g}" if value is not None else f"{name}: n/a")
    if p.sql:
        console.print(p.sql, markup=False)


@app.command()
@handled
def explain(
    segment: Annotated[str, typer.Argument(help="Segment name.")],
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
    mask: MaskOpt = False,
) -> None:
    """Why a customer is (or is not) in a segment: every sub-condition's value."""
    ws = _open(project)
    with ws:
        result = ws.explain(segment, customer, as_of=_as_of(ws, as_of), mask=mask)
    for line in result.lines(ws.config.timezone):
        console.print(line, markup=False)


@app.command()
@handled
def traits(
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
    fmt: JsonFormatOpt = "text",
) -> None:
    """List built-in, user and model traits in plain English, with the lifecycle thresholds
    derived from the data and the latest model fits."""
    _check_format(fmt, "text", "json")
    ws = _open(project)
    with ws:
        data = ws.trait_catalog(as_of=_as_of(ws, as_of))
        data["models"] = ws.model_records()[:5]
    if fmt == "json":
        _print_json(data)
        return
    from rich.table import Table

    table = Table(title=f"traits as of {when(data['as_of'], ws.config.timezone, False)}")
    for col in ("trait", "kind", "meaning"):
        table.add_column(col)
    for t in data["traits"]:
        table.add_row(t["name"], t["kind"], t["description"] or t["english"])
    console.print(table)
    for name, value in data["thresholds"].items():
        shown = "n/a (no orders)" if value is None else f"{value:g} days"
        console.print(f"{name} = {shown}")
    for m in data["models"]:
        metrics = ", ".join(f"{k}={v}" for k, v in m["metrics"].items() if k != "clusters")
        console.print(
            f"model {m['model']} as of {m['as_of']:%Y-%m-%d}: {m['customers']:,} customers, "
            f"{m['fit_seconds']:.2f}s; {metrics}",
            markup=False,
        )


@app.command()
@handled
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where to create the demo shop.")] = Path(
        "demo-shop"
    ),
    customers: Annotated[int, typer.Option("--customers", min=10)] = 5000,
    seed: Annotated[int, typer.Option("--seed")] = 42,
) -> None:
    """Create the demo shop (if missing), run it, print its segments and write the report.

    A new shop first gets six months of monthly history (a backfill), so the report's trends,
    transitions and stability have something to show.
    """
    from crmseg.demo.scaffold import DEMO_AS_OF, init_project
    from crmseg.workspace import Workspace

    if not (directory / "crmseg.yml").exists():
        with progress_bar("generating demo shop") as cb:
            init_project(directory, demo=True, customers=customers, seed=seed, progress=cb)
        console.print(f"created demo shop in [bold]{directory}[/]")
    ws = Workspace.open(directory)
    with ws:
        last = ws.last_run()
        if last is None:
            with progress_bar("history") as cb:
                ws.backfill(
                    DEMO_AS_OF - timedelta(days=180),
                    DEMO_AS_OF - timedelta(days=30),
                    timedelta(days=30),
                    progress=cb,
                )
        with progress_bar("run") as cb:
            at = max(DEMO_AS_OF, last.as_of) if last else DEMO_AS_OF
            result = ws.run(as_of=at, progress=cb)
        _print_run(result, ws.config.timezone)
        with progress_bar("report") as cb:
            path = ws.report(directory / "report.html", progress=cb)
    console.print(f"report: [bold]{path.resolve()}[/] (open it in a browser)")


def parse_every(value: str) -> Every:
    from crmseg.config import Every

    try:
        return Every.parse(value)
    except ValueError as exc:
        raise CrmsegError(f"--every: {exc}") from None


@app.command()
@handled
def backfill(
    start: Annotated[str, typer.Option("--from", help="First instant, e.g. 2026-01-01.")],
    end: Annotated[str, typer.Option("--to", help="Last instant (inclusive).")],
    every: Annotated[str, typer.Option("--every", help="Step: 1d, 1w, 1mo, ...")] = "1w",
    project: ProjectOpt = Path("."),
    select: Annotated[
        list[str] | None, typer.Option("--select", "-s", help="Only these segments.")
    ] = None,
) -> None:
    """Run the catalog at each date in a range (point-in-time correct) to build history."""
    ws = _open(project)
    zone = ws.config.timezone
    first, last = parse_as_of(start, zone, "--from"), parse_as_of(end, zone, "--to")
    assert first is not None and last is not None
    with ws, progress_bar("backfill") as cb:
        results = ws.backfill(first, last, parse_every(every), select=select, progress=cb)
    from rich.table import Table

    shown = results[-8:]  # the table stays readable; history has every run
    title = f"backfill: {len(results)} runs" + (", the last 8 shown" if len(results) > 8 else "")
    # columns are the project's wall times: dates when every run is at local midnight
    walls = [local(r.as_of, zone, "%Y-%m-%d %H:%M") for r in shown]
    if all(w.endswith(" 00:00") for w in walls):
        walls = [w.removesuffix(" 00:00") for w in walls]
    table = Table(title=title + (f" (in {zone})" if zone != "UTC" else ""))
    table.add_column("segment")
    for wall in walls:
        table.add_column(wall, justify="right")
    for name in shown[0].sizes if shown else []:
        table.add_row(name, *(f"{r.sizes[name]:,}" for r in shown))
    console.print(table)


@app.command()
@handled
def catalog(
    project: ProjectOpt = Path("."),
    fmt: Annotated[str, typer.Option("--format", "-f", help="text, json or md.")] = "text",
) -> None:
    """List segments with owner, layer, refresh, size, last change and where they are used."""
    _check_format(fmt, "text", "json", "md")
    ws = _open(project)
    with ws:
        entries = ws.catalog()
    if fmt == "json":
        _print_json(entries, indent=2)
        return
    if fmt == "md":
        sys.stdout.write(_catalog_md(entries, ws.config.name))
        return
    from rich.table import Table

    table = Table(title="segment catalog")
    for col in ("segment", "owner", "refresh", "size", "last change", "used by"):
        table.add_column(col)
    for e in entries:
        size = "" if e["size"] is None else f"{e['size']:,}"
        change = f"{e['last_change']:%Y-%m-%d}" if e["last_change"] else "not run yet"
        if e["changed_since_last_run"]:
            change = "changed, not run"
        table.add_row(
            e["name"], e["owner"] or "", e["refresh"], size, change, ", ".join(e["used_by"])
        )
    console.print(table)


def _catalog_md(entries: list[dict[str, Any]], project: str) -> str:
    out = [f"# Segment catalog: {project}", ""]
    for layer in dict.fromkeys(e["layer"] for e in entries):
        out += [f"## {layer or '(no layer)'}", ""]
        for e in (e for e in entries if e["layer"] == layer):
            out += [f"### `{e['name']}`", "", e["description"] or "_no description_", ""]
            if e["english"]:
                out += [f"**Rule:** {e['english']}", ""]
            code = e["rule"] or e["sql"] or ""
            out += ["```", code.strip(), "```", ""]
            size = "not run yet" if e["size"] is None else f"{e['size']:,} members"
            out += [
                f"- owner: {e['owner'] or '-'}; purpose: {e['purpose'] or '-'}",
                f"- refresh: {e['refresh']}; tags: {', '.join(e['tags']) or '-'}",
                f"- size at the last run: {size}",
                f"- used by: {', '.join(e['used_by']) or 'nothing yet'}",
                f"- defined in: {e['file']}",
                "",
            ]
    return "\n".join(out)


@app.command()
@handled
def history(
    segment: Annotated[str, typer.Argument(help="Segment name.")],
    project: ProjectOpt = Path("."),
    fmt: JsonFormatOpt = "text",
) -> None:
    """Size per run with entered/exited counts (definition changes flagged)."""
    _check_format(fmt, "text", "json")
    ws = _open(project)
    with ws:
        rows = ws.history(segment)
    if fmt == "json":
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"history of {segment}")
    for col in ("run", "as of", "members", "+entered", "-exited", "definition"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["run_id"]),
            f"{r['as_of']:%Y-%m-%d %H:%M}",
            f"{r['size']:,}",
            f"{r['entered']:,}",
            f"{r['exited']:,}",
            r["definition_hash"] + (" (changed)" if r["definition_changed"] else ""),
        )
    console.print(table)


@app.command()
@handled
def profile(
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    project: ProjectOpt = Path("."),
    fmt: JsonFormatOpt = "text",
    mask: MaskOpt = False,
) -> None:
    """A customer's segments, every entry and exit, and the source records behind them."""
    _check_format(fmt, "text", "json")
    ws = _open(project)
    with ws:
        data = ws.profile(customer, mask=mask)
    if not data["records"] and not data["segments"]:
        from crmseg.errors import UnknownCustomerError

        raise UnknownCustomerError(
            f"unknown customer {customer!r}: no loaded record and no membership has this id "
            "(any of a person's record ids works; 'crmseg members SEGMENT' lists ids)"
        )
    if fmt == "json":
        _print_json(data)
        return
    zone = ws.config.timezone
    key = data["customer_id"]
    at = f"at the last run, as of {when(data['as_of'], zone)}" if data["as_of"] else "no run yet"
    console.print(f"[bold]{key}[/] {at}: " + (", ".join(data["current"]) or "in no segment"))
    if data.get("records"):
        console.print(f"source records behind {key}:")
        for rec in data["records"]:
            rows = ", ".join(f"{n} {t}" for t, n in sorted(rec["rows"].items()))
            signup = _local_text(rec.get("signup_at"), zone) or "?"
            console.print(
                f"  {rec['customer_id']}: {rec.get('email') or '-'} {rec.get('phone') or ''} "
                f"(signed up {signup}; {rows or 'no other rows'})",
                markup=False,
            )
        for link in data.get("links", []):
            console.print(
                f"  linked by {link['kind']} {link['value']} ({link['customer_id']})", markup=False
            )

    def day(at: datetime) -> str:
        return local(at, zone, "%Y-%m-%d")

    for seg, info in data["segments"].items():
        spans = "; ".join(
            f"{day(i['entered_at'])} -> " + (day(i["exited_at"]) if i["exited_at"] else "now")
            for i in info["intervals"]
        )
        console.print(f"  {seg}: first entered {day(info['first_entered'])}; {spans}")


def _local_text(value: Any, timezone: str) -> str | None:
    """A stored timestamp (naive UTC, maybe as ISO text) as the project's wall time."""
    if not value:
        return None
    try:
        at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return local(at, timezone)


@app.command()
@handled
def diff(
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
) -> None:
    """Preview how changed definitions move membership versus the last run (writes nothing)."""
    ws = _open(project)
    with ws:
        changes = ws.diff(as_of=_as_of(ws, as_of))
    if not changes:
        console.print("no definition changed since the last run")
        return
    for c in changes:
        console.print(
            f"[bold]{c['segment']}[/] ({c['status']}): [green]+{c['added']:,}[/] "
            f"[red]-{c['removed']:,}[/] ={c['unchanged']:,}"
        )
        if c["examples_added"]:
            console.print("  added e.g.: " + ", ".join(c["examples_added"]))
        if c["examples_removed"]:
            console.print("  removed e.g.: " + ", ".join(c["examples_removed"]))


@app.command()
@handled
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="A .parquet or .csv file to write.")],
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
    segments: Annotated[
        list[str] | None,
        typer.Option("--segments", "-s", help="Only these segments (repeatable, or a,b,c)."),
    ] = None,
) -> None:
    """Every membership at one instant in one file: segment, customer_id, entered_at."""
    chosen = [n.strip() for s in segments or [] for n in s.split(",") if n.strip()]
    ws = _open(project)
    with ws:
        done = ws.export(out, chosen or None, as_of=_as_of(ws, as_of))
        at = when(done.as_of, ws.config.timezone)
    console.print(
        f"wrote {done.rows:,} memberships of {len(done.segments)} segments as of {at} "
        f"to {done.path}",
        markup=False,
    )


@app.command()
@handled
def check(project: ProjectOpt = Path(".")) -> None:
    """Evaluate every segment's checks on its latest run; non-zero exit on failure."""
    ws = _open(project)
    with ws:
        results = ws.check()
    failed = [r for r in results if not r.ok]
    for r in failed:
        error(str(r))
    console.print(f"{len(results) - len(failed)} of {len(results)} checks passed")
    if failed:
        raise typer.Exit(1)


@app.command()
@handled
def overlap(
    segments: Annotated[list[str] | None, typer.Argument(help="Segments (default: all).")] = None,
    project: ProjectOpt = Path("."),
    fmt: JsonFormatOpt = "text",
) -> None:
    """Pairwise overlap at the last run: shared members and Jaccard."""
    _check_format(fmt, "text", "json")
    ws = _open(project)
    with ws:
        data = ws.overlap(segments)
    names = data["segments"]
    if fmt == "json":
        out = {
            "as_of": str(data["as_of"]),
            "size": data["size"],
            "pairs": [
                {"a": a, "b": b, "shared": n, "jaccard": j}
                for (a, b), (n, j) in data["matrix"].items()
            ],
        }
        _print_json(out)
        return
    from rich.table import Table

    table = Table(title=f"overlap as of {data['as_of']:%Y-%m-%d %H:%M} (shared / Jaccard)")
    table.add_column("")
    for n in names:
        table.add_column(n, justify="right")
    for a in names:
        cells = [f"{data['matrix'][(a, b)][0]:,} / {data['matrix'][(a, b)][1]:.2f}" for b in names]
        table.add_row(a, *cells)
    console.print(table)


@app.command(name="test")
@handled
def test_(project: ProjectOpt = Path(".")) -> None:
    """Run the segment unit tests in tests/*.yml; print expected vs actual on failure."""
    ws = _open(project)
    with ws:
        outcomes = ws.test()
    failed = 0
    for o in outcomes:
        if o.ok:
            console.print(f"[green]PASS[/] {o.file}:{o.line} {o.name}")
            continue
        failed += 1
        error(f"FAIL {o.file}:{o.line} {o.name}" + (f": {o.error}" if o.error else ""))
        for seg, (missing, unexpected) in o.failures.items():
            err_console.print(f"  {seg}: expected but missing {missing}; unexpected {unexpected}")
    console.print(f"{len(outcomes) - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)


@app.command()
@handled
def campaigns(
    project: ProjectOpt = Path("."),
    fmt: JsonFormatOpt = "text",
) -> None:
    """List campaigns: segment, channel, group and priority, holdout, destinations."""
    _check_format(fmt, "text", "json")
    ws = _open(project)
    with ws:
        rows = [
            {
                "name": c.name,
                "segment": c.spec.segment,
                "exclude": c.spec.exclude,
                "channel": c.spec.channel,
                "group": c.spec.group,
                "priority": c.spec.priority,
                "holdout": c.spec.holdout,
                "splits": [s.name for s in c.spec.splits],
                "destinations": [d.name or d.type for d in c.spec.destination],
                "owner": c.spec.owner,
                "file": f"{c.file}:{c.line}",
            }
            for c in ws.campaigns
        ]
    if fmt == "json":
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(title="campaigns")
    for col in ("campaign", "segment", "channel", "group", "priority", "holdout", "destinations"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            r["segment"],
            r["channel"],
            r["group"] or "",
            str(r["priority"]),
            f"{r['holdout']:.0%}",
            ", ".join(r["destinations"]),
        )
    console.print(table)


@app.command()
@handled
def activate(
    campaign: Annotated[
        str | None, typer.Argument(help="Campaign name (or use --due for every due campaign).")
    ] = None,
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the funnel and diffs; record and send nothing.")
    ] = False,
    due: Annotated[
        bool, typer.Option("--due", help="Activate every campaign due at --as-of.")
    ] = False,
    fmt: JsonFormatOpt = "text",
) -> None:
    """Build a campaign's audience (consent, suppression, caps, group, holdout) and deliver it."""
    _check_format(fmt, "text", "json")
    if (campaign is None) == (not due):
        raise CrmsegError("give a CAMPAIGN or --due (not both)")
    ws = _open(project)
    with ws:
        if due:
            results = ws.activate_due(dry_run=dry_run, as_of=_as_of(ws, as_of))
        else:
            assert campaign is not None
            results = [ws.activate(campaign, dry_run=dry_run, as_of=_as_of(ws, as_of))]
    if fmt == "json":
        _print_json([r.summary() for r in results])
    else:
        if not results:
            console.print("no campaign is due")
        for r in results:
            _print_activation(r, ws.config.timezone)
    failed = [d for r in results for d in r.destinations if d.error]
    if failed:
        error(f"{len(failed)} destination(s) failed: {failed[0].error}")
        raise typer.Exit(1)


def _print_activation(r: Any, timezone: str = "UTC") -> None:
    a = r.audience
    what = "dry run" if r.dry_run else f"activation {r.activation_id}"
    at = when(r.as_of, timezone, False)
    console.print(f"[bold]{r.campaign}[/] ({a.channel}), {what} as of {at}")
    console.print("  " + a.funnel(), markup=False)
    for d in r.destinations:
        change = f"+{d.adds:,} -{d.removes:,}" if d.mode == "incremental" else f"{d.adds:,}"
        verb = "would send" if r.dry_run else "sent"
        line = f"  -> {d.name} ({d.kind}, {d.mode}): {verb} {change}"
        if d.kind == "webhook" and not r.dry_run:
            line += f" in {d.delivered}/{d.batches} batches, {d.requests} requests"
        console.print(line + f" to {d.target}", markup=False)


@app.command()
@handled
def quality(
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
    fmt: JsonFormatOpt = "text",
    trend: Annotated[
        bool, typer.Option("--trend", help="Show affected rows per check over the last runs.")
    ] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also list checks that found nothing.")
    ] = False,
) -> None:
    """Data-quality checks on the current sources (writes nothing); non-zero exit on errors."""
    _check_format(fmt, "text", "json")
    ws = _open(project)
    if trend:
        with ws:
            rows = ws.quality_trend()
        if fmt == "json":
            _print_json(rows)
            return
        _print_quality_trend(rows)
        return
    with ws, progress_bar("quality") as cb:
        report = ws.quality(as_of=_as_of(ws, as_of), progress=cb)
    if fmt == "json":
        out = {
            "as_of": str(report.as_of),
            "findings": [f.as_dict() for f in report.findings],
        }
        _print_json(out)
    else:
        console.print(f"data quality as of {when(report.as_of, ws.config.timezone)}")
        for f in report.findings:
            if not (show_all or f.affected):
                continue
            color = {"error": "red", "warn": "yellow"}.get(f.level, "green")
            pct = f"{f.rate:.2%}" if f.total else "n/a"
            console.print(
                f"[{color}]{f.level:5}[/] {f.check} [bold]{f.where}[/]: {f.affected:,} of "
                f"{f.total:,} ({pct}) {_escape(f.message)}"
            )
            for example in f.examples[: 1 if not show_all else len(f.examples)]:
                console.print("      e.g. " + json.dumps(example, default=str), markup=False)
        console.print(
            f"{len(report.errors)} error(s), {len(report.warnings)} warning(s), "
            f"{len(report.findings)} checks"
        )
    if report.errors:
        error(*[f"{f.line()} (severity error)" for f in report.errors])
        raise typer.Exit(1)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _print_quality_trend(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    runs = sorted({(r["as_of"], r["run_id"]) for r in rows})
    table = Table(title="data quality over the last runs (affected rows)")
    table.add_column("check")
    table.add_column("where")
    for as_of, run_id in runs:
        table.add_column(f"{as_of:%Y-%m-%d} #{run_id}", justify="right")
    cells: dict[tuple[str, str], dict[int, int]] = {}
    for r in rows:
        where = f"{r['table']}.{r['column']}" if r["column"] else r["table"]
        cells.setdefault((r["check"], where), {})[r["run_id"]] = r["affected"]
    for (check, where), by_run in sorted(cells.items()):
        if any(by_run.values()):
            table.add_row(check, where, *(f"{by_run.get(run, 0):,}" for _, run in runs))
    console.print(table)


@app.command()
@handled
def identity(
    project: ProjectOpt = Path("."),
    fmt: JsonFormatOpt = "text",
) -> None:
    """Identity resolution of the loaded data: people, merged records, links, what was blocked."""
    _check_format(fmt, "text", "json")
    ws = _open(project)
    with ws:
        stats = ws.identity()
    if fmt == "json":
        _print_json(stats)
        return
    if not stats.get("enabled"):
        console.print("identity resolution is off (identity.enabled: false in crmseg.yml)")
        return
    console.print(
        f"{stats['records']:,} customer records -> {stats['people']:,} people: "
        f"{stats['merged_records']:,} records merged into {stats['merged_people']:,} people"
    )
    sizes = ", ".join(f"{n} records: {c:,}" for n, c in stats["clusters_by_size"].items())
    console.print(f"clusters by size: {sizes or 'none'}")
    for link in stats["links"]:
        console.print(
            f"  linked by {link['kind']}: {link['values']:,} shared values, "
            f"{link['records']:,} records"
        )
    if stats.get("splink_pairs"):
        console.print(f"  Splink matched {stats['splink_pairs']:,} pairs; strongest:")
        for m in stats["splink_matches"][:5]:
            console.print(
                f"    {m['customer_id_l']} ~ {m['customer_id_r']}: weight "
                f"{m['match_weight']:.1f}, probability {m['match_probability']:.4f}"
            )
    if stats["largest_clusters"]:
        console.print(
            "largest: "
            + ", ".join(f"{c['customer_key']} ({c['records']})" for c in stats["largest_clusters"])
        )
    if stats["blocked_records"]:
        console.print(
            f"[yellow]not merged[/]: {stats['blocked_records']:,} records in clusters larger "
            "than identity.max_cluster_size"
        )
    for hub in stats["blocked_values"]:
        console.print(
            f"[yellow]not used as a link[/]: {hub['kind']} {hub['value']!r} is shared by "
            f"{hub['records']:,} records"
        )


_MEASURES = ("outcomes", "campaigns", "cohorts", "transitions", "stability", "review")


@app.command()
@handled
def measure(
    what: Annotated[
        str, typer.Argument(help="outcomes, campaigns, cohorts, transitions, stability, review.")
    ],
    project: ProjectOpt = Path("."),
    window: Annotated[
        int | None,
        typer.Option(
            "--window", min=1, help="Days after a run or send (outcomes 30, campaigns 14)."
        ),
    ] = None,
    trait: Annotated[
        str, typer.Option("--trait", help="Trait for transitions (e.g. rfm.segment).")
    ] = "lifecycle.stage",
    fmt: JsonFormatOpt = "text",
) -> None:
    """Measure outcomes by segment, campaign lift, cohorts, transitions, stability or review."""
    if what not in _MEASURES:
        raise CrmsegError(f"measure: expected one of {', '.join(_MEASURES)}, got {what!r}")
    ws = _open(project)
    with ws:
        data: Any
        if what == "outcomes":
            data = ws.measure_outcomes(window or 30)
        elif what == "campaigns":
            data = ws.measure_campaigns(window or 14)
        elif what == "cohorts":
            data = ws.measure_cohorts()
        elif what == "transitions":
            data = ws.measure_transitions(trait)
        elif what == "stability":
            data = ws.measure_stability()
        else:
            data = ws.measure_review(window_days=window or 14)
    if fmt == "json":
        _print_json(data)
        return
    _print_measure(what, data)


def _print_measure(what: str, data: Any) -> None:
    from rich.table import Table

    def pct(v: float | None, digits: int = 1) -> str:
        return "-" if v is None else f"{v * 100:.{digits}f}%"

    if what == "campaigns":
        table = Table(title="campaign lift: treatment vs holdout (95% CI)")
        for col in ("campaign", "metric", "treated/held", "treatment", "holdout", "lift", "95% CI",
                    "p", "significant"):  # fmt: skip
            table.add_column(col)
        for r in data:
            conv = r["metric"] == "conversion"

            def f(v: float, conv: bool = conv) -> str:
                return f"{v * 100:+.2f} pts" if conv else f"{v:+,.2f}"

            table.add_row(
                r["campaign"], r["metric"], f"{r['treatment_n']:,}/{r['holdout_n']:,}",
                pct(r["treatment"]) if conv else f"{r['treatment']:,.2f}",
                pct(r["holdout"]) if conv else f"{r['holdout']:,.2f}",
                f(r["lift"]), f"{f(r['lower'])} to {f(r['upper'])}", f"{r['p_value']:.3f}",
                ("yes" if r["significant"] else "no") + ("" if r["complete"] else " (open)"),
            )  # fmt: skip
        console.print(table)
    elif what == "outcomes":
        table = Table(title="outcomes by segment after each run")
        for col in ("segment", "as of", "members", "conversion", "rev/member", "AOV", "repeat",
                    "churn", "unsub", "complaint", "msgs/member", "window"):  # fmt: skip
            table.add_column(col)
        for r in data:
            table.add_row(
                r["segment"], f"{r['as_of']:%Y-%m-%d}", f"{r['members']:,}",
                pct(r["conversion_rate"]), f"{r['revenue_per_member'] or 0:,.2f}",
                f"{r['aov'] or 0:,.2f}", pct(r["repeat_rate"]), pct(r["churn_rate"]),
                pct(r["unsubscribe_rate"], 2), pct(r["complaint_rate"], 2),
                f"{r['messages_per_member'] or 0:.2f}",
                "complete" if r["complete"] else "open",
            )  # fmt: skip
        console.print(table)
    elif what == "cohorts":
        table = Table(title="retention by acquisition cohort (share ordering in month N)")
        table.add_column("cohort")
        table.add_column("customers", justify="right")
        for age in data["ages"]:
            table.add_column(f"M{age}", justify="right")
        for label, size, row in zip(data["cohorts"], data["size"], data["retention"], strict=True):
            table.add_row(label, f"{size:,}", *[pct(v, 0) if v is not None else "" for v in row])
        console.print(table)
    elif what == "transitions":
        table = Table(
            title=f"{data['trait']}: {data['from_as_of']:%Y-%m-%d} (rows) -> "
            f"{data['to_as_of']:%Y-%m-%d} (columns)"
        )
        table.add_column("")
        for v in data["to"]:
            table.add_column(v, justify="right")
        for v, row in zip(data["from"], data["counts"], strict=True):
            table.add_row(v, *[f"{n:,}" for n in row])
        console.print(table)
    elif what == "stability":
        table = Table(title="stability between consecutive runs")
        for col in ("segment", "from", "to", "size", "kept", "jaccard"):
            table.add_column(col)
        for r in data:
            table.add_row(r["segment"], f"{r['previous']:%Y-%m-%d}", f"{r['as_of']:%Y-%m-%d}",
                          f"{r['size']:,}", f"{r['kept']:,}", f"{r['jaccard']:.2f}")  # fmt: skip
        console.print(table)
    else:
        if not data:
            console.print("nothing to flag")
        for item in data:
            console.print(f"[bold]{item['kind']}[/] {item['subject']}: {item['detail']}")
            console.print(f"    -> {item['action']}", markup=False)


@app.command()
@handled
def suggest(
    target: Annotated[
        str,
        typer.Option(
            "--target",
            "-t",
            help="purchase, churn, high_clv, campaign:NAME, or a rule (a condition over what "
            "happens within the horizon, e.g. \"did('added_to_cart' within 30d)\").",
        ),
    ],
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
    horizon: Annotated[
        str | None,
        typer.Option(
            "--horizon",
            help="Outcome window after the cut-off: 30d, 12h, 2w, 3mo, 1y (default 30d; churn: "
            "models.churn_horizon_days).",
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, max=100, help="Rules to show.")] = 10,
    depth: Annotated[
        int, typer.Option("--depth", min=1, max=5, help="Most conditions per rule.")
    ] = 3,
    beam: Annotated[
        int, typer.Option("--beam", min=1, max=200, help="Rules kept per search level.")
    ] = 20,
    min_share: Annotated[
        float,
        typer.Option("--min-share", min=0.0, max=0.5, help="Smallest rule, share of customers."),
    ] = 0.01,
    min_positives: Annotated[
        int,
        typer.Option(
            "--min-positives", min=1, help="Refuse a target true for fewer customers than this."
        ),
    ] = 50,
    holdout: Annotated[
        float,
        typer.Option("--holdout", min=0.05, max=0.9, help="Share of customers held out."),
    ] = 0.3,
    attribute: Annotated[
        list[str] | None,
        typer.Option(
            "--attribute",
            "-a",
            help="A customers column that never changes (repeatable or comma-separated); "
            "attributes are current values, so none is used unless named.",
        ),
    ] = None,
    write: Annotated[
        bool,
        typer.Option("--write", help="Save the rules to segments/suggested.yml for review."),
    ] = False,
    fmt: JsonFormatOpt = "text",
) -> None:
    """Find plain rules over traits and attributes that pick out customers with an outcome,
    with their lift on held-out customers; --write saves them as segments awaiting review."""
    from crmseg.models.suggest import Settings

    _check_format(fmt, "text", "json")
    attrs = tuple(a.strip() for v in attribute or () for a in v.split(",") if a.strip())
    settings = Settings(top, depth, beam, min_share, min_positives, holdout, attributes=attrs)
    ws = _open(project)
    with ws, progress_bar("suggest") as cb:
        data = ws.suggest(target, _as_of(ws, as_of), horizon, settings, write=write, progress=cb)
    if fmt == "json":
        _print_json(data)
        return
    _print_suggestions(data, ws.config.timezone)


def _print_suggestions(data: dict[str, Any], timezone: str) -> None:
    console.print(
        f"target {data['target']}: {data['outcome']}; features at "
        f"{local(data['cutoff'], timezone)}, outcome at {local(data['as_of'], timezone)}",
        markup=False,
    )
    console.print(
        f"{data['positives']:,} of {data['customers']:,} customers ({data['base_rate']:.1%}); "
        f"{data['candidates']:,} conditions searched; measured on "
        f"{data['holdout_customers']:,} held-out customers (base rate "
        f"{data['holdout_base_rate']:.1%})",
        markup=False,
    )
    if not data["suggestions"]:
        console.print("no rule beats the base rate")
    for i, s in enumerate(data["suggestions"], 1):
        h = s["holdout"]
        console.print(f"\n[bold]{i}. {_escape(s['rule'])}[/]")
        console.print(f"   {s['english']}", markup=False)
        console.print(
            f"   held out: {h['size']:,} customers ({h['share']:.1%}), {h['rate']:.1%} with the "
            f"outcome vs {h['base_rate']:.1%}: lift {h['lift']:.2f} (95% CI "
            f"{h['lift_low']:.2f}-{h['lift_high']:.2f}); {s['members_now']:,} members now",
            markup=False,
        )
    for name in data["written"]:
        console.print(f"wrote {name} to segments/suggested.yml (fill in owner and purpose)")


@app.command()
@handled
def power(
    size: Annotated[int, typer.Option("--size", min=2, help="Audience size (all arms).")],
    baseline: Annotated[
        float, typer.Option("--baseline", help="Conversion rate without treatment, e.g. 0.05.")
    ],
    holdout: Annotated[float, typer.Option("--holdout", help="Holdout share.")] = 0.1,
    alpha: Annotated[float, typer.Option("--alpha", help="Two-sided test level.")] = 0.05,
    power_: Annotated[float, typer.Option("--power", help="Chance of detecting the MDE.")] = 0.8,
    effect: Annotated[
        float | None,
        typer.Option("--effect", help="Target absolute lift, e.g. 0.01: prints the size needed."),
    ] = None,
    fmt: JsonFormatOpt = "text",
) -> None:
    """Minimum detectable effect of a holdout test, and the audience a target effect needs."""
    from crmseg.measurement.power import power_report

    r = power_report(size, baseline, holdout, alpha, power_, effect)
    if fmt == "json":
        _print_json(r.as_dict())
        return
    console.print(
        f"{size:,} customers, {holdout:.0%} holdout, baseline {baseline:.2%}: detectable lift "
        f"{r.mde * 100:.2f} points ({r.relative_mde:.0%} relative) at alpha {alpha}, "
        f"power {power_}"
    )
    if r.too_small:
        console.print("[yellow]too small to measure[/]: only a very large lift would show")
    if effect is not None and r.size_needed is not None:
        console.print(f"to detect +{effect * 100:.2f} points you need {r.size_needed:,} customers")


@app.command()
@handled
def report(
    project: ProjectOpt = Path("."),
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="HTML file (default report.html).")
    ] = None,
    window: Annotated[
        int,
        typer.Option("--window", min=1, help="Days after a send that count for campaign lift."),
    ] = 14,
) -> None:
    """Write the self-contained HTML report (charts work offline)."""
    ws = _open(project)
    with ws, progress_bar("report") as cb:
        path = ws.report(out, window, cb)
    console.print(f"report written to [bold]{path}[/]")


@app.command()
@handled
def forget(
    who: Annotated[
        list[str] | None, typer.Argument(help="Customer ids, emails or phones to forget.")
    ] = None,
    project: ProjectOpt = Path("."),
    file: Annotated[
        Path | None,
        typer.Option("--file", help="A file of ids, emails or phones, one per line."),
    ] = None,
    keep_going: Annotated[
        bool,
        typer.Option("--continue", help="Forget the known ones when some name nobody."),
    ] = False,
) -> None:
    """Forget people everywhere: warehouse, history, send log, exports and caches, with a
    deletion list per destination that received them."""
    from crmseg.errors import ForgetError

    asked = list(who or [])
    if file is not None:
        try:
            asked += [ln.strip() for ln in file.read_text().splitlines() if ln.strip()]
        except OSError as exc:
            raise ForgetError(f"{file}: cannot read ({exc.strerror})") from None
    ws = _open(project)
    with ws:
        done = ws.forget(asked, keep_going)
    for u in done.unknown:
        console.print(f"[yellow]not found:[/] {u}", markup=True)
    console.print(
        f"forgot {done.people} people ({done.records} records): {done.warehouse_rows} warehouse "
        f"rows, {done.state_rows} state rows, {len(done.files)} files"
    )
    for path in done.deletion_lists:
        console.print(f"deletion list for a destination: {path}", markup=False)


@app.command()
@handled
def stream(
    source: Annotated[
        str, typer.Argument(help="A file of JSON lines, or - for standard input.")
    ] = "-",
    project: ProjectOpt = Path("."),
    batch: Annotated[int, typer.Option("--batch", min=1, help="Most items per batch.")] = 1000,
    replay: Annotated[
        bool,
        typer.Option("--replay", help="Evaluate at the items' own instants, not the clock."),
    ] = False,
) -> None:
    """Feed events, orders and consent changes (JSON lines) to the realtime segments; every
    entry and exit is printed as a JSON line (see docs/realtime.md)."""
    import json
    import sys

    def emit(changes: Iterable[Any]) -> None:
        for c in changes:
            print(json.dumps(c.as_dict()), flush=True)

    ws = _open(project)
    with ws:
        if source == "-":
            done = ws.stream(sys.stdin, emit, batch, replay)
        else:
            path = Path(source)
            if not path.is_file():
                raise CrmsegError(f"{source}: no such file")
            with path.open(encoding="utf-8") as lines:
                done = ws.stream(lines, emit, batch, replay)
    err_console.print(
        f"{done.items:,} items in {done.batches:,} batches: {done.entered:,} entered, "
        f"{done.exited:,} exited, {done.created:,} new people",
        markup=False,
    )


@app.command()
@handled
def serve(
    project: ProjectOpt = Path("."),
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8321,
    schedule: Annotated[
        bool, typer.Option("--schedule/--no-schedule", help="Run due segments while serving.")
    ] = True,
) -> None:
    """Serve the REST API (OpenAPI at /docs); every route but /health needs an API key."""
    try:
        import uvicorn

        from crmseg.server.app import create_app
    except ImportError as exc:
        from crmseg.errors import MissingDependencyError

        raise MissingDependencyError(exc.name or "fastapi", "server") from None
    app_ = create_app(project, schedule)
    console.print(f"crmseg serving {project.resolve()} on http://{host}:{port} (docs at /docs)")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


keys_app = typer.Typer(help="API keys for crmseg serve (stored hashed in the state database).")
app.add_typer(keys_app, name="keys")


def _key_store(ws: Any) -> Any:
    from crmseg.server.keys import KeyStore

    return KeyStore(ws.state)


@keys_app.command("create")
@handled
def keys_create(
    role: Annotated[str, typer.Option("--role", help="viewer, editor or admin.")],
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")] = "",
    project: ProjectOpt = Path("."),
) -> None:
    """Make a key; its text is printed once and never stored."""
    with _open(project) as ws:
        made, text = _key_store(ws).create(role, name)
    console.print(f"{made.role} key {made.key_id} {made.name}".rstrip())
    print(text)


@keys_app.command("list")
@handled
def keys_list(project: ProjectOpt = Path("."), fmt: JsonFormatOpt = "text") -> None:
    """Every key: id, role, name, created and revoked (never the secret)."""
    _check_format(fmt, "text", "json")
    with _open(project) as ws:
        found = _key_store(ws).list()
    if fmt == "json":
        _print_json([k.__dict__ for k in found])
        return
    for k in found:
        revoked = f" revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else ""
        console.print(f"{k.key_id}  {k.role:<6}  {k.created_at:%Y-%m-%d %H:%M}  {k.name}{revoked}")


@keys_app.command("revoke")
@handled
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from crmseg keys list).")],
    project: ProjectOpt = Path("."),
) -> None:
    """Revoke a key: the server refuses it from then on."""
    with _open(project) as ws:
        found = _key_store(ws).revoke(key_id)
    console.print(f"revoked {found.role} key {found.key_id}")


def entrypoint() -> None:  # pragma: no cover - console script
    app()
