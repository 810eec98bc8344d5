"""Propensity to buy (overall and per category) and the next best action.

One calibrated logistic regression per target: ``any`` (an order of any category) and each
configured category (an order in it), within ``horizon`` days after the features' instant.
Everyone who exists at that instant is a row, buyers or not: engagement features (email opens,
tickets) exist for people who never ordered, and "will they buy?" is asked of them too.

Point in time, with a time-based holdout. With T the fit's instant and h the horizon:

- the *holdout model* is trained on features at T - 2h with labels from (T - 2h, T - h] and
  evaluated on features at T - h with labels from (T - h, T]: the AUC and the expected
  calibration error it reports are those of a model applied one horizon after it was fitted,
  which is how the final model is used;
- the *final model* is trained on features at T - h with labels from (T - h, T] and scores the
  features of each run's instant.

Features: the churn model's (those the data offers) plus, for a category's model, that
category's ``orders_count_in``, ``days_since_last_order_in`` and ``category_share``. Counts,
amounts and day counts are log1p-transformed; missing values are filled as "none" (counts,
amounts, shares: 0), "longer ago than anyone" (days since an order: the training maximum) or
"typical" (averages and rates: the training median), then standardised.

Probabilities are calibrated with a sigmoid (Platt) map fitted in 3 cross-validation folds
(scikit-learn's ``CalibratedClassifierCV``); the score is the folds' mean, as for churn. The
next best action is the category with the highest expected value, propensity x expected
spend, where expected spend is the customer's own average order amount in the category when
they have ordered in it, else the category's average order amount at fit time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crmseg.errors import ModelError
from crmseg.models.churn import LOG_FEATURES, folds, sklearn
from crmseg.models.record import ModelRecord

if TYPE_CHECKING:
    import pyarrow as pa

MIN_POSITIVES = 20  # per target, in each training set
ECE_BINS = 10  # equal-frequency bins of the predicted probability
TOP = 3  # drivers shown by propensity.top_features

# Common features filled with 0 when missing (a non-buyer has no orders, no value, no tenure)
# or with the training maximum (never ordered: longer ago than anyone); the rest: the median.
ZERO_FILL = frozenset(
    {
        "orders_count",
        "orders_90d",
        "orders_365d",
        "ltv",
        "tenure_days",
        "email_opens_90d",
        "email_clicks_90d",
        "tickets_90d",
        "categories_count",
    }
)
MAX_FILL = frozenset({"days_since_last_order"})

# Per-category features: (built-in function, log1p?, fill).
CATEGORY_FEATURES: tuple[tuple[str, bool, str], ...] = (
    ("orders_count_in", True, "zero"),
    ("days_since_last_order_in", True, "max"),
    ("category_share", False, "zero"),
)


@dataclass(frozen=True)
class Feature:
    """One model input: its column in the feature frame, the name drivers show, and its
    preparation."""

    column: str
    name: str
    log: bool
    fill: str  # "zero", "max" or "median"


def common_features(names: Sequence[str]) -> list[Feature]:
    """The churn features the data offers, prepared for everyone (buyers or not)."""
    out = []
    for n in names:
        fill = "zero" if n in ZERO_FILL else "max" if n in MAX_FILL else "median"
        out.append(Feature(n, n, n in LOG_FEATURES, fill))
    return out


def category_features(category: str) -> list[Feature]:
    """A category's own features; the column is the extra trait computing it."""
    return [
        Feature(category_column(i, category), f"{fn}('{category}')", log, fill)
        for i, (fn, log, fill) in enumerate(CATEGORY_FEATURES)
    ]


def category_column(index: int, category: str) -> str:
    return f"__p{index}_{category}"


def category_definitions(category: str) -> list[tuple[str, str]]:
    """(trait name, rule-language expression) of a category's features and own spend."""
    out = [
        (category_column(i, category), f"{fn}('{category}')")
        for i, (fn, _, _) in enumerate(CATEGORY_FEATURES)
    ]
    quoted = "'" + category.replace("'", "''") + "'"
    out.append(
        (spend_column(category), f"avg(orders.amount where category = {quoted} and amount > 0)")
    )
    return out


def spend_column(category: str) -> str:
    return f"__ps_{category}"


def label_column(target: str) -> str:
    return f"__y_{target}"


def features_for(target: str, common: Sequence[str]) -> list[Feature]:
    """The inputs of one target's model: the common ones, plus a category's own."""
    out = common_features(common)
    return out if target == "any" else [*out, *category_features(target)]


