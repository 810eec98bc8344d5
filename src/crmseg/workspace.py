"""The facade. The CLI, the Python API and (later) the server all go through ``Workspace``.

>>> ws = Workspace.open("my-crm")          # doctest: +SKIP
>>> result = ws.run()                      # doctest: +SKIP
>>> ws.members("value.vip")[:3]            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmseg.config import Config, Every, load_config
from crmseg.errors import CrmsegError, SegmentError, UnknownCustomerError
from crmseg.segments.runs import RunResult, utcnow

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.activation.campaigns import Campaign
    from crmseg.activation.runner import ActivationResult
    from crmseg.backends.base import Backend
    from crmseg.backends.state import StateStore
    from crmseg.privacy.forget import Forget, Forgotten
    from crmseg.rules import Definition, Plan
    from crmseg.segments.catalog import Segment
    from crmseg.segments.compiled import Catalog, LazyModels
    from crmseg.segments.governance import Finding
    from crmseg.segments.runs import Runner
    from crmseg.segments.store import History, RunRecord
    from crmseg.stream.feed import Fed
    from crmseg.stream.processor import Changes, Processor

Progress = Callable[[str, float], None]

__all__ = ["Preview", "RunResult", "ValidationReport", "Workspace", "to_utc", "utcnow"]


def to_utc(value: datetime) -> datetime:
    """A user-given instant as naive UTC (naive input is taken as UTC)."""
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


@dataclass
class ValidationReport:
    sources: dict[str, int] = field(default_factory=dict)  # table -> columns found
    segments: int = 0
    traits: int = 0
    campaigns: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Exported:
    """What ``export`` wrote."""

    path: Path
    as_of: datetime
    segments: list[str]
    rows: int


@dataclass
class Preview:
    segment: str
    size: int
    customers: int
    sample: list[str]
    english: str
    sql: str | None
    as_of: datetime
    thresholds: dict[str, Any] = field(default_factory=dict)  # lifecycle thresholds it uses
    run_id: int | None = None  # the run it was read from (None: computed on the loaded data)

    @property
    def share(self) -> float:
        return self.size / self.customers if self.customers else 0.0


class Workspace:
    """One crmseg project: its configuration, data, definitions and state.

    The facade: every verb delegates to the stage that owns it (runs, history, diff and SQL
    segments to ``crmseg.segments``, loading to ``crmseg.sources``, ...).
    """

    def __init__(self, root: Path, config: Config) -> None:
        self.root = root
        self.config = config
        self._backend: Backend | None = None
        self._state: StateStore | None = None
        self._empty_state: StateStore | None = None
        self._in_memory = False
        # segment -> the instant a live stream processor has kept it current through (the
        # server's stream worker sets it; freshness counts it like a run)
        self.stream_evaluated: dict[str, datetime] = {}

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
            from crmseg.backends import open_state

            self._state = open_state(self.config.state, self.root)
            self._empty_state = None
        return self._state

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        for store in (self._state, self._empty_state):
            if store is not None:
                store.close()
        self._state = self._empty_state = None

    def _reader(self) -> None:
        """Read-only verbs on a project that was never loaded work in memory: they must not
        create the warehouse file."""
        local = self.config.backend.kind != "postgres"  # a server database is there already
        if self._backend is None and local and not (self.root / self.config.backend.path).exists():
            from crmseg.backends import connect

            self._backend = connect(self.config.backend, self.root, memory=True)
            self._in_memory = True

    def _writer(self) -> None:
        """Verbs that load data need the real warehouse, even after a read-only verb."""
        if self._in_memory and self._backend is not None:
            self._backend.close()
            self._backend = None
            self._in_memory = False

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _read_state(self) -> StateStore:
        """The state store for reading: an empty in-memory one when nothing was ever run, so
        read-only commands never create the state file."""
        if self._state is not None:
            return self._state
        from crmseg.backends import state_exists

        if state_exists(self.config.state, self.root):
            return self.state
        if self._empty_state is None:
            from crmseg.backends.state import DuckDBState

            self._empty_state = DuckDBState(":memory:")
        return self._empty_state

    @property
    def runs_store(self) -> History:
        """Runs and membership history (``crmseg.segments.store``)."""
        from crmseg.segments.store import History

        return History(self._read_state)

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
        from crmseg.segments.catalog import find_segment

        return find_segment(self.segments, name)

    @cached_property
    def compiled(self) -> Catalog:
        """The project's definitions compiled once with its library and model traits."""
        from crmseg.segments.compiled import Catalog

        return Catalog(self.config, self.segments, self.traits, self._model_traits)

    def _plan(self, tables: dict[str, ir.Table]) -> Plan:
        return self.compiled.plan(tables)

    @cached_property
    def _model_traits(self) -> LazyModels:
        """Model traits (clv/churn/cluster) for rules that use them; imported on first use."""
        from crmseg.segments.compiled import LazyModels

        return LazyModels(self._make_fitter)

    @property
    def _fitter(self) -> Any:
        return self._model_traits.get()

    def _make_fitter(self) -> Any:
        from crmseg.models.store import FitStore
        from crmseg.models.traits import ModelTraits

        return ModelTraits(
            self.backend.execute,
            self.config.models,
            self.compiled.library,
            store=FitStore(self._read_state),
            now=utcnow,
        )

    def model_records(self, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """Recorded model fits (params, fit time, data window, metrics), newest first."""
        from crmseg.models.store import FitStore

        return FitStore(self._read_state).records(to_utc(as_of) if as_of else None)

    def trait_catalog(self, as_of: datetime | None = None) -> dict[str, Any]:
        """Built-in, user and model traits with their English, plus the lifecycle thresholds
        derived from the loaded data at ``as_of`` (default now)."""
        from crmseg.traits.builtin import FUNCTIONS, THRESHOLDS

        at = to_utc(as_of) if as_of else utcnow()
        tables = self._loaded_tables()
        plan = self._plan(tables)
        user = {d.name for d in self.traits}
        rows = [
            {
                "name": name,
                "kind": "user" if name in user else "built-in",
                "description": plan.checked[("trait", name)].defn.description,
                "expr": plan.checked[("trait", name)].defn.text,
                "english": plan.english(name),
            }
            for name in plan.traits
        ]
        rows += [
            {"name": m.name, "kind": "model", "description": m.description, "expr": None,
             "english": f"the {m.description}"}
            for m in self.compiled.library.models.values()  # with the propensity categories
        ]  # fmt: skip
        rows += [
            {"name": f"{n}({f.signature})", "kind": "function", "description": f.description,
             "expr": f.template, "english": f.description}
            for n, f in FUNCTIONS.items()
        ]  # fmt: skip
        return {
            "as_of": at,
            "traits": rows,
            "thresholds": self._thresholds(plan, tables, at, list(THRESHOLDS)),
        }

    def _thresholds(
        self, plan: Plan, tables: dict[str, ir.Table], at: datetime, names: list[str]
    ) -> dict[str, Any]:
        """Values of population-wide traits (the same for every customer) at ``at``."""
        from crmseg.traits.builtin import THRESHOLDS

        wanted = [n for n in names if n in THRESHOLDS and n in plan.traits]
        if not wanted:
            return {}
        wide = plan.wide(tables, at, select=wanted)
        rows = self.backend.execute(wide.select(*wanted).limit(1)).to_pylist()
        return dict(rows[0]) if rows else {n: None for n in wanted}

    def _sql_segments(self) -> dict[str, ir.Table]:
        """The ``sql:`` segments as tables of person keys (their SQL sees record ids)."""
        from crmseg.segments.sql import sql_tables

        return sql_tables(self.backend, self.segments)

    def _loaded_tables(self) -> dict[str, ir.Table]:
        """The loaded canonical tables, identity-resolved: customer_id is the person's key."""
        from crmseg.identity.resolve import resolved_tables

        names = self.backend.canonical_tables()
        if "customers" not in names:
            raise SegmentError("no data loaded yet: run 'crmseg run' first")
        from crmseg.sources.retention import retained

        loaded = {n: self.backend.canonical(n) for n in names}
        return resolved_tables(retained(self.config, loaded))

    # --- verbs ---------------------------------------------------------------------------

    def validate(self, progress: Progress | None = None) -> ValidationReport:
        """Check config, definitions and sources without writing anything; collect problems."""
        from crmseg.sources.loader import plan_sources

        report = ValidationReport()
        self._reader()
        try:
            report.segments = len(self.segments)
            report.traits = len(self.traits)
            report.campaigns = len(self.campaigns)
        except CrmsegError as exc:
            report.problems.extend(exc.lines())
            return report
        for finding in self.lint():
            bucket = report.problems if finding.severity == "error" else report.warnings
            bucket.append(str(finding))
        try:
            planned = plan_sources(self.config, self.root, self.backend, progress)
        except CrmsegError as exc:
            report.problems.extend(exc.lines())
            return report
        report.sources = {n: len(p.expr.columns) for n, p in planned.items()}
        if "customers" in planned and self.config.identity.enabled:
            from crmseg.identity.resolve import check_person_key

            try:  # run reports these when it resolves identities
                check_person_key(self.backend, self.config.identity, planned["customers"].expr)
            except CrmsegError as exc:
                report.problems.extend(exc.lines())
        if self.config.quality.enabled:
            from crmseg.quality.checks import non_finite_lines

            origins = {n: p.origin for n, p in planned.items()}
            counts = {n: p.nonfinite for n, p in planned.items() if p.nonfinite}
            for severity, line in non_finite_lines(self.config, origins, counts):
                (report.problems if severity == "error" else report.warnings).append(line)
        tables = {n: p.expr for n, p in planned.items()}
        try:
            self._plan(tables)
        except CrmsegError as exc:  # RuleErrors: one line per located error
            report.problems.extend(exc.lines())
        try:
            from crmseg.activation.audience import check_rules

            check_rules(self.campaigns, tables, self.compiled.plan, self.config.privacy.bases())
        except CrmsegError as exc:
            report.problems.extend(exc.lines())
        try:
            self._sql_segments()  # checkable once data has been loaded
        except CrmsegError as exc:
            report.problems.extend(exc.lines())
        return report

    def load(self, progress: Progress | None = None) -> dict[str, int]:
        """Read the sources that changed into the canonical tables (all or nothing)."""
        self._writer()
        from crmseg.sources.loader import load_sources

        return load_sources(self.config, self.root, self.backend, progress)

    @property
    def runner(self) -> Runner:
        from crmseg.segments.runs import Runner

        self._writer()
        return Runner(self.root, self.config, self.backend, self.state, self.compiled)

    def run(
        self,
        as_of: datetime | None = None,
        select: Sequence[str] | None = None,
        progress: Progress | None = None,
        _fail_after: int | None = None,
    ) -> RunResult:
        """Load what changed, compute every segment at ``as_of`` and record the run
        atomically (see ``crmseg.segments.runs``)."""
        _ = self.segments  # definition errors surface before any work
        self._finish_forget()
        at = to_utc(as_of) if as_of else None
        return self.runner.run(at, select, progress, _fail_after)

    def backfill(
        self,
        start: datetime,
        end: datetime,
        every: timedelta | Every,
        select: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> list[RunResult]:
        """Run the catalog at each instant from ``start`` to ``end`` (inclusive) every ``every``
        (an :class:`~crmseg.config.Every` steps calendar months in the project's timezone).

        Sources load once; each run sees only the rows visible at its own instant.
        """
        _ = self.segments
        self._finish_forget()
        return self.runner.backfill(to_utc(start), to_utc(end), every, select, progress)

    # --- real time -------------------------------------------------------------------------

    def processor(
        self,
        clock: Callable[[], datetime] | None = None,
        guard: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> Processor:
        """The stream processor of this project's realtime segments (``crmseg.stream``);
        ``guard`` is held around its uses of the databases (a server's lock)."""
        from crmseg.stream.processor import Processor

        self._writer()
        if "customers" not in self.backend.canonical_tables():
            raise SegmentError("no data loaded yet: run 'crmseg run' first")
        from crmseg.stream.processor import now

        return Processor(self.backend, self.state, self.compiled, self.config,
                         self._loaded_tables, self._sql_segments, clock or now,
                         guard=guard or contextlib.nullcontext)  # fmt: skip

    def stream(
        self,
        lines: Iterable[str],
        emit: Callable[[Changes], None],
        batch_size: int = 1000,
        replay: bool = False,
    ) -> Fed:
        """Feed JSON lines through the stream processor (``crmseg.stream.feed``)."""
        from crmseg.stream.feed import feed

        return feed(self.processor(), lines, self.config.timezone, emit, batch_size,
                    self.config.stream.batch_ms, replay)  # fmt: skip

    def runs(self) -> list[RunRecord]:
        """Every recorded run, oldest first, with what it loaded, reused and fitted."""
        self._reader()
        return self.runs_store.runs()

    def last_run(self) -> RunRecord | None:
        self._reader()
        return self.runs_store.last_run()

    # --- quality and identity ------------------------------------------------------------

    def quality(self, as_of: datetime | None = None, progress: Progress | None = None) -> Any:
        """Run the data-quality checks on the current sources at ``as_of``; writes nothing."""
        from crmseg.quality.checks import QualityReport, check_quality
        from crmseg.quality.store import QualityStore
        from crmseg.sources.loader import plan_sources

        at = to_utc(as_of) if as_of else utcnow()
        planned = plan_sources(self.config, self.root, self.backend, _scaled(progress, 0, 0.3))
        if not self.config.quality.enabled:
            return QualityReport(at, [])
        previous = QualityStore(self._read_state).previous_event_names(at)
        tables = {n: p.expr for n, p in planned.items()}
        nonfinite = {n: p.nonfinite for n, p in planned.items() if p.nonfinite}
        return check_quality(
            self.backend,
            self.config,
            tables,
            at,
            None,
            previous,
            _scaled(progress, 0.3, 1.0),
            nonfinite,
        )

    def quality_trend(self, limit: int = 10) -> list[dict[str, Any]]:
        """Affected rows per check over the last ``limit`` runs (stored by each run)."""
        from crmseg.quality.store import QualityStore

        return QualityStore(self._read_state).trend(limit)

    def identity(self) -> dict[str, Any]:
        """Merge statistics of the loaded data: people, merged clusters, links, blocked values."""
        from crmseg.identity.report import identity_stats

        if "customers" not in self.backend.canonical_tables():
            raise SegmentError("no data loaded yet: run 'crmseg run' first")
        return identity_stats(self.backend)

    # --- answers from history ------------------------------------------------------------

    def members(self, segment: str, as_of: datetime | None = None) -> list[str]:
        """Members at ``as_of`` (default: the segment's last run), answered from history.

        Without a run at or before ``as_of`` the segment is computed on the loaded data.
        """
        self._reader()
        self.segment(segment)
        at = to_utc(as_of) if as_of else None
        # The segment's own latest run counts: a later run that did not select it leaves its
        # intervals open, so history still answers.
        history = self.runs_store
        run = history.segment_run(segment, at)
        if run is not None:  # by default the latest: a later real-time change counts
            return history.members(segment, at or history.latest_instant(segment) or run.as_of)
        return self._compute_members(segment, at or utcnow())

    def _compute_members(self, segment: str, at: datetime) -> list[str]:
        tables = self._loaded_tables()
        plan = self._plan(tables)
        wide = plan.wide(tables, at, self._sql_segments(), select=[segment])
        expr = wide.filter(wide[segment]).select("customer_id").order_by("customer_id")
        return [str(v) for v in self.backend.execute(expr).column(0).to_pylist()]

    def _answer_instant(self, segment: str, as_of: datetime | None) -> datetime:
        """The instant preview and explain answer for: given, or the segment's last run, or
        now when it never ran."""
        if as_of is not None:
            return to_utc(as_of)
        run = self.runs_store.segment_run(segment, None)
        return run.as_of if run is not None else utcnow()

    def preview(self, segment: str, as_of: datetime | None = None, sql: bool = False) -> Preview:
        """Size, share, sample members, English and (optionally) SQL.

        At an instant the segment was run with its current definition, everything comes from
        that run's record; otherwise it is computed on the loaded data.
        """
        self._reader()
        seg = self.segment(segment)
        at = self._answer_instant(segment, as_of)
        history = self.runs_store
        run = history.segment_run(segment, at)
        if run is not None and run.as_of == at and not sql:
            stored = history.segments_in_run(run.run_id).get(segment)
            if stored is not None and stored["definition_hash"] == seg.hash and stored["english"]:
                thresholds = run.details.get("thresholds", {})
                uses = run.details.get("uses", {}).get(segment, [])
                return Preview(
                    segment,
                    int(stored["size"]),
                    int(run.customers),
                    history.members(segment, at, limit=10),
                    stored["english"],
                    None,
                    at,
                    {n: thresholds.get(n) for n in uses},
                    run.run_id,
                )
        return self._compute_preview(segment, at, sql)

    def _compute_preview(self, segment: str, at: datetime, sql: bool) -> Preview:
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
        used = [k[1] for k in plan.closure([segment]) if k[0] == "trait"]
        return Preview(
            segment,
            int(stats["size"] or 0),
            int(stats["customers"] or 0),
            sample,
            plan.english(segment),
            text,
            at,
            self._thresholds(plan, tables, at, used),
        )

    def lint(self) -> list[Finding]:
        from crmseg.segments.governance import lint

        return lint(self.segments, self.config.layers)

    def catalog(self) -> list[dict[str, Any]]:
        """Every segment with owner, layer, refresh, size at the last run, last change, usage."""
        self._reader()
        from crmseg.segments.governance import usage

        used = usage(self.root, self.segments)
        history = self.runs_store
        last = history.last_run()
        sizes = history.segments_in_run(last.run_id) if last else {}
        english = self._english_all(sizes)
        out = []
        for seg in self.segments:
            changed = history.first_seen(seg.name, seg.hash)
            out.append(
                {
                    "name": seg.name,
                    "layer": seg.layer,
                    "owner": seg.spec.owner,
                    "refresh": seg.spec.refresh,
                    "tags": list(seg.spec.tags),
                    "description": seg.spec.description,
                    "purpose": seg.spec.purpose,
                    "rule": seg.spec.rule,
                    "sql": seg.spec.sql,
                    "english": english.get(seg.name, ""),
                    "size": sizes.get(seg.name, {}).get("size"),
                    "last_run": last.as_of if last and seg.name in sizes else None,
                    "definition_hash": seg.hash,
                    "last_change": changed,
                    "changed_since_last_run": bool(
                        last
                        and seg.name in sizes
                        and sizes[seg.name]["definition_hash"] != seg.hash
                    ),
                    "used_by": used.get(seg.name, []),
                    "file": f"{seg.file}:{seg.line}",
                }
            )
        return out

    def _english_all(self, stored: dict[str, dict[str, Any]]) -> dict[str, str]:
        """English of every rule segment: as the last run recorded it when the definition is
        unchanged, else type-checked against the loaded (or planned) data."""
        out = {
            s.name: stored[s.name]["english"]
            for s in self.segments
            if s.spec.rule is not None
            and s.name in stored
            and stored[s.name]["definition_hash"] == s.hash
            and stored[s.name]["english"]
        }
        if all(s.name in out for s in self.segments if s.spec.rule is not None):
            return out
        try:
            tables = self._loaded_tables()
        except SegmentError:
            from crmseg.sources.loader import plan_sources

            tables = {
                n: p.expr for n, p in plan_sources(self.config, self.root, self.backend).items()
            }
        plan = self._plan(tables)
        return {s.name: plan.english(s.name) for s in self.segments if s.spec.rule is not None}

    def history(self, segment: str) -> list[dict[str, Any]]:
        """Size per run with entered/exited counts and whether the definition changed."""
        self._reader()
        self.segment(segment)
        rows = self.runs_store.history(segment)
        previous = None
        for row in rows:
            row["definition_changed"] = previous is not None and row["definition_hash"] != previous
            previous = row["definition_hash"]
        return rows

    def profile(self, customer_id: str, mask: bool = False) -> dict[str, Any]:
        """A customer's current segments, every entry and exit (with the run and definition
        behind it), and the source records behind the person (any of their ids finds them).
        ``mask`` masks personal data (emails, phones, names, addresses, linking values)."""
        self._reader()
        from crmseg.identity.report import source_records
        from crmseg.sources.pii import mask_fields

        records = source_records(self.backend, customer_id)
        if mask:
            records["records"] = [mask_fields(r) for r in records["records"]]
            records["links"] = [mask_fields(r, ("value",)) for r in records["links"]]
        customer_id = records["customer_key"]
        history = self.runs_store
        last = history.last_run()
        by_segment: dict[str, list[dict[str, Any]]] = {}
        for row in history.intervals(customer_id):
            by_segment.setdefault(row["segment"], []).append(row)
        current = sorted(
            seg
            for seg, rows in by_segment.items()
            if last is not None
            and any(
                r["entered_at"] <= last.as_of
                and (r["exited_at"] is None or r["exited_at"] > last.as_of)
                for r in rows
            )
        )
        keys = ("entered_at", "exited_at", "entered_run", "exited_run", "definition_hash")
        return {
            "customer_id": customer_id,
            "records": records["records"],
            "links": records["links"],
            "as_of": last.as_of if last else None,
            "current": current,
            "segments": {
                seg: {
                    "first_entered": rows[0]["entered_at"],
                    "intervals": [{k: r[k] for k in keys} for r in rows],
                }
                for seg, rows in sorted(by_segment.items())
            },
        }

    def overlap(self, segments: Sequence[str] | None = None) -> dict[str, Any]:
        """Pairwise shared members and Jaccard at the last run."""
        self._reader()
        names = list(segments) if segments else [s.name for s in self.segments]
        for name in names:
            self.segment(name)
        history = self.runs_store
        last = history.last_run()
        if last is None:
            raise SegmentError("no run yet: run 'crmseg run' first")
        pairs = {(a, b): n for a, b, n in history.overlap(names, last.as_of)}
        size = {n: pairs.get((n, n), 0) for n in names}
        matrix = {}
        for a in names:
            for b in names:
                shared = pairs.get((a, b), 0)
                union = size[a] + size[b] - shared
                matrix[(a, b)] = (shared, shared / union if union else 0.0)
        return {"as_of": last.as_of, "segments": names, "size": size, "matrix": matrix}

    def definitions(self, segment: str) -> list[dict[str, Any]]:
        """Every definition the segment ran with, and its working one if not run yet, each
        with a diff against the one before (``segments/diff.py``)."""
        from crmseg.segments.diff import definition_history

        self._reader()
        return definition_history(self.runs_store.definitions(segment), self.segment(segment))

    def reach(self, segment: str, as_of: datetime | None = None) -> dict[str, Any]:
        """Members at ``as_of`` (default: the segment's last run), and per consent channel
        how many of them may be contacted there (``segments/reach.py``)."""
        from crmseg.segments.reach import reach

        self._reader()
        self.segment(segment)
        at = self._answer_instant(segment, as_of)
        tables = self._loaded_tables()
        return reach(self.backend, self._plan(tables), tables, at, self.members(segment, at))

    def export(
        self,
        out: Path,
        segments: Sequence[str] | None = None,
        as_of: datetime | None = None,
    ) -> Exported:
        """Every membership of ``segments`` (default: all) at ``as_of`` (default: the last
        run) in one Parquet or CSV file: segment, customer_id (the person key), entered_at.
        Answered from the recorded history: each segment needs a run at or before the
        instant."""
        from crmseg.segments.export import export_format, write

        export_format(out)
        self._reader()
        names = list(dict.fromkeys(segments)) if segments else [s.name for s in self.segments]
        for name in names:
            self.segment(name)
        history = self.runs_store
        if as_of is None:
            last = history.last_run()
            if last is None:
                raise SegmentError("no run yet: run 'crmseg run' first")
            at = last.as_of
        else:
            at = to_utc(as_of)
        unrun = [n for n in names if history.segment_run(n, at) is None]
        if unrun:
            from crmseg.config import when

            more = f" (and {len(unrun) - 1} more)" if len(unrun) > 1 else ""
            raise SegmentError(
                f"segment {unrun[0]}{more} has no run at or before "
                f"{when(at, self.config.timezone)}: run it (crmseg run, or crmseg backfill for "
                "past instants) first"
            )
        rows = write(history.member_table(names, at), out)
        return Exported(out, at, names, rows)

    def check(self) -> list[Any]:
        """Every segment's configured checks against its latest run."""
        self._reader()
        from crmseg.segments.checks import evaluate

        return evaluate(self.segments, self.runs_store)

    def diff(self, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """How changed or new definitions move membership versus the last recorded ones.

        Computed on the current source data at ``as_of`` (default now); writes nothing.
        """
        self._reader()
        from crmseg.identity.resolve import resolve_with_map
        from crmseg.segments.diff import diff
        from crmseg.sources import sync

        at = to_utc(as_of) if as_of else utcnow()
        current = sync.prepare(self.config, self.root, self.backend, snapshot=False)
        tables = current.tables(self.backend)
        if self.config.identity.enabled and "identity_map" in self.backend.canonical_tables():
            idmap = self.backend.canonical("identity_map")
            tables = resolve_with_map(tables, idmap, self.config.identity.golden)
        return diff(self.compiled, self.runs_store, self.backend, tables, self._sql_segments(), at)

    # --- change control ------------------------------------------------------------------

    def _changes(self) -> Any:
        from crmseg.segments.changes import ChangeStore

        return ChangeStore(self.state)

    def propose(self, text: str, by: str) -> Any:
        """Store a proposed segment (the text of a segments file with one segment) with its
        membership impact at the last run; nothing in the project changes until approved."""
        from crmseg.segments.changes import Change, parse_proposal
        from crmseg.segments.compiled import Catalog
        from crmseg.segments.diff import member_sets

        _, proposed = parse_proposal(text)
        current = next((s for s in self.segments if s.name == proposed.name), None)
        others = [s for s in self.segments if s.name != proposed.name]
        catalog = Catalog(self.config, [*others, proposed], self.traits, self._model_traits)
        last = self.runs_store.last_run()
        if last is None:
            raise SegmentError("no run yet: run 'crmseg run' first (the impact needs data)")
        tables = self._loaded_tables()
        plan = catalog.plan(tables)  # rule errors, located in the proposal, surface here
        at = last.as_of
        after = member_sets(self.backend, plan, tables, at, self._sql_segments(), [proposed.name])
        new = after[proposed.name]
        old = set(self.members(proposed.name, at)) if current is not None else set()
        added, removed = sorted(new - old), sorted(old - new)
        impact = {"as_of": at, "before": len(old), "after": len(new), "added": len(added),
                  "removed": len(removed), "examples_added": added[:5],
                  "examples_removed": removed[:5]}  # fmt: skip
        change = Change(
            0, proposed.name, "changed" if current else "new", "pending", text,
            current.hash if current else None, proposed.hash, impact, by, utcnow(),
        )  # fmt: skip
        self._changes().add(change)
        return change

    def changes(self, status: str | None = None) -> list[Any]:
        return list(self._changes().select(status))

    def change(self, change_id: int) -> Any:
        return self._changes().get(change_id)

    def decide(self, change_id: int, approve: bool, by: str, admin: bool = False) -> Any:
        """Approve (write the definition into the project's YAML) or reject a pending change.
        The proposer cannot approve their own change unless they are an admin."""
        from crmseg.errors import ConflictError, ForbiddenError
        from crmseg.segments import changes
        from crmseg.segments.changes import parse_proposal, write_change

        store = self._changes()
        change = store.get(change_id)
        if change.status != "pending":
            raise ConflictError(f"change {change_id} was already {change.status}")
        if approve and change.proposed_by == by and not admin:
            raise ForbiddenError("another editor or an admin approves a change, not its author")
        file = None
        saved: dict[Path, str] | None = None  # the segment files before this approval wrote
        current = next((s for s in self.segments if s.name == change.segment), None)
        if approve and current is not None and current.hash == change.after_hash:
            # written by an approval that was killed before it was recorded: record it now
            file = current.file
        elif approve:
            if (current.hash if current else None) != change.before_hash:
                raise ConflictError(
                    f"segment {change.segment!r} changed since change {change_id} was "
                    "proposed: propose it again"
                )
            doc, _ = parse_proposal(change.text)
            folder = self.root / "segments"
            saved = {p: p.read_text(encoding="utf-8") for p in folder.glob("*.y*ml")}
            file = write_change(self.root, current, doc, change.text)
            written_to = self.root / file
            self._reload_definitions()
            try:
                written = self.segment(change.segment)
                if written.hash != change.after_hash:
                    raise ConflictError(f"{file} did not take the definition as proposed")
            except Exception:
                self._restore(saved, written_to)
                raise
            changes.after_write()
        with self.state.transaction():
            # decided meanwhile through another server (a shared state): that decision stands
            self.state.exclusive()
            now = store.get(change_id).status
            if now != "pending":
                if saved is not None:
                    self._restore(saved, written_to)
                raise ConflictError(f"change {change_id} was already {now}")
            store.decide(change, "approved" if approve else "rejected", by, utcnow(), file)
        return store.get(change_id)

    def _restore(self, saved: dict[Path, str], written: Path) -> None:
        """The segment files as they were before an approval wrote ``written``."""
        for path, body in saved.items():
            path.write_text(body, encoding="utf-8")
        if written not in saved:
            written.unlink(missing_ok=True)
        self._reload_definitions()

    def audit(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` entries of the audit log (who did what, with hashes)."""
        return list(self._changes().audit(limit))

    def record(self, actor: str, action: str, obj: str) -> None:
        """Add an entry to the audit log (runs, activations, keys, forgets asked by API)."""
        self._changes().log(actor, action, obj, None, None, utcnow())

    def freshness(self, now: datetime | None = None) -> list[Any]:
        """Per segment: last run, next due by its refresh, and whether it is stale (see
        ``crmseg.segments.schedule``)."""
        from datetime import timedelta

        from crmseg.segments.schedule import ScheduleStore, freshness

        at = to_utc(now) if now else utcnow()
        last = ScheduleStore(self.state).latest()
        failing = last["error"] if last and not last["ok"] else None
        grace = timedelta(minutes=self.config.schedule.grace_minutes)
        latest = self.runs_store.latest_runs()
        for name, through in self.stream_evaluated.items():  # kept current by a live stream
            if name not in latest or latest[name][1] < through:
                latest[name] = (0, through)
        return freshness(self.segments, latest, at, grace, failing)

    def watermark(self) -> dict[str, datetime | None]:
        """Per loaded table with a time column, its newest row's time (the data's edge)."""
        from crmseg.sources.model import TABLES

        out: dict[str, datetime | None] = {}
        for name in self.backend.canonical_tables():
            spec = TABLES.get(name)
            if spec is None or spec.time is None:
                continue
            table = self.backend.canonical(name)
            if spec.time in table.columns:
                out[name] = self.backend.scalar(table[spec.time].cast("timestamp").max())
        return out

    def _reload_definitions(self) -> None:
        for name in ("segments", "traits", "compiled", "campaigns"):
            self.__dict__.pop(name, None)

    def definition_files(self) -> dict[str, tuple[int, int]]:
        """Each definition file (segments, traits, campaigns) with its mtime and size: a
        long-lived process compares them to notice edits made outside it (a git pull)."""
        out = {}
        for folder in ("segments", "traits", "campaigns"):
            for path in sorted((self.root / folder).glob("*.y*ml")):
                with contextlib.suppress(OSError):  # removed meanwhile
                    st = path.stat()
                    out[str(path)] = (st.st_mtime_ns, st.st_size)
        return out

    def test(self) -> list[Any]:
        """Run the project's segment unit tests (tests/*.yml) on an in-memory warehouse."""
        from crmseg.segments.unittests import run_project_tests

        return run_project_tests(self.root, self.config, self.compiled)

    def explain(
        self, segment: str, customer_id: str, as_of: datetime | None = None, mask: bool = False
    ) -> Any:
        """Each sub-condition's value for one customer, and the verdict, at ``as_of``
        (default: the segment's last run); ``mask`` masks values read from personal
        columns."""
        self._reader()
        from crmseg.identity.report import source_records

        self.segment(segment)
        at = self._answer_instant(segment, as_of)
        tables = self._loaded_tables()
        records = source_records(self.backend, customer_id)
        if not records["records"]:
            raise UnknownCustomerError(f"no customer with id {customer_id!r} in the loaded data")
        plan = self._plan(tables)
        # Any of a person's record ids explains the person (their key).
        key = str(records["customer_key"])
        found = plan.explain(segment, tables, at, key, self._sql_segments())
        return found.masked() if mask else found

    # --- privacy -------------------------------------------------------------------------

    def lookup(self, value: str) -> list[str]:
        """The people (person keys) an id, email, phone or identifier value names."""
        from crmseg.identity.resolve import keyed_ids

        if "customers" not in self.backend.canonical_tables():
            raise SegmentError("no data loaded yet: run 'crmseg run' first")
        # forget's finder is the one place that reads every spelling of a person's contacts
        found, _ = self._forgetter().find([value])
        records = found.get(value, [])
        if not records:
            return []
        import ibis

        ids = ibis.memtable({"customer_id": records})
        loaded = {n: self.backend.canonical(n) for n in self.backend.canonical_tables()}
        keys = self.backend.execute(keyed_ids(ids, loaded)).column("customer_id").to_pylist()
        return sorted({str(k) for k in keys})

    def forget(self, asked: Sequence[str], keep_going: bool = False) -> Forgotten:
        """Forget the people these ids, emails or phones name, everywhere (see
        ``crmseg.privacy.forget``). Unknown ones stop the request unless ``keep_going``."""
        from crmseg.backends import state_exists
        from crmseg.errors import ForgetError

        if not state_exists(self.config.state, self.root):  # never ran: create nothing
            raise ForgetError("nothing is loaded yet: run `crmseg run` first")
        forget = self._forgetter()
        forget.resume()
        return forget(asked, keep_going)

    def _finish_forget(self) -> None:
        """Finish a forget that was killed midway before anything else writes."""
        from crmseg.privacy.forget import JOURNAL

        if (self.root / JOURNAL).exists():
            self._forgetter().resume()

    def _forgetter(self) -> Forget:
        from crmseg.privacy.forget import Forget
        from crmseg.segments.store import History

        outputs = ["report*.html"]
        for c in self.campaigns:
            for d in c.spec.destination:
                path = getattr(d, "path", None)
                if path:
                    outputs.append(_glob_of(path))
        state = self.state
        return Forget(
            self.backend,
            state,
            self.root,
            self.config.identity.default_region,
            outputs,
            History(state).forget,
        )

    # --- activation ----------------------------------------------------------------------

    @cached_property
    def campaigns(self) -> list[Campaign]:
        from crmseg.activation.campaigns import load_campaigns

        known = self.config.privacy.bases()
        return load_campaigns(self.root, [s.name for s in self.segments], known)

    def campaign(self, name: str) -> Campaign:
        import difflib

        from crmseg.errors import UnknownCampaignError

        for c in self.campaigns:
            if c.name == name:
                return c
        close = difflib.get_close_matches(name, [c.name for c in self.campaigns], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownCampaignError(f"no campaign named {name!r}{hint}")

    def activate(
        self, name: str, dry_run: bool = False, as_of: datetime | None = None
    ) -> ActivationResult:
        """Build a campaign's audience at ``as_of`` (default: the last run) and, unless
        ``dry_run``, record it in the send log and deliver it to its destinations."""
        return self._activate([self.campaign(name)], dry_run, as_of)[0]

    def activate_due(
        self, dry_run: bool = False, as_of: datetime | None = None
    ) -> list[ActivationResult]:
        """Activate every campaign due at ``as_of`` (send window), highest priority first."""
        at = self._activation_instant(as_of)
        from crmseg.activation.store import ActivationStore

        store = ActivationStore(self.state)
        due = [c for c in self.campaigns if c.due(at, store.last_activation(c.name, at))]
        due.sort(key=lambda c: (-c.spec.priority, c.name))
        return self._activate(due, dry_run, at) if due else []

    def _activation_instant(self, as_of: datetime | None) -> datetime:
        if as_of is not None:
            return to_utc(as_of)
        last = self.runs_store.last_run()
        return last.as_of if last else utcnow()

    def _activate(
        self, targets: list[Campaign], dry_run: bool, as_of: datetime | None
    ) -> list[ActivationResult]:
        from crmseg.activation.runner import Context, activate

        if not dry_run:
            self._finish_forget()
        at = self._activation_instant(as_of)
        context = Context(
            root=self.root,
            backend=self.backend,
            tables=self._loaded_tables(),
            state=self.state,
            members=lambda segment: self.members(segment, at),
            compile=self.compiled.plan,
            purposes=self.config.privacy.bases(),
        )
        return activate(targets, self.campaigns, context, at, utcnow(), dry_run)

    def activations(self, campaign: str | None = None) -> list[dict[str, Any]]:
        """Recorded activations (with their funnels), oldest first."""
        from crmseg.activation.store import ActivationStore

        if campaign is not None:
            self.campaign(campaign)
        return ActivationStore(self.state).activations(campaign)

    # --- measurement ---------------------------------------------------------------------

    def _measure_facts(self) -> Any:
        """Orders, messages and subscriptions up to the latest run (the data's known end)."""
        from crmseg.measurement.data import load_facts

        last = self.runs_store.last_run()
        if last is None:
            raise SegmentError("no run yet: run 'crmseg run' first")
        return load_facts(self.backend.execute, self._loaded_tables(), last.as_of)

    def measure_outcomes(
        self, window_days: int = 30, segments: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Per run and segment: members and their conversion, revenue, AOV, repeat, churn,
        unsubscribe and complaint rates and messages in the ``window_days`` after the run.
        Stored in the state database (``measure_outcomes``) and returned."""
        from crmseg.measurement.outcomes import compute_outcomes

        names = list(segments) if segments else [s.name for s in self.segments]
        for name in names:
            self.segment(name)
        facts = self._measure_facts()
        return compute_outcomes(self.state, facts, names, window_days, computed_at=utcnow())

    def measure_campaigns(
        self, window_days: int = 14, campaigns: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Treatment vs holdout lift (conversion, revenue per member) of every campaign in the
        send log, with 95% intervals and p-values; stored (``measure_lift``) and returned."""
        from crmseg.activation.store import ActivationStore
        from crmseg.measurement.campaigns import measure_campaigns

        log = ActivationStore(self.state).send_log()
        known = set(log.column("campaign").to_pylist())
        for name in campaigns or ():
            if name not in known:
                raise SegmentError(f"campaign {name!r} has no sends in the send log")
        return measure_campaigns(
            self.state, self._measure_facts(), log, window_days, campaigns, utcnow()
        )

    def power(
        self,
        size: int,
        baseline: float,
        holdout_share: float = 0.1,
        alpha: float = 0.05,
        power: float = 0.8,
        effect: float | None = None,
    ) -> Any:
        """Minimum detectable effect of an audience, and the size needed for ``effect``."""
        from crmseg.measurement.power import power_report

        return power_report(size, baseline, holdout_share, alpha, power, effect)

    def measure_power(
        self, holdout_share: float = 0.1, window_days: int = 30, alpha: float = 0.05,
        power: float = 0.8,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Per segment at the last run: the lift a holdout test could detect, from its size
        and its latest complete conversion rate (segments too small to measure are flagged)."""
        from crmseg.measurement.outcomes import stored_outcomes
        from crmseg.measurement.power import power_report

        last = self.runs_store.last_run()
        if last is None:
            raise SegmentError("no run yet: run 'crmseg run' first")
        sizes = self.runs_store.segments_in_run(last.run_id)
        rows = [r for r in stored_outcomes(self.state, window_days) if r["complete"]]
        if not rows:
            rows = [r for r in self.measure_outcomes(window_days) if r["complete"]]
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:
            latest[r["segment"]] = r  # rows are in as_of order
        total = sum(r["converters"] for r in latest.values())
        members = sum(r["members"] for r in latest.values())
        fallback = total / members if members else 0.05
        out = []
        for name, info in sizes.items():
            rate = latest[name]["conversion_rate"] if name in latest else None
            base = rate if rate and 0 < rate < 1 else min(max(fallback, 0.001), 0.999)
            result = power_report(int(info["size"]), base, holdout_share, alpha, power)
            out.append({"segment": name, **result.as_dict()})
        return out

    def measure_cohorts(self, months: int = 12) -> dict[str, Any]:
        """Acquisition cohorts by first-order month: retention matrix and revenue."""
        from crmseg.measurement.cohorts import cohorts

        return cohorts(self._measure_facts(), months)

    def _trait_values(self, names: Sequence[str], at: datetime) -> Any:
        """customer_id and the given traits of every customer at ``at`` (an Arrow table);
        model outputs scored in a table of their own (``clv.value_12m``, ``propensity.*``)
        come straight from it, others (``churn.risk``) through the plan."""
        from crmseg.rules import Definition
        from crmseg.rules.defs import Derived, Later

        tables = self._loaded_tables()
        models = self.compiled.library.models
        if names and all(n in models for n in names):
            outputs = self._model_traits(list(names), tables, at)
            table = outputs[names[0]]
            if not isinstance(table, Derived) and all(outputs[n] is table for n in names):
                table = table() if isinstance(table, Later) else table
                return self.backend.execute(table.select("customer_id", *names))
        plan = self._plan(tables)
        # names the plan does not select by name (model traits) as hidden traits
        hidden = {n: f"__value_{i}" for i, n in enumerate(names) if n not in plan.traits}
        if hidden:
            extra = [Definition(h, "trait", text=n) for n, h in hidden.items()]
            plan = self.compiled.plan(tables, extra)
        cols = [hidden.get(n, n) for n in names]
        wide = plan.wide(tables, at, select=cols)
        return self.backend.execute(
            wide.select("customer_id", **{n: wide[c] for n, c in zip(names, cols, strict=True)})
        )

    def suggest(
        self,
        target: str,
        as_of: datetime | None = None,
        horizon: str | None = None,
        settings: Any = None,
        write: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Rules over traits and attributes that pick out customers with ``target`` (a
        built-in outcome or a rule), measured on held-out customers; ``write`` saves them
        to ``segments/suggested.yml`` for review. ``as_of`` defaults to the latest run's."""
        from crmseg.models import suggest as S
        from crmseg.rules import Definition
        from crmseg.segments.suggested import Proposed, write_suggested

        self._reader()
        if as_of is None:
            last = self.last_run()
            as_of = last.as_of if last is not None else utcnow()
        at = to_utc(as_of)
        wanted = S.outcome(
            target,
            S.parse_horizon(horizon) if horizon else None,
            self.config.models.churn_horizon_days,
        )
        tables = self._loaded_tables()
        chosen = settings.attributes if settings is not None else ()
        attrs = S.attribute_definitions(dict(tables["customers"].schema().items()), chosen)
        # a campaign's conversion is no rule: only rule targets are compiled
        goal = (
            [Definition(S.TARGET, "trait", text=wanted.rule, file=S.SOURCE)] if wanted.rule else []
        )
        plan = self.compiled.plan(tables, [*goal, *attrs])
        sends = None
        if wanted.campaign is not None:
            from crmseg.activation.store import ActivationStore

            sends = ActivationStore(self.state).send_log()
        result = S.suggest(
            plan,
            tables,
            self.backend.execute,
            wanted,
            at,
            [d.text or "" for d in attrs],
            settings,
            progress,
            sends,
        )
        S.described(partial(self.compiled.plan, tables), tables, self.backend.execute, result)
        out = result.as_dict()
        out["written"] = []
        if write:
            out["written"] = write_suggested(
                self.root,
                wanted.key,
                [Proposed(s.rule, S.evidence(s, result)) for s in result.suggestions],
            )
            self._reload_definitions()
        return out

    def measure_transitions(
        self, trait: str = "lifecycle.stage", run_a: int | None = None, run_b: int | None = None
    ) -> dict[str, Any]:
        """Customers by ``trait`` value at run A (default: the run before the last) against
        run B (default: the last run): who moved from loyal to at risk."""
        from crmseg.measurement.transitions import matrix

        runs = {r.run_id: r for r in self.runs_store.runs()}
        ordered = list(runs.values())
        if len(ordered) < 2 and (run_a is None or run_b is None):
            raise SegmentError("transitions need two runs: run 'crmseg backfill' first")
        a = runs.get(run_a) if run_a is not None else ordered[-2]
        b = runs.get(run_b) if run_b is not None else ordered[-1]
        if a is None or b is None:
            raise SegmentError(f"no run with id {run_a if a is None else run_b}")
        before, after = self._trait_values([trait], a.as_of), self._trait_values([trait], b.as_of)
        return {
            "trait": trait,
            "from_run": a.run_id,
            "to_run": b.run_id,
            "from_as_of": a.as_of,
            "to_as_of": b.as_of,
            **matrix(before, after, trait),
        }

    def measure_stability(self, segments: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Members kept and Jaccard similarity between consecutive runs of each segment."""
        from crmseg.measurement.transitions import stability

        names = list(segments) if segments else [s.name for s in self.segments]
        for name in names:
            self.segment(name)
        return stability(self.state, names)

    def measure_review(
        self, holdout_share: float = 0.1, min_size: int = 100, window_days: int = 14
    ) -> list[dict[str, Any]]:
        """Segments unused, tiny, unmeasurable or unstable, and campaigns without measurable
        lift, each with a suggested action (uses stored lift; measures campaigns if none)."""
        from crmseg.measurement.campaigns import stored_lift
        from crmseg.measurement.review import review

        lift = [r for r in stored_lift(self.state) if r["window_days"] == window_days]
        if not lift:
            lift = self.measure_campaigns(window_days)
        findings = review(
            self.catalog(),
            self.measure_stability(),
            self.measure_power(holdout_share),
            lift,
            min_size=min_size,
        )
        return [f.as_dict() for f in findings]

    def report(
        self, out: str | Path | None = None, window_days: int = 14, progress: Progress | None = None
    ) -> Path:
        """Write the self-contained HTML report (default: ``report.html`` in the project)."""
        from crmseg.measurement.report import build_report

        path = Path(out) if out is not None else self.root / "report.html"
        return build_report(self, path, window_days, progress)


def _scaled(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    if progress is None:
        return None

    def inner(step: str, fraction: float) -> None:
        progress(step, lo + (hi - lo) * fraction)

    return inner


def _glob_of(template: str) -> str:
    """A destination's output path template as a glob of every file it may have written
    (``{campaign}`` and ``{as_of}`` are any text; incremental lists add ``.add``/``.remove``)."""
    import re

    path = re.sub(r"\{(campaign|as_of)\}", "*", template.replace("{{", "{").replace("}}", "}"))
    stem, dot, suffix = path.rpartition(".")
    if not dot:
        return path if path.endswith("*") else f"{path}*"
    return f"{stem}.{suffix}" if stem.endswith("*") else f"{stem}*.{suffix}"
