"""One plan per run: all traits and segments as columns of one per-customer wide table.

Every distinct aggregate of every definition becomes one column, computed by conditional
aggregation in one grouped scan per related table; consent and sequences take one extra
pass each; traits and segments are then columns over that table, in dependency order.

Each grouped scan is a :class:`Step`. By default the steps are parts of the one expression;
a caller may pass a :class:`Steps` to evaluate them on their own (the segments stage
materialises them, which keeps the engine's peak memory to one step, and updates the ones
that allow it from the last instant's result instead of scanning everything again).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Protocol, TypeVar

import ibis
import ibis.expr.types as ir

from crmseg.errors import (
    Location,
    ModelError,
    RuleError,
    RuleErrors,
    RuleSyntaxError,
    RuleTypeError,
)
from crmseg.rules import ast as A
from crmseg.rules.compile import (
    KEY,
    ZERO_WHEN_EMPTY,
    Compiler,
    agg_metric,
    attr_col,
    consent_col,
    did_agg,
    seg_col,
    trait_col,
    ts,
)
from crmseg.rules.defs import Definition, Derived, Later, Library, ModelTrait, Schema
from crmseg.rules.parser import parse
from crmseg.rules.types import Checked, Checker, Key, Type, time_column

if TYPE_CHECKING:
    from crmseg.rules.explain import Explanation


def _def_error(d: Definition, msg: str) -> RuleTypeError:
    return RuleTypeError(msg, Location(d.file, d.line, d.column))


@dataclass
class _Needs:
    """What the wide table must compute for a set of definitions."""

    attrs: set[str] = field(default_factory=set)
    aggs: list[A.Agg] = field(default_factory=list)
    consent: set[str] = field(default_factory=set)
    seqs: list[A.SeqR] = field(default_factory=list)
    models: set[str] = field(default_factory=set)

    def add(self, node: A.Node) -> None:
        for n in A.walk(node):
            match n:
                case A.ModelRef(name=nm):
                    self.models.add(nm)
                case A.Attr(col=c):
                    self.attrs.add(c)
                case A.Agg() if n not in self.aggs:
                    self.aggs.append(n)
                case A.Did():
                    a = did_agg(n)
                    if a not in self.aggs:
                        self.aggs.append(a)
                case A.Consent(channel=ch):
                    self.consent.add(ch)
                case A.SeqR() if n not in self.seqs:
                    self.seqs.append(n)


@dataclass(frozen=True)
class Step:
    """One grouped scan of the wide table: per customer (keyed by ``KEY``), columns over one table.

    ``build`` computes it from some of ``visible``'s rows (all of them, or only some
    customers' rows: a customer's columns read only that customer's rows). When
    ``incremental``, a customer's columns depend on the instant only through which rows are
    visible (``time`` at or before it) and which fall in each look-back of ``windows``
    (seconds): between two instants they change only for customers with a row whose time
    crosses one of those bounds."""

    name: str  # the table, or consent / sequences
    key: str  # what it computes (definitions, columns and schema), for caches
    source: ir.Table  # every row with a customer, dates as timestamps, at any time
    visible: ir.Table  # the rows knowable at the instant
    time: str | None
    windows: tuple[int, ...]
    incremental: bool
    build: Callable[[ir.Table], ir.Table]
    # other steps of the evaluation read the same rows (see _shared): an update can read
    # once the rows of every customer that crossed one of the group's look-backs, keeping
    # the columns in ``holds``, and each step recomputes its own customers from those
    shared: bool = False
    group_windows: tuple[int, ...] = ()
    holds: tuple[str, ...] = ()

    def reads(self) -> frozenset[str]:
        """The columns of ``visible`` that ``build`` reads."""
        import ibis.expr.operations as ops

        rel = self.visible.op()
        expr = self.build(self.visible)
        return frozenset(f.name for f in expr.op().find(ops.Field) if f.rel == rel)


class Steps(Protocol):
    """Evaluates a step at an instant to a table of the same columns."""

    def __call__(self, step: Step, as_of: datetime) -> ir.Table: ...


class _Joins:
    """Per-customer tables (keyed by ``KEY``) for the wide table, joined at once: one join
    chain compiles to one SELECT, where a join per table nested one SELECT in the next (the
    500k demo catalog's final query: 41k -> 36k characters, compiled in 0.6 s, not 0.75 s)."""

    def __init__(self) -> None:
        self.parts: list[tuple[ir.Table, list[str]]] = []
        self.then: dict[str, Callable[[ir.Value], ir.Value]] = {}  # column -> its final form
        self.steps: list[tuple[Step, list[str]]] = []  # to evaluate

    def step(
        self, step: Step, cols: list[str], then: Callable[[ir.Value], ir.Value] | None = None
    ) -> None:
        """Join ``cols`` of ``step``, once evaluated, each then in the form ``then`` gives."""
        self.steps.append((step, cols))
        if then is not None:
            self.then.update(dict.fromkeys(cols, then))

    def evaluate(self, run: Steps, as_of: datetime) -> None:
        """Evaluate the steps in order, those over the same rows as a group (see
        :func:`_shared`)."""
        for step, (_, cols) in zip(_shared([s for s, _ in self.steps]), self.steps, strict=True):
            self.parts.append((run(step, as_of), cols))
        self.steps.clear()

    def add(self, g: ir.Table, cols: list[str]) -> None:
        """Join ``cols`` of a table already made."""
        self.parts.append((g, cols))

    def apply(self, t: ir.Table) -> ir.Table:
        """``t`` left-joined to every table, then each column in its final form."""
        if not self.parts:
            return t
        j: ir.Table = t
        for i, (g, cols) in enumerate(self.parts):
            g = g.select(g[KEY].name(f"__g{i}"), *cols)
            j = j.left_join(g, t[KEY] == g[f"__g{i}"])
        out = j.select(*t.columns, *(c for _, cols in self.parts for c in cols))
        if self.then:
            out = out.mutate(**{c: f(out[c]) for c, f in self.then.items()})
        return out


def _shared(steps: Sequence[Step]) -> list[Step]:
    """``steps``, those of them that carry over instants and read the same rows (a table's
    chunks, its window aggregates and sequences) marked ``shared`` with the group's
    look-backs and columns: an update then reads the rows of every customer any of them
    recomputes once, and each finds its own customers among those."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, s in enumerate(steps):
        if s.incremental and s.time is not None:
            groups.setdefault((s.source.op(), s.time), []).append(i)
    out = list(steps)
    for (_, time), members in groups.items():
        if len(members) < 2:
            continue
        group = [steps[i] for i in members]
        windows = tuple(sorted({w for s in group for w in s.windows}))
        reads = set().union(*(s.reads() for s in group))
        holds = tuple(sorted({"customer_id", str(time), *reads}))
        for i, s in zip(members, group, strict=True):
            out[i] = replace(s, shared=True, group_windows=windows, holds=holds)
    return out


def _zero(v: ir.Value) -> ir.Value:
    """A count or sum over no rows: 0."""
    return v.fill_null(0)


def _flag(v: ir.Value) -> ir.Value:
    """A count as a boolean (no row: false)."""
    return v.fill_null(0) > 0


def inline(step: Step, as_of: datetime) -> ir.Table:
    """The default :class:`Steps`: a step stays a part of the expression that uses it."""
    return step.build(step.visible)


def step_over(
    name: str,
    rows: ir.Table,
    time: str | None,
    as_of: datetime,
    build: Callable[[ir.Table], ir.Table],
    what: object,
    windows: Sequence[int] = (),
    incremental: bool = False,
) -> Step:
    """A step over ``rows`` (every row with a customer) at ``as_of``; ``what`` (with the
    rows' schema) identifies what it computes."""
    visible = rows if time is None else rows.filter(rows[time] <= ts(as_of))
    digest = hashlib.sha256(repr((name, what, str(rows.schema()), time)).encode())
    return Step(
        name=name,
        key=digest.hexdigest()[:20],
        source=rows,
        visible=visible,
        time=time,
        windows=tuple(sorted(set(windows))),
        incremental=incremental,
        build=build,
    )


# Per-customer model outputs for a set of model trait names at as_of: per name a table with
# customer_id and a column of that name (several names may share one table, or one Later
# that makes it), or a Derived model the plan scores from its own trait columns. Grouped
# scans go through the Steps.
ModelProvider = Callable[
    [Sequence[str], Mapping[str, ir.Table], datetime, Steps],
    Mapping[str, "ir.Table | Later | Derived"],
]


# Row expressions that read the instant itself (not only through visibility and windows).
_READS_NOW = ("days_since", "hours_since")
T = TypeVar("T")

# Aggregates per grouped scan. DuckDB keeps every group's states in one row of its hash
# table: past a few dozen states the rows outgrow the caches, and two scans of half the
# width each took 5.4 s where one took 6.8 s (55 aggregates, 10M orders, 500k customers).
WIDEST = 32


def _chunks(items: Sequence[T], most: int) -> list[Sequence[T]]:
    """``items`` in the fewest runs of at most ``most``, as even in length as they can be."""
    count = -(-len(items) // most)
    size, longer = divmod(len(items), count) if count else (0, 0)
    starts = [i * size + min(i, longer) for i in range(count + 1)]
    return [items[a:b] for a, b in itertools.pairwise(starts)]


# Tables whose rows show that a customer exists; order_items follow their orders.
ACTIVITY = ("orders", "events", "messages", "consent", "subscriptions", "tickets", "reviews")
# The instant at which steps that read every row regardless of time are kept.
EVER = datetime(1970, 1, 1)


def _existing(t: ir.Table, firsts: Sequence[str], as_of: datetime) -> ir.Table:
    """``t`` without the customers who do not exist yet at ``as_of``: one without
    ``signup_at`` exists from their first row in any activity table; one with no row in any
    (a lead never contacted) has nothing to date them by and exists at every instant."""
    seen = functools.reduce(operator.or_, [t[c] <= ts(as_of) for c in firsts])
    never = functools.reduce(operator.and_, [t[c].isnull() for c in firsts])
    return t.filter(seen | never).drop(*firsts)


def _instant_free(node: A.Node | None) -> bool:
    if node is None:
        return True
    for n in A.walk(node):
        if isinstance(n, A.Now | A.TraitRef | A.Attr | A.ModelRef | A.SegRef | A.PopFunc):
            return False
        if isinstance(n, A.Func) and n.fn in _READS_NOW:
            return False
    return True


def model_col(name: str) -> str:
    return f"__m_{name}"


class Plan:
    """Type-checked definitions, ready to compile into one wide table.

    ``model_provider`` computes model traits (``clv.*``, ``churn.*``, ...) when a definition
    being computed uses them; plans that do not mention them never call it.
    """

    def __init__(
        self,
        checked: Mapping[Key, Checked],
        schema: Schema,
        model_provider: ModelProvider | None = None,
    ) -> None:
        self.checked = dict(checked)
        self.schema = schema
        self.model_provider = model_provider
        self.segments: list[str] = [k[1] for k in checked if k[0] == "segment"]
        self.traits: list[str] = [k[1] for k in checked if k[0] == "trait"]
        # stable internal names for every distinct aggregate / sequence of the whole plan
        everything = _Needs()
        for c in self.checked.values():
            if c.node is not None:
                everything.add(c.node)
        self._agg_names = {a: f"__a{i}" for i, a in enumerate(everything.aggs)}
        self._seq_names = {s: f"__q{i}" for i, s in enumerate(everything.seqs)}

    # dependencies ---------------------------------------------------------------------------

    def key(self, name: str) -> Key:
        if ("segment", name) in self.checked:
            return ("segment", name)
        if ("trait", name) in self.checked:
            return ("trait", name)
        raise KeyError(f"no segment or trait named {name!r}")

    def closure(self, names: Sequence[str] | None) -> list[Key]:
        """The definitions needed for ``names`` (all when None), dependencies first.

        "All" leaves out built-in traits that need fitted models: those are computed only
        when named or used."""
        roots = (
            [k for k in self.checked if not self._builtin_model_user(k)]
            if names is None
            else [self.key(n) for n in names]
        )
        out: list[Key] = []
        seen: set[Key] = set()

        def visit(k: Key) -> None:
            if k in seen:
                return
            seen.add(k)
            for d in sorted(self.checked[k].deps):
                visit(d)
            out.append(k)

        for r in roots:
            visit(r)
        return out

    def _builtin_model_user(self, k: Key) -> bool:
        c = self.checked[k]
        if not (c.defn.file or "").startswith("<builtin:"):
            return False
        return bool(self.models_read(k[1]))

    def models_read(self, name: str) -> set[str]:
        """The model traits (``clv.p_alive``, ...) ``name`` reads, through other definitions."""
        return {
            n.name
            for d in self.closure([name])
            if (node := self.checked[d].node) is not None
            for n in A.walk(node)
            if isinstance(n, A.ModelRef)
        }

    def levels(self, keys: Sequence[Key]) -> list[list[Key]]:
        level: dict[Key, int] = {}
        for k in keys:  # keys come dependencies first
            deps = self.checked[k].deps
            level[k] = 1 + max((level[d] for d in deps), default=-1)
        out: list[list[Key]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for k in keys:
            out[level[k]].append(k)
        return out

    def models_needed(self, select: Sequence[str] | None = None) -> list[str]:
        """The model traits the definitions of ``select`` (all when None) depend on."""
        needs = _Needs()
        for k in self.closure(select):
            node = self.checked[k].node
            if node is not None:
                needs.add(node)
        return sorted(needs.models)

    def _needed_by(self, keys: Sequence[Key], group: str | None) -> str:
        """Which chosen segments use the model group's traits, with where they are defined."""
        users = []
        for k in keys:
            used = self.models_needed([k[1]]) if k[0] == "segment" else []
            if any(group is None or m.startswith(f"{group}.") for m in used):
                d = self.checked[k].defn
                users.append(f"{k[1]} ({d.file}:{d.line})" if d.file else k[1])
        if not users:
            return "needed by a built-in trait"
        more = f" and {len(users) - 3} more" if len(users) > 3 else ""
        return f"needed by {', '.join(users[:3])}{more}"

    # the wide table -------------------------------------------------------------------------

    def wide(
        self,
        tables: Mapping[str, ir.Table],
        as_of: datetime,
        sql_segments: Mapping[str, ir.Table] | None = None,
        select: Sequence[str] | None = None,
        extra: Mapping[str, A.Node] | None = None,
        models: Mapping[str, ir.Table] | None = None,
        steps: Steps | None = None,
    ) -> ir.Table:
        """One Ibis expression: customer_id, one column per trait, one non-null boolean
        column per segment. ``extra`` adds internal columns (used by explain); ``models``
        gives model trait tables (default: asked from the plan's model provider); ``steps``
        evaluates the grouped scans (default: they stay parts of the expression)."""
        keys = self.closure(select)
        needs = _Needs()
        for k in keys:
            node = self.checked[k].node
            if node is not None:
                needs.add(node)
        for node in (extra or {}).values():
            needs.add(node)
        run = steps or inline
        try:
            outputs = self._model_outputs(tables, as_of, needs, models, run)
        except ModelError as exc:
            raise ModelError(f"{exc}; {self._needed_by(keys, exc.group)}") from None
        # Models scored in SQL read trait columns: those traits come first.
        derived = {n: v for n, v in outputs.items() if isinstance(v, Derived)}
        first = self.closure(sorted({t for d in derived.values() for t in d.needs}))
        for k in first:
            node = self.checked[k].node
            if node is not None:
                needs.add(node)

        t = self._base(tables, as_of, needs)
        joins = _Joins()
        firsts = [] if self.schema.dated else self._first_activity(joins, tables, run)
        self._aggregates(joins, tables, as_of, needs)
        self._consent(joins, tables, as_of, needs)
        self._sequences(joins, tables, as_of, needs)
        joins.evaluate(run, as_of)
        self._models(joins, outputs)  # after the scans: scoring may reuse the rows they read
        t = joins.apply(t)
        if firsts:
            t = _existing(t, firsts, as_of)
        t, sql_cols = self._sql(t, keys, sql_segments or {})

        def lookup_in(table: Callable[[], ir.Table]) -> Callable[[A.Node], ir.Value]:
            def lookup(n: A.Node) -> ir.Value:
                tb = table()
                match n:
                    case A.Attr(col=c):
                        return tb[attr_col(c)]
                    case A.TraitRef(name=nm):
                        return tb[trait_col(nm)]
                    case A.SegRef(name=nm):
                        return tb[seg_col(nm)]
                    case A.Consent(channel=ch):
                        return tb[consent_col(ch)]
                    case A.Agg():
                        return tb[self._agg_names[n]]
                    case A.Did(negated=neg):
                        cnt = tb[self._agg_names[did_agg(n)]]
                        return cnt == 0 if neg else cnt >= 1
                    case A.SeqR():
                        return tb[self._seq_names[n]]
                    case A.ModelRef(name=nm):
                        return tb[model_col(nm)]
                raise TypeError(f"unexpected reference {type(n).__name__}")

            return lookup

        lookup = lookup_in(lambda: t)

        comp = Compiler(lookup, as_of)
        done: set[Key] = set()

        def column(k: Key, compiler: Compiler) -> tuple[str, ir.Value]:
            c = self.checked[k]
            if k[0] == "trait":
                assert c.node is not None
                return trait_col(k[1]), compiler(c.node)
            if c.node is None:
                return seg_col(k[1]), t[sql_cols[k[1]]]
            return seg_col(k[1]), compiler(c.node).fill_null(False)

        def compute(chosen: Sequence[Key]) -> None:
            nonlocal t
            for level in self.levels(chosen):
                todo = [k for k in level if k not in done]
                done.update(todo)
                population = [k for k in todo if self._population(k)]
                if population:
                    # Window functions copy every column of their input: evaluate the
                    # population-wide definitions on a narrow copy (the key and what they
                    # read) and join their columns back once.
                    need: set[str] = set()
                    for k in population:
                        node = self.checked[k].node
                        assert node is not None
                        need |= self._reads(node)
                    side = t.select(KEY, *[c for c in t.columns if c in need])
                    narrow = Compiler(lookup_in(partial(_same, side)), as_of)
                    made = dict(column(k, narrow) for k in population)
                    wide = side.mutate(**made)
                    picked = wide.select(*made, __p=wide[KEY])
                    t = self._join_on(t, picked, "__p", list(made))
                cols = dict(column(k, comp) for k in todo if k not in population)
                if cols:
                    t = t.mutate(**cols)

        if derived:
            compute(first)
            t = t.mutate(
                **{
                    model_col(n): d.build(lambda name: t[trait_col(name)])
                    for n, d in derived.items()
                }
            )
        compute(keys)
        if extra:
            t = t.mutate(**{name: comp(node) for name, node in extra.items()})
        out: dict[str, ir.Value] = {"customer_id": t[KEY]}
        for kind, name in keys:
            out[name] = t[trait_col(name) if kind == "trait" else seg_col(name)]
        for name in extra or {}:
            out[name] = t[name]
        return t.select(**out)

    def _reads(self, node: A.Node) -> set[str]:
        """The wide-table columns an expression reads."""
        out: set[str] = set()
        for n in A.walk(node):
            match n:
                case A.Attr(col=c):
                    out.add(attr_col(c))
                case A.TraitRef(name=nm):
                    out.add(trait_col(nm))
                case A.SegRef(name=nm):
                    out.add(seg_col(nm))
                case A.Consent(channel=ch):
                    out.add(consent_col(ch))
                case A.Agg() if n in self._agg_names:
                    out.add(self._agg_names[n])
                case A.Did():
                    out.add(self._agg_names[did_agg(n)])
                case A.SeqR() if n in self._seq_names:
                    out.add(self._seq_names[n])
                case A.ModelRef(name=nm):
                    out.add(model_col(nm))
        return out

    def _population(self, k: Key) -> bool:
        node = self.checked[k].node
        return node is not None and any(isinstance(n, A.PopFunc) for n in A.walk(node))

    def _base(self, tables: Mapping[str, ir.Table], as_of: datetime, needs: _Needs) -> ir.Table:
        c = tables["customers"]
        preds = [c.customer_id.notnull()]
        if "signup_at" in c.columns:  # customers who sign up after as_of do not exist yet
            preds.append(c.signup_at.isnull() | (c.signup_at <= ts(as_of)))
        c = c.filter(*preds)
        cols: dict[str, ir.Value] = {KEY: c.customer_id.cast("string")}
        for a in sorted(needs.attrs):
            v = c[a]
            cols[attr_col(a)] = v.cast("timestamp") if v.type().is_date() else v
        return c.select(**cols)

    def _first_activity(
        self, joins: _Joins, tables: Mapping[str, ir.Table], run: Steps
    ) -> list[str]:
        """For customers without ``signup_at``: their first row in each activity table, as
        columns of the wide table (see :func:`_existing`). Every row counts, whatever the
        instant, so one scan per table serves every instant of a backfill, and the next run
        over the same data keeps it (kept at the fixed instant :data:`EVER`)."""
        c = tables["customers"]
        if "signup_at" in c.columns:
            c = c.filter(c.signup_at.isnull())
        unknown = c.select(unknown_id=c.customer_id.cast("string")).distinct()
        cols: list[str] = []
        for name in ACTIVITY:
            if name not in tables:
                continue
            rows = self._rows(name, tables)
            time = self._time(name, rows)
            if time is None:
                continue
            rows = rows.semi_join(unknown, rows.customer_id.cast("string") == unknown.unknown_id)
            col = f"__first_{name}"

            def build(src: ir.Table, time: str = time, col: str = col) -> ir.Table:
                key = src.customer_id.cast("string").name(KEY)
                return src.group_by(key).aggregate(**{col: src[time].min()})

            step = step_over(f"{name}.first", rows, None, EVER, build, ("first", time), (), True)
            joins.add(run(step, EVER), [col])
            cols.append(col)
        return cols

    def _rows(self, name: str, tables: Mapping[str, ir.Table]) -> ir.Table:
        """A related table's rows with a customer, dates read as timestamps."""
        src = tables[name]
        casts = {k: src[k].cast("timestamp") for k in src.columns if src[k].type().is_date()}
        if casts:
            src = src.mutate(**casts)
        return src.filter(src.customer_id.notnull())

    def _time(self, name: str, src: ir.Table) -> str | None:
        time = time_column(name, self.schema)
        return time if time is not None and time in src.columns else None

    def _step(
        self,
        name: str,
        part: str,
        tables: Mapping[str, ir.Table],
        as_of: datetime,
        build: Callable[[ir.Table], ir.Table],
        aggs: Sequence[A.Agg] = (),
        incremental: bool = False,
        windows: Sequence[int] = (),
        defines: object = None,
    ) -> Step:
        rows = self._rows(name, tables)
        columns = sorted((self._agg_names[a], repr(a)) for a in aggs)
        incremental = incremental and all(_instant_free(a.where) for a in aggs)
        return step_over(
            name if part == "" else f"{name}.{part}",
            rows,
            self._time(name, rows),
            as_of,
            build,
            (columns, defines),
            [*windows, *(a.within.seconds for a in aggs if a.within)],
            incremental,
        )

    def _join_on(self, t: ir.Table, g: ir.Table, key: str, cols: Sequence[str]) -> ir.Table:
        """``t`` with ``cols`` of ``g`` (one row per customer, keyed by ``key``)."""
        j = t.left_join(g, t[KEY] == g[key])
        return j.select(*t.columns, *cols)

    def _join(self, t: ir.Table, g: ir.Table, cols: Sequence[str]) -> ir.Table:
        g = g.rename({"__g": KEY})
        j = t.left_join(g, t[KEY] == g["__g"])
        return j.select(*t.columns, *cols)

    def _aggregates(
        self, joins: _Joins, tables: Mapping[str, ir.Table], as_of: datetime, needs: _Needs
    ) -> None:
        by_table: dict[str, list[A.Agg]] = {}
        for a in needs.aggs:
            by_table.setdefault(a.table, []).append(a)
        for name, aggs in by_table.items():
            time = time_column(name, self.schema)
            plain = [a for a in aggs if a.fn not in A.SPECIAL_AGGS]

            def grouped(
                src: ir.Table, plain: Sequence[A.Agg] = plain, time: str | None = time
            ) -> ir.Table:
                row = Compiler(_row_lookup(src), as_of)
                metrics = {self._agg_names[a]: agg_metric(a, src, time, as_of, row)
                           for a in plain}  # fmt: skip
                return src.group_by(src.customer_id.cast("string").name(KEY)).aggregate(**metrics)

            # Aggregates whose filter reads the instant itself get a scan of their own, so
            # the others can still be carried from instant to instant. So do distinct
            # counts: beside other aggregates DuckDB keeps a set per group and goes slower
            # (1.6 s of a 4.8 s scan of 10M orders; 0.6 s on their own).
            carried = [a for a in plain if _instant_free(a.where)]
            parts = (
                ("", [a for a in carried if a.fn != "count_distinct"]),
                ("distinct", [a for a in carried if a.fn == "count_distinct"]),
                ("instant", [a for a in plain if a not in carried]),
            )
            # Every chunk has all of the table's look-backs: they recompute the same customers.
            back = [a.within.seconds for a in plain if a.within]
            for part, group in parts:
                for i, chunk in enumerate(_chunks(group, WIDEST)):
                    build = partial(grouped, plain=chunk)
                    at = ".".join(p for p in (part, str(i + 1) if i else "") if p)
                    step = self._step(name, at, tables, as_of, build, chunk, True, back)
                    joins.step(step, [self._agg_names[a] for a in chunk])
            special = [a for a in aggs if a.fn in A.SPECIAL_AGGS]
            if special:
                # Window aggregates sort rows: give the window only the columns they read, in
                # a grouped scan of their own, so the other aggregates never pass through it.
                used = {"customer_id", *(a.col for a in special if a.col)}
                used.update(c.col for a in special if a.where for c in A.walk(a.where)
                            if isinstance(c, A.Col))  # fmt: skip
                if time is not None and any(a.within for a in special):
                    used.add(time)

                def windowed(
                    src: ir.Table,
                    special: list[A.Agg] = special,
                    used: set[str] = used,
                    time: str | None = time,
                ) -> ir.Table:
                    narrow, more = self._windowed(src.select(*sorted(used)), special, time, as_of)
                    key = narrow.customer_id.cast("string").name(KEY)
                    return narrow.group_by(key).aggregate(**more)

                step = self._step(name, "windows", tables, as_of, windowed, special, True)
                joins.step(step, [self._agg_names[a] for a in special])
            for a in aggs:
                if a.fn in ZERO_WHEN_EMPTY:
                    joins.then[self._agg_names[a]] = _zero

    def _windowed(
        self, src: ir.Table, aggs: Sequence[A.Agg], time: str | None, as_of: datetime
    ) -> tuple[ir.Table, dict[str, ir.Value]]:
        """Aggregates that look at several rows of a customer, as window columns on the same
        scan: ``mode`` (most frequent value; ties: the smallest value) and the gaps in days
        between consecutive rows (``median_gap``; ``last_gap``, from the latest time to the
        latest earlier one). Rows outside the aggregate's where/within form their own
        window partition and are not aggregated. Aggregates over the same rows (column,
        where, within) share their window columns, so ``median_gap`` and ``last_gap`` of one
        column sort the rows once."""
        row = Compiler(_row_lookup(src), as_of)
        group_of: dict[tuple[object, ...], int] = {}
        for a in aggs:
            group_of.setdefault((a.col, a.where, a.within), len(group_of))
        keys: dict[str, ir.Value] = {}
        for (col, where, within), g in group_of.items():
            assert isinstance(col, str)
            conds = [src[col].notnull()]
            if where is not None:
                conds.append(row(where).fill_null(False))  # type: ignore[arg-type]
            if within is not None:
                assert time is not None
                conds.append(src[time] >= ts(as_of - timedelta(seconds=within.seconds)))  # type: ignore[attr-defined]
            keys[f"__w{g}k"] = functools.reduce(operator.and_, conds)
        src = src.mutate(**keys)
        first: dict[str, ir.Value] = {}
        for a in aggs:
            assert a.col is not None
            g = group_of[(a.col, a.where, a.within)]
            v, k = src[a.col], src[f"__w{g}k"]
            part = [src.customer_id, k]
            if a.fn == "mode":
                first[f"__w{g}c"] = v.count().over(ibis.window(group_by=[*part, v]))
            elif f"__w{g}g" not in first:
                secs = v.epoch_seconds()
                lag = secs.lag().over(ibis.window(group_by=part, order_by=v))
                first[f"__w{g}g"] = (secs - lag).cast("float64") / 86_400.0
                first[f"__w{g}t"] = v.max().over(ibis.window(group_by=part))
        src = src.mutate(**first)
        second = {
            f"__w{g}m": src[f"__w{g}c"]
            .max()
            .over(ibis.window(group_by=[src.customer_id, src[f"__w{g}k"]]))
            for (_c, _w, _d), g in group_of.items()
            if f"__w{g}c" in src.columns
        }
        if second:
            src = src.mutate(**second)
        metrics: dict[str, ir.Value] = {}
        for a in aggs:
            assert a.col is not None
            g = group_of[(a.col, a.where, a.within)]
            v, k = src[a.col], src[f"__w{g}k"]
            if a.fn == "mode":
                metric = v.min(where=k & (src[f"__w{g}c"] == src[f"__w{g}m"]))
            elif a.fn == "median_gap":
                # Spark cannot take median(where=): filter by nulling instead
                metric = ibis.ifelse(k, src[f"__w{g}g"], ibis.null("float64")).median()
            else:
                metric = src[f"__w{g}g"].max(where=k & (v == src[f"__w{g}t"]))
            metrics[self._agg_names[a]] = metric
        return src, metrics

    def _model_outputs(
        self,
        tables: Mapping[str, ir.Table],
        as_of: datetime,
        needs: _Needs,
        models: Mapping[str, ir.Table] | None,
        run: Steps,
    ) -> dict[str, ir.Table | Later | Derived]:
        """Each needed model trait: a table to join (customer_id and the value) or a model
        the plan scores itself from trait columns (:class:`Derived`)."""
        if not needs.models:
            return {}
        names = sorted(needs.models)
        out: dict[str, ir.Table | Later | Derived] = dict(models or {})
        if any(n not in out for n in names):
            if self.model_provider is None:
                raise ValueError(f"model traits {', '.join(names)} need a model provider")
            out.update(self.model_provider(names, tables, as_of, run))
        return {n: out[n] for n in names}

    def _models(self, joins: _Joins, outputs: Mapping[str, ir.Table | Later | Derived]) -> None:
        """Join the model tables (derived models are columns added later)."""
        by_table: dict[int, tuple[ir.Table | Later, list[str]]] = {}
        for n, m in outputs.items():
            if isinstance(m, Derived):
                continue
            entry = by_table.setdefault(id(m), (m, []))
            entry[1].append(n)
        for made, cols in by_table.values():
            m = made() if isinstance(made, Later) else made
            key = {KEY: m.customer_id.cast("string")}
            g = m.select(**key, **{model_col(c): m[c] for c in cols})
            joins.add(g, [model_col(c) for c in cols])

    def _consent(
        self, joins: _Joins, tables: Mapping[str, ir.Table], as_of: datetime, needs: _Needs
    ) -> None:
        if not needs.consent:
            return
        chans = sorted(needs.consent)

        def latest(cs: ir.Table) -> ir.Table:
            cs = cs.filter(cs.channel.isin(chans))
            if "purpose" in cs.columns:  # rows with a purpose are consent for that purpose
                cs = cs.filter(cs.purpose.isnull())
            # latest row per customer and channel; on a tie, opted_out wins (the safe answer)
            w = ibis.window(
                group_by=[cs.customer_id, cs.channel],
                order_by=[cs.updated_at.desc(), cs.status.desc()],
            )
            cs = cs.mutate(__rn=ibis.row_number().over(w))
            cs = cs.filter(cs["__rn"] == 0)
            metrics = {
                consent_col(ch): cs.count(where=(cs.channel == ch) & (cs.status == "opted_in"))
                for ch in chans
            }
            return cs.group_by(cs.customer_id.cast("string").name(KEY)).aggregate(**metrics)

        # a customer's latest row per channel changes only when a newer one becomes visible
        step = self._step("consent", "", tables, as_of, latest, (), True, (), chans)
        joins.step(step, [consent_col(ch) for ch in chans], _flag)

    def _sequences(
        self, joins: _Joins, tables: Mapping[str, ir.Table], as_of: datetime, needs: _Needs
    ) -> None:
        if not needs.seqs:
            return
        # A customer's sequences change only when an event becomes visible, or an event's
        # time crosses the first event's look-back or the end of a negated window.
        bounds = {s.within.seconds for s in needs.seqs if s.negated}
        bounds |= {s.first_within.seconds for s in needs.seqs if s.first_within is not None}
        build = partial(self._seq, needs, as_of)
        defines = sorted((self._seq_names[s], repr(s)) for s in needs.seqs)
        step = self._step(
            "events", "sequences", tables, as_of, build, (), True, sorted(bounds), defines
        )
        joins.step(step, [self._seq_names[s] for s in needs.seqs], _flag)

    def _seq(self, needs: _Needs, as_of: datetime, ev: ir.Table) -> ir.Table:
        firsts = sorted({s.first for s in needs.seqs})
        seconds = sorted({s.second for s in needs.seqs})
        a = ev.filter(ev.name.isin(firsts))
        a = a.select(__g=a.customer_id.cast("string"), __an=a.name, __at=a.occurred_at).distinct()
        b = ev.filter(ev.name.isin(seconds))
        b = b.select(__bk=b.customer_id.cast("string"), __bn=b.name, __bt=b.occurred_at)
        b = b.distinct()
        span = ibis.interval(seconds=max(s.within.seconds for s in needs.seqs))
        j = a.left_join(
            b, [a["__g"] == b["__bk"], b["__bt"] >= a["__at"], b["__bt"] <= a["__at"] + span]
        )
        # per 'a' occurrence: the earliest following occurrence of each second event
        nxt = {f"__n{i}": j["__bt"].min(where=j["__bn"] == nm) for i, nm in enumerate(seconds)}
        per_a = j.group_by(["__g", "__an", "__at"]).aggregate(**nxt)
        metrics: dict[str, ir.Value] = {}
        for s in needs.seqs:
            nb = per_a[f"__n{seconds.index(s.second)}"]
            at = per_a["__at"]
            cond = per_a["__an"] == s.first
            if s.first_within is not None:
                cond &= at >= ts(as_of - timedelta(seconds=s.first_within.seconds))
            end = at + ibis.interval(seconds=s.within.seconds)
            if s.negated:  # the window has fully passed and holds no second event
                cond &= at <= ts(as_of - timedelta(seconds=s.within.seconds))
                cond &= nb.isnull() | (nb > end)
            else:
                cond &= nb <= end
            metrics[self._seq_names[s]] = per_a.count(where=cond)
        return per_a.group_by(per_a["__g"].name(KEY)).aggregate(**metrics)

    def _sql(
        self, t: ir.Table, keys: Sequence[Key], sql_segments: Mapping[str, ir.Table]
    ) -> tuple[ir.Table, dict[str, str]]:
        cols: dict[str, str] = {}
        for i, (kind, name) in enumerate(keys):
            if kind != "segment" or self.checked[(kind, name)].defn.sql is None:
                continue
            if name not in sql_segments:
                raise ValueError(f"sql segment {name!r} needs its table in sql_segments")
            s = sql_segments[name]
            col = f"__sql{i}"
            g = s.select(**{KEY: s.customer_id.cast("string")}).distinct()
            g = g.mutate(**{col: ibis.literal(True)})
            t = self._join(t, g, [col])
            t = t.mutate(**{col: t[col].fill_null(False)})
            cols[name] = col
        return t, cols

    # other views ----------------------------------------------------------------------------

    def sql(
        self,
        name: str | None,
        tables: Mapping[str, ir.Table],
        as_of: datetime,
        dialect: str,
        sql_segments: Mapping[str, ir.Table] | None = None,
    ) -> str:
        """The SQL of the whole plan (or of one segment/trait and its dependencies)."""
        if dialect == "pyspark":
            _ = ibis.pyspark  # registers the backend's compile options
        expr = self.wide(tables, as_of, sql_segments, None if name is None else [name])
        from crmseg.backends.sql import to_sql

        return to_sql(expr, dialect)

    def english(self, name: str) -> str:
        from crmseg.rules.english import sentence

        c = self.checked[self.key(name)]
        if c.node is None:
            return f"customers returned by the SQL query of {name}"
        return sentence(c.node, c.defn.kind, self)

    def explain(
        self,
        name: str,
        tables: Mapping[str, ir.Table],
        as_of: datetime,
        customer_id: str,
        sql_segments: Mapping[str, ir.Table] | None = None,
    ) -> Explanation:
        from crmseg.rules.explain import explain

        return explain(self, name, tables, as_of, customer_id, sql_segments)


def _same(table: ir.Table) -> ir.Table:
    return table


def _row_lookup(src: ir.Table) -> Callable[[A.Node], ir.Value]:
    def lookup(n: A.Node) -> ir.Value:
        if isinstance(n, A.Col):
            return src[n.col]
        raise TypeError(f"unexpected {type(n).__name__} in a where condition")

    return lookup


# --- building a plan ---------------------------------------------------------------------------


def _cycles(checked: Mapping[Key, Checked]) -> list[tuple[Key, list[Key]]]:
    """Each reference cycle once, as (definition to blame, path)."""
    out: list[tuple[Key, list[Key]]] = []
    state: dict[Key, int] = {}  # 1 = on the stack, 2 = done
    stack: list[Key] = []
    seen_cycles: set[frozenset[Key]] = set()

    def visit(k: Key) -> None:
        state[k] = 1
        stack.append(k)
        for d in sorted(checked[k].deps):
            if d not in checked:
                continue
            if state.get(d) == 1:
                path = [*stack[stack.index(d) :], d]
                if frozenset(path) not in seen_cycles:
                    seen_cycles.add(frozenset(path))
                    out.append((d, path))
            elif d not in state:
                visit(d)
        stack.pop()
        state[k] = 2

    for k in checked:
        if k not in state:
            visit(k)
    return out


def _check_all(
    defs: Sequence[Definition],
    schema: Schema,
    library: Library | None = None,
    absent: Mapping[str, str] | None = None,
) -> tuple[dict[Key, Checked], list[RuleError]]:
    errors: list[RuleError] = []
    parsed: dict[Key, A.Node | None] = {}
    by_key: dict[Key, Definition] = {}
    for d in defs:
        k: Key = (d.kind, d.name)
        if k in by_key:
            errors.append(_def_error(d, f"{d.kind} {d.name!r} is defined twice"))
            continue
        by_key[k] = d
        if d.kind == "segment" and d.sql is not None:
            if d.text is not None:
                errors.append(_def_error(d, f"segment {d.name!r} has both rule and sql"))
            parsed[k] = None
            continue
        if d.text is None or not d.text.strip():
            what = "rule" if d.kind == "segment" else "expr"
            errors.append(_def_error(d, f"{d.kind} {d.name!r} has no {what}"))
            continue
        try:
            parsed[k] = parse(d.text, file=d.file, line=d.line, column=d.column)
        except RuleSyntaxError as e:
            errors.append(e)
    names = {d.name for d in by_key.values()}
    both = {n for n in names if ("trait", n) in by_key and ("segment", n) in by_key}
    for n in sorted(both):
        errors.append(_def_error(by_key[("segment", n)], f"{n!r} is both a trait and a segment"))
    customers = schema.tables.get("customers", {})
    for (kind, n), d in by_key.items():
        if kind == "trait" and n in customers:
            errors.append(_def_error(d, f"trait {n!r} has the name of a customers column"))

    checked: dict[Key, Checked] = {}
    busy: set[str] = set()
    traits = [k[1] for k in by_key if k[0] == "trait"]
    segments = [k[1] for k in by_key if k[0] == "segment"]

    def trait_type(name: str) -> Type:
        k: Key = ("trait", name)
        if k in checked:
            return checked[k].type
        if name in busy or k not in parsed:
            return "any"  # a cycle (reported below) or a trait that did not parse
        busy.add(name)
        run(k)
        busy.discard(name)
        return checked[k].type

    checker = Checker(schema, trait_type, traits, segments, library, absent)

    def run(k: Key) -> None:
        node = parsed[k]
        if node is None:
            checked[k] = Checked(by_key[k], None, "bool")
            return
        c, errs = checker.check(by_key[k], node)
        checked[k] = c
        errors.extend(errs)

    for k in by_key:
        if k in parsed and k not in checked:
            run(k)
    for blame, path in _cycles(checked):
        msg = "reference cycle: " + " -> ".join(n for _, n in path)
        errors.append(_def_error(by_key[blame], msg))
    # keep the caller's order: traits first then segments, each as defined
    ordered = {k: checked[k] for k in by_key if k in checked}
    return ordered, errors


def build_plan(
    definitions: Sequence[Definition],
    schema: Schema,
    builtins: Library | None = None,
    models: Mapping[str, ModelTrait] | None = None,
    model_provider: ModelProvider | None = None,
) -> Plan:
    """Parse and type-check every definition; raise RuleErrors listing all problems.

    ``builtins``: the built-in traits, functions and model traits rules may use, with their
    English (``crmseg.traits.library(config)`` is the standard set); None for none.
    ``models``: replaces the library's model traits."""
    lib = Library() if builtins is None else builtins
    if models is not None:
        lib = replace(lib, models=models)
    defs = list(definitions)
    absent: dict[str, str] = {}
    if lib.traits:
        pool, absent = _with_builtins(defs, schema, lib)
        defs = [*pool, *defs]
    checked, errors = _check_all(defs, schema, lib, absent)
    if errors:
        raise RuleErrors(errors)
    ordered = {k: v for k, v in checked.items() if k[0] == "trait"}
    ordered.update({k: v for k, v in checked.items() if k[0] == "segment"})
    return Plan(ordered, schema, model_provider)


def _with_builtins(
    defs: list[Definition], schema: Schema, library: Library
) -> tuple[list[Definition], dict[str, str]]:
    """The built-in traits the data supports, minus those the user overrides, and the
    others with what each needs (``{"margin_total": "orders.margin"}``).

    A built-in with alternatives (several definitions of one name) falls back to the next
    when the data lacks what one needs; one without is dropped, and so are its dependents."""
    user = {d.name for d in defs if d.kind == "trait"}
    customers = schema.tables.get("customers", {})
    options: dict[str, list[Definition]] = {}
    for b in library.traits:
        if b.name not in user and b.name not in customers:
            options.setdefault(b.name, []).append(b)
    absent: dict[str, str] = {}
    while options:
        pool = [alts[0] for alts in options.values()]
        checked, errors = _check_all(pool, schema, library, absent)
        bad = {e.location.file for e in errors}
        failed = {k[1] for k, c in checked.items() if c.node is None} | {
            d.name for d in pool if f"<builtin:{d.name}>" in bad
        }
        if not failed:
            break
        for name in failed:
            options[name].pop(0)
            if not options[name]:
                del options[name]
                c = checked.get(("trait", name))
                if c is not None and c.lacks is not None:
                    absent[name] = c.lacks
    return [alts[0] for alts in options.values()], absent