class Design:
    """Preparation fitted on training rows: log1p, fill, z-scores (the state shape of
    :func:`crmseg.models.churn.standardised`)."""

    def __init__(self, frame: pd.DataFrame, features: Sequence[Feature]) -> None:
        self.features = list(features)
        raw = self.raw(frame)
        fill = []
        for j, f in enumerate(self.features):
            col = raw[:, j]
            seen = col[~np.isnan(col)]
            if f.fill == "zero" or len(seen) == 0:
                fill.append(0.0)
            elif f.fill == "max":
                fill.append(float(seen.max()))
            else:
                fill.append(float(np.median(seen)))
        self.fill = np.asarray(fill, dtype=np.float64)
        filled = np.where(np.isnan(raw), self.fill, raw)
        self.mean = filled.mean(axis=0) if len(filled) else np.zeros(len(fill))
        sd = filled.std(axis=0) if len(filled) else np.ones(len(fill))
        self.sd = np.where(sd > 0, sd, 1.0)

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        cols = []
        for f in self.features:
            v = pd.to_numeric(frame[f.column], errors="coerce").to_numpy(dtype=np.float64)
            cols.append(np.log1p(np.clip(v, 0, None)) if f.log else v)
        return np.column_stack(cols) if cols else np.zeros((len(frame), 0))

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        raw = self.raw(frame)
        out: np.ndarray = (np.where(np.isnan(raw), self.fill, raw) - self.mean) / self.sd
        return out

    def state(self) -> dict[str, Any]:
        return {
            "columns": [f.column for f in self.features],
            "names": [f.name for f in self.features],
            "log": [f.log for f in self.features],
            "fill": [float(v) for v in self.fill],
            "mean": [float(v) for v in self.mean],
            "sd": [float(v) for v in self.sd],
        }


@dataclass
class PropensityFit:
    """The fitted models (everything scoring needs, as plain numbers) and their records."""

    state: dict[str, Any]
    records: list[ModelRecord]


def _logistic() -> Any:
    """The L2 logistic regression churn fits (C = 1), by Newton steps on the Cholesky
    factor: the same optimum as churn's lbfgs in a handful of iterations."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, solver="newton-cholesky")


def _calibrated(x: np.ndarray, y: np.ndarray) -> Any:
    """Logistic regression with sigmoid (Platt) calibration in 3 folds, as churn's."""
    from sklearn.calibration import CalibratedClassifierCV

    return CalibratedClassifierCV(_logistic(), method="sigmoid", cv=3).fit(x, y)


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over ``bins`` equal-frequency bins of the predicted probability of the bin's
    share of rows x |mean prediction - observed rate|."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(p) == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    total = 0.0
    for part in np.array_split(order, min(bins, len(p))):
        total += len(part) * abs(float(p[part].mean()) - float(y[part].mean()))
    return total / len(p)


def _few(target: str, what: str, count: int, horizon_days: int) -> ModelError:
    subject = "an order" if target == "any" else f"an order in {target}"
    fix = (
        "a later --as-of (more history) or a longer models.propensity_horizon_days"
        if target == "any"
        else "remove it from models.propensity_categories or raise models.propensity_horizon_days"
    )
    return ModelError(
        f"propensity.{target}: only {count} customers {what} {subject} within "
        f"{horizon_days} days of the training instant (needs at least {MIN_POSITIVES}); {fix}"
    )


def _check(target: str, y: np.ndarray, horizon_days: int) -> None:
    positives = int(y.sum())
    if positives < MIN_POSITIVES:
        raise _few(target, "placed", positives, horizon_days)
    if len(y) - positives < MIN_POSITIVES:
        raise _few(target, "did not place", len(y) - positives, horizon_days)


def fit_propensity(
    earlier: pd.DataFrame,
    later: pd.DataFrame,
    as_of: datetime,
    horizon_days: int,
    categories: Sequence[str],
    common: Sequence[str],
    spend: Mapping[str, float],
) -> PropensityFit:
    """Fit the overall and per-category models.

    ``earlier``: features at T - 2h with labels from (T - 2h, T - h] (the holdout model's
    training rows); ``later``: features at T - h with labels from (T - h, T] (the holdout
    model's evaluation rows and the final model's training rows). Labels are the 0/1 columns
    :func:`label_column` of ``any`` and of each category; ``spend`` is each category's
    average order amount at T."""
    sklearn()
    from sklearn.calibration import CalibratedClassifierCV  # noqa: F401 (before the clocks)
    from sklearn.metrics import roc_auc_score  # noqa: F401
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    targets = ("any", *categories)
    for target in targets:  # every target can be fitted, before any is
        for frame in (earlier, later):
            _check(target, frame[label_column(target)].to_numpy(dtype=np.int64), horizon_days)
    models: dict[str, Any] = {}
    records = []
    # One BLAS thread: the matrices are small, and threads fighting over two busy cores made
    # these fits 5x slower.
    with threadpool_limits(1):
        for target in targets:
            models[target], record = _fit_target(target, earlier, later, as_of, horizon_days,
                                                 common)  # fmt: skip
            records.append(record)
    state = {
        "horizon_days": horizon_days,
        "categories": list(categories),
        "models": models,
        "spend": {c: float(spend[c]) for c in categories},
    }
    return PropensityFit(state, records)


