"""The golden profile: one customers row per resolved person, by survivorship rules.

Records of a person are ordered by ``signup_at`` (unknown last), then ``customer_id``; the first
is the survivor whose id becomes the ``customer_key`` (unless ``identity.person_key`` names
the person). Per attribute:

* ``most_recent``: the value of the latest record that has one;
* ``earliest``: the value of the earliest record that has one;
* ``most_frequent``: the most common value (ties: the one seen most recently);
* ``source_priority``: the value from the most trusted system (``source_column`` ranked by
  ``source_priority``; ties and unknown systems: most recent).

Nulls never win while any record has a value. ``signup_at`` is always the earliest record's:
a person exists from their first record. People with one record pass through untouched; rows
repeating one customer_id are collapsed like a merged person.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crmseg.config import GoldenConfig

if TYPE_CHECKING:
    import ibis.expr.types as ir

# Cluster sizes are capped (max_cluster_size <= 1000), so these weights never overlap.
_WEIGHT = 1_000_000


def record_order(customers: ir.Table, group: Any) -> Any:
    """0, 1, ... per group in survivor order: signup_at (unknown last), then customer_id."""
    import ibis

    keys: list[Any] = []
    if "signup_at" in customers.columns:
        keys.append(ibis.asc(customers.signup_at, nulls_first=False))
    keys.append(ibis.asc(customers.customer_id))
    return ibis.row_number().over(group_by=group, order_by=keys)


def golden_customers(customers: ir.Table, idmap: ir.Table, config: GoldenConfig) -> ir.Table:
    """``customers`` with every merged person collapsed into one row named by its key."""
    collapsed, merged = golden_parts(customers, idmap, config)
    return golden_view(customers, collapsed, merged)


def golden_view(customers: ir.Table, collapsed: ir.Table, merged: ir.Table) -> ir.Table:
    """The golden profile from its two parts: every record not collapsed into a person as it
    is, and the collapsed persons' rows. A run stores only the parts (a few percent of the
    customers) and this as a view, instead of writing a copy of every customer."""
    import ibis

    singles = customers.anti_join(collapsed, customers.customer_id == collapsed.customer_id)
    cols = list(customers.columns)
    return ibis.union(singles.select(*cols), merged.select(*cols), distinct=False)


def golden_parts(
    customers: ir.Table,
    idmap: ir.Table,
    config: GoldenConfig,
    keep: Callable[[str, ir.Table], ir.Table] | None = None,
) -> tuple[ir.Table, ir.Table]:
    """(ids of the records collapsed into persons, one golden row per such person).

    ``keep(name, expr)`` materialises the collapsed records, which both parts read."""
    import ibis

    schema = customers.schema()
    cols = list(customers.columns)
    m = idmap.select(
        _cid=idmap.customer_id, _key=idmap.customer_key, _status=idmap.status
    ).distinct()
    # A customer_id listed twice in the source is one record split in two: collapse it like a
    # merged person, or the plan would evaluate the same id twice.
    dupes = customers.group_by(_did="customer_id").aggregate(_rows=ibis._.count())
    tagged = customers.left_join(m, customers.customer_id == m._cid)
    tagged = tagged.left_join(dupes, tagged.customer_id == dupes._did)
    tagged = tagged.mutate(_key=tagged._key.fill_null(tagged.customer_id))
    # A record renamed to its person_key is collapsed too, even as a person of one record.
    renamed = tagged._key != tagged.customer_id
    merged = (tagged._status.fill_null("single") == "merged") | (tagged._rows > 1) | renamed
    multi = tagged.filter(merged)
    multi = multi.mutate(_order=record_order(multi, multi._key))
    if keep is not None:
        multi = keep("collapsed_records", multi)

    def rule(col: str) -> str:
        return config.attributes.get(col, config.default)

    aggs: dict[str, Any] = {}
    later: list[str] = []
    for col in cols:
        if col == "customer_id":
            continue
        value = multi[col]
        kind = rule(col)
        if col == "signup_at":
            # A person exists from their first record, whatever the rule for other columns:
            # otherwise merging a new duplicate would hide them from earlier as_of instants.
            aggs[col] = value.min()
        elif kind == "most_recent":
            aggs[col] = value.argmax(multi._order, where=value.notnull())
        elif kind == "earliest":
            aggs[col] = value.argmin(multi._order, where=value.notnull())
        elif kind == "source_priority":
            assert config.source_column is not None
            source = multi[config.source_column].cast("string")
            rank = ibis.cases(
                *((source == s, i) for i, s in enumerate(config.source_priority)),
                else_=len(config.source_priority),
            )
            aggs[col] = value.argmin(rank * _WEIGHT - multi._order, where=value.notnull())
        else:  # most_frequent: resolved in a second pass
            later.append(col)
    grouped = multi.group_by(customer_id=multi._key).aggregate(
        **aggs, _n=ibis._.customer_id.count()
    )
    for col in later:
        counts = (
            multi.filter(multi[col].notnull())
            .group_by("_key", col)
            .aggregate(_c=ibis._.customer_id.count(), _last=ibis._._order.max())
        )
        best = counts.group_by("_key").aggregate(
            _v=counts[col].argmax(counts._c * _WEIGHT + counts._last)
        )
        joined = grouped.left_join(best, grouped.customer_id == best._key)
        grouped = joined.select(*grouped.columns, **{col: joined._v})
    golden = grouped.select(*[grouped[c].cast(schema[c]).name(c) for c in cols])
    collapsed = multi.select(customer_id=multi.customer_id).distinct()
    return collapsed, golden
