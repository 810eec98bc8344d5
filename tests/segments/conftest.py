"""Helpers for the kill and atomicity tests: a demo shop run once, then given new data."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from crmseg import Workspace
from crmseg.demo.scaffold import init_project


def grow_customers(root: Path) -> None:
    """One new customer: the next run loads customers again, checks quality and resolves
    identity, so kills land in every phase of a run."""
    path = root / "data" / "customers.parquet"
    customers = pq.read_table(path)
    extra = customers.slice(0, 1).to_pylist()[0] | {"customer_id": "C9999999", "email": None}
    pq.write_table(
        pa.concat_tables([customers, pa.Table.from_pylist([extra], customers.schema)]), path
    )


def ran_shop(root: Path, customers: int, seed: int, at: datetime) -> dict[str, list[str]]:
    """A demo shop with one run at ``at``; returns every segment's members then."""
    init_project(root, demo=True, customers=customers, seed=seed)
    with Workspace.open(root) as ws:
        ws.run(as_of=at)
        return {s.name: ws.members(s.name, as_of=at) for s in ws.segments}
