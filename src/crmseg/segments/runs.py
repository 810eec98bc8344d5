"""Runs and backfills: load what changed, check it, resolve people, compute every segment at
an instant and record the result, all or nothing.

A run redoes only what its inputs require:

* sources load only when their content or mapping changed (``crmseg.sources.sync``);
* data-quality checks run when something was loaded, else the last report is reused;
* identity resolves again only when customers, identifiers or its settings changed;
* model traits fit when due and otherwise score with the recorded fit (``crmseg.models``).

What was loaded, reused or fitted is kept in the run's record (``details``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import crmseg
from crmseg.config import Config, Every, every_step
from crmseg.errors import BackendError, CrmsegError, SegmentError

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.backends.base import Backend
    from crmseg.backends.state import StateStore
    from crmseg.quality.checks import QualityReport
    from crmseg.rules import Plan
    from crmseg.segments.catalog import Segment
    from crmseg.segments.compiled import Catalog

Progress = Callable[[str, float], None]
IDENTITY = "identity"  # its record in crmseg._sources


def utcnow() -> datetime:
    """Now, as the naive UTC instant crmseg uses everywhere."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


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
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Loaded:
    """The warehouse after a load: tables to compute on and what the load did."""

    counts: dict[str, int]
    tables: dict[str, ir.Table]  # identity-resolved canonical tables
    sql: dict[str, ir.Table]  # sql: segments as person keys
    quality: QualityReport | None
    details: dict[str, Any]


@dataclass
class _IdentityStep:
    status: str  # off, reused or resolved
    tables: dict[str, ir.Table] = field(default_factory=dict)  # to write
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # crmseg._sources rows
    close: Callable[[], None] = lambda: None
    views: dict[str, Any] = field(default_factory=dict)  # name -> builder over written tables
    timings: dict[str, float] = field(default_factory=dict)


