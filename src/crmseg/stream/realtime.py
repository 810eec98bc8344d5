"""The ``refresh: realtime`` segments, compiled once for the stream.

They are computed by the batch plan itself (the same wide table), restricted to the people a
batch touched, so stream and batch cannot disagree on what a rule means. Beside membership the
same query gives each rule's parts (the reasons of a change) and, per person, the next instant
at which time alone may change their membership:

* every duration the rule's closure reads (``within``, literals such as ``now - 30d``, the
  thresholds of ``days_since``/``hours_since`` compared with numbers) is an offset, taken
  both ways;
* every timestamp of the person's rows in the tables the closure reads (and of their
  customer record), plus each offset (and a microsecond more, for inclusive bounds), is a
  candidate;
* the next check is the earliest candidate after the instant evaluated.

Rules whose time-driven changes cannot be bounded that way (population-wide ranks and
medians, model scores, ``days_since`` compared with a computed value, ``sql:`` segments) are
*periodic*: they are re-evaluated over everyone every ``stream.sweep_seconds`` as well.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from crmseg.rules import ast as A

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa

    from crmseg.rules import Plan

NEXT = "__next"  # the column of the next check instant
PERSON = "__person"  # the fast path's column of each row's person number (the processor's)
_CMP = ("<", "<=", ">", ">=", "=", "!=")
_UNIT = {"days_since": 86_400, "hours_since": 3_600}
_BY_EVENTS = (A.Did, A.SeqR)


@dataclass(frozen=True)
class Part:
    """One top-level condition of a segment's rule: its column and its text."""

    segment: str
    column: str
    text: str
    node: A.Node


class Realtime:
    def __init__(self, plan: Plan, names: Sequence[str]) -> None:
        self.plan = plan
        self.names = list(names)
        self.parts: dict[str, list[Part]] = {}
        self.offsets: set[int] = {0}
        self.exact: list[str] = []  # per touched person, and exactly when time may change it
        self.local: list[str] = []  # per touched person, and every sweep_seconds for everyone
        self.population: list[str] = []  # every sweep_seconds for everyone only
        read: set[str] = {"customers"}
        # per table, the timestamps whose passing may change membership: its time column,
        # the columns the rules read, and when a customer record begins
        self.stamps: dict[str, set[str]] = {"customers": {"signup_at"}}
        # per table, how far back (seconds) the exact segments ever look: rows older than
        # that before the start can never count again (infinite: all of a person's rows)
        self.horizon: dict[str, float] = {"customers": math.inf}
        for i, name in enumerate(self.names):
            self.parts[name] = _parts(plan, name, i)
            kind, found = _classify(plan, name)
            {"exact": self.exact, "local": self.local, "population": self.population}[kind].append(
                name
            )
            if kind == "exact":
                self.offsets |= found
                read |= _tables(plan, name)
                for table, column in referenced(plan, name):
                    self.stamps.setdefault(table, set()).add(column)
                for table, seconds in _reach(plan, name).items():
                    self.horizon[table] = max(self.horizon.get(table, 0.0), seconds)
        if not plan.schema.dated:  # undated people exist from their first activity anywhere
            from crmseg.rules.plan import ACTIVITY

            read |= set(ACTIVITY)
            self.horizon.update(dict.fromkeys(ACTIVITY, math.inf))
        self.read = read
        from crmseg.sources.model import TABLES

        for table in read:
            spec = TABLES.get(table)
            if spec is not None and spec.time is not None:
                self.stamps.setdefault(table, set()).add(spec.time)

    def steps(self) -> list[int]:
        """The offsets in microseconds, each also a microsecond later (a bound the rule
        includes ends just after it), sorted."""
        return sorted({s for o in self.offsets for s in (o * 1_000_000, o * 1_000_000 + 1)})

    def columns(self) -> list[str]:
        return [p.column for ps in self.parts.values() for p in ps]

    def evaluate(
        self,
        tables: Mapping[str, ir.Table],
        at: datetime,
        keys: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
        sql: Mapping[str, ir.Table] | None = None,
        checks: bool = True,
    ) -> ir.Table:
        """customer_id, each segment's membership, its parts' values and (with ``checks``)
        the next check of the exact segments at ``at``; for ``keys`` only when given."""
        chosen = list(names) if names is not None else self.names
        if keys is not None:
            tables = restrict(tables, keys)
        extra = {p.column: p.node for n in chosen for p in self.parts[n]}
        wide = self.plan.wide(tables, at, sql, select=chosen, extra=extra)
        wide = wide.select("customer_id", *chosen, *extra)
        if not checks:
            return wide
        import ibis

        nxt = self._next(tables, at)
        if nxt is None:
            return wide.mutate(**{NEXT: ibis.null("timestamp")})
        # an outer join: someone who exists only later (a future signup, a first row yet to
        # come) is not in the wide table, but has a next check
        j = wide.outer_join(nxt, wide.customer_id == nxt["__k"])
        return j.select(
            customer_id=ibis.coalesce(j.customer_id, j["__k"]),
            **{c: j[c] for c in wide.columns if c != "customer_id"},
            **{NEXT: j[NEXT]},
        )

    def _next(self, tables: Mapping[str, ir.Table], at: datetime) -> ir.Table | None:
        """Per person, the earliest candidate instant after ``at`` (see the module): for each
        timestamp, the smallest offset that takes it past ``at``, then the earliest of all."""
        import ibis

        if not self.exact:
            return None  # nothing scheduled: the periodic sweeps keep the others
        lit = ibis.literal(at, type="timestamp")
        steps = self.steps()
        parts = []
        for name in sorted(self.read):
            t = tables.get(name)
            if t is None:
                continue
            types = t.schema()
            wanted = sorted(self.stamps.get(name, ()))
            stamps = [c for c in wanted if c in types and types[c].is_temporal()]
            if not stamps:
                continue
            metrics: dict[str, ir.Value] = {}
            for c in stamps:
                col = t[c].cast("timestamp")
                gap = lit.delta(col, unit="microsecond")  # at - the timestamp
                step = ibis.cases(*[(gap < s, ibis.literal(s, type="int64")) for s in steps])
                metrics[f"m{len(metrics)}"] = (col + step.as_interval("us")).min()
            g = t.group_by(__k=t.customer_id.cast("string")).aggregate(**metrics)
            parts.append(g.select("__k", **{NEXT: ibis.least(*[g[m] for m in metrics])}))
        if not parts:
            return None
        u = ibis.union(*parts) if len(parts) > 1 else parts[0]
        return u.group_by("__k").aggregate(**{NEXT: u[NEXT].min()})

    def run(
        self,
        execute: object,
        tables: Mapping[str, ir.Table],
        at: datetime,
        keys: Sequence[str] | None = None,
        names: Sequence[str] | None = None,
        sql: Mapping[str, ir.Table] | None = None,
    ) -> pa.Table:
        assert callable(execute)
        result: pa.Table = execute(self.evaluate(tables, at, keys, names, sql))
        return result


