"""``explain SEGMENT CUSTOMER``: every sub-condition of a rule with its value for one customer.

The sub-expressions are compiled as extra columns of the same plan and the result is filtered
to that customer, so the values are exactly the ones the run computes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import ibis.expr.types as ir

from crmseg.rules import ast as A
from crmseg.rules.english import cond, value
from crmseg.rules.parser import render
from crmseg.sources.pii import PII_FIELDS, mask

if TYPE_CHECKING:
    from crmseg.rules.plan import Plan


@dataclass(frozen=True)
class Step:
    text: str  # the sub-expression as written in the rule
    english: str
    value: Any  # True / False / None (unknown) for conditions; the value otherwise
    depth: int
    kind: Literal["condition", "value"]
    personal: bool = False  # a value read from a column holding personal data


@dataclass(frozen=True)
class Explanation:
    segment: str
    customer_id: str
    exists: bool  # the customer exists at as_of
    verdict: bool
    english: str
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. the drivers of churn.risk
    as_of: datetime | None = None  # the instant the values are for

    def masked(self) -> Explanation:
        """The same explanation with personal values masked (emails, phones, names...)."""
        from dataclasses import replace

        steps = [
            replace(s, value=mask(s.value)) if s.personal and s.value is not None else s
            for s in self.steps
        ]
        return replace(self, steps=steps)

    def lines(self, timezone: str = "UTC") -> list[str]:
        """The explanation as text; the instant in the project's ``timezone`` (and UTC)."""
        from crmseg.config import when

        head = "IN" if self.verdict else "NOT IN"
        at = f" as of {when(self.as_of, timezone)}" if self.as_of else ""
        out = [f"{self.customer_id} is {head} {self.segment}{at}: {self.english}"]
        if not self.exists:
            out.append("  (no such customer at this as_of)")
        for s in self.steps:
            shown = "unknown" if s.value is None else s.value
            mark = {True: "✓", False: "✗"}.get(s.value, "·") if s.kind == "condition" else "="
            out.append(f"{'  ' * (s.depth + 1)}{mark} {s.text}  -> {shown}")
        out.extend(f"  note: {n}" for n in self.notes)
        return out


_BOOL = (A.Binary, A.Unary, A.Between, A.In, A.Like, A.IsNull, A.Did, A.SeqR, A.SegRef)


def _is_cond(n: A.Node) -> bool:
    if isinstance(n, A.Binary):
        return n.op in ("and", "or", "=", "!=", "<", "<=", ">", ">=")
    if isinstance(n, A.Unary):
        return n.op == "not"
    return isinstance(n, (*_BOOL, A.Consent)) or (isinstance(n, A.Func) and n.fn == "contains")


def _operands(n: A.Node) -> list[A.Node]:
    """The non-literal values a leaf condition compares."""
    kids = [c for c in A.children(n) if not isinstance(c, A.Lit | A.Now | A.Dur)]
    if isinstance(n, A.Did | A.SeqR | A.SegRef | A.Consent):
        return []
    return kids


def _collect(n: A.Node, depth: int, out: list[tuple[A.Node, int, bool]]) -> None:
    out.append((n, depth, True))
    if (isinstance(n, A.Binary) and n.op in ("and", "or")) or isinstance(n, A.Unary):
        for c in A.children(n):
            _collect(c, depth + 1, out)
        return
    for c in _operands(n):
        if _is_cond(c):
            _collect(c, depth + 1, out)
        else:
            out.append((c, depth + 1, False))


# Values that stand for a fact about the customer: what a trait's definition is made of.
_INPUT = (A.TraitRef, A.Attr, A.Col, A.Agg, A.ModelRef, A.PopFunc)


def _inputs(node: A.Node) -> list[A.Node]:
    """The facts a definition reads, outermost first, once each: for lifecycle.stage the
    order count, days since the latest order and the thresholds; ``days_since(x)`` counts as
    one fact."""
    out: dict[str, A.Node] = {}

    def visit(n: A.Node) -> None:
        if isinstance(n, _INPUT) or (
            isinstance(n, A.Func) and n.fn in ("days_since", "hours_since")
        ):
            out.setdefault(render(n), n)
            return
        for c in A.children(n):
            visit(c)

    visit(node)
    return list(out.values())


# What a CLV score is computed from (see crmseg.models.clv): the daily RFM summary.
CLV_INPUTS = ("clv.repeat_days", "clv.recency_days", "clv.age_days", "clv.repeat_spend")


