"""``formats:`` on engines without DuckDB's try_strptime: the portable reading (a regular
expression and arithmetic in Ibis) gives what try_strptime gives, for generated formats and
values, good and bad. Both run on DuckDB here; tests/backends/test_postgres.py and
test_spark.py load a ``formats:`` column on those engines and compare with DuckDB."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import ibis
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from crmseg.backends.strptime import MONTHS, compile_format, parse

DIRECTIVES = ["%Y", "%y", "%m", "%-m", "%d", "%-d", "%b", "%B", "%H", "%I", "%M", "%S", "%f",
              "%p"]  # fmt: skip
SEPARATORS = ["-", "/", " ", ".", ":", "T", "", ",", "  ", "%%"]


@st.composite
def formats(draw: st.DrawFn) -> str:
    chosen = draw(st.lists(st.sampled_from(DIRECTIVES), min_size=3, max_size=7, unique=True))
    seps = draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(chosen), max_size=len(chosen)))
    fmt = "".join(d + s for d, s in zip(chosen, seps, strict=True)).rstrip()
    try:
        compile_format(fmt)
    except ValueError:
        assume(False)
    return fmt


def _render(draw: st.DrawFn, fmt: str, at: datetime) -> str:
    """``at`` written in ``fmt``, with the variations DuckDB reads (padding, case, spaces)."""
    out = []
    i = 0
    while i < len(fmt):
        if fmt[i] != "%":
            out.append(fmt[i] if not fmt[i].isspace() else draw(st.sampled_from([" ", "  ", "\t"])))
            i += 1
            continue
        d = fmt[i + 1] if fmt[i + 1] != "-" else fmt[i + 2]
        i += 2 if fmt[i + 1] != "-" else 3
        pad = draw(st.booleans())

        def num(v: int, width: int = 2, pad: bool = pad) -> str:
            return str(v).zfill(width) if pad else str(v)

        name = MONTHS[at.month - 1]
        text = {
            "Y": num(at.year, 4, True),
            "y": num(at.year % 100),
            "m": num(at.month),
            "d": num(at.day),
            "H": num(at.hour),
            "I": num(at.hour % 12 or 12),
            "M": num(at.minute),
            "S": num(at.second),
            "f": str(at.microsecond).zfill(6)[: draw(st.integers(1, 6))],
            "p": "pm" if at.hour >= 12 else "am",
            "b": name[:3],
            "B": name,
            "%": "%",
        }[d]
        if d in "bBp":
            text = draw(st.sampled_from([text, text.upper(), text.title()]))
        out.append(text)
    return "".join(out)


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, list[str]]:
    fmt = draw(formats())
    values = []
    for _ in range(draw(st.integers(1, 12))):
        at = draw(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(2999, 12, 31)))
        text = _render(draw, fmt, at)
        how = draw(st.integers(0, 5))
        if how == 1 and text:  # one character changed
            k = draw(st.integers(0, len(text) - 1))
            text = text[:k] + draw(st.sampled_from("0193 x-:/aP")) + text[k + 1 :]
        elif how == 2:  # a number out of its range
            text = text.replace(str(at.month).zfill(2), "13", 1)
        elif how == 3:
            text = draw(st.sampled_from([" ", ""])) + text + draw(st.sampled_from([" ", "", "x"]))
        values.append(text)
    return fmt, values


@pytest.fixture(scope="module")
def con() -> Any:
    return ibis.duckdb.connect()


@settings(
    max_examples=int(os.environ.get("CRMSEG_PROPERTY_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
@given(case=cases())
def test_the_portable_reading_equals_try_strptime(con: Any, case: tuple[str, list[str]]) -> None:
    fmt, values = case
    table = ibis.memtable(pa.table({"v": pa.array(values, pa.string())}))
    got = con.to_pyarrow(parse(table.v, fmt).name("t")).to_pylist()
    raw = con.con.execute(
        "SELECT try_strptime(v, ?) FROM (SELECT unnest(?) AS v, generate_subscripts(?, 1) AS i) "
        "ORDER BY i",
        [fmt, values, values],
    ).fetchall()
    # the one difference: year 0 is 1 BC on DuckDB (a date no engine here stores), null here
    want = [None if isinstance(r[0], str) and "(BC)" in r[0] else r[0] for r in raw]
    assert got == want, (fmt, values)


@pytest.mark.parametrize(
    ("fmt", "error"),
    [
        ("%Y-%m-%d %a", "%a is not supported"),
        ("%H:%M", "needs a year"),
        ("%Y-%m %H", "needs a day"),
        ("%Y-%m-%d %H %p", "%p needs %I"),
        ("%Y-%m-%d %Y", "twice"),
        ("%Y-%y-%m-%d", "the year twice"),
        ("%Y-%m-%d %", "lone %"),
        (" %Y-%m-%d", "starts with a space"),
    ],
)
def test_formats_it_cannot_read_are_named(fmt: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        compile_format(fmt)