def restrict(tables: Mapping[str, ir.Table], keys: Sequence[str]) -> dict[str, ir.Table]:
    """Each table with a customer_id cut to the rows of ``keys`` (person keys)."""
    import ibis
    import pyarrow as pa

    who = ibis.memtable(pa.table({"__k": pa.array(list(keys), pa.string())}))
    return {
        n: t.filter(t.customer_id.cast("string").isin(who["__k"])) if "customer_id" in t.columns
        else t
        for n, t in tables.items()
    }  # fmt: skip


def _parts(plan: Plan, name: str, index: int) -> list[Part]:
    """The rule's top-level conditions: the operands of its outermost and (or or)."""
    c = plan.checked[plan.key(name)]
    if c.node is None:
        return []
    text = c.defn.text or ""
    nodes = _flatten(c.node)
    if len(nodes) == 1:
        nodes = [c.node]
    out = []
    for j, n in enumerate(nodes):
        span = n.span
        piece = text[span.start : span.end] if span.end > span.start else ""
        if not piece:
            from crmseg.rules.parser import render

            piece = render(n)
        out.append(Part(name, f"__part_{index}_{j}", " ".join(piece.split()), n))
    return out


def _flatten(n: A.Node) -> list[A.Node]:
    if isinstance(n, A.Binary) and n.op in ("and", "or"):
        out = []
        for side in (n.left, n.right):
            if isinstance(side, A.Binary) and side.op == n.op:
                out.extend(_flatten(side))
            else:
                out.append(side)
        return out
    return [n]


def _closure_nodes(plan: Plan, name: str) -> list[A.Node] | None:
    out: list[A.Node] = []
    for k in plan.closure([name]):
        node = plan.checked[k].node
        if node is None:  # an sql: segment: nothing to read the times from
            return None
        out.append(node)
    return out


