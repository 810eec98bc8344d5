"""All memberships at one instant in one file: (segment, customer_id, entered_at), from the
recorded history, for scripts and warehouses that would otherwise call ``members`` once per
segment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from crmseg.errors import SegmentError

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = (".parquet", ".csv")


def export_format(path: Path) -> str:
    """The file format ``path`` asks for by its suffix; a located error otherwise."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise SegmentError(
            f"--out {str(path)!r}: expected a file ending in .parquet or .csv, got "
            f"{suffix or 'no suffix'}"
        )
    return suffix[1:]


def write(table: pa.Table, path: Path) -> int:
    """Write ``table`` to ``path`` (by its suffix) through a temporary file, so a failed
    write leaves any earlier export whole; returns the rows written."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    fmt = export_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        if fmt == "parquet":
            pq.write_table(table, tmp)
        else:
            pcsv.write_csv(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return int(table.num_rows)
