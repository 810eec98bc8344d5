"""Behavioural clusters: k-means on standardised features, k chosen by silhouette, each
cluster described in words from its centroid ("frequent, low basket, discount-driven")."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from crmseg.errors import ModelError
from crmseg.models.churn import LOG_FEATURES, sklearn
from crmseg.models.record import ModelRecord

# feature -> (word when the centroid is high, word when low)
WORDS: dict[str, tuple[str, str]] = {
    "orders_count": ("frequent", "one-off"),
    "aov": ("big basket", "low basket"),
    "discount_share": ("discount-driven", "full-price"),
    "days_since_last_order": ("lapsed", "recent"),
    "return_rate": ("returns a lot", "rarely returns"),
    "email_opens_90d": ("engaged", "unengaged"),
}
FEATURES = tuple(WORDS)


@dataclass
class Clusters:
    labels: pd.DataFrame  # index customer_id; cluster.id, cluster.label
    descriptions: dict[int, str]
    record: ModelRecord
    state: dict[str, Any]  # what assigning a later customer needs, as plain numbers


def describe(z: np.ndarray, columns: list[str], threshold: float = 0.4, most: int = 3) -> str:
    """Words for a centroid in standard units: the strongest deviations first."""
    order = np.argsort(-np.abs(z), kind="stable")
    words = [WORDS[columns[i]][0 if z[i] > 0 else 1] for i in order if abs(z[i]) >= threshold]
    return ", ".join(words[:most]) or "average"


def fit_clusters(
    frame: pd.DataFrame,
    as_of: datetime,
    k_range: tuple[int, int] = (2, 8),
    seed: int = 42,
    sample_size: int = 20_000,
) -> Clusters:
    sklearn()
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    columns = [c for c in FEATURES if c in frame.columns]
    if not columns or len(frame) < 10:
        raise ModelError("clusters: need at least 10 buyers and some behavioural features")
    raw = []
    for c in columns:
        v = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64)
        raw.append(np.log1p(np.clip(v, 0, None)) if c in LOG_FEATURES else v)
    x = np.column_stack(raw)
    fill = np.nanmedian(x, axis=0)
    fill = np.where(np.isnan(fill), 0.0, fill)
    x = np.where(np.isnan(x), fill, x)
    mean, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = (x - mean) / sd
    rng = np.random.default_rng(seed)
    sample = z if len(z) <= sample_size else z[rng.choice(len(z), sample_size, replace=False)]
    clock = time.perf_counter()
    lo, hi = k_range
    scores: dict[int, float] = {}
    for k in range(max(2, lo), min(hi, len(sample) - 1) + 1):
        fitted = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(sample)
        scores[k] = float(
            silhouette_score(sample, fitted.labels_, sample_size=min(len(sample), 5000),
                             random_state=seed)
        )  # fmt: skip
    if not scores:
        raise ModelError("clusters: too few customers to try any k")
    best = max(scores, key=lambda k: (scores[k], -k))
    final = KMeans(n_clusters=best, n_init=4, random_state=seed).fit(sample)
    raw_labels = final.predict(z)
    # number clusters by size (1 = largest), ties by centroid, so ids are stable across runs
    sizes = np.bincount(raw_labels, minlength=best)
    order = sorted(range(best), key=lambda c: (-sizes[c], tuple(final.cluster_centers_[c])))
    renumber = np.empty(best, dtype=np.int64)
    for new, old in enumerate(order):
        renumber[old] = new + 1
    ids = renumber[raw_labels]
    descriptions = {
        int(renumber[c]): describe(final.cluster_centers_[c], columns) for c in range(best)
    }
    labels = pd.DataFrame(
        {"cluster.id": ids, "cluster.label": [descriptions[int(i)] for i in ids]},
        index=frame.index.astype(str),
    )
    record = ModelRecord(
        f"k-means (k={best})",
        as_of,
        {f"silhouette.k{k}": s for k, s in scores.items()},
        time.perf_counter() - clock,
        len(frame),
        None,
        as_of,
        {"k": best, "clusters": {str(k): v for k, v in sorted(descriptions.items())}},
    )
    state = {
        "columns": columns,
        "log": [c in LOG_FEATURES for c in columns],
        "fill": [float(v) for v in fill],
        "mean": [float(v) for v in mean],
        "sd": [float(v) for v in sd],
        "centroids": [[float(v) for v in c] for c in final.cluster_centers_],
        "ids": [int(v) for v in renumber],
        "labels": {str(k): v for k, v in descriptions.items()},
    }
    return Clusters(labels, descriptions, record, state)


def assign_clusters(state: dict[str, Any], frame: pd.DataFrame) -> pd.DataFrame:
    """``cluster.id`` and ``cluster.label`` of ``frame``'s customers with a fitted state: the
    nearest centroid (ties: the first), as a run's SQL assigns them."""
    from crmseg.models.churn import standardised

    z = standardised(state, frame)
    centroids = np.asarray(state["centroids"])
    distance = ((z[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    ids = np.asarray(state["ids"])[np.argmin(distance, axis=1)]
    return pd.DataFrame(
        {"cluster.id": ids, "cluster.label": [state["labels"][str(i)] for i in ids]},
        index=frame.index.astype(str),
    )
