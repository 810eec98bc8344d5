"""Churn risk: a calibrated logistic regression trained point in time.

Features are built-in traits computed as of ``T - horizon``; the label is "no order in
(T - horizon, T]". A deterministic share of customers is held out to report the AUC; the
model is then refitted on everyone and scores the features as of T. Each customer's top
drivers are the largest terms of the logistic model on standardised features (log-odds
relative to an average customer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from crmseg.errors import MissingDependencyError, ModelError
from crmseg.models.record import ModelRecord

# Skewed counts and amounts are log-transformed before standardising.
LOG_FEATURES = (
    "orders_count",
    "orders_90d",
    "orders_365d",
    "ltv",
    "aov",
    "days_since_last_order",
    "tenure_days",
    "median_order_gap_days",
    "email_opens_90d",
    "email_clicks_90d",
    "tickets_90d",
    "categories_count",
)
SHARE_FEATURES = ("discount_share", "return_rate")
FEATURES = (*LOG_FEATURES, *SHARE_FEATURES)


def sklearn() -> Any:
    """scikit-learn, imported on first use (the ``models`` extra)."""
    try:
        import sklearn as sk
    except ImportError:
        raise MissingDependencyError("scikit-learn", "models") from None
    return sk


class Design:
    """Feature matrix preparation fitted on training data: log1p, median fill, z-scores."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.columns = [c for c in FEATURES if c in frame.columns]
        raw = self._raw(frame)
        self.fill = np.nanmedian(np.where(np.isnan(raw), np.nan, raw), axis=0)
        self.fill = np.where(np.isnan(self.fill), 0.0, self.fill)
        filled = np.where(np.isnan(raw), self.fill, raw)
        self.mean = filled.mean(axis=0)
        sd = filled.std(axis=0)
        self.sd = np.where(sd > 0, sd, 1.0)

    def _raw(self, frame: pd.DataFrame) -> np.ndarray:
        cols = []
        for c in self.columns:
            v = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64)
            cols.append(np.log1p(np.clip(v, 0, None)) if c in LOG_FEATURES else v)
        return np.column_stack(cols) if cols else np.zeros((len(frame), 0))

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        raw = self._raw(frame)
        out: np.ndarray = (np.where(np.isnan(raw), self.fill, raw) - self.mean) / self.sd
        return out


@dataclass
class ChurnFit:
    """A fitted churn model: everything scoring needs, as plain numbers (``state``)."""

    state: dict[str, Any]
    auc: float
    record: ModelRecord


