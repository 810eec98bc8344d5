"""Transaction logs to per-customer RFM summaries, and their sufficient statistics.

Periods follow pandas' period semantics (``freq="D"``, ``"W"``, ...): a customer's purchases in
the same period count once, so ``frequency`` is the number of distinct periods with a purchase
after the first one, ``recency`` the number of periods from the first to the last purchase and
``T`` the number of periods from the first purchase to ``as_of``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from crmseg.errors import ModelError

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def _ordinals(timestamps: Any, freq: str) -> tuple[Ints, pd.DatetimeIndex]:
    """Period numbers of ``timestamps`` at ``freq``, and the parsed timestamps."""
    try:
        try:
            ts = pd.DatetimeIndex(pd.to_datetime(timestamps))
        except ValueError:  # strings in more than one layout: parse each on its own
            ts = pd.DatetimeIndex(pd.to_datetime(timestamps, format="mixed"))
        if ts.tz is not None:
            ts = ts.tz_localize(None)
        if freq == "D" and not ts.hasnans:  # a day period's ordinal is days since 1970-01-01
            per_day = np.timedelta64(1, "D") // np.timedelta64(1, ts.unit)
            return np.asarray(ts.asi8 // per_day, dtype=np.int64), ts
        return np.asarray(ts.to_period(freq).asi8, dtype=np.int64), ts
    except (ValueError, TypeError) as e:
        raise ModelError(f"rfm_summary: cannot read timestamps at freq={freq!r}: {e}") from e


def _as_of_ordinal(as_of: Any, freq: str) -> int:
    try:
        stamp = pd.Timestamp(as_of)
        if stamp.tz is not None:
            stamp = stamp.tz_localize(None)
        return int(stamp.to_period(freq).ordinal)
    except (ValueError, TypeError) as e:
        raise ModelError(f"rfm_summary: cannot read as_of={as_of!r}: {e}") from e


def _window(
    codes: Ints, periods: Ints, amounts: Floats, n_customers: int
) -> tuple[Ints, Ints, Ints, Floats, Floats]:
    """Per customer: first period, last period, distinct periods, sum of all period totals and
    the first period's total. Customers without rows get count 0."""
    first = np.zeros(n_customers, dtype=np.int64)
    last = np.zeros(n_customers, dtype=np.int64)
    count = np.zeros(n_customers, dtype=np.int64)
    if len(codes) == 0:
        return first, last, count, np.zeros(n_customers), np.zeros(n_customers)
    lo = int(periods.min())
    span = int(periods.max()) - lo + 1
    # Sorting the packed (customer, period) keys alone, without an argsort, is the cheapest
    # way to find distinct periods; amounts never need reordering because totals are plain
    # bincounts and the first period's total is a masked bincount.
    keys = codes * span + (periods - lo)
    if n_customers * span < 2**31:  # int32 sorts markedly faster
        keys = keys.astype(np.int32)
    keys = np.sort(keys)
    fresh = np.empty(len(keys), dtype=bool)
    fresh[0] = True
    np.not_equal(keys[1:], keys[:-1], out=fresh[1:])
    cells = keys[fresh].astype(np.int64)
    cust, per = np.divmod(cells, span)
    per += lo
    count[:] = np.bincount(cust, minlength=n_customers)
    starts = np.r_[True, cust[1:] != cust[:-1]]
    ends = np.r_[cust[1:] != cust[:-1], True]
    first[cust[starts]] = per[starts]
    last[cust[ends]] = per[ends]
    total = np.asarray(np.bincount(codes, weights=amounts, minlength=n_customers), dtype=float)
    at_first = periods == first[codes]
    head = np.bincount(codes[at_first], weights=amounts[at_first], minlength=n_customers)
    return first, last, count, total, np.asarray(head, dtype=np.float64)


def _customer_codes(ids: npt.NDArray[Any]) -> tuple[Ints, Any]:
    """Sorted distinct customer ids and each row's index into them."""
    if ids.dtype.kind in "iu" and len(ids):
        lo, hi = int(ids.min()), int(ids.max())
        if hi - lo <= 4 * len(ids):
            # Dense integer ids index themselves: no hashing or sorting. Ids without rows
            # get no transactions and are dropped with the other unseen customers.
            return (ids - lo).astype(np.int64), np.arange(lo, hi + 1, dtype=ids.dtype)
    codes, uniques = pd.factorize(ids, sort=True)
    return np.asarray(codes, dtype=np.int64), uniques


