"""File exports: CSV, Parquet and JSON Lines.

The caller writes to a staging path and renames it into place once the activation has been
recorded, so a reader never sees half a file nor a file of an activation that rolled back."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from crmseg.errors import ActivationError


def write_records(
    path: Path, fmt: str, records: Sequence[dict[str, Any]], fields: Sequence[str]
) -> Path:
    """Write ``records`` (only ``fields``, in that order) to ``path``; returns the path."""
    tmp = path
    columns = {f: [r.get(f) for r in records] for f in fields}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "jsonl":
            with tmp.open("w", encoding="utf-8") as out:
                for r in records:
                    out.write(json.dumps({f: r.get(f) for f in fields}, default=str) + "\n")
        else:
            table = pa.table({f: pa.array(vs) for f, vs in columns.items()})
            if fmt == "parquet":
                import pyarrow.parquet as pq

                pq.write_table(table, tmp)
            else:
                import pyarrow.csv as pacsv

                pacsv.write_csv(table, tmp)
    except (OSError, pa.ArrowException) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ActivationError(f"cannot write {path}: {exc}") from None
    return path