def holdout_mask(ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A deterministic random share of customers (by sorted id and seed)."""
    order = np.argsort(ids, kind="stable")
    rng = np.random.default_rng(seed)
    pick = rng.random(len(ids)) < share
    out = np.zeros(len(ids), dtype=bool)
    out[order] = pick
    return out


def fit_churn(
    train: pd.DataFrame,
    label: np.ndarray,
    as_of: datetime,
    horizon_days: int,
    holdout: float = 0.25,
    seed: int = 42,
    sample_size: int = 20_000,
) -> ChurnFit:
    """``train``: feature frame indexed by customer id; ``label``: 1 = churned.

    The state holds the feature preparation (log, fill, standardisation), the three
    calibrated folds (logistic coefficients and sigmoid calibration) and the plain logistic
    model whose terms explain a score, so a later run scores without refitting."""
    sklearn()
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    y = np.asarray(label, dtype=np.int64)
    if len(train) < 20 or len(np.unique(y)) < 2:
        raise ModelError(
            "churn: too little history to train on (needs buyers before as_of - horizon "
            "who both did and did not buy again)"
        )
    rng = np.random.default_rng(seed)
    if len(train) > sample_size:  # the fit does not need every customer
        keep = np.sort(rng.choice(len(train), sample_size, replace=False))
        train, y = train.iloc[keep], y[keep]
    ids = train.index.to_numpy().astype(str)
    held = holdout_mask(ids, holdout, seed)
    if len(np.unique(y[~held])) < 2 or len(np.unique(y[held])) < 2:
        raise ModelError("churn: the holdout or training split has only one class")
    clock = time.perf_counter()
    design = Design(train.iloc[~held])
    model = CalibratedClassifierCV(LogisticRegression(max_iter=1000), method="sigmoid", cv=3)
    model.fit(design(train.iloc[~held]), y[~held])
    auc = float(roc_auc_score(y[held], model.predict_proba(design(train.iloc[held]))[:, 1]))
    # refit on everyone for scoring
    design = Design(train)
    x = design(train)
    model = CalibratedClassifierCV(LogisticRegression(max_iter=1000), method="sigmoid", cv=3)
    model.fit(x, y)
    base = LogisticRegression(max_iter=1000).fit(x, y)
    seconds = time.perf_counter() - clock
    state = {
        "columns": design.columns,
        "log": [c in LOG_FEATURES for c in design.columns],
        "fill": [float(v) for v in design.fill],
        "mean": [float(v) for v in design.mean],
        "sd": [float(v) for v in design.sd],
        "folds": folds(model),
        "coef": [float(v) for v in base.coef_[0]],
    }
    record = ModelRecord(
        "churn (calibrated logistic regression)",
        as_of,
        {f"coef.{n}": float(c) for n, c in zip(design.columns, base.coef_[0], strict=True)},
        seconds,
        len(train),
        as_of - timedelta(days=horizon_days),
        as_of,
        {
            "holdout_auc": auc,
            "horizon_days": horizon_days,
            "churn_rate": float(y.mean()),
            "holdout_customers": int(held.sum()),
        },
    )
    return ChurnFit(state, auc, record)


def folds(model: Any) -> list[dict[str, float | list[float]]]:
    """A fitted ``CalibratedClassifierCV`` (sigmoid) as plain numbers: each fold's logistic
    coefficients and intercept and its calibration's ``a`` and ``b``, as scoring reads them."""
    return [
        {
            "coef": [float(v) for v in c.estimator.coef_[0]],
            "intercept": float(c.estimator.intercept_[0]),
            "a": float(c.calibrators[0].a_),
            "b": float(c.calibrators[0].b_),
        }
        for c in model.calibrated_classifiers_
    ]


def standardised(state: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """The fitted preparation applied to ``frame``'s features (one row per customer)."""
    cols = []
    for name, log, fill, mean, sd in zip(
        state["columns"], state["log"], state["fill"], state["mean"], state["sd"], strict=True
    ):
        v = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        v = np.log1p(np.clip(v, 0, None)) if log else v
        cols.append((np.where(np.isnan(v), fill, v) - mean) / sd)
    return np.column_stack(cols) if cols else np.zeros((len(frame), 0))


def score_churn(state: dict[str, Any], frame: pd.DataFrame, top: int = 3) -> pd.DataFrame:
    """``churn.risk`` and ``churn.top_features`` of ``frame``'s customers with a fitted state
    (the same numbers the SQL scoring of a run gives)."""
    from scipy.special import expit

    z = standardised(state, frame)
    risk = np.mean(
        [
            expit(-(f["a"] * (z @ np.asarray(f["coef"]) + f["intercept"]) + f["b"]))
            for f in state["folds"]
        ],
        axis=0,
    )
    terms = z * np.asarray(state["coef"])
    names = np.array(state["columns"])
    order = np.argsort(-np.abs(terms), axis=1, kind="stable")[:, :top]
    drivers = [
        ", ".join(f"{names[i]} {_signed(row[i])}" for i in idx)
        for row, idx in zip(terms, order, strict=True)
    ]
    return pd.DataFrame(
        {"churn.risk": risk, "churn.top_features": drivers}, index=frame.index.astype(str)
    )


def _signed(value: float) -> str:
    """A term as the drivers show it: sign and two decimals, rounded half away from zero
    (what SQL's round does, so both spellings agree)."""
    cents = int(np.floor(abs(value) * 100 + 0.5))
    return f"{'-' if value < 0 else '+'}{cents // 100}.{cents % 100:02d}"
