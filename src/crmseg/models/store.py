"""Model fits in the state database: what was fitted when, on which data window, with which
parameters and quality numbers (``crmseg traits`` shows the latest)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore
    from crmseg.models.clv import ModelRecord

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS model_runs (
            recorded_at TIMESTAMP NOT NULL,
            as_of TIMESTAMP NOT NULL,
            model VARCHAR NOT NULL,
            params VARCHAR NOT NULL,
            fit_seconds DOUBLE NOT NULL,
            customers BIGINT NOT NULL,
            window_start TIMESTAMP,
            window_end TIMESTAMP NOT NULL,
            metrics VARCHAR NOT NULL
        )""",
    ],
]

_KEYS = (
    "recorded_at",
    "as_of",
    "model",
    "params",
    "fit_seconds",
    "customers",
    "window_start",
    "window_end",
    "metrics",
)


class FitStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        state.migrate("models", MIGRATIONS)

    def save(self, records: Sequence[ModelRecord], now: datetime) -> None:
        with self.state.transaction():
            for r in records:
                self.state.execute(
                    "INSERT INTO model_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        now,
                        r.as_of,
                        r.model,
                        json.dumps(r.params, sort_keys=True),
                        r.fit_seconds,
                        r.customers,
                        r.window_start,
                        r.window_end,
                        json.dumps(r.metrics, sort_keys=True, default=str),
                    ],
                )

    def records(self, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """Recorded fits, newest first (only those at ``as_of`` when given)."""
        rows = self.state.rows(
            f"SELECT {', '.join(_KEYS)} FROM model_runs "
            "WHERE CAST($at AS TIMESTAMP) IS NULL OR as_of = $at ORDER BY recorded_at DESC, model",
            {"at": as_of},
        )
        out = []
        for row in rows:
            d = dict(zip(_KEYS, row, strict=True))
            d["params"] = json.loads(d["params"])
            d["metrics"] = json.loads(d["metrics"])
            out.append(d)
        return out
