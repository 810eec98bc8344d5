"""How customers move between runs: transition matrices of a categorical trait (lifecycle
stage, RFM segment) or of a family of segments, and the stability of every segment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from crmseg.backends.state import DuckDBState, StateStore

NONE = "(none)"


def matrix(before: pa.Table, after: pa.Table, column: str) -> dict[str, Any]:
    """Counts of customers by (value before, value after); a customer missing on one side or
    with a null value is ``(none)`` (e.g. not a customer yet)."""
    scratch = DuckDBState()  # an in-memory database of its own: nothing is stored
    try:
        with scratch.registered(__a=before, __b=after):
            rows = scratch.rows(
                f'SELECT coalesce(CAST(a."{column}" AS VARCHAR), $none), '
                f'coalesce(CAST(b."{column}" AS VARCHAR), $none), count(*) '
                "FROM __a a FULL JOIN __b b USING (customer_id) GROUP BY ALL",
                {"none": NONE},
            )
    finally:
        scratch.close()
    return _shape(rows)


def _shape(rows: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    values = sorted({r[0] for r in rows} | {r[1] for r in rows}, key=lambda v: (v == NONE, v))
    index = {v: i for i, v in enumerate(values)}
    counts = [[0] * len(values) for _ in values]
    for a, b, n in rows:
        counts[index[a]][index[b]] += int(n)
    return {"from": values, "to": values, "counts": counts}


def segment_transitions(
    state: StateStore, segments: Sequence[str], run_a: int, run_b: int
) -> dict[str, Any]:
    """Moves between a family of segments from run A to run B (a customer in two of them
    counts in both rows)."""
    rows = state.rows(
        """WITH inst AS (SELECT run_id, as_of FROM runs WHERE run_id IN ($a, $b)),
        m AS (
            SELECT i.run_id, ms.customer_id, ms.segment FROM inst i JOIN memberships ms
              ON ms.entered_at <= i.as_of AND (ms.exited_at IS NULL OR ms.exited_at > i.as_of)
            WHERE ms.segment IN (SELECT unnest($segs))
        ),
        a AS (SELECT customer_id, segment FROM m WHERE run_id = $a),
        b AS (SELECT customer_id, segment FROM m WHERE run_id = $b)
        SELECT coalesce(a.segment, $none), coalesce(b.segment, $none), count(*)
        FROM a FULL JOIN b USING (customer_id) GROUP BY ALL""",
        {"a": run_a, "b": run_b, "segs": list(segments), "none": NONE},
    )
    return _shape(rows)


def stability(state: StateStore, segments: Sequence[str]) -> list[dict[str, Any]]:
    """Per segment and consecutive pair of its runs: members kept, Jaccard similarity."""
    rows = state.rows(
        """WITH r AS (
            SELECT s.segment, r.run_id, r.as_of, s.size,
                   lag(r.as_of) OVER (PARTITION BY s.segment ORDER BY r.as_of, r.run_id) AS prev,
                   lag(s.size) OVER (PARTITION BY s.segment ORDER BY r.as_of, r.run_id) AS prev_size
            FROM run_segments s JOIN runs r USING (run_id)
            WHERE s.segment IN (SELECT unnest($segs))
        )
        SELECT r.segment, r.run_id, r.as_of, r.prev, r.size, r.prev_size,
            (SELECT count(*) FROM memberships m WHERE m.segment = r.segment
               AND m.entered_at <= r.prev AND (m.exited_at IS NULL OR m.exited_at > r.as_of))
        FROM r WHERE r.prev IS NOT NULL ORDER BY r.segment, r.as_of""",
        {"segs": list(segments)},
    )
    out = []
    for seg, run_id, as_of, prev, size, prev_size, kept in rows:
        union = size + prev_size - kept
        out.append(
            {
                "segment": seg,
                "run_id": run_id,
                "as_of": as_of,
                "previous": prev,
                "size": int(size),
                "previous_size": int(prev_size),
                "kept": int(kept),
                "jaccard": kept / union if union else 1.0,
            }
        )
    return out
