"""Resolved AST -> Ibis expressions.

Two scopes: the *customer* scope reads columns of the per-customer wide table (attributes,
aggregate columns, consent, sequences, traits, segments), the *row* scope reads a related
table's own columns inside an aggregate's ``where``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import ibis
import ibis.expr.types as ir

from crmseg.backends.dialects import dialect_of
from crmseg.rules import ast as A

Lookup = Callable[[A.Node], ir.Value]

# Internal column names of the wide table; the final projection renames or drops them.
KEY = "__k"


def attr_col(col: str) -> str:
    return f"__c_{col}"


def consent_col(ch: str) -> str:
    return f"__consent_{ch}"


def trait_col(name: str) -> str:
    return f"__t_{name}"


def seg_col(name: str) -> str:
    return f"__s_{name}"


def did_agg(d: A.Did) -> A.Agg:
    """``did('x' within D)`` is ``count(events where name = 'x' within D) >= 1``."""
    cond = A.Binary("=", A.Col("events", "name"), A.Lit(d.event, "string"))
    return A.Agg("count", "events", None, cond, d.within)


def ts(v: datetime) -> ir.Value:
    return ibis.literal(v, type="timestamp")


def epoch(as_of: datetime) -> int:
    """Whole seconds since 1970 of a naive UTC datetime."""
    return int((as_of - datetime(1970, 1, 1)).total_seconds() // 1)


def _is_null(v: ir.Value) -> bool:
    return bool(v.type().is_null())


def _align(a: ir.Value, b: ir.Value) -> tuple[ir.Value, ir.Value]:
    """Give an untyped null literal the type of its partner."""
    if _is_null(a) and not _is_null(b):
        a = a.cast(b.type())
    if _is_null(b) and not _is_null(a):
        b = b.cast(a.type())
    return a, b


_NULL_BOOL: Callable[[], ir.Value] = lambda: ibis.null().cast("boolean")  # noqa: E731

_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class Compiler:
    """Compiles nodes in one scope. ``lookup`` maps reference nodes (Attr, Col, TraitRef,
    SegRef, Consent, Agg, Did, SeqR) to Ibis columns."""

    def __init__(self, lookup: Lookup, as_of: datetime) -> None:
        self.lookup = lookup
        self.as_of = as_of

    def const_time(self, n: A.Node) -> datetime | None:
        """Fold ``now``, ``date(...)`` and ``now - 30d`` in Python: simpler, identical SQL."""
        match n:
            case A.Now():
                return self.as_of
            case A.Lit(value=datetime() as v):
                return v
            case A.Binary(op="+" | "-", left=l, right=A.Dur(seconds=s)):
                base = self.const_time(l)
                if base is not None:
                    d = timedelta(seconds=s)
                    return base + d if n.op == "+" else base - d
            case A.Binary(op="+", left=A.Dur(seconds=s), right=r):
                base = self.const_time(r)
                if base is not None:
                    return base + timedelta(seconds=s)
        return None

    def __call__(self, n: A.Node) -> ir.Value:
        c = self.const_time(n)
        if c is not None:
            return ts(c)
        match n:
            case A.Lit(value=None):
                return ibis.null()
            case A.Lit(value=bool() as b):
                return ibis.literal(b, type="boolean")
            case A.Lit(value=int() as i):
                return ibis.literal(i, type="int64")
            case A.Lit(value=float() as f):
                return ibis.literal(f, type="float64")
            case A.Lit(value=str() as s):
                return ibis.literal(s, type="string")
            case A.Attr() | A.Col() | A.TraitRef() | A.SegRef() | A.Consent() | A.SeqR():
                return self.lookup(n)
            case A.ModelRef():
                return self.lookup(n)
            case A.Case(whens=whens, default=dflt):
                return self.case(whens, dflt)
            case A.PopFunc():
                return self.pop(n)
            case A.Agg() | A.Did():
                return self.lookup(n)
            case A.Unary(op="not", arg=a):
                v = self(a)
                return _NULL_BOOL() if _is_null(v) else ~v
            case A.Unary(op="-", arg=a):
                return -self(a)
            case A.Binary():
                return self.binary(n)
            case A.Between(arg=a, low=lo, high=hi, negated=neg):
                x, lv, hv = self(a), self(lo), self(hi)
                if _is_null(x) or _is_null(lv) or _is_null(hv):
                    return _NULL_BOOL()
                r = x.between(lv, hv)
                return ~r if neg else r
            case A.In(arg=a, items=items, negated=neg):
                return self.isin(a, items, neg)
            case A.Like(arg=a, pattern=p, negated=neg):
                x, pv = self(a), self(p)
                if _is_null(x) or _is_null(pv):
                    return _NULL_BOOL()
                r = x.like(pv)
                return ~r if neg else r
            case A.IsNull(arg=a, negated=neg):
                v = self(a)
                if _is_null(v):
                    return ibis.literal(not neg)
                return v.notnull() if neg else v.isnull()
            case A.Func():
                return self.func(n)
            case A.Dur(seconds=s):
                return ibis.interval(seconds=s)
        raise TypeError(f"cannot compile {type(n).__name__}")

    def binary(self, n: A.Binary) -> ir.Value:
        op = n.op
        if op in ("+", "-") and (isinstance(n.right, A.Dur) or isinstance(n.left, A.Dur)):
            t, d = (n.left, n.right) if isinstance(n.right, A.Dur) else (n.right, n.left)
            assert isinstance(d, A.Dur)
            iv = ibis.interval(seconds=d.seconds)
            base = self(t)
            return base + iv if op == "+" else base - iv
        a, b = _align(self(n.left), self(n.right))
        if op == "and":
            return a & b
        if op == "or":
            return a | b
        if op in _CMP:
            if _is_null(a) or _is_null(b):
                return _NULL_BOOL()
            return _CMP[op](a, b)
        if _is_null(a) or _is_null(b):
            return ibis.null().cast("float64")
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        # true division everywhere; x / 0 is null (not an error, not infinity)
        return a.cast("float64") / b.cast("float64").nullif(0)

    def case(self, whens: tuple[tuple[A.Node, A.Node], ...], dflt: A.Node | None) -> ir.Value:
        values = [self(v) for _, v in whens] + ([self(dflt)] if dflt is not None else [])
        typed = next((v for v in values if not _is_null(v)), None)
        if typed is None:
            return ibis.null()

        def fit(v: ir.Value) -> ir.Value:
            return v.cast(typed.type()) if _is_null(v) else v

        pairs = []
        for (c, _), v in zip(whens, values, strict=False):
            cv = self(c)
            if not _is_null(cv):  # `when null` never applies
                pairs.append((cv, fit(v)))
        else_ = fit(values[-1]) if dflt is not None else ibis.null().cast(typed.type())
        if not pairs:
            return else_
        return ibis.cases(*pairs, else_=else_)

    def pop(self, n: A.PopFunc) -> ir.Value:
        """Window functions over every customer of the wide table (the population at as_of).
        Null values form their own partition and get null; ties share the lower rank."""
        x = self(n.arg)
        if _is_null(x):
            return ibis.null().cast("float64")
        if n.fn == "median_all":
            median = x.cast("float64").median()
            if dialect_of(x).median_window:
                return median.over(ibis.window())
            return median.as_scalar()
        part = x.isnull()
        rank = ibis.rank().over(ibis.window(group_by=part, order_by=x)).cast("float64")
        count = x.count().over(ibis.window(group_by=part)).cast("float64")
        if n.fn == "percent_rank":
            v = rank / count
        else:
            v = ((rank * n.n) / count).floor().cast("int64") + 1
        return ibis.ifelse(part, ibis.null().cast(v.type()), v)

    def isin(self, a: A.Node, items: Iterable[A.Node], neg: bool) -> ir.Value:
        x = self(a)
        vals = [self(i) for i in items]
        has_null = any(_is_null(v) for v in vals)
        vals = [v for v in vals if not _is_null(v)]
        if _is_null(x):
            return _NULL_BOOL()
        hit = x.isin(vals) if vals else ibis.literal(False)
        if has_null:  # SQL: `x in (.., null)` is true or unknown, never false
            hit = ibis.ifelse(hit, True, _NULL_BOOL())
        return ~hit if neg else hit

    def func(self, n: A.Func) -> ir.Value:
        fn, args = n.fn, [self(a) for a in n.args]
        if fn in ("coalesce", "least", "greatest"):
            typed = [a for a in args if not _is_null(a)]
            if not typed:
                return ibis.null()
            if len(typed) == 1:
                return typed[0]
            f = {"coalesce": ibis.coalesce, "least": ibis.least, "greatest": ibis.greatest}[fn]
            return f(*typed)
        x = args[0]
        if _is_null(x):
            return ibis.null()
        match fn:
            case "lower":
                return x.lower()
            case "upper":
                return x.upper()
            case "contains":
                return x.contains(args[1]) if not _is_null(args[1]) else _NULL_BOOL()
            case "abs":
                return x.abs()
            case "round":
                last = n.args[-1]
                digits = last.value if len(n.args) == 2 and isinstance(last, A.Lit) else 0
                return x.round(digits if isinstance(digits, int) else 0).cast("float64")
            case "days_since" | "hours_since":
                unit = 86_400 if fn == "days_since" else 3_600
                # integer seconds on both sides, then floor division: same on every backend
                secs = ibis.literal(epoch(self.as_of), type="int64") - x.epoch_seconds()
                return (secs / unit).floor().cast("int64")
        raise TypeError(f"cannot compile function {fn}")


def agg_metric(
    agg: A.Agg, src: ir.Table, time: str | None, as_of: datetime, row: Compiler
) -> ir.Value:
    """One conditional aggregate over ``src`` (already limited to rows at or before as_of)."""
    conds: list[ir.Value] = []
    if agg.where is not None:
        conds.append(row(agg.where))
    if agg.within is not None:
        assert time is not None
        conds.append(src[time] >= ts(as_of - timedelta(seconds=agg.within.seconds)))
    if agg.fn in ("first", "last") and agg.col is not None:
        # the value on the earliest/latest row that has one: null values never win
        conds.append(src[agg.col].notnull())
    where = functools.reduce(operator.and_, conds) if conds else None
    if agg.col is None:
        return src.count(where=where)
    c = src[agg.col]
    match agg.fn:
        case "count":
            return c.count(where=where)
        case "sum":
            return _settled(c.sum(where=where))
        case "avg":
            return _settled(c.mean(where=where))
        case "median":
            # Spark cannot take median(where=): filter by nulling instead
            v = c.cast("float64")
            return (
                ibis.ifelse(where, v, ibis.null("float64")) if where is not None else v
            ).median()
        case "min":
            return c.min(where=where)
        case "max":
            return c.max(where=where)
        case "count_distinct":
            return c.nunique(where=where)
        case "first":
            assert time is not None
            if agg.col == time:  # the earliest time itself: no ordered aggregate needed
                return c.min(where=where)
            return c.argmin(src[time], where=where)
        case "last":
            assert time is not None
            if agg.col == time:  # max() skips nulls as last() must, without sorting
                return c.max(where=where)
            return c.argmax(src[time], where=where)
    raise TypeError(f"unknown aggregate {agg.fn}")


def _settled(v: ir.Value) -> ir.Value:
    """A float sum rounded to 9 decimals: engines (and parallel scans of one engine) add rows
    in different orders, so equal amounts could differ in the last bit and then rank, tie and
    compare differently (389.26 vs 389.26000000000005)."""
    return v.round(9) if v.type().is_floating() else v


ZERO_WHEN_EMPTY = ("count", "sum", "count_distinct")