def _expand(
    plan: Plan, n: A.Node, depth: int, out: list[tuple[A.Node, int, bool]], seen: set[str]
) -> None:
    """After a trait's value, the values its definition is made of, two levels deep (an RFM
    segment: R and FM, then F and M), each shown once. A trait that only renames one value
    adds nothing, and a rank (``percent_rank(clv.value_12m)``) shows what it ranks."""
    if isinstance(n, A.ModelRef) and n.name.startswith("clv.") and n.name not in CLV_INPUTS:
        for name in CLV_INPUTS:  # the scores' inputs, however deep the score sits
            if name not in seen:
                seen.add(name)
                out.append((A.ModelRef(name), depth + 1, False))
        return
    if depth > 2 or not isinstance(n, A.TraitRef):
        return
    checked = plan.checked.get(("trait", n.name))
    if checked is None or checked.node is None:
        return
    node = checked.node
    found = [node.arg] if isinstance(node, A.PopFunc) else _inputs(node)
    if found == [node]:
        return
    for m in found:
        key = render(m)
        if key in seen:
            continue
        seen.add(key)
        out.append((m, depth + 1, False))
        _expand(plan, m, depth + 1, out, seen)


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat(sep=" ")
    return v


def explain(
    plan: Plan,
    name: str,
    tables: Mapping[str, ir.Table],
    as_of: datetime,
    customer_id: str,
    sql_segments: Mapping[str, ir.Table] | None = None,
) -> Explanation:
    c = plan.checked[("segment", name)]
    text = c.defn.text or ""
    nodes: list[tuple[A.Node, int, bool]] = []
    if c.node is not None:
        _collect(c.node, 0, nodes)
    # after each trait the rule reads, what the trait is made of (rendered: not in the text)
    seen = {render(n) for n, _, is_cond in nodes if not is_cond}
    grown: list[tuple[A.Node, int, bool]] = []
    inputs: set[int] = set()
    for entry in nodes:
        grown.append(entry)
        if not entry[2]:
            more: list[tuple[A.Node, int, bool]] = []
            _expand(plan, entry[0], entry[1], more, seen)
            grown.extend(more)
            inputs.update(i for i in range(len(grown) - len(more), len(grown)))
    nodes = grown
    extra = {f"__x{i}": n for i, (n, _, _) in enumerate(nodes)}
    # a rule that uses churn.risk (directly or through traits) also shows its drivers
    uses = {
        m.name
        for k in plan.closure([name])
        if (node := plan.checked[k].node) is not None
        for m in A.walk(node)
        if isinstance(m, A.ModelRef)
    }
    if "churn.risk" in uses:
        extra["__drivers"] = A.ModelRef("churn.top_features")
    # and one that uses a propensity (or the next best action) the propensity's drivers
    if any(u.startswith(("propensity.", "nba.")) for u in uses):
        extra["__p_drivers"] = A.ModelRef("propensity.top_features")
        extra["__p_nba"] = A.ModelRef("nba.category")
    wide = plan.wide(tables, as_of, sql_segments, [name], extra)
    rows = wide.filter(wide.customer_id == customer_id).to_pyarrow().to_pylist()
    row = rows[0] if rows else {}
    steps = []
    for i, (n, depth, is_cond) in enumerate(nodes):
        spanned = i not in inputs and n.span.end > n.span.start
        src = text[n.span.start : n.span.end] if spanned else render(n)
        eng = cond(n) if is_cond else value(n)
        kind: Literal["condition", "value"] = "condition" if is_cond else "value"
        personal = not is_cond and any(
            isinstance(m, A.Attr) and m.col in PII_FIELDS for m in A.walk(n)
        )
        steps.append(Step(src, eng, _plain(row.get(f"__x{i}")), depth, kind, personal))
    notes = []
    if row.get("__drivers"):
        notes.append(f"churn.risk drivers (log-odds vs. an average customer): {row['__drivers']}")
    if row.get("__p_drivers"):
        nba = row.get("__p_nba")
        which = f"propensity.{nba} (nba.category)" if nba else "propensity.any"
        notes.append(f"{which} drivers (log-odds vs. an average customer): {row['__p_drivers']}")
    return Explanation(
        name,
        customer_id,
        bool(rows),
        bool(row.get(name, False)),
        plan.english(name),
        steps,
        notes,
        as_of,
    )
