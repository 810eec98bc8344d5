"""Segment unit tests written by users (``tests/*.yml``), run on an empty warehouse of the
project's engine (an in-memory DuckDB, a scratch database on a server).

```yaml
tests:
  - name: VIP needs three orders and 500 spend
    as_of: 2026-01-01
    customers:
      - {customer_id: c1, country: DE}
    orders:
      - {order_id: o1, customer_id: c1, ordered_at: 2025-12-01, amount: 600}
    expect:
      value.vip: []            # every listed segment's exact members
```
Tables not given are empty; columns not given are null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from pydantic import Field

from crmseg.config import Config, Strict, project_files, validate
from crmseg.errors import ConfigError, CrmsegError, Location
from crmseg.sources.model import TABLES, DType

if TYPE_CHECKING:
    from crmseg.segments.compiled import Catalog

_ARROW: dict[DType, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us"),
    "date": pa.date32(),
    "json": pa.string(),
}

Row = dict[str, Any]


class UnitTest(Strict):
    name: str
    as_of: datetime
    customers: list[Row] = Field(default_factory=list)
    orders: list[Row] = Field(default_factory=list)
    order_items: list[Row] = Field(default_factory=list)
    events: list[Row] = Field(default_factory=list)
    messages: list[Row] = Field(default_factory=list)
    consent: list[Row] = Field(default_factory=list)
    subscriptions: list[Row] = Field(default_factory=list)
    tickets: list[Row] = Field(default_factory=list)
    reviews: list[Row] = Field(default_factory=list)
    identifiers: list[Row] = Field(default_factory=list)
    expect: dict[str, list[str]]


class UnitTestFile(Strict):
    tests: list[UnitTest] = Field(default_factory=list)


@dataclass
class Outcome:
    file: str
    line: int
    name: str
    failures: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    error: str | None = None  # (missing, unexpected) per segment

    @property
    def ok(self) -> bool:
        return not self.failures and self.error is None


def load_tests(root: Path) -> list[tuple[str, int, UnitTest]]:
    out = []
    for doc in project_files(root, "tests"):
        parsed = validate(UnitTestFile, doc)
        for i, test in enumerate(parsed.tests):
            out.append((doc.file, doc.location(["tests", i]).line or 1, test))
    return out


def fixture_tables(
    test: UnitTest, present: Sequence[str], file: str, line: int
) -> dict[str, pa.Table]:
    """Arrow tables for every table the project has (and any the test fills)."""
    names = list(dict.fromkeys([*present, *(t for t in TABLES if getattr(test, t))]))
    out = {}
    for name in names:
        rows: list[Row] = getattr(test, name)
        canonical = TABLES[name]
        columns: dict[str, pa.Array] = {}
        extra = [c for r in rows for c in r if canonical.column(c) is None]
        for col in canonical.columns:
            try:
                values = [_value(r.get(col.name), col.dtype) for r in rows]
                columns[col.name] = pa.array(values, _ARROW[col.dtype])
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
                raise ConfigError(
                    f"test {test.name!r}: {name}.{col.name}: expected {col.dtype} ({exc})",
                    Location(file, line),
                ) from None
        for col_name in dict.fromkeys(extra):
            try:
                columns[col_name] = pa.array([r.get(col_name) for r in rows])
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise ConfigError(
                    f"test {test.name!r}: {name}.{col_name}: {exc}", Location(file, line)
                ) from None
        out[name] = pa.table(columns)
    return out


def _value(value: Any, dtype: DType) -> Any:
    if value is None:
        return None
    if dtype == "string" or dtype == "json":
        return str(value)
    if dtype == "timestamp":
        if isinstance(value, datetime):
            return _naive_utc(value)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day)
        return _naive_utc(datetime.fromisoformat(str(value)))
    if dtype == "date" and isinstance(value, str):
        return date.fromisoformat(value)
    return value


def _naive_utc(value: datetime) -> datetime:
    """Fixture instants with an offset keep their instant; naive ones are UTC already."""
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def run_tests(
    root: Path,
    present: Sequence[str],
    evaluate: Callable[[Mapping[str, pa.Table], datetime, list[str]], dict[str, list[str]]],
) -> list[Outcome]:
    """Each test's expected members against what ``evaluate`` computes."""
    outcomes = []
    for file, line, test in load_tests(root):
        outcome = Outcome(file, line, test.name)
        try:
            tables = fixture_tables(test, present, file, line)
            actual = evaluate(tables, _naive_utc(test.as_of), list(test.expect))
        except CrmsegError as exc:
            outcome.error = str(exc)
            outcomes.append(outcome)
            continue
        for segment, expected in test.expect.items():
            got = set(actual.get(segment, []))
            want = {str(e) for e in expected}
            if got != want:
                outcome.failures[segment] = (sorted(want - got), sorted(got - want))
        outcomes.append(outcome)
    return outcomes


def run_project_tests(root: Path, config: Config, catalog: Catalog) -> list[Outcome]:
    """The project's tests, each on an empty in-memory warehouse of the project's engine
    loaded with the test's fixture rows, with the project's compiled catalog."""
    from crmseg.backends import connect

    def evaluate(
        tables: Mapping[str, pa.Table], at: datetime, names: list[str]
    ) -> dict[str, list[str]]:
        import ibis

        for name in names:
            catalog.segment(name)  # an unknown name is an error
        backend = connect(config.backend, root, memory=True)
        try:
            for name, table in tables.items():
                backend.put(name, ibis.memtable(table))
            loaded = {n: backend.canonical(n) for n in tables}
            plan = catalog.plan(loaded)
            sql = {
                s.name: backend.sql(s.spec.sql) for s in catalog.segments if s.spec.sql is not None
            }
            wide = plan.wide(loaded, at, sql, select=names)
            result = backend.execute(wide.select("customer_id", *names))
        finally:
            backend.close()
        ids = result.column("customer_id").to_pylist()
        return {
            n: [i for i, keep in zip(ids, result.column(n).to_pylist(), strict=True) if keep]
            for n in names
        }

    return run_tests(root, list(config.sources), evaluate)
