"""The ``crmseg`` command line: thin typer commands over :class:`crmseg.workspace.Workspace`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from crmseg.cli.console import console, error, progress_bar
from crmseg.errors import CrmsegError

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
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of", help="Instant to compute at, e.g. 2026-01-31 or 2026-01-31T12:00 (UTC)."
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


def parse_as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CrmsegError(
            f"--as-of: expected a date like 2026-01-31 or 2026-01-31T12:00:00, got {value!r}"
        ) from None


def _open(project: Path) -> Any:
    from crmseg.workspace import Workspace

    return Workspace.open(project)


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """crmseg: segment definitions as code, computed on your customer data."""
    _state["debug"] = debug
    if version:
        from crmseg import __version__

        console.print(__version__)
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
def validate(project: ProjectOpt = Path(".")) -> None:
    """Check crmseg.yml, sources, traits and segments without changing anything."""
    ws = _open(project)
    with ws, progress_bar("validate") as cb:
        report = ws.validate(cb)
    if not report.ok:
        error(report.problems[0], *report.problems[1:])
        raise typer.Exit(1)
    tables = ", ".join(f"{n} ({c} columns)" for n, c in report.sources.items())
    console.print(f"[green]ok[/]: {tables}; {report.traits} traits, {report.segments} segments")


@app.command()
@handled
def run(
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
    select: Annotated[
        list[str] | None, typer.Option("--select", "-s", help="Only these segments (repeatable).")
    ] = None,
) -> None:
    """Load sources, compute every segment and record the run."""
    ws = _open(project)
    with ws, progress_bar("run") as cb:
        result = ws.run(as_of=parse_as_of(as_of), select=select, progress=cb)
    _print_run(result)


def _print_run(result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"run {result.run_id} as of {result.as_of:%Y-%m-%d %H:%M:%S} UTC")
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


@app.command()
@handled
def members(
    segment: Annotated[str, typer.Argument(help="Segment name, e.g. value.vip.")],
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="text, csv or json.")] = "text",
) -> None:
    """List a segment's members (from history when a run exists)."""
    if fmt not in ("text", "csv", "json"):
        raise CrmsegError(f"--format: expected text, csv or json, got {fmt!r}")
    ws = _open(project)
    with ws:
        ids = ws.members(segment, as_of=parse_as_of(as_of))
    if fmt == "json":
        sys.stdout.write(json.dumps({"segment": segment, "members": ids}) + "\n")
    elif fmt == "csv":
        sys.stdout.write("customer_id\n" + "".join(f"{i}\n" for i in ids))
    else:
        for i in ids:
            console.print(i)


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
        p = ws.preview(segment, as_of=parse_as_of(as_of), sql=sql)
    console.print(f"[bold]{p.segment}[/]: {p.english}")
    when = f"{p.as_of:%Y-%m-%d %H:%M:%S} UTC"
    console.print(f"{p.size:,} of {p.customers:,} customers ({p.share:.1%}) as of {when}")
    console.print("sample: " + (", ".join(p.sample) or "(none)"))
    if p.sql:
        console.print(p.sql, markup=False)


@app.command()
@handled
def explain(
    segment: Annotated[str, typer.Argument(help="Segment name.")],
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    project: ProjectOpt = Path("."),
    as_of: AsOfOpt = None,
) -> None:
    """Why a customer is (or is not) in a segment: every sub-condition's value."""
    ws = _open(project)
    with ws:
        result = ws.explain(segment, customer, as_of=parse_as_of(as_of))
    for line in result.lines():
        console.print(line, markup=False)


@app.command()
@handled
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where to create the demo shop.")] = Path(
        "demo-shop"
    ),
    customers: Annotated[int, typer.Option("--customers", min=10)] = 5000,
    seed: Annotated[int, typer.Option("--seed")] = 42,
) -> None:
    """Create the demo shop (if missing), run it and print a summary of its segments."""
    from crmseg.demo.scaffold import init_project
    from crmseg.workspace import Workspace

    if not (directory / "crmseg.yml").exists():
        with progress_bar("generating demo shop") as cb:
            init_project(directory, demo=True, customers=customers, seed=seed, progress=cb)
        console.print(f"created demo shop in [bold]{directory}[/]")
    ws = Workspace.open(directory)
    from crmseg.demo.scaffold import DEMO_AS_OF

    with ws, progress_bar("run") as cb:
        last = ws.state.last_run()
        at = max(DEMO_AS_OF, last.as_of) if last else DEMO_AS_OF
        result = ws.run(as_of=at, progress=cb)
    _print_run(result)


def entrypoint() -> None:  # pragma: no cover - console script
    app()
