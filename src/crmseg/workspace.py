"""The facade. The CLI, the Python API and (later) the server all go through ``Workspace``.

>>> ws = Workspace.open("my-crm")          # doctest: +SKIP
>>> result = ws.run()                      # doctest: +SKIP
>>> ws.members("value.vip")[:3]            # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmseg import __version__
from crmseg.config import Config, load_config
from crmseg.errors import CrmsegError, SegmentError

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.backends.base import Backend
    from crmseg.backends.state import StateStore
    from crmseg.rules import Definition, Plan
    from crmseg.segments.catalog import Segment

Progress = Callable[[str, float], None]


def utcnow() -> datetime:
    """Now, as the naive UTC instant crmseg uses everywhere."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def to_utc(value: datetime) -> datetime:
    """A user-given instant as naive UTC (naive input is taken as UTC)."""
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


@dataclass
class RunResult:
    run_id: int
    as_of: datetime
    customers: int
    sizes: dict[str, int]
    entered: dict[str, int]
    exited: dict[str, int]
    sources: dict[str, int]
    seconds: float


@dataclass
class ValidationReport:
    sources: dict[str, int] = field(default_factory=dict)  # table -> columns found
    segments: int = 0
    traits: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Preview:
    segment: str
    size: int
    customers: int
    sample: list[str]
    english: str
    sql: str | None
    as_of: datetime

    @property
    def share(self) -> float:
        return self.size / self.customers if self.customers else 0.0


