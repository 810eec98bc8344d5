"""What identity resolution did: merge statistics, the records behind a person, and
precision/recall against a known truth (the demo shop's planted duplicates)."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from crmseg.backends.base import CANONICAL_SCHEMA

if TYPE_CHECKING:
    from crmseg.backends.base import Backend


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def identity_stats(backend: Backend, examples: int = 5) -> dict[str, Any]:
    """Records, people, merged clusters by size, links per kind and what was not merged."""
    import ibis

    names = backend.canonical_tables()
    if "identity_map" not in names:
        return {"enabled": False}
    m = backend.canonical("identity_map")
    totals = backend.execute(
        m.aggregate(
            records=m.count(),
            people=m.customer_key.nunique(),
            merged_records=(m.status == "merged").sum(),
            blocked_records=(m.status == "blocked").sum(),
        )
    ).to_pylist()[0]
    merged = m.filter(m.status == "merged")
    clusters = merged.group_by("customer_key").aggregate(size=merged.count())
    by_size = backend.execute(
        clusters.group_by("size").aggregate(clusters=clusters.count()).order_by("size")
    ).to_pylist()
    largest = backend.execute(
        clusters.order_by([ibis.desc("size"), "customer_key"]).limit(examples)
    ).to_pylist()
    blocked = m.filter(m.status == "blocked")
    out: dict[str, Any] = {
        "enabled": True,
        "records": int(totals["records"] or 0),
        "people": int(totals["people"] or 0),
        "merged_records": int(totals["merged_records"] or 0),
        "merged_people": sum(int(r["clusters"]) for r in by_size),
        "clusters_by_size": {int(r["size"]): int(r["clusters"]) for r in by_size},
        "largest_clusters": [
            {"customer_key": r["customer_key"], "records": int(r["size"])} for r in largest
        ],
        "blocked_records": int(totals["blocked_records"] or 0),
        "blocked_components": backend.execute(
            blocked.group_by("component_size").aggregate(records=blocked.count())
        ).to_pylist(),
        "links": [],
        "blocked_values": [],
        "splink_matches": [],
    }
    if "identity_links" in names:
        links = backend.canonical("identity_links")
        out["links"] = backend.execute(
            links.group_by("kind")
            .aggregate(values=links.value.nunique(), records=links.customer_id.nunique())
            .order_by("kind")
        ).to_pylist()
    if "identity_blocked" in names:
        hubs = backend.canonical("identity_blocked")
        out["blocked_values"] = backend.execute(
            hubs.order_by([ibis.desc("records"), "kind", "value"]).limit(examples * 2)
        ).to_pylist()
    if "identity_matches" in names:
        matches = backend.canonical("identity_matches")
        out["splink_matches"] = backend.execute(
            matches.order_by([ibis.desc("match_weight")]).limit(examples * 2)
        ).to_pylist()
        out["splink_pairs"] = int(backend.scalar(matches.count()) or 0)
    return out


def source_records(backend: Backend, customer_id: str) -> dict[str, Any]:
    """The customer_key of ``customer_id`` and every customers row (with row counts per table)
    behind it. Without loaded data the id is returned as its own key with no records."""
    names = backend.canonical_tables()
    if "customers" not in names:
        return {"customer_key": customer_id, "records": [], "links": []}
    ids = [customer_id]
    key = customer_id
    if "identity_map" in names:
        m = backend.canonical("identity_map")
        found = backend.execute(m.filter(m.customer_id == customer_id).select("customer_key"))
        if found.num_rows:
            key = str(found.column(0)[0].as_py())
        members = backend.execute(
            m.filter(m.customer_key == key).select("customer_id").order_by("customer_id")
        )
        ids = [str(v) for v in members.column(0).to_pylist()] or [key]
    customers = backend.canonical("customers")
    rows = backend.execute(customers.filter(customers.customer_id.isin(ids))).to_pylist()
    counts: dict[str, dict[str, int]] = {i: {} for i in ids}
    for name in names:
        if name in ("customers",) or name.startswith(("identity_", "golden_", "_tmp")):
            continue
        table = backend.canonical(name)
        if "customer_id" not in table.columns:
            continue
        mine = table.filter(table.customer_id.isin(ids))
        got = backend.execute(mine.group_by("customer_id").aggregate(n=mine.count())).to_pylist()
        for r in got:
            counts[str(r["customer_id"])][name] = int(r["n"])
    records = [
        {**{k: _plain(v) for k, v in row.items()}, "rows": counts.get(str(row["customer_id"]), {})}
        for row in rows
    ]
    links: list[dict[str, Any]] = []
    if "identity_links" in names:
        lk = backend.canonical("identity_links")
        links = backend.execute(
            lk.filter(lk.customer_id.isin(ids)).order_by(["kind", "value", "customer_id"])
        ).to_pylist()
    return {"customer_key": key, "records": records, "links": links}


def _pairs(counts: pa.Array) -> int:
    n = counts.to_numpy(zero_copy_only=False).astype("int64")
    return int((n * (n - 1) // 2).sum())


def pairwise_scores(predicted: pa.Table, truth: pa.Table) -> dict[str, float]:
    """Precision and recall of predicted same-person pairs.

    ``predicted``: customer_id, customer_key; ``truth``: customer_id, person_id. Pairs are
    counted per cluster (sum of n choose 2), never enumerated.
    """
    joined = predicted.select(["customer_id", "customer_key"]).join(
        truth.select(["customer_id", "person_id"]), "customer_id", join_type="inner"
    )
    pred = _pairs(
        joined.group_by("customer_key")
        .aggregate([("customer_id", "count")])
        .column("customer_id_count")
    )
    true = _pairs(
        joined.group_by("person_id")
        .aggregate([("customer_id", "count")])
        .column("customer_id_count")
    )
    both = _pairs(
        joined.group_by(["customer_key", "person_id"])
        .aggregate([("customer_id", "count")])
        .column("customer_id_count")
    )
    return {
        "predicted_pairs": pred,
        "true_pairs": true,
        "true_positive_pairs": both,
        "precision": both / pred if pred else 1.0,
        "recall": both / true if true else 1.0,
    }


def load_map(backend: Backend) -> pa.Table:
    """The loaded identity map as Arrow (customer_id, customer_key)."""
    m = backend.table("identity_map", database=CANONICAL_SCHEMA)
    return backend.execute(m.select("customer_id", "customer_key"))


__all__ = ["identity_stats", "load_map", "pairwise_scores", "source_records"]
