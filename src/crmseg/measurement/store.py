"""Measurement's own tables in the state database (an idempotent migration).

- ``measure_outcomes``: per run, segment and window: members and what they did after the run.
- ``measure_lift``: per campaign, window and metric: treatment vs holdout with its interval.

Each computation replaces its own rows in one transaction, so re-measuring after more data
arrived (a window that was incomplete is complete now) is safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore

OUTCOME_COLUMNS = (
    "run_id",
    "segment",
    "window_days",
    "as_of",
    "members",
    "converters",
    "orders",
    "revenue",
    "prior_buyers",
    "repeaters",
    "subscribers",
    "churned",
    "unsubscribed",
    "complained",
    "messages",
    "observed_until",
    "complete",
    "computed_at",
)

LIFT_COLUMNS = (
    "campaign",
    "window_days",
    "metric",
    "sends",
    "first_sent",
    "last_sent",
    "treatment_n",
    "holdout_n",
    "treatment",
    "holdout",
    "lift",
    "lower",
    "upper",
    "relative",
    "relative_lower",
    "relative_upper",
    "p_value",
    "significant",
    "complete",
    "method",
    "computed_at",
)

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS measure_outcomes (
        run_id INTEGER NOT NULL,
        segment VARCHAR NOT NULL,
        window_days INTEGER NOT NULL,
        as_of TIMESTAMP NOT NULL,
        members BIGINT NOT NULL,
        converters BIGINT NOT NULL,
        orders BIGINT NOT NULL,
        revenue DOUBLE NOT NULL,
        prior_buyers BIGINT NOT NULL,
        repeaters BIGINT NOT NULL,
        subscribers BIGINT NOT NULL,
        churned BIGINT NOT NULL,
        unsubscribed BIGINT NOT NULL,
        complained BIGINT NOT NULL,
        messages BIGINT NOT NULL,
        observed_until TIMESTAMP NOT NULL,
        complete BOOLEAN NOT NULL,
        computed_at TIMESTAMP NOT NULL,
        PRIMARY KEY (run_id, segment, window_days)
    )""",
        """CREATE TABLE IF NOT EXISTS measure_lift (
        campaign VARCHAR NOT NULL,
        window_days INTEGER NOT NULL,
        metric VARCHAR NOT NULL,
        sends INTEGER NOT NULL,
        first_sent TIMESTAMP NOT NULL,
        last_sent TIMESTAMP NOT NULL,
        treatment_n BIGINT NOT NULL,
        holdout_n BIGINT NOT NULL,
        treatment DOUBLE NOT NULL,
        holdout DOUBLE NOT NULL,
        lift DOUBLE NOT NULL,
        lower DOUBLE NOT NULL,
        upper DOUBLE NOT NULL,
        relative DOUBLE,
        relative_lower DOUBLE,
        relative_upper DOUBLE,
        p_value DOUBLE NOT NULL,
        significant BOOLEAN NOT NULL,
        complete BOOLEAN NOT NULL,
        method VARCHAR NOT NULL,
        computed_at TIMESTAMP NOT NULL,
        PRIMARY KEY (campaign, window_days, metric)
    )""",
    ]
]


def migrate(state: StateStore) -> None:
    """Bring measurement's tables to the newest version (numbered migrations)."""
    state.migrate("measurement", MIGRATIONS)


def replace_rows(
    state: StateStore,
    table: str,
    columns: Sequence[str],
    keys: Sequence[str],
    rows: Sequence[dict[str, Any]],
) -> None:
    """Upsert ``rows`` by ``keys`` in one transaction (fixed table names only)."""
    assert table in ("measure_outcomes", "measure_lift")
    migrate(state)
    marks = ", ".join("?" for _ in columns)
    where = " AND ".join(f"{k} = ?" for k in keys)
    with state.transaction():
        for row in rows:
            state.execute(f"DELETE FROM {table} WHERE {where}", [row[k] for k in keys])
            state.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                [row[c] for c in columns],
            )


def read_rows(state: StateStore, table: str, columns: Sequence[str]) -> list[dict[str, Any]]:
    assert table in ("measure_outcomes", "measure_lift")
    migrate(state)
    order = "run_id, segment, window_days" if table == "measure_outcomes" else "campaign, metric"
    rows = state.rows(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
    return [dict(zip(columns, r, strict=True)) for r in rows]
