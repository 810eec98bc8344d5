"""Record the demo shop's past campaigns into the project's state database.

The generator writes the send log of two past campaigns (``history/send_log.parquet``, with
treatment and holdout arms) and their descriptions (``history/campaigns.parquet``). Here they
go through activation's own store, exactly as if crmseg had sent them, so measurement reads
demo campaigns and real ones the same way: from the state database's send log.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from crmseg.activation.audience import Audience, Step
from crmseg.activation.store import ActivationStore
from crmseg.backends import open_state
from crmseg.config import load_config

# Not a campaign file's hash: marks activations that were imported, not computed.
IMPORTED = "imported:demo-history"


def record_past_campaigns(directory: Path) -> int:
    """Record every past campaign not yet in the send log; returns how many were added."""
    directory = Path(directory)
    log_file = directory / "history" / "send_log.parquet"
    meta_file = directory / "history" / "campaigns.parquet"
    if not log_file.exists() or not meta_file.exists():
        return 0
    log = pq.read_table(log_file).to_pandas()
    meta = pq.read_table(meta_file).to_pylist()
    state = open_state(load_config(directory).state, directory)
    added = 0
    try:
        store = ActivationStore(state)
        with state.transaction():
            for c in meta:
                if store.activation_at(c["campaign"], c["sent_at"]) is not None:
                    continue
                rows = log[log.campaign == c["campaign"]]
                held = rows.arm == "holdout"
                audience = Audience(
                    campaign=c["campaign"],
                    channel=c["channel"],
                    as_of=c["sent_at"],
                    steps=[Step(s["step"], s["count"]) for s in json.loads(c["funnel"])],
                    treatment=[(k, None) for k in rows.customer_id[~held]],
                    holdout=list(rows.customer_id[held]),
                )
                store.record(audience, IMPORTED, c["sent_at"])
                added += 1
    finally:
        state.close()
    return added