def _fit_target(
    target: str,
    earlier: pd.DataFrame,
    later: pd.DataFrame,
    as_of: datetime,
    horizon_days: int,
    common: Sequence[str],
) -> tuple[dict[str, Any], ModelRecord]:
    from sklearn.metrics import roc_auc_score

    clock = time.perf_counter()
    features = features_for(target, common)
    y_early = earlier[label_column(target)].to_numpy(dtype=np.int64)
    y_late = later[label_column(target)].to_numpy(dtype=np.int64)
    # the holdout: fitted one horizon earlier, judged on the next horizon
    design = Design(earlier, features)
    held = _calibrated(design(earlier), y_early)
    p = held.predict_proba(design(later))[:, 1]
    auc = float(roc_auc_score(y_late, p))
    ece = expected_calibration_error(p, y_late)
    # the final model
    design = Design(later, features)
    x = design(later)
    final = _calibrated(x, y_late)
    base = _logistic().fit(x, y_late)
    seconds = time.perf_counter() - clock
    state = {
        **design.state(),
        "folds": folds(final),
        "coef": [float(v) for v in base.coef_[0]],
    }
    record = ModelRecord(
        f"propensity.{target} (calibrated logistic regression)",
        as_of,
        {f"coef.{f.name}": float(c) for f, c in zip(features, base.coef_[0], strict=True)},
        seconds,
        len(later),
        as_of - timedelta(days=horizon_days),
        as_of,
        {
            "horizon_days": horizon_days,
            "positives": int(y_late.sum()),
            "base_rate": float(y_late.mean()),
            "holdout_auc": auc,
            "holdout_ece": ece,
            "holdout_ece_bins": f"{ECE_BINS} equal-frequency",
            "holdout_mean_predicted": float(p.mean()),
            "holdout_observed_rate": float(y_late.mean()),
            "holdout_customers": len(later),
            "holdout_positives": int(y_late.sum()),
            "holdout_train_positives": int(y_early.sum()),
            "holdout_train_base_rate": float(y_early.mean()),
        },
    )
    return state, record


def needed_columns(state: Mapping[str, Any]) -> list[str]:
    """The feature frame columns scoring reads (features and each category's own spend)."""
    cols: list[str] = []
    for m in state["models"].values():
        cols += [c for c in m["columns"] if c not in cols]
    return cols + [spend_column(c) for c in state["categories"]]