class Workspace:
    """One crmseg project: its configuration, data, definitions and state."""

    def __init__(self, root: Path, config: Config) -> None:
        self.root = root
        self.config = config
        self._backend: Backend | None = None
        self._state: StateStore | None = None

    @classmethod
    def open(cls, path: str | Path = ".") -> Workspace:
        root = Path(path).resolve()
        return cls(root, load_config(root))

    # --- resources -----------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            from crmseg.backends import connect

            self._backend = connect(self.config.backend, self.root)
        return self._backend

    @property
    def state(self) -> StateStore:
        if self._state is None:
            from crmseg.backends.state import StateStore

            path = Path(self.config.state.path)
            self._state = StateStore(path if path.is_absolute() else self.root / path)
        return self._state

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self._state is not None:
            self._state.close()
            self._state = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- definitions ---------------------------------------------------------------------

    @cached_property
    def segments(self) -> list[Segment]:
        from crmseg.segments.catalog import load_segments

        return load_segments(self.root)

    @cached_property
    def traits(self) -> list[Definition]:
        from crmseg.traits.catalog import load_traits

        return load_traits(self.root)

    def segment(self, name: str) -> Segment:
        for seg in self.segments:
            if seg.name == name:
                return seg
        import difflib

        close = difflib.get_close_matches(name, [s.name for s in self.segments], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SegmentError(f"no segment named {name!r}{hint}")

    def _plan(self, tables: dict[str, ir.Table]) -> Plan:
        from crmseg.rules import Schema, build_plan
        from crmseg.sources.loader import schema_from

        definitions = [*self.traits, *(s.definition for s in self.segments)]
        return build_plan(definitions, Schema(schema_from(tables)))

    def _sql_segments(self) -> dict[str, ir.Table]:
        return {
            s.name: self.backend.sql(s.spec.sql) for s in self.segments if s.spec.sql is not None
        }

    def _loaded_tables(self) -> dict[str, ir.Table]:
        names = self.backend.canonical_tables()
        if "customers" not in names:
            raise SegmentError("no data loaded yet: run 'crmseg run' first")
        return {n: self.backend.canonical(n) for n in names}

    # --- verbs ---------------------------------------------------------------------------

    def validate(self, progress: Progress | None = None) -> ValidationReport:
        """Check config, definitions and sources without writing anything; collect problems."""
        from crmseg.errors import RuleErrors
        from crmseg.sources.loader import plan_sources

        report = ValidationReport()
        try:
            report.segments = len(self.segments)
            report.traits = len(self.traits)
        except CrmsegError as exc:
            report.problems.extend(exc.lines())
            return report
        try:
            planned = plan_sources(self.config, self.root, self.backend, progress)
        except CrmsegError as exc:
            report.problems.extend(exc.lines())
            return report
        report.sources = {n: len(p.expr.columns) for n, p in planned.items()}
        try:
            self._plan({n: p.expr for n, p in planned.items()})
        except RuleErrors as exc:
            report.problems.extend(exc.lines())
        except CrmsegError as exc:
            report.problems.extend(exc.lines())
        return report

    def load(self, progress: Progress | None = None) -> dict[str, int]:
        """Read every source into the canonical tables (all or nothing)."""
        from crmseg.sources.loader import load_sources

        return load_sources(self.config, self.root, self.backend, progress)

    def run(
        self,
        as_of: datetime | None = None,
        select: Sequence[str] | None = None,
        progress: Progress | None = None,
        _fail_after: int | None = None,
    ) -> RunResult:
        """Load sources, compute every segment at ``as_of`` and record the run atomically."""
        started = utcnow()
        at = to_utc(as_of) if as_of else started
        plan, counts, chosen = self._prepare(select, progress)
        if progress:
            progress("computing segments", 0.55)
        return self._evaluate(plan, counts, chosen, at, started, _fail_after)

    def backfill(
        self,
        start: datetime,
        end: datetime,
        every: timedelta,
        select: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> list[RunResult]:
        """Run the catalog at each instant from ``start`` to ``end`` (inclusive) every ``every``.

        Sources load once; each run sees only the rows visible at its own instant.
        """
        if every <= timedelta(0):
            raise SegmentError("--every must be a positive duration")
        first, last = to_utc(start), to_utc(end)
        if last < first:
            raise SegmentError("--to must not be before --from")
        instants = []
        at = first
        while at <= last:
            instants.append(at)
            at += every
        plan, counts, chosen = self._prepare(select, _scaled(progress, 0.0, 0.2))
        results = []
        for i, at in enumerate(instants):
            if progress:
                progress(f"as of {at:%Y-%m-%d}", 0.2 + 0.8 * i / len(instants))
            results.append(self._evaluate(plan, counts, chosen, at, utcnow(), None))
        return results

    def _prepare(
        self, select: Sequence[str] | None, progress: Progress | None
    ) -> tuple[Plan, dict[str, int], list[str]]:
        """Check everything, then load the sources; returns the plan and what to compute."""
        from crmseg.sources.loader import materialize, plan_sources

        segments = self.segments  # definition errors surface before any work
        for name in select or ():
            self.segment(name)
        # Everything is checked before anything is written: sources, rules, SQL segments.
        planned = plan_sources(self.config, self.root, self.backend, _scaled(progress, 0, 0.6))
        plan = self._plan({n: p.expr for n, p in planned.items()})
        if "customers" in self.backend.canonical_tables():
            self._sql_segments()  # on a first load their tables do not exist yet
        counts = materialize(self.backend, planned, _scaled(progress, 0.6, 1.0))
        chosen = list(select) if select else [s.name for s in segments]
        return plan, counts, chosen

    def _evaluate(
        self,
        plan: Plan,
        counts: dict[str, int],
        chosen: list[str],
        at: datetime,
        started: datetime,
        fail_after: int | None,
    ) -> RunResult:
        import pyarrow.compute as pc

        from crmseg.backends.state import SegmentResult
        from crmseg.segments.catalog import definition_hash

        clock = time.perf_counter()
        tables = self._loaded_tables()
        wide = plan.wide(tables, at, self._sql_segments(), select=chosen)
        result = self.backend.execute(wide.select("customer_id", *chosen))
        ids = result.column("customer_id")
        by_name = {s.name: s for s in self.segments}
        results = []
        for name in chosen:
            seg = by_name[name]
            members = pc.filter(ids, result.column(name)).combine_chunks()
            text = seg.definition.text or seg.definition.sql or ""
            results.append(SegmentResult(name, definition_hash(seg.definition), text, members))
        record = self.state.record_run(
            at,
            started,
            utcnow(),
            result.num_rows,
            counts,
            results,
            __version__,
            fail_after=fail_after,
        )
        stats = self.state.segments_in_run(record.run_id)
        return RunResult(
            run_id=record.run_id,
            as_of=at,
            customers=result.num_rows,
            sizes={n: stats[n]["size"] for n in chosen},
            entered={n: stats[n]["entered"] for n in chosen},
            exited={n: stats[n]["exited"] for n in chosen},
            sources=counts,
            seconds=time.perf_counter() - clock,
        )

    def members(self, segment: str, as_of: datetime | None = None) -> list[str]:
        """Members at ``as_of`` (default: the last run), answered from history.

        Without a run at or before ``as_of`` the segment is computed on the loaded data.
        """
        self.segment(segment)
        at = to_utc(as_of) if as_of else None
        run = self.state.run_at(at)
        if run is not None and segment in self.state.segments_in_run(run.run_id):
            return self.state.members(segment, at or run.as_of)
        return self._compute_members(segment, at or utcnow())

    def _compute_members(self, segment: str, at: datetime) -> list[str]:
        tables = self._loaded_tables()
        plan = self._plan(tables)
        wide = plan.wide(tables, at, self._sql_segments(), select=[segment])
        expr = wide.filter(wide[segment]).select("customer_id").order_by("customer_id")
        return [str(v) for v in self.backend.execute(expr).column(0).to_pylist()]

    def preview(self, segment: str, as_of: datetime | None = None, sql: bool = False) -> Preview:
        """Size, share, sample members, English and (optionally) SQL, on the loaded data."""
        self.segment(segment)
        at = to_utc(as_of) if as_of else utcnow()
        tables = self._loaded_tables()
        plan = self._plan(tables)
        wide = plan.wide(tables, at, self._sql_segments(), select=[segment])
        stats = self.backend.execute(
            wide.aggregate(size=wide[segment].sum(), customers=wide.count())
        ).to_pylist()[0]
        sample_expr = (
            wide.filter(wide[segment]).select("customer_id").order_by("customer_id").limit(10)
        )
        sample = [str(v) for v in self.backend.execute(sample_expr).column(0).to_pylist()]
        text = plan.sql(segment, tables, at, self.backend.dialect) if sql else None
        return Preview(
            segment,
            int(stats["size"] or 0),
            int(stats["customers"] or 0),
            sample,
            plan.english(segment),
            text,
            at,
        )

    def explain(self, segment: str, customer_id: str, as_of: datetime | None = None) -> Any:
        """Each sub-condition's value for one customer, and the verdict."""
        self.segment(segment)
        at = to_utc(as_of) if as_of else utcnow()
        tables = self._loaded_tables()
        plan = self._plan(tables)
        return plan.explain(segment, tables, at, customer_id, self._sql_segments())


def _scaled(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    if progress is None:
        return None

    def inner(step: str, fraction: float) -> None:
        progress(step, lo + (hi - lo) * fraction)

    return inner
