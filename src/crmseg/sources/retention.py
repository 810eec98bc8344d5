"""Retention windows (``privacy.retention``): rows older than their table's window are left out
of every plan of the sources, and so out of the warehouse at the next load.

The cut-off is midnight of the current day in the project's timezone, minus the window
(months and years are calendar ones). It moves once a day, so a project whose data did not
change reloads a retained table at most once a day (the cut-off is part of the source's
configuration hash) instead of on every run. A row whose timestamp is missing is kept: its
age is unknown, and quality's ``missing_values`` reports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from crmseg.config import add_months, parse_window
from crmseg.sources.model import RETAINABLE, TABLES

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.config import Config

__all__ = ["RETAINABLE", "cutoff", "cutoffs", "parse_window", "retained", "split"]


def clock() -> datetime:
    """Now, aware (tests move it)."""
    return datetime.now(UTC)


def cutoff(window: str, timezone: str, now: datetime | None = None) -> datetime:
    """The first instant a row must be at or after to be kept, as naive UTC."""
    count, unit = parse_window(window)
    local = (now or clock()).astimezone(ZoneInfo(timezone))
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if unit in ("d", "w"):
        start = day - timedelta(days=count * (7 if unit == "w" else 1))
    else:
        start = add_months(day, -count * (12 if unit == "y" else 1))
    # back to an aware local time (folds and gaps resolved by zoneinfo), then naive UTC
    aware = start.replace(tzinfo=ZoneInfo(timezone))
    return aware.astimezone(UTC).replace(tzinfo=None)


def cutoffs(config: Config, now: datetime | None = None) -> dict[str, datetime]:
    """Table -> its cut-off, for every table with a window. Order items without a window of
    their own follow their orders' (an item is as old as its order)."""
    windows = dict(config.privacy.retention)
    if "orders" in windows:
        windows.setdefault("order_items", windows["orders"])
    return {name: cutoff(window, config.timezone, now) for name, window in windows.items()}


def split(table: str, expr: ir.Table, at: datetime) -> tuple[ir.Table, ir.Table]:
    """(rows kept, rows past the window) of a canonical table's expression."""
    import ibis

    time = TABLES[table].time
    assert time is not None
    column = expr[time]
    keep = column.isnull() | (column >= ibis.literal(at, type="timestamp"))
    return expr.filter(keep), expr.filter(~keep)


def retained(config: Config, tables: Mapping[str, ir.Table]) -> dict[str, ir.Table]:
    """``tables`` without the rows past their windows (loaded tables between two loads: the
    cut-off may have moved since the last one purged)."""
    limits = cutoffs(config)
    out = dict(tables)
    for name, at in limits.items():
        if name in out and TABLES[name].time in out[name].columns:
            out[name] = split(name, out[name], at)[0]
    return out