def _values(data: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = data.column(name)
    if not pa.types.is_float64(col.type):
        col = pc.cast(col, pa.float64())
    return np.asarray(col.to_numpy(), dtype=np.float64)


class _Prepared:
    """Fitted preparations applied to a table, one feature at a time (rows: features,
    columns: customers); a feature prepared alike by several models is computed once."""

    def __init__(self, data: pa.Table) -> None:
        self.data = data
        self._done: dict[tuple[Any, ...], np.ndarray] = {}

    def __call__(self, model: Mapping[str, Any], rows: np.ndarray | None = None) -> np.ndarray:
        """The model's standardised features (of ``rows`` only, when given)."""
        cols = zip(
            model["columns"], model["log"], model["fill"], model["mean"], model["sd"], strict=True
        )
        size = self.data.num_rows if rows is None else len(rows)
        out = np.empty((len(model["columns"]), size), dtype=np.float64)
        for j, spec in enumerate(cols):
            if spec not in self._done:
                name, log, fill, mean, sd = spec
                v = _values(self.data, name)
                if log:
                    v = np.log1p(np.clip(v, 0, None))
                self._done[spec] = (np.where(np.isnan(v), fill, v) - mean) / sd
            out[j] = self._done[spec] if rows is None else self._done[spec][rows]
        return out


def _probability(model: Mapping[str, Any], z: np.ndarray) -> np.ndarray:
    """The calibrated folds' mean probability; ``z``: features x customers."""
    from scipy.special import expit

    total = np.zeros(z.shape[1])
    for f in model["folds"]:
        total += expit(-(f["a"] * (np.asarray(f["coef"]) @ z + f["intercept"]) + f["b"]))
    out: np.ndarray = total / len(model["folds"])
    return out


def score_propensity(state: Mapping[str, Any], data: pa.Table) -> pa.Table:
    """``propensity.*`` and ``nba.*`` of ``data``'s customers (customer_id and the
    :func:`needed_columns`) with a fitted state; ``propensity.top_features`` are the drivers
    of the ``nba.category`` model (of ``propensity.any`` without categories)."""
    import pyarrow as pa
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    categories = list(state["categories"])
    models = state["models"]
    out: dict[str, Any] = {"customer_id": data.column("customer_id").cast(pa.string())}
    prepared = _Prepared(data)
    probs: dict[str, np.ndarray] = {}
    with threadpool_limits(1):
        for target in ("any", *categories):
            probs[target] = _probability(models[target], prepared(models[target]))
            out[f"propensity.{target}"] = pa.array(probs[target], pa.float64())
    n = data.num_rows
    # the drivers' model per customer: the next best action's category, else "any"
    drivers = np.zeros(n, dtype=np.int64)
    if categories:
        values = np.vstack(
            [probs[c] * _spend(data, c, float(state["spend"][c])) for c in categories]
        )
        best = np.argmax(values, axis=0)  # ties: the first category listed
        out["nba.category"] = pa.array(np.asarray(categories, dtype=object)[best], pa.string())
        out["nba.expected_value"] = pa.array(values[best, np.arange(n)], pa.float64())
        drivers = best + 1
    else:
        out["nba.category"] = pa.nulls(n, pa.string())
        out["nba.expected_value"] = pa.nulls(n, pa.float64())
    names: list[str] = []  # every model's feature names, once
    top = min(TOP, min(len(models[t]["columns"]) for t in ("any", *categories)))
    which = np.zeros((top, n), dtype=np.int64)
    size = np.zeros((top, n), dtype=np.float64)
    for k, target in enumerate(("any", *categories)):
        rows = np.flatnonzero(drivers == k)
        if not len(rows):
            continue
        m = models[target]
        local = [_index(names, x) for x in m.get("names", m["columns"])]
        terms = prepared(m, rows) * np.asarray(m["coef"])[:, None]
        order = np.argsort(-np.abs(terms), axis=0, kind="stable")[:top]
        which[:, rows] = np.asarray(local)[order]
        size[:, rows] = np.take_along_axis(terms, order, axis=0)
    out["propensity.top_features"] = driver_text(names, which, size)
    return pa.table(out)


def _index(names: list[str], name: str) -> int:
    if name not in names:
        names.append(name)
    return names.index(name)


def _spend(data: pa.Table, category: str, average: float) -> np.ndarray:
    """The customer's own average order amount in ``category``, else the category's."""
    own = _values(data, spend_column(category))
    out: np.ndarray = np.where(np.isnan(own) | (own <= 0), average, own)
    return out


def top_drivers(terms: np.ndarray, names: Sequence[str], top: int = TOP) -> list[str]:
    """Per row of ``terms`` (customers x features), the ``top`` largest terms by size as
    ``name +1.23, ...`` (ties: the earlier feature first)."""
    order = np.argsort(-np.abs(terms), axis=1, kind="stable")[:, :top].T
    size = np.take_along_axis(terms, order.T, axis=1).T
    text: list[str] = driver_text(list(names), order, size).to_pylist()
    return text


def driver_text(names: Sequence[str], which: np.ndarray, size: np.ndarray) -> pa.Array:
    """``name +1.23, name -0.40, ...`` per column of ``which`` (indexes into ``names``) and
    ``size`` (the terms), in row order: signs and two decimals rounded half away from zero,
    as churn's drivers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    labels = pa.array([f"{n} " for n in names], pa.string())
    pieces = []
    for k in range(which.shape[0]):
        v = size[k]
        cents = np.floor(np.abs(v) * 100 + 0.5).astype(np.int64)
        sign = pc.if_else(pa.array(v < 0), "-", "+")
        whole = pc.cast(pa.array(cents // 100), pa.string())
        frac = pc.utf8_lpad(pc.cast(pa.array(cents % 100), pa.string()), 2, "0")
        label = pc.take(labels, pa.array(which[k]))
        pieces.append(pc.binary_join_element_wise(label, sign, whole, ".", frac, ""))
    if not pieces:
        return pa.nulls(which.shape[1], pa.string())
    joined: pa.Array = (
        pc.binary_join_element_wise(*pieces, ", ") if len(pieces) > 1 else (pieces[0])
    )
    return joined
