"""Activation's tables in the state database: activations, send_log, sync_state, sync_batches.

Created by ``migrate`` (idempotent) on the state store's connection; writes happen inside
``StateStore.transaction()`` so an activation records all of its rows or none.

- ``activations``: one row per (non-dry) activation with its funnel.
- ``send_log``: one row per customer per activation: treatment rows are sends, holdout rows are
  recorded so measurement can compare arms.
- ``sync_state``: per destination, the customer keys last synced successfully.
- ``staged_files``: export files of a committed activation still to move into place.
- ``sync_batches``: the outbox: every batch of a diff with its idempotency key and payload, so a
  failed sync is retried from exactly the same diff; a delivered batch's payload is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from crmseg.activation.audience import SEND_LOG_SCHEMA, Audience, Step

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS activations (
        activation_id INTEGER PRIMARY KEY,
        campaign VARCHAR NOT NULL,
        as_of TIMESTAMP NOT NULL,
        created_at TIMESTAMP NOT NULL,
        channel VARCHAR NOT NULL,
        campaign_hash VARCHAR NOT NULL,
        funnel VARCHAR NOT NULL,
        treatment BIGINT NOT NULL,
        holdout BIGINT NOT NULL
    )""",
        """CREATE TABLE IF NOT EXISTS send_log (
        activation_id INTEGER NOT NULL,
        campaign VARCHAR NOT NULL,
        customer_key VARCHAR NOT NULL,
        arm VARCHAR NOT NULL,
        variant VARCHAR,
        channel VARCHAR NOT NULL,
        sent_at TIMESTAMP NOT NULL
    )""",
        """CREATE TABLE IF NOT EXISTS sync_state (
        destination VARCHAR NOT NULL,
        customer_key VARCHAR NOT NULL,
        synced_at TIMESTAMP NOT NULL,
        PRIMARY KEY (destination, customer_key)
    )""",
        """CREATE TABLE IF NOT EXISTS sync_batches (
        destination VARCHAR NOT NULL,
        batch_id VARCHAR NOT NULL,
        seq INTEGER NOT NULL,
        op VARCHAR NOT NULL,
        keys VARCHAR NOT NULL,
        payload VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        status VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        PRIMARY KEY (destination, batch_id)
    )""",
    ],
    # 2: a delivered batch keeps its keys, not its personal data (see ``delivered``)
    ["UPDATE sync_batches SET payload = 'null' WHERE status = 'delivered'"],
    # 3: export files written under a staging name, to move into place once committed
    [
        """CREATE TABLE IF NOT EXISTS staged_files (
        staged VARCHAR PRIMARY KEY,
        final VARCHAR NOT NULL
    )"""
    ],
]


@dataclass(frozen=True)
class Batch:
    destination: str
    batch_id: str  # also the idempotency key
    seq: int
    op: str  # add | remove
    keys: list[str]
    payload: Any  # the JSON-able records sent for this batch


class ActivationStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        migrate(state)

    # --- send log --------------------------------------------------------------------------

    def send_log(self) -> pa.Table:
        table = self.state.arrow(
            "SELECT campaign, customer_key, arm, variant, channel, sent_at FROM send_log"
        )
        return table.cast(SEND_LOG_SCHEMA)

    def last_activation(self, campaign: str, before: datetime | None = None) -> datetime | None:
        rows = self.state.rows(
            "SELECT max(as_of) FROM activations WHERE campaign = ? "
            "AND (CAST(? AS TIMESTAMP) IS NULL OR as_of <= ?)",
            [campaign, before, before],
        )
        return rows[0][0] if rows else None

    # --- export files: staged in the transaction, moved into place after it -------------

    def stage_files(self, files: Sequence[tuple[str, str]]) -> None:
        """Remember (staged, final) paths in the activation's transaction: once it commits,
        the files belong in place even if the process dies before moving them."""
        for staged, final in files:
            self.state.execute(
                "INSERT INTO staged_files VALUES (?, ?) "
                "ON CONFLICT (staged) DO UPDATE SET final = excluded.final",
                [staged, final],
            )

    def staged_files(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.state.rows("SELECT staged, final FROM staged_files")]

    def placed(self, files: Sequence[tuple[str, str]]) -> None:
        with self.state.transaction():
            for staged, _ in files:
                self.state.execute("DELETE FROM staged_files WHERE staged = ?", [staged])

    def activation_at(self, campaign: str, at: datetime) -> int | None:
        rows = self.state.rows(
            "SELECT activation_id FROM activations WHERE campaign = ? AND as_of = ?",
            [campaign, at],
        )
        return int(rows[0][0]) if rows else None

    def record(self, audience: Audience, campaign_hash: str, created_at: datetime) -> int:
        """Write the activation and its send-log rows (call inside a transaction)."""
        self.state.exclusive()  # the next id is this writer's
        rows = self.state.rows("SELECT coalesce(max(activation_id), 0) + 1 FROM activations")
        activation_id = int(rows[0][0])
        funnel = [{"step": s.label, "count": s.count} for s in audience.recorded]
        self.state.execute(
            "INSERT INTO activations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                activation_id,
                audience.campaign,
                audience.as_of,
                created_at,
                audience.channel,
                campaign_hash,
                json.dumps(funnel),
                len(audience.treatment),
                len(audience.holdout),
            ],
        )
        keys = [k for k, _ in audience.treatment] + audience.holdout
        n_t = len(audience.treatment)
        log = pa.table(
            {
                "activation_id": pa.array([activation_id] * len(keys), pa.int32()),
                "campaign": pa.array([audience.campaign] * len(keys), pa.string()),
                "customer_key": pa.array(keys, pa.string()),
                "arm": pa.array(["treatment"] * n_t + ["holdout"] * len(audience.holdout)),
                "variant": pa.array(
                    [v for _, v in audience.treatment] + [None] * len(audience.holdout),
                    pa.string(),
                ),
                "channel": pa.array([audience.channel] * len(keys), pa.string()),
                "sent_at": pa.array([audience.as_of] * len(keys), pa.timestamp("us")),
            }
        )
        self.state.insert("send_log", log)
        return activation_id

    def activations(self, campaign: str | None = None) -> list[dict[str, Any]]:
        rows = self.state.rows(
            "SELECT activation_id, campaign, as_of, created_at, channel, funnel, treatment, "
            "holdout FROM activations WHERE CAST(? AS VARCHAR) IS NULL OR campaign = ? "
            "ORDER BY activation_id",
            [campaign, campaign],
        )
        keys = ("activation_id", "campaign", "as_of", "created_at", "channel", "funnel")
        out = []
        for r in rows:
            item = dict(zip(keys, r[:6], strict=True))
            item["funnel"] = [Step(s["step"], s["count"]) for s in json.loads(r[5])]
            item["treatment"], item["holdout"] = int(r[6]), int(r[7])
            out.append(item)
        return out

    # --- incremental sync ------------------------------------------------------------------

    def synced(self, destination: str) -> set[str]:
        rows = self.state.rows(
            "SELECT customer_key FROM sync_state WHERE destination = ?", [destination]
        )
        return {r[0] for r in rows}

    def pending(self, destination: str) -> list[Batch]:
        rows = self.state.rows(
            "SELECT destination, batch_id, seq, op, keys, payload FROM sync_batches "
            "WHERE destination = ? AND status = 'pending' ORDER BY created_at, seq",
            [destination],
        )
        return [Batch(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5])) for r in rows]

    def add_batches(self, batches: list[Batch], created_at: datetime) -> None:
        for b in batches:
            self.state.execute(
                "INSERT INTO sync_batches VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0)",
                [
                    b.destination,
                    b.batch_id,
                    b.seq,
                    b.op,
                    json.dumps(b.keys),
                    json.dumps(b.payload, default=str),
                    created_at,
                ],
            )

    def delivered(self, batch: Batch, attempts: int, at: datetime) -> None:
        """Mark a batch delivered and apply it to the synced set, atomically."""
        with self.state.transaction():
            # The body is kept only while it may be sent again; once delivered it would be a
            # copy of personal data with no use.
            self.state.execute(
                "UPDATE sync_batches SET status = 'delivered', attempts = attempts + ?, "
                "payload = 'null' WHERE destination = ? AND batch_id = ?",
                [attempts, batch.destination, batch.batch_id],
            )
            keys = pa.table({"customer_key": pa.array(batch.keys, pa.string())})
            with self.state.registered(__batch_keys=keys):
                self.state.execute(
                    "DELETE FROM sync_state WHERE destination = ? "
                    "AND customer_key IN (SELECT customer_key FROM __batch_keys)",
                    [batch.destination],
                )
                if batch.op == "add":
                    self.state.execute(
                        "INSERT INTO sync_state SELECT ?, customer_key, ? FROM __batch_keys",
                        [batch.destination, at],
                    )

    def replace_synced(self, destination: str, keys: Sequence[str], at: datetime) -> None:
        """Set the synced set outright (file destinations, written in the activation's
        transaction)."""
        self.state.execute("DELETE FROM sync_state WHERE destination = ?", [destination])
        synced = pa.table({"customer_key": pa.array(list(keys), pa.string())})
        with self.state.registered(__synced=synced):
            self.state.execute(
                "INSERT INTO sync_state SELECT ?, customer_key, ? FROM __synced",
                [destination, at],
            )

    def failed(self, batch: Batch, attempts: int) -> None:
        with self.state.transaction():  # a write other processes' readers count
            self.state.execute(
                "UPDATE sync_batches SET attempts = attempts + ? WHERE destination = ? "
                "AND batch_id = ?",
                [attempts, batch.destination, batch.batch_id],
            )


def migrate(state: StateStore) -> None:
    """Bring activation's tables to the newest version (numbered migrations)."""
    state.migrate("activation", MIGRATIONS)
