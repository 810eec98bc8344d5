"""Shared plumbing for the demo generator: the clock, grouped cumsums, timestamp columns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import pyarrow as pa

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

DAY_US = 86_400_000_000
YEARS = 3


@dataclass(frozen=True)
class Clock:
    """Time as float days since ``origin`` (``YEARS`` years before ``as_of``)."""

    as_of: datetime
    origin: datetime
    span: float  # days from origin to as_of

    @classmethod
    def ending(cls, as_of: datetime) -> Clock:
        origin = as_of - timedelta(days=365 * YEARS)
        return cls(as_of, origin, (as_of - origin).total_seconds() / 86_400)

    def ts(self, days: Floats) -> pa.Array:
        """Whole-second naive UTC timestamps; NaN becomes null."""
        base = int((self.origin - datetime(1970, 1, 1)).total_seconds())
        nan = np.isnan(days)
        secs = np.floor(np.where(nan, 0.0, days) * 86_400).astype(np.int64) + base
        return pa.array(secs * 1_000_000, pa.timestamp("us"), mask=nan if nan.any() else None)

    def dates(self) -> npt.NDArray[np.datetime64]:
        """The calendar date of every whole day from origin up to and including as_of."""
        start = np.datetime64(self.origin.date(), "D")
        return start + np.arange(int(self.span) + 1)


def spans(counts: Ints) -> tuple[Ints, Ints]:
    """For groups of ``counts`` rows: the owner index of each row and each row's rank."""
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    rank = np.arange(len(owner), dtype=np.int64) - np.repeat(starts, counts)
    return owner, rank


def group_cumsum(x: Floats, counts: Ints) -> Floats:
    """Cumulative sums that restart at every group of ``counts`` consecutive rows."""
    total = np.cumsum(x)
    ends = np.cumsum(counts)
    before = np.concatenate(([0.0], total))[ends - counts]
    out: Floats = total - np.repeat(before, counts)
    return out


def choice(rng: np.random.Generator, weights: tuple[float, ...], size: int) -> Ints:
    """Weighted draws of indexes into ``weights`` (normalised here)."""
    w = np.asarray(weights, dtype=np.float64)
    return np.searchsorted(np.cumsum(w / w.sum()), rng.random(size), side="right").clip(
        0, len(w) - 1
    )


def time_order(days: Floats) -> Ints:
    """Stable order of whole-second times; two 16-bit radix passes beat a float sort."""
    secs = np.floor((days - np.min(days, initial=0.0)) * 86_400).astype(np.int64)
    low = (secs & 0xFFFF).astype(np.uint16)
    high = (secs >> 16).astype(np.uint16)  # < 2**32 seconds, about 136 years
    order = np.argsort(low, kind="stable")
    return order[np.argsort(high[order], kind="stable")]
