"""Connected components by iterative min-label propagation, as Ibis expressions.

The graph is bipartite: customer records on one side, shared values (a normalised email, an
E.164 phone, a device id, a Splink pair) on the other. Each round gives every value the
smallest label of its records and every record the smallest label of its values, then jumps
pointers (a record takes its label's label), until no label changes. Every round is
materialised in the warehouse, so expressions never grow with the number of rounds; the same
loop runs on DuckDB and Spark.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.backends.base import Backend

MAX_ROUNDS = 200


class Scratch:
    """Temporary tables in the warehouse's ``crmseg`` schema, dropped on ``close``."""

    def __init__(self, backend: Backend, prefix: str = "_tmp_identity") -> None:
        self.backend = backend
        self.prefix = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []

    def put(self, name: str, expr: ir.Table) -> ir.Table:
        full = f"{self.prefix}_{name}"
        table = self.backend.scratch(full, expr)
        if full not in self.names:
            self.names.append(full)
        return table

    def close(self) -> None:
        for name in self.names:
            self.backend.drop_scratch(name)
        self.names.clear()


def connected_components(
    scratch: Scratch,
    edges: ir.Table,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ir.Table, int]:
    """``edges`` (customer_id, value) -> (customer_id, component) and the rounds it took.

    The component is the smallest customer_id of the records connected through shared values.
    Only records that appear in ``edges`` are returned.
    """
    import ibis

    links = scratch.put("edges", edges.select("customer_id", "value").distinct())
    labels = scratch.put(
        "labels_0", links.select("customer_id").distinct().mutate(label=links.customer_id)
    )
    rounds = 0
    for rounds in range(1, MAX_ROUNDS + 1):
        by_value = (
            links.join(labels, "customer_id").group_by("value").aggregate(label=ibis._.label.min())
        )
        spread = (
            links.join(by_value, "value")
            .group_by("customer_id")
            .aggregate(label=ibis._.label.min())
        )
        # Pointer jumping: a record also takes the label its label has, halving chains.
        hop = labels.select(target=labels.customer_id, hop=labels.label)
        jumped = spread.left_join(hop, spread.label == hop.target).select(
            "customer_id",
            label=ibis.least(spread.label, hop.hop.fill_null(spread.label)),
        )
        new = scratch.put(f"labels_{rounds}", jumped)
        old = labels
        changed = new.join(old, "customer_id").filter(new.label != old.label).count()
        n_changed = int(scratch.backend.scalar(changed) or 0)
        if progress:
            progress(rounds, n_changed)
        # Keep at most two generations of label tables.
        if rounds >= 2:
            stale = f"{scratch.prefix}_labels_{rounds - 2}"
            scratch.backend.drop_scratch(stale)
            scratch.names.remove(stale)
        labels = new
        if n_changed == 0:
            break
    return labels.select("customer_id", component=labels.label), rounds