def rfm_summary(
    customer_ids: Sequence[Any] | npt.ArrayLike | pd.Series,
    timestamps: Sequence[Any] | npt.ArrayLike | pd.Series,
    amounts: Sequence[float] | npt.ArrayLike | pd.Series | None,
    as_of: Any,
    freq: str = "D",
    calibration_end: Any = None,
) -> pd.DataFrame:
    """Frequency, recency, T and monetary value per customer, as of ``as_of``.

    ``monetary_value`` is the mean of the repeat periods' totals (0 when frequency is 0).
    Transactions in periods after ``as_of``'s period are ignored.

    With ``calibration_end``, the split is on the raw timestamps (as lifetimes'
    ``calibration_and_holdout_data`` does): transactions at or before ``calibration_end`` form
    the calibration summary (T counted to ``calibration_end``'s period), those in
    (``calibration_end``, ``as_of``] give ``frequency_holdout`` (distinct periods with a
    purchase), ``monetary_value_holdout`` (mean period total; lifetimes averages raw
    transactions instead) and ``duration_holdout`` (periods). Customers whose first purchase is
    after ``calibration_end`` are left out.
    The index holds the customer ids, sorted.
    """
    id_values = np.asarray(customer_ids)
    n = len(id_values)
    periods, stamps = _ordinals(timestamps, freq)
    amt = np.zeros(n) if amounts is None else np.asarray(amounts, dtype=np.float64)
    if len(periods) != n or len(amt) != n:
        raise ModelError(
            "rfm_summary: customer_ids, timestamps and amounts must have the same length "
            f"(got {n}, {len(periods)}, {len(amt)})"
        )
    if not np.all(np.isfinite(amt)):
        raise ModelError("rfm_summary: amounts contain NaN or infinite values")
    end = _as_of_ordinal(as_of, freq)
    if calibration_end is None:
        cut = end
        keep = periods <= end
    else:
        cut = _as_of_ordinal(calibration_end, freq)
        cal_stamp, end_stamp = pd.Timestamp(calibration_end), pd.Timestamp(as_of)
        if cal_stamp > end_stamp:
            raise ModelError("rfm_summary: calibration_end is after as_of")
        keep = np.asarray(stamps <= cal_stamp)
        hold = ~keep & np.asarray(stamps <= end_stamp)
    codes_all, uniques = _customer_codes(id_values)
    k = len(uniques)
    first, last, count, total, head = _window(codes_all[keep], periods[keep], amt[keep], k)
    seen = count > 0
    freq_ = (count - 1).clip(min=0).astype(np.float64)
    repeat = np.where(count > 1, (total - head) / np.maximum(count - 1, 1), 0.0)
    out = pd.DataFrame(
        {
            "frequency": freq_,
            "recency": (last - first).astype(np.float64),
            "T": (cut - first).astype(np.float64),
            "monetary_value": repeat,
        },
        index=pd.Index(uniques, name="customer_id"),
    )
    if calibration_end is not None:
        _, _, hc, ht, _ = _window(codes_all[hold], periods[hold], amt[hold], k)
        out["frequency_holdout"] = hc.astype(np.float64)
        out["monetary_value_holdout"] = np.where(hc > 0, ht / np.maximum(hc, 1), 0.0)
        out["duration_holdout"] = float(end - cut)
    return out[seen]


def _integer_groups(cols: list[Floats]) -> Ints | None:
    """Group ids when every column holds small non-negative whole numbers (daily or weekly
    summaries): the packed value itself is the key, so one hash pass suffices."""
    key = np.zeros(len(cols[0]), dtype=np.int64)
    for c in cols:
        top = float(c.max()) if len(c) else 0.0
        if top >= 2**20 or float(c.min(initial=0.0)) < 0 or not np.array_equal(c, np.floor(c)):
            return None
        key = key * (int(top) + 1) + c.astype(np.int64)
    if len(cols) * 20 > 62:
        return None
    return np.asarray(pd.factorize(key)[0], dtype=np.int64)


def compress(
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    T: npt.ArrayLike,
    monetary: npt.ArrayLike | None = None,
    weights: npt.ArrayLike | None = None,
) -> tuple[Floats, Floats]:
    """Unique (frequency, recency, T[, monetary]) rows and how much weight each carries.

    The models' likelihoods depend on a customer only through these values, so fitting on the
    unique rows with weights gives the same answer as fitting on every customer.
    """
    cols = [np.asarray(c, dtype=np.float64).ravel() for c in (frequency, recency, T)]
    if monetary is not None:
        cols.append(np.asarray(monetary, dtype=np.float64).ravel())
    n = len(cols[0])
    if any(len(c) != n for c in cols):
        raise ModelError("compress: all columns must have the same length")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if len(w) != n:
        raise ModelError("compress: weights must have one value per customer")
    group = _integer_groups(cols)
    if group is None:
        # Hash each column, then pack the codes into one int64 key: far faster than
        # np.unique(axis=0) on floats.
        codes, levels = zip(*(pd.factorize(c) for c in cols), strict=True)
        sizes = [max(len(lv), 1) for lv in levels]
        if float(np.prod(np.asarray(sizes, dtype=np.float64))) < 2.0**62:
            key = np.zeros(n, dtype=np.int64)
            for code, size in zip(codes, sizes, strict=True):
                key = key * size + code
            group = np.asarray(pd.factorize(key)[0], dtype=np.int64)
        else:  # too many distinct values to pack: let pandas hash the rows
            frame = pd.DataFrame(dict(enumerate(cols)))
            ngroup = frame.groupby(list(range(len(cols))), sort=False).ngroup()
            group = np.asarray(ngroup.to_numpy(), dtype=np.int64)
    m = int(group.max()) + 1 if n else 0
    rep = np.zeros(m, dtype=np.int64)
    rep[group] = np.arange(n)  # rows in a group are identical: any one represents it
    rows = np.column_stack([c[rep] for c in cols]) if n else np.zeros((0, len(cols)))
    return rows, np.asarray(np.bincount(group, weights=w, minlength=m), dtype=np.float64)
