"""Plan helpers: how a table's aggregates are split into grouped scans."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crmseg.rules.plan import _chunks


@given(st.lists(st.integers(), max_size=200), st.integers(min_value=1, max_value=40))
def test_chunks_are_the_fewest_even_runs_in_order(items: list[int], most: int) -> None:
    chunks = _chunks(items, most)
    assert [x for c in chunks for x in c] == items  # every item once, in order
    assert all(1 <= len(c) <= most for c in chunks)
    assert len(chunks) == -(-len(items) // most)  # no more scans than needed
    if chunks:
        assert max(map(len, chunks)) - min(map(len, chunks)) <= 1
