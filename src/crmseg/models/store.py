"""Model fits in the state database: what was fitted when, on which data window, with which
parameters and quality numbers (``crmseg traits`` shows the latest)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore
    from crmseg.models.record import ModelRecord

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
    # 2: fits kept with everything scoring needs, so runs score with a recorded fit.
    [
        """CREATE TABLE model_fits (
            fit_id INTEGER PRIMARY KEY,
            model VARCHAR NOT NULL,
            as_of TIMESTAMP NOT NULL,
            fitted_at TIMESTAMP NOT NULL,
            settings VARCHAR NOT NULL,
            state VARCHAR NOT NULL
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
        self.migrate()

    def migrate(self) -> None:
        """Create or upgrade the tables (again after a transaction that created them rolled
        back)."""
        self.state.migrate("models", MIGRATIONS)

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

    def save_fit(
        self,
        model: str,
        as_of: datetime,
        settings: str,
        state: dict[str, Any],
        records: Sequence[ModelRecord],
        now: datetime,
    ) -> int:
        """Record a fit (its state and its records) and return its id."""
        with self.state.transaction():
            self.state.exclusive()  # the next id is this writer's
            fit_id = int(
                self.state.rows("SELECT coalesce(max(fit_id), 0) + 1 FROM model_fits")[0][0]
            )
            self.state.execute(
                "INSERT INTO model_fits VALUES (?, ?, ?, ?, ?, ?)",
                [fit_id, model, as_of, now, settings, json.dumps(state, sort_keys=True)],
            )
            self.save(records, now)
        return fit_id

    def usable(
        self, model: str, settings: str, at: datetime, refit: timedelta
    ) -> dict[str, Any] | None:
        """The newest fit of ``model`` with these settings that may score instant ``at``:
        fitted at or before it, less than ``refit`` before it."""
        rows = self.state.rows(
            "SELECT fit_id, as_of, state FROM model_fits WHERE model = $model "
            "AND settings = $settings AND as_of <= $at AND as_of > $since "
            "ORDER BY as_of DESC, fit_id DESC LIMIT 1",
            {"model": model, "settings": settings, "at": at, "since": at - refit},
        )
        if not rows:
            return None
        fit_id, as_of, state = rows[0]
        return {"fit_id": int(fit_id), "as_of": as_of, "state": json.loads(state)}

    def fits(self) -> list[dict[str, Any]]:
        """Every recorded fit (without its state), newest first."""
        rows = self.state.rows(
            "SELECT fit_id, model, as_of, fitted_at, settings FROM model_fits "
            "ORDER BY fitted_at DESC, fit_id DESC"
        )
        keys = ("fit_id", "model", "as_of", "fitted_at", "settings")
        return [dict(zip(keys, r, strict=True)) for r in rows]

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