class Runner:
    """The segments stage's runs over one project's warehouse and state."""

    def __init__(
        self,
        root: Path,
        config: Config,
        backend: Backend,
        state: StateStore,
        catalog: Catalog,
    ) -> None:
        self.root = root
        self.config = config
        self.backend = backend
        self.state = state
        self.catalog = catalog

    @property
    def segments(self) -> list[Segment]:
        return self.catalog.segments

    def _chosen(self, select: Sequence[str] | None) -> list[str]:
        for name in select or ():
            self.catalog.segment(name)  # an unknown name is an error
        return list(select) if select else [s.name for s in self.segments]

    # --- verbs --------------------------------------------------------------------------------

    def run(
        self,
        as_of: datetime | None = None,
        select: Sequence[str] | None = None,
        progress: Progress | None = None,
        fail_after: int | None = None,
    ) -> RunResult:
        """Load what changed, compute the chosen segments at ``as_of`` and record the run."""
        started = utcnow()
        at = as_of or started
        chosen = self._chosen(select)

        # The new data commits only with the run: a failure anywhere leaves the old data and
        # writes no state (fits included). The warehouse commits first, the state last, so a
        # recorded run always stands on committed data; a kill between the two leaves loaded
        # data without a run, which the next run judges afresh (see ``_quality``).
        try:
            with self.state.transaction():
                with self.backend.pending():
                    loaded = self.load(at, _scaled(progress, 0.0, 0.5))
                    if progress:
                        progress("computing segments", 0.55)
                    result = self._evaluate(loaded, at, chosen, started, fail_after)
                between_commits()
        except BackendError as exc:
            culprit = self._culprit(exc, at, chosen)
            self._rolled_back()
            raise culprit from None
        except BaseException:
            self._rolled_back()
            raise
        self._committed()
        return result

    def _committed(self) -> None:
        """After a committed run: keep its fits, delete snapshots nothing refers to now."""
        from crmseg.sources import sync

        committed = getattr(self.catalog.model_provider, "committed", None)
        if callable(committed):
            committed()
        sync.cleanup(self.backend)

    def _rolled_back(self) -> None:
        """After a failed run: forget fits it made (their rows rolled back) and delete the
        snapshots its load copied, never hiding the run's own error."""
        discard = getattr(self.catalog.model_provider, "discard_new", None)
        if callable(discard):
            discard()
        _tidy(self.backend)

    def _culprit(self, exc: BackendError, at: datetime, chosen: Sequence[str]) -> CrmsegError:
        """The segment behind a failed run's query, with its file and line. The run's
        transaction is gone, so the load is repeated in a new one, each chosen segment is
        computed alone until one fails (the engine then refuses further statements), and
        everything is rolled back. Segments that need model traits are left out: trying them
        could fit models; when every other one computes, the first of them is named with
        the model traits it needs."""
        found: list[tuple[str, BackendError]] = []
        skipped: list[tuple[str, list[str]]] = []
        try:
            with self.state.transaction(), self.backend.pending():
                loaded = self.load(at)
                plan = self.catalog.plan(loaded.tables)
                for name in chosen:
                    models = plan.models_needed([name])
                    if models:
                        skipped.append((name, models))
                        continue
                    wide = plan.wide(loaded.tables, at, loaded.sql, select=[name])
                    try:
                        self.backend.execute(wide.aggregate(n=wide[name].sum()))
                    except BackendError as problem:
                        found.append((name, problem))
                        break
                alone = [n for n in chosen if n not in {m for m, _ in skipped}]
                if not found and skipped and alone:
                    # the model segments are blamed only if the rest computes together too
                    wide = plan.wide(loaded.tables, at, loaded.sql, select=alone)
                    try:
                        self.backend.execute(
                            wide.aggregate(**{f"n{i}": wide[n].sum() for i, n in enumerate(alone)})
                        )
                    except BackendError:
                        skipped.clear()
                raise _Undo()
        except _Undo:
            pass
        except CrmsegError:
            return exc
        if not found and skipped:  # the rest computes: the models these need failed
            name, models = skipped[0]
            seg = self.catalog.segment(name)
            more = len(skipped) - 1
            others = f" (and {more} more segment{'s' * (more > 1)} with models)" if more else ""
            return SegmentError(
                f"{seg.file}:{seg.line}: segment {name} cannot be computed: its model traits "
                f"({', '.join(models)}) cannot: {exc}{others}"
            )
        if not found:
            return exc
        name, why = found[0]
        seg = self.catalog.segment(name)
        return SegmentError(f"{seg.file}:{seg.line}: segment {name} cannot be computed: {why}")

    def backfill(
        self,
        start: datetime,
        end: datetime,
        every: timedelta | Every,
        select: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> list[RunResult]:
        """Run at each instant from ``start`` to ``end`` (inclusive) every ``every``.

        Sources load once; each run sees only the rows visible at its own instant and stores
        the quality report the load was judged by.
        """
        if isinstance(every, timedelta) and every <= timedelta(0):
            raise SegmentError("--every must be a positive duration")
        if end < start:
            raise SegmentError("--to must not be before --from")
        chosen = self._chosen(select)
        if isinstance(every, Every):
            instants = every.instants(start, end, self.config.timezone)
        else:
            instants = every_step(start, end, every)

        results = []
        try:
            with self.state.transaction():  # as a run: the warehouse commits first
                with self.backend.pending():
                    loaded = self.load(end, _scaled(progress, 0.0, 0.2))
                    for i, at in enumerate(instants):
                        if progress:
                            progress(f"as of {at:%Y-%m-%d}", 0.2 + 0.8 * i / len(instants))
                        results.append(self._evaluate(loaded, at, chosen, utcnow(), None))
                between_commits()
        except BaseException:
            self._rolled_back()
            raise
        self._committed()
        return results

    # --- loading ------------------------------------------------------------------------------

    def load(self, at: datetime, progress: Progress | None = None) -> Loaded:
        """Check and load what changed (call inside ``backend.pending()``).

        Everything is checked before anything is written: sources, quality, rules, SQL.
        """
        from crmseg.identity.resolve import IDENTITY_TABLES, resolved_tables
        from crmseg.sources import sync
        from crmseg.sources.normalize import PhoneBook

        backend = self.backend
        clock = _Clock()
        plan = sync.prepare(self.config, self.root, backend, _scaled(progress, 0.0, 0.3))
        try:
            details: dict[str, Any] = {"sources": plan.status(), "loaded": plan.digest()}
            if purged := plan.purged():
                details["purged"] = purged
            clock.lap("sources")
            tables = plan.tables(backend)
            phones = PhoneBook(self.config.identity.default_region)
            report, details["quality"] = self._quality(plan, tables, at, phones, progress)
            if report is not None:
                report.raise_for_errors()
            clock.lap("quality")
            if any(s.spec.refresh == "realtime" for s in self.segments):
                from crmseg.sources.streamed import ensure

                ensure(backend)  # streamed tables exist (empty) before the first item
                tables = {**tables, **_streamed_only(backend, tables)}
            self.catalog.plan(tables)  # rule errors surface before anything is written
            if "customers" in backend.canonical_tables():
                from crmseg.segments.sql import sql_tables

                sql_tables(backend, self.segments)  # their tables exist once data is loaded
            clock.lap("rules")
            step = self._identity(plan, tables, phones, _scaled(progress, 0.5, 0.8))
            details["identity"] = step.status
            if step.timings:
                details["identity_seconds"] = step.timings
            clock.lap("identity")
            try:
                if step.status == "off":
                    for name in IDENTITY_TABLES:
                        backend.drop(name)
                counts = sync.commit(
                    backend,
                    plan,
                    step.tables,
                    step.records,
                    utcnow(),
                    _scaled(progress, 0.8, 1.0),
                    views=step.views,
                )
            finally:
                step.close()
            clock.lap("writing")
        except BaseException:
            plan.discard()
            raise
        from crmseg.segments.sql import sql_tables

        loaded = {n: backend.canonical(n) for n in backend.canonical_tables()}
        details["seconds"] = clock.laps
        return Loaded(
            counts, resolved_tables(loaded), sql_tables(backend, self.segments), report, details
        )

    def _quality(
        self,
        plan: Any,
        tables: dict[str, ir.Table],
        at: datetime,
        phones: Any,
        progress: Progress | None,
    ) -> tuple[QualityReport | None, str]:
        from crmseg.quality.checks import check_quality
        from crmseg.quality.store import QualityStore

        if not self.config.quality.enabled:
            return None, "off"
        store = QualityStore(self.state)
        settings = _digest(self.config.quality.model_dump(mode="json"))
        last = self._last_details()
        # Reused only when the last recorded run judged exactly what is loaded now: a run
        # killed after the warehouse's commit leaves new data that no report has judged.
        same = last.get("loaded") == plan.digest() and last.get("quality_settings") == settings
        if not plan.changed and not plan.removed and same:
            report = store.latest()
            if report is not None:
                return report, "reused"
        previous = store.previous_event_names(at)
        report = check_quality(
            self.backend,
            self.config,
            tables,
            at,
            phones,
            previous,
            _scaled(progress, 0.3, 0.5),
            plan.nonfinite(),
        )
        return report, "checked"

    def _identity(
        self,
        plan: Any,
        tables: dict[str, ir.Table],
        phones: Any,
        progress: Progress | None,
    ) -> _IdentityStep:
        """Resolve people again when customers, identifiers or the settings changed."""
        from crmseg.identity.resolve import resolve

        ident = self.config.identity
        if not ident.enabled:
            return _IdentityStep("off")
        inputs = {
            n: {k: v for k, v in plan.records[n]["fingerprint"].items() if k != "files"}
            for n in ("customers", "identifiers")
            if n in plan.records
        }
        fingerprint = {"inputs": _digest(inputs), "config": _digest(ident.model_dump(mode="json"))}
        from crmseg.sources.sync import stored

        before = stored(self.backend).get(IDENTITY)
        if (
            before is not None
            and before["fingerprint"] == fingerprint
            and "identity_map" in self.backend.canonical_tables()
        ):
            return _IdentityStep("reused", records={IDENTITY: before})
        extra = None
        if ident.splink.enabled:
            from crmseg.identity.probabilistic import splink_links

            def extra(scratch: Any, customers: ir.Table) -> tuple[ir.Table, ir.Table]:
                return splink_links(scratch, customers, ident, phones)

        resolution = resolve(self.backend, ident, tables, phones, extra, progress)
        record = {
            "name": IDENTITY,
            "fingerprint": fingerprint,
            "snapshot": None,
            "rows": None,
            "loaded_at": None,
            "view": False,
        }
        timings = {k: round(v, 3) for k, v in resolution.timings.items()}
        return _IdentityStep(
            "resolved",
            resolution.tables,
            {IDENTITY: record},
            resolution.close,
            resolution.views,
            timings,
        )

    def _steps_folder(self) -> Path:
        """Where a run keeps its grouped scans: beside the state database."""
        return (self.root / self.config.state.path).parent / "steps"

    def _data_key(self, loaded: Loaded) -> str:
        """What the loaded tables are a function of: every source's content and settings,
        the identity settings and this version of crmseg."""
        from crmseg.sources.streamed import watermark

        ident = self.config.identity.model_dump(mode="json")
        streamed = watermark(self.backend)
        return _digest(
            [loaded.details["loaded"], ident, crmseg.__version__, self.backend.kind, streamed]
        )

    def _last_details(self) -> dict[str, Any]:
        from crmseg.segments.store import History

        last = History(self.state).last_run()
        return last.details if last is not None else {}

    # --- computing ----------------------------------------------------------------------------

    def _evaluate(
        self,
        loaded: Loaded,
        at: datetime,
        chosen: list[str],
        started: datetime,
        fail_after: int | None,
    ) -> RunResult:
        import pyarrow as pa
        import pyarrow.compute as pc

        from crmseg.quality.store import QualityStore
        from crmseg.segments.catalog import definition_hash
        from crmseg.segments.steps import StepCache
        from crmseg.segments.store import History, SegmentResult

        clock = time.perf_counter()
        laps = _Clock()
        plan = self.catalog.plan(loaded.tables)
        thresholds = _thresholds_used(plan, chosen)
        steps = StepCache(self.backend, self._steps_folder(), self._data_key(loaded))
        wide = plan.wide(loaded.tables, at, loaded.sql, select=[*chosen, *thresholds], steps=steps)
        result = self.backend.execute(wide.select("customer_id", *chosen, *thresholds))
        steps.prune()
        # Members share one dictionary (the run's customer ids): history keys them once.
        ids = result.column("customer_id").combine_chunks().cast(pa.string()).dictionary_encode()
        by_name = {s.name: s for s in self.segments}
        results = []
        for name in chosen:
            seg = by_name[name]
            members = pc.filter(ids, result.column(name).combine_chunks())
            results.append(
                SegmentResult(
                    name,
                    definition_hash(seg.definition),
                    seg.recorded,
                    members,
                    plan.english(name),
                )
            )
        laps.lap("segments")
        details = dict(loaded.details)
        status = getattr(self.catalog.model_provider, "status", None)
        if callable(status) and (models := status()):
            details["models"] = models
        values = {n: result.column(n)[0].as_py() if result.num_rows else None for n in thresholds}
        details["thresholds"] = values
        details["uses"] = {n: u for n in chosen if (u := _uses(plan, n, thresholds))}
        details["quality_settings"] = _digest(self.config.quality.model_dump(mode="json"))
        details["steps"] = steps.report
        details["seconds"] = {**details.get("seconds", {}), **laps.laps}
        history = History(self.state)
        report = loaded.quality
        with self.state.transaction():
            record = history.record_run(
                at,
                started,
                utcnow(),
                result.num_rows,
                loaded.counts,
                results,
                crmseg.__version__,
                details,
                fail_after=fail_after,
            )
            if report is not None:
                QualityStore(self.state).save(
                    record.run_id, at, report, reused=details["quality"] == "reused"
                )
        stats = history.segments_in_run(record.run_id)
        return RunResult(
            run_id=record.run_id,
            as_of=at,
            customers=result.num_rows,
            sizes={n: stats[n]["size"] for n in chosen},
            entered={n: stats[n]["entered"] for n in chosen},
            exited={n: stats[n]["exited"] for n in chosen},
            sources=loaded.counts,
            seconds=time.perf_counter() - clock,
            details=details,
        )


def _streamed_only(backend: Backend, tables: dict[str, ir.Table]) -> dict[str, ir.Table]:
    """The streamed tables a project has no source for (the plan checks rules on them)."""
    from crmseg.sources.streamed import STREAMED, stream_table

    return {
        n: backend.canonical(stream_table(n))
        for n in STREAMED
        if n not in tables and stream_table(n) in backend.canonical_tables()
    }


def _tidy(backend: Backend) -> None:
    """After a failed run: delete the snapshots its load copied (nothing committed refers to
    them), never hiding the run's own error."""
    from crmseg.sources import sync

    with contextlib.suppress(Exception):
        sync.cleanup(backend)


class _Undo(Exception):
    """Rolls back a transaction that only looked."""


def between_commits() -> None:
    """Runs after the warehouse committed and before the state does (the kill test stops
    the process here)."""


class _Clock:
    """Seconds per step of a run, kept in its record."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.laps[step] = round(now - self._last, 3)
        self._last = now


def _thresholds_used(plan: Plan, names: Sequence[str]) -> list[str]:
    """The population-wide thresholds (lifecycle cycle, ...) the chosen segments depend on."""
    from crmseg.traits.builtin import THRESHOLDS

    used = {k[1] for k in plan.closure(list(names)) if k[0] == "trait"}
    return [n for n in THRESHOLDS if n in used]


def _uses(plan: Plan, name: str, thresholds: Sequence[str]) -> list[str]:
    used = {k[1] for k in plan.closure([name]) if k[0] == "trait"}
    return [n for n in thresholds if n in used]


def _digest(body: Any) -> str:
    text = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _scaled(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    if progress is None:
        return None

    def inner(step: str, fraction: float) -> None:
        progress(step, lo + (hi - lo) * fraction)

    return inner
