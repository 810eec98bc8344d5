"""The change log: every entry and exit real time made, with its reason and cause, in order.

It is the outbox: readers follow it by ``change_id`` (``GET /segments/{name}/changes?cursor=``,
webhooks with their own cursor), and it is written in the same transaction as the intervals
the changes open and close, so the history and the outbox never disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS stream_changes (
            change_id BIGINT PRIMARY KEY,
            segment VARCHAR NOT NULL,
            customer_id VARCHAR NOT NULL,
            change VARCHAR NOT NULL,
            changed_at TIMESTAMP NOT NULL,
            reason VARCHAR NOT NULL,
            cause VARCHAR NOT NULL,
            definition_hash VARCHAR NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS stream_cursors (
            reader VARCHAR PRIMARY KEY,
            change_id BIGINT NOT NULL
        )""",
    ],
]
COLUMNS = ("change_id", "segment", "customer_id", "change", "changed_at", "reason", "cause",
           "definition_hash")  # fmt: skip


class ChangeLog:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        state.migrate("stream", MIGRATIONS)

    def last_id(self) -> int:
        return int(self.state.rows("SELECT coalesce(max(change_id), 0) FROM stream_changes")[0][0])

    def add(self, changes: pa.Table) -> int:
        """Append ``changes`` (the columns after change_id) in order; the id of the last."""
        first = self.last_id() + 1
        n = changes.num_rows
        if not n:
            return first - 1
        ids = pa.array(np.arange(first, first + n, dtype=np.int64))
        self.state.insert("stream_changes", changes.select(list(COLUMNS[1:])).add_column(
            0, "change_id", ids))  # fmt: skip
        return int(first + n - 1)

    def after(
        self, cursor: int, segment: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Changes after ``cursor`` (of one segment when given), oldest first."""
        return self.state.dicts(
            f"SELECT {', '.join(COLUMNS)} FROM stream_changes WHERE change_id > $c "
            "AND (CAST($seg AS VARCHAR) IS NULL OR segment = $seg) "
            "ORDER BY change_id LIMIT $n",
            {"c": cursor, "seg": segment, "n": limit},
        )

    def of(self, customer_id: str) -> list[dict[str, Any]]:
        """Every change of one person, oldest first (profiles show the reasons)."""
        return self.state.dicts(
            f"SELECT {', '.join(COLUMNS)} FROM stream_changes WHERE customer_id = ? "
            "ORDER BY change_id",
            [customer_id],
        )

    def cursor(self, reader: str) -> int:
        rows = self.state.rows("SELECT change_id FROM stream_cursors WHERE reader = ?", [reader])
        return int(rows[0][0]) if rows else 0

    def advance(self, reader: str, change_id: int) -> None:
        self.state.execute(
            "INSERT INTO stream_cursors VALUES (?, ?) "
            "ON CONFLICT (reader) DO UPDATE SET change_id = excluded.change_id",
            [reader, change_id],
        )

    def latest(self) -> datetime | None:
        rows = self.state.rows("SELECT max(changed_at) FROM stream_changes")
        return rows[0][0] if rows else None
