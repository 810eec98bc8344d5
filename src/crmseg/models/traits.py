"""Model outputs as traits: the plan's model provider.

When a rule uses ``clv.*``, ``churn.*`` or ``cluster.*``, the plan asks :class:`ModelTraits`
for those names at its as_of. It pulls per-customer features from the backend (built-in
traits computed by the same plan machinery, point in time), fits in Python and hands back an
in-memory table keyed by customer_id that the plan joins into the wide table. Fits are cached
per (group, as_of) and recorded (``model_runs`` in the state database).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import ibis
import pandas as pd

from crmseg.config import ModelsConfig
from crmseg.models.clv import ModelRecord, fit_clv
from crmseg.rules import Definition, Library, Schema, build_plan
from crmseg.traits import library

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa

GROUPS = ("clv", "churn", "cluster")
_LABEL = "__churn_label_orders"


class ModelTraits:
    """Fits model traits on demand; ``execute`` runs an Ibis expression on the backend."""

    def __init__(
        self,
        execute: Callable[[ir.Expr], pa.Table],
        config: ModelsConfig | None = None,
        builtins: Library | None = None,
        record: Callable[[list[ModelRecord]], None] | None = None,
    ) -> None:
        self.execute = execute
        self.config = config or ModelsConfig()
        self.builtins = library() if builtins is None else builtins
        self.record = record
        self.records: list[ModelRecord] = []
        self._cache: dict[tuple[str, datetime], pd.DataFrame] = {}
        self.auc: float | None = None

    def __call__(
        self, names: Sequence[str], tables: Mapping[str, ir.Table], as_of: datetime
    ) -> dict[str, ir.Table]:
        out: dict[str, ir.Table] = {}
        for group in sorted({n.split(".", 1)[0] for n in names}):
            frame = self.frame(group, tables, as_of)
            mt = ibis.memtable(frame.reset_index(names="customer_id"))
            for n in names:
                if n.split(".", 1)[0] == group:
                    out[n] = mt
        return out

    def frame(self, group: str, tables: Mapping[str, ir.Table], as_of: datetime) -> pd.DataFrame:
        """The per-customer outputs of one model group (index: customer_id)."""
        key = (group, as_of)
        if key not in self._cache:
            if group == "clv":
                frame, records = self._clv(tables, as_of)
            elif group == "churn":
                frame, records = self._churn(tables, as_of)
            elif group == "cluster":
                frame, records = self._clusters(tables, as_of)
            else:
                raise KeyError(f"unknown model group {group!r}")
            self._cache[key] = frame
            self.records.extend(records)
            if self.record is not None:
                self.record(records)
        return self._cache[key]

    # features ---------------------------------------------------------------------------

    def features(
        self, tables: Mapping[str, ir.Table], at: datetime, extra: Sequence[Definition] = ()
    ) -> pd.DataFrame:
        """Behavioural features of every buyer at ``at`` (index: customer_id)."""
        from crmseg.models.churn import FEATURES
        from crmseg.sources.loader import schema_from

        defs = [Definition("tenure_days", "trait", text="days_since(first_order_at)"), *extra]
        plan = build_plan(defs, Schema(schema_from(dict(tables))), builtins=self.builtins)
        wanted = [n for n in (*FEATURES, *(d.name for d in extra)) if n in plan.traits]
        wide = plan.wide(tables, at, select=["orders_count", *wanted])
        wide = wide.filter(wide["orders_count"] > 0).order_by("customer_id")
        frame: pd.DataFrame = self.execute(wide).to_pandas().set_index("customer_id")
        return frame

    # models -----------------------------------------------------------------------------

    def _clv(
        self, tables: Mapping[str, ir.Table], as_of: datetime
    ) -> tuple[pd.DataFrame, list[ModelRecord]]:
        o = tables["orders"]
        o = o.filter(o.customer_id.notnull(), o.ordered_at <= ibis.literal(as_of, "timestamp"))
        o = o.select(
            customer_id=o.customer_id.cast("string"),
            ordered_at=o.ordered_at.cast("timestamp"),
            amount=o.amount.cast("float64").fill_null(0.0),
        )
        rows = self.execute(o)
        c = self.config
        return fit_clv(
            rows.column("customer_id").to_numpy(zero_copy_only=False),
            rows.column("ordered_at").to_numpy(zero_copy_only=False),
            rows.column("amount").to_numpy(zero_copy_only=False),
            as_of,
            model=c.clv_model,
            months=c.clv_months,
            discount_rate_monthly=c.discount_rate_monthly,
        )

    def _churn(
        self, tables: Mapping[str, ir.Table], as_of: datetime
    ) -> tuple[pd.DataFrame, list[ModelRecord]]:
        from crmseg.models.churn import fit_churn

        c = self.config
        h = c.churn_horizon_days
        start = as_of - timedelta(days=h)
        train = self.features(tables, start)
        label_def = Definition(_LABEL, "trait", text=f"count(orders within {h}d)")
        later = self.features(tables, as_of, [label_def])
        score = later.drop(columns=[_LABEL])
        # churned: bought before start and not in (start, as_of]
        bought = later[_LABEL].reindex(train.index).fillna(0).to_numpy()
        label = (bought == 0).astype("int64")
        result = fit_churn(train, label, score, as_of, h, c.churn_holdout, c.seed, c.sample_size)
        self.auc = result.auc
        return result.scores, [result.record]

    def _clusters(
        self, tables: Mapping[str, ir.Table], as_of: datetime
    ) -> tuple[pd.DataFrame, list[ModelRecord]]:
        from crmseg.models.clusters import fit_clusters

        c = self.config
        result = fit_clusters(
            self.features(tables, as_of), as_of, c.clusters_k, c.seed, c.sample_size
        )
        return result.labels, [result.record]
