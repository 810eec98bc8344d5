"""The typed AST of the rule language.

Nodes are frozen dataclasses. Positions (``span``) do not take part in equality or hashing,
so two identical aggregates written in different places are the same node: that is what
deduplicates aggregates across all definitions of a run.

The parser produces the *surface* nodes (``Name``, ``Call``, ``Seq``); the checker
(``types.py``) rewrites them into *resolved* nodes (``Attr``, ``TraitRef``, ``Agg``, ...) that
the compiler, English renderer and explainer consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

LitKind = Literal["number", "string", "bool", "null", "time"]
Value = int | float | str | bool | datetime | None


@dataclass(frozen=True)
class Span:
    """Where a node is in the rule text (1-based line/column, 0-based offsets)."""

    line: int = 1
    column: int = 1
    end_line: int = 1
    end_column: int = 1
    start: int = 0
    end: int = 0


NOSPAN = Span()


@dataclass(frozen=True, kw_only=True)
class Node:
    span: Span = field(default=NOSPAN, compare=False, repr=False)


# --- surface and shared nodes -----------------------------------------------------------


@dataclass(frozen=True)
class Lit(Node):
    value: Value
    kind: LitKind


@dataclass(frozen=True)
class Now(Node):
    pass


@dataclass(frozen=True)
class Dur(Node):
    """A duration literal; ``seconds`` is the meaning, ``text`` how it was written."""

    seconds: int
    text: str = field(default="", compare=False)


@dataclass(frozen=True)
class Name(Node):
    parts: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class Unary(Node):
    op: Literal["not", "-"]
    arg: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str  # and or = != < <= > >= + - * /
    left: Node
    right: Node


@dataclass(frozen=True)
class Between(Node):
    arg: Node
    low: Node
    high: Node
    negated: bool = False


@dataclass(frozen=True)
class In(Node):
    arg: Node
    items: tuple[Node, ...]
    negated: bool = False


@dataclass(frozen=True)
class Like(Node):
    arg: Node
    pattern: Node
    negated: bool = False


@dataclass(frozen=True)
class IsNull(Node):
    arg: Node
    negated: bool = False


@dataclass(frozen=True)
class Call(Node):
    fn: str
    args: tuple[Node, ...] = ()
    where: Node | None = None
    within: Dur | None = None


@dataclass(frozen=True)
class Case(Node):
    """``case when c1 then v1 [when ...] [else d] end``: the first true condition wins."""

    whens: tuple[tuple[Node, Node], ...]
    default: Node | None = None


@dataclass(frozen=True)
class Seq(Node):
    """``did('a') then [not] did('b') within D`` as parsed."""

    first: Call
    second: Call
    negated: bool
    within: Dur


# --- resolved nodes (produced by the checker) ---------------------------------------------


@dataclass(frozen=True)
class Attr(Node):
    """A column of the customers table."""

    col: str


@dataclass(frozen=True)
class Col(Node):
    """A column of the related table inside an aggregate's ``where``."""

    table: str
    col: str


@dataclass(frozen=True)
class TraitRef(Node):
    """A trait; ``phrase`` is how English names it, (noun, counted?), from the library."""

    name: str
    phrase: tuple[str, bool] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ModelRef(Node):
    """A per-customer value fitted outside the plan (``clv.p_alive``, ``churn.risk``, ...);
    ``description`` (from the library) is what English calls it."""

    name: str
    description: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class PopFunc(Node):
    """A population-relative function over all customers at as_of: ``ntile(x, n)`` (1..n, ties
    share the lower tile), ``percent_rank(x)`` (share of customers with a smaller value),
    ``median_all(x)`` (the median over customers). Nulls take no part and get null."""

    fn: str
    arg: Node
    n: int = 0


@dataclass(frozen=True)
class SegRef(Node):
    name: str


@dataclass(frozen=True)
class Consent(Node):
    channel: str


@dataclass(frozen=True)
class Func(Node):
    """A scalar function: coalesce, lower, upper, contains, abs, round, least, greatest,
    days_since, hours_since."""

    fn: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Agg(Node):
    """An aggregate over a related table; ``col`` is None for ``count(T)``."""

    fn: str
    table: str
    col: str | None
    where: Node | None = None
    within: Dur | None = None


@dataclass(frozen=True)
class Did(Node):
    event: str
    within: Dur | None = None
    negated: bool = False


@dataclass(frozen=True)
class SeqR(Node):
    """A resolved sequence: some ``first`` at t (within ``first_within`` of as_of), then
    (``negated``: no) ``second`` in [t, t + within]."""

    first: str
    second: str
    negated: bool
    within: Dur
    first_within: Dur | None = None


AGG_FNS = (
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "count_distinct",
    "first",
    "last",
    "median",
    "mode",
    "median_gap",
    "last_gap",
)
# Aggregates that need a pass of their own (a grouped sub-aggregate or a window per customer):
# the most frequent value, and the median / latest gap in days between consecutive rows.
SPECIAL_AGGS = ("mode", "median_gap", "last_gap")
POP_FNS = ("ntile", "percent_rank", "median_all")
SCALAR_FNS = (
    "coalesce",
    "lower",
    "upper",
    "contains",
    "abs",
    "round",
    "least",
    "greatest",
    "days_since",
    "hours_since",
)
SPECIAL_FNS = ("date", "did", "did_not", "in_segment")
ALL_FNS = AGG_FNS + SCALAR_FNS + SPECIAL_FNS + POP_FNS


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of a node (for walks)."""
    match node:
        case Unary(arg=a) | IsNull(arg=a):
            return (a,)
        case Binary(left=a, right=b) | Like(arg=a, pattern=b):
            return (a, b)
        case Between(arg=a, low=b, high=c):
            return (a, b, c)
        case In(arg=a, items=items):
            return (a, *items)
        case Call(args=args, where=w, within=d):
            return (*args, *(x for x in (w, d) if x is not None))
        case Seq(first=a, second=b):
            return (a, b)
        case Case(whens=whens, default=d):
            return (*(x for pair in whens for x in pair), *((d,) if d is not None else ()))
        case PopFunc(arg=a):
            return (a,)
        case Func(args=args):
            return args
        case Agg(where=w, within=d):
            return tuple(x for x in (w, d) if x is not None)
    return ()


def walk(node: Node) -> list[Node]:
    """All nodes of a tree, parents before children."""
    out = [node]
    for c in children(node):
        out.extend(walk(c))
    return out
