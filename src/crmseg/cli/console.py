"""The one console all output goes through (rich)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def lines(items: Iterator[str] | list[str]) -> None:
    """Plain lines on stdout (ids, CSV): no markup, and fast for hundreds of thousands."""
    import sys

    sys.stdout.write("".join(f"{item}\n" for item in items))
    sys.stdout.flush()


def error(line: str, *more: str) -> None:
    """One red line (plus optional detail lines) on stderr."""
    err_console.print(f"[bold red]error:[/] {_escape(line)}")
    for extra in more:
        err_console.print(f"  {_escape(extra)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@contextmanager
def progress_bar(title: str) -> Iterator[Any]:
    """A progress bar on stderr fed by ``callback(step, fraction)``; silent when not a tty."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
    with bar:
        task = bar.add_task(title, total=1.0)

        def callback(step: str, fraction: float) -> None:
            bar.update(task, completed=min(max(fraction, 0.0), 1.0), description=f"{title}: {step}")

        yield callback
