"""What measurement reads from the customer data: a few narrow columns of the identity-resolved
canonical tables, fetched once as Arrow and joined with the state database's records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import ibis.expr.types as ir

Execute = Callable[[Any], pa.Table]


@dataclass
class Facts:
    """Orders (and, when present, messages and subscriptions) up to ``end``.

    ``end`` is the instant the data is known to be complete for: the latest run's as_of.
    Rows after it (late or planted future rows) are left out, so a window that reaches past
    ``end`` is incomplete rather than silently short.
    """

    end: datetime
    orders: pa.Table  # customer_id, ordered_at, amount
    messages: pa.Table  # customer_id, kind, occurred_at (empty without a messages table)
    subscriptions: pa.Table  # customer_id, started_at, canceled_at (may be empty)


_EMPTY = {
    "messages": pa.schema(
        [("customer_id", pa.string()), ("kind", pa.string()), ("occurred_at", pa.timestamp("us"))]
    ),
    "subscriptions": pa.schema(
        [
            ("customer_id", pa.string()),
            ("started_at", pa.timestamp("us")),
            ("canceled_at", pa.timestamp("us")),
        ]
    ),
}


def load_facts(execute: Execute, tables: dict[str, ir.Table], end: datetime) -> Facts:
    def fetch(name: str, columns: list[str], time: str) -> pa.Table:
        if name not in tables or not set(columns) <= set(tables[name].columns):
            if name == "orders":
                return pa.table(
                    {
                        "customer_id": pa.array([], pa.string()),
                        "ordered_at": pa.array([], pa.timestamp("us")),
                        "amount": pa.array([], pa.float64()),
                    }
                )
            return _EMPTY[name].empty_table()
        t = tables[name]
        expr = t.filter(t[time] <= end, t.customer_id.notnull()).select(*columns)
        result = execute(expr)
        return result.cast(
            pa.schema(
                [
                    pa.field(
                        c,
                        pa.timestamp("us")
                        if c.endswith("_at")
                        else (pa.float64() if c == "amount" else pa.string()),
                    )
                    for c in columns
                ]
            )
        )

    return Facts(
        end,
        fetch("orders", ["customer_id", "ordered_at", "amount"], "ordered_at"),
        fetch("messages", ["customer_id", "kind", "occurred_at"], "occurred_at"),
        fetch("subscriptions", ["customer_id", "started_at", "canceled_at"], "started_at"),
    )