def _classify(plan: Plan, name: str) -> tuple[str, set[int]]:
    """How the stream keeps ``name`` current: ``exact`` (with the durations, in seconds and
    both ways, at which time may change it), ``local`` (a person's value is their own, but
    when time changes it is unknown) or ``population`` (it ranks people against everyone)."""
    roots = _closure_nodes(plan, name)
    if roots is None:
        return "local", set()
    if any(isinstance(n, A.PopFunc) for r in roots for n in A.walk(r)):
        return "population", set()
    found = _offsets(roots)
    return ("local", set()) if found is None else ("exact", found)


def _offsets(roots: list[A.Node]) -> set[int] | None:
    """The durations (seconds, both ways) at which time may change the closure's value, or
    None when they cannot be bounded (see the module)."""
    out: set[int] = set()
    covered: set[int] = set()  # ids of days_since/hours_since nodes compared with numbers
    nodes = [n for r in roots for n in A.walk(r)]
    for n in nodes:
        sides: list[tuple[A.Node, list[A.Node]]] = []
        if isinstance(n, A.Binary) and n.op in _CMP:
            sides = [(n.left, [n.right]), (n.right, [n.left])]
        elif isinstance(n, A.Between):
            sides = [(n.arg, [n.low, n.high])]
        for side, others in sides:
            if isinstance(side, A.Func) and side.fn in _UNIT:
                numbers = [_number(o) for o in others]
                if all(v is not None for v in numbers):
                    covered.add(id(side))
                    for v in numbers:
                        assert v is not None
                        whole = int(v)
                        out |= {k * _UNIT[side.fn] for k in (whole - 1, whole, whole + 1)}
    for n in nodes:
        if isinstance(n, A.PopFunc | A.ModelRef):
            return None
        if isinstance(n, A.Func) and n.fn in _UNIT and id(n) not in covered:
            return None
        if isinstance(n, A.Dur):
            out.add(n.seconds)
        for attr in ("within", "first_within"):
            d = getattr(n, attr, None)
            if isinstance(d, A.Dur):
                out.add(d.seconds)
    if any(isinstance(n, A.SeqR) for n in nodes):  # first + first window + second window
        seqs = [n for n in nodes if isinstance(n, A.SeqR)]
        out |= {s.within.seconds + (s.first_within.seconds if s.first_within else 0) for s in seqs}
    return out | {-s for s in out}


def _number(n: A.Node) -> float | None:
    if isinstance(n, A.Lit) and isinstance(n.value, int | float) and not isinstance(n.value, bool):
        return float(n.value)
    if isinstance(n, A.Unary) and n.op == "-":
        v = _number(n.arg)
        return -v if v is not None else None
    return None


def _tables(plan: Plan, name: str) -> set[str]:
    """The tables the closure of ``name`` reads."""
    out: set[str] = set()
    for root in _closure_nodes(plan, name) or []:
        for n in A.walk(root):
            if isinstance(n, A.Agg | A.Col):
                out.add(n.table)
            elif isinstance(n, _BY_EVENTS):
                out.add("events")
            elif isinstance(n, A.Consent):
                out.add("consent")
    return out


def referenced(plan: Plan, name: str) -> set[tuple[str, str]]:
    """(table, column) of every column the closure of ``name`` reads by name."""
    out: set[tuple[str, str]] = set()
    for root in _closure_nodes(plan, name) or []:
        for n in A.walk(root):
            if isinstance(n, A.Attr):
                out.add(("customers", n.col))
            elif isinstance(n, A.Col | A.Agg) and n.col is not None:
                out.add((n.table, n.col))
    return out


def _reach(plan: Plan, name: str) -> dict[str, float]:
    """Per table the closure of ``name`` reads, the longest look back in seconds: a window's
    length, a sequence's two windows, or infinite for anything without a window (counts of
    all rows, first and last rows, the latest consent, ``did`` ever)."""
    out: dict[str, float] = {}

    def look(table: str, seconds: float) -> None:
        out[table] = max(out.get(table, 0.0), seconds)

    for root in _closure_nodes(plan, name) or []:
        for n in A.walk(root):
            if isinstance(n, A.Agg):
                look(n.table, n.within.seconds if n.within else math.inf)
            elif isinstance(n, A.Did):
                look("events", n.within.seconds if n.within else math.inf)
            elif isinstance(n, A.SeqR):
                first = n.first_within.seconds if n.first_within else math.inf
                look("events", first + n.within.seconds)
            elif isinstance(n, A.Consent):
                look("consent", math.inf)
    return out
