"""Resolved AST -> a plain-English sentence ("customers with at least 3 orders and ...")."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from crmseg.rules import ast as A
from crmseg.rules.parser import UNIT_SECONDS, render

_SINGULAR = {
    "orders": "order",
    "order_items": "order item",
    "events": "event",
    "messages": "message",
    "tickets": "support ticket",
    "subscriptions": "subscription",
    "reviews": "review",
}
_UNITS = {"s": "second", "min": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month",
          "y": "year"}  # fmt: skip
_OPS = {
    ">=": "at least",
    ">": "more than",
    "<=": "at most",
    "<": "less than",
    "=": "exactly",
    "!=": "other than",
}
_FLIP = {">=": "<=", ">": "<", "<=": ">=", "<": ">", "=": "=", "!=": "!="}
_NEG = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "=": "!=", "!=": "="}


class _Plan(Protocol):
    def english(self, name: str) -> str: ...


def duration(d: A.Dur) -> str:
    text = d.text
    if not text:
        unit = next(u for u in ("y", "w", "d", "h", "min", "s") if d.seconds % UNIT_SECONDS[u] == 0)
        text = f"{d.seconds // UNIT_SECONDS[unit]}{unit}"
    num = int("".join(ch for ch in text if ch.isdigit()))
    word = _UNITS[text.lstrip("0123456789")]
    return f"{num} {word}{'s' * (num != 1)}"


def _plural(table: str, n: float | None = None) -> str:
    one = _SINGULAR.get(table, table)
    return one if n == 1 else f"{one}s"


def _words(name: str) -> str:
    return name.replace("_", " ").replace(".", " ")


def _lit(n: A.Node) -> str:
    match n:
        case A.Lit(value=None):
            return "missing"
        case A.Lit(value=bool() as b):
            return "true" if b else "false"
        case A.Lit(value=datetime() as v):
            return v.date().isoformat() if v == datetime(v.year, v.month, v.day) else str(v)
        case A.Lit(value=str() as s):
            return f"'{s}'"
        case A.Lit(value=v):
            return f"{v:g}" if isinstance(v, float) else str(v)
    return value(n)


def _where(w: A.Node | None) -> str:
    return "" if w is None else f" where {cond(w).replace('whose ', '')}"


def _named(t: str, w: A.Node | None) -> str | None:
    """ "'login' events" for events where name = 'login'."""
    match w:
        case A.Binary(op="=", left=A.Col(col="name"), right=A.Lit(value=str() as s)):
            return f"'{s}' {_plural(t)}" if t == "events" else None
    return None


def _within(d: A.Dur | None) -> str:
    return "" if d is None else f" in the last {duration(d)}"


def _category(w: A.Node | None) -> str | None:
    """'skincare' for ``category = 'skincare'`` (the "who bought skincare" phrasing)."""
    match w:
        case A.Binary(op="=", left=A.Col(col="category"), right=A.Lit(value=str() as s)):
            return s
    return None


def value(n: A.Node) -> str:
    """A noun phrase for a value."""
    match n:
        case A.Lit():
            return _lit(n)
        case A.Now():
            return "now"
        case A.Attr(col=c) | A.Col(col=c):
            return f"the {_words(c)}"
        case A.TraitRef(name=nm, phrase=phrase):
            if phrase is not None:
                noun, counted = phrase
                return f"the number of {noun}" if counted else _definite(noun)
            return f"the {_words(nm)}"
        case A.Agg(fn=fn, table=t, col=c, where=w, within=d):
            tail = _where(w) + _within(d)
            thing = _plural(t)
            if fn == "count" and c is None:
                named = _named(t, w)
                if named is not None:
                    return f"the number of {named}{_within(d)}"
                return f"the number of {thing}{tail}"
            col = _words(c or "")
            from crmseg.rules.types import time_column  # noqa: F401  (names only)

            head = {
                "count": f"the number of {thing} with a {col}",
                "count_distinct": f"the number of distinct {col} values of {thing}",
                "sum": f"the total {_SINGULAR.get(t, t)} {col}",
                "avg": f"the average {_SINGULAR.get(t, t)} {col}",
                "min": f"the smallest {_SINGULAR.get(t, t)} {col}",
                "max": f"the largest {_SINGULAR.get(t, t)} {col}",
                "first": f"the {col} of the first {_SINGULAR.get(t, t)}",
                "last": f"the {col} of the latest {_SINGULAR.get(t, t)}",
                "median": f"the median {_SINGULAR.get(t, t)} {col}",
                "mode": f"the most frequent {_SINGULAR.get(t, t)} {col}",
                "median_gap": f"the median days between {thing}",
                "last_gap": f"the days between the latest two {thing}",
            }[fn]
            return head + tail
        case A.Func(fn="days_since" | "hours_since" as fn, args=(a,)):
            unit = "days" if fn == "days_since" else "hours"
            return f"the {unit} since {value(a)}"
        case A.Func(fn="coalesce", args=args):
            return " or else ".join(value(a) for a in args)
        case A.Func(fn="least" | "greatest" as fn, args=args):
            return f"the {'smallest' if fn == 'least' else 'largest'} of " + ", ".join(
                value(a) for a in args
            )
        case A.Func(fn="round", args=args):
            return f"{value(args[0])} rounded"
        case A.Func(fn=fn, args=args):
            word = {"lower": "lower-case", "upper": "upper-case", "abs": "absolute"}.get(fn, fn)
            return f"the {word} {value(args[0]).removeprefix('the ')}"
        case A.Unary(op="-", arg=a):
            return f"minus {value(a)}"
        case A.Binary(op=op, left=l, right=r) if op in ("+", "-", "*", "/"):
            word = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}[op]
            if isinstance(r, A.Dur):
                return f"{duration(r)} {'after' if op == '+' else 'before'} {value(l)}"
            return f"{value(l)} {word} {value(r)}"
        case A.Dur():
            return duration(n)
        case A.ModelRef(name=nm, description=desc):
            return f"the {desc}" if desc else f"the {_words(nm)}"
        case A.PopFunc(fn="ntile", arg=a, n=k):
            return f"the {k}-tile of {value(a)} among all customers (1 = lowest)"
        case A.PopFunc(fn="percent_rank", arg=a):
            return f"the share of customers with a smaller {value(a).removeprefix('the ')}"
        case A.PopFunc(fn="median_all", arg=a):
            return f"the median over all customers of {value(a)}"
        case A.Case(whens=whens, default=dflt):
            parts = [f"{value(v)} when {cond(c)}" for c, v in whens]
            tail = f", else {value(dflt)}" if dflt is not None else ""
            return f"({'; '.join(parts)}{tail})"
    return f"({cond(n)})"


def _counted(n: A.Node) -> tuple[str, str] | None:
    """(singular, plural) nouns when ``n`` counts things."""
    match n:
        case A.Agg(fn="count", table=t, col=None, where=w, within=d):
            tail = _where(w) + _within(d)
            return _plural(t, 1) + tail, _plural(t) + tail
        case A.TraitRef(phrase=(noun, True)):
            return _singular(noun), noun
    return None


def _definite(noun: str) -> str:
    """'the lifetime value' for 'a lifetime value', 'the RFM segment' for 'an RFM segment'."""
    for article in ("a ", "an "):
        if noun.startswith(article):
            return "the " + noun.removeprefix(article)
    return noun


# Words that end a counted noun and start what is said about it: "reviews scoring 2 or less",
# "orders in the last 90 days", "tickets with a refund".
_AFTER_NOUN = {"in", "of", "with", "without", "where", "that", "which", "who", "from", "over",
               "by", "for", "on", "at", "since", "before", "after", "during"}  # fmt: skip


def _singular(noun: str) -> str:
    """'failed payment' for 'failed payments', 'review scoring 2 or less in the last 90 days'
    for 'reviews scoring ...': the counted noun (the last word before what is said about it:
    a preposition, a relative or an -ing word) loses its plural, and nothing else changes."""
    words = noun.split(" ")
    end = next(
        (i for i, w in enumerate(words) if i and (w in _AFTER_NOUN or w.endswith("ing"))),
        len(words),
    )
    head = words[end - 1]
    if head.endswith("ies"):
        words[end - 1] = head[:-3] + "y"
    elif head.endswith("s") and not head.endswith("ss"):
        words[end - 1] = head[:-1]
    return " ".join(words)


def _num(n: A.Node) -> float | None:
    if isinstance(n, A.Lit) and isinstance(n.value, int | float) and not isinstance(n.value, bool):
        return float(n.value)
    return None


def compare(op: str, left: A.Node, right: A.Node) -> str:
    """A clause for ``left op right`` (after "customers ")."""
    if _num(left) is not None and _num(right) is None:
        op, left, right = _FLIP[op], right, left
    k = _num(right)
    # who bought skincare at least once in the last 60 days
    match left:
        case A.Agg(fn="count", table="orders" | "order_items", col=None, where=w, within=d):
            cat = _category(w)
            if cat is not None and k is not None:
                if (op, k) in ((">=", 1), (">", 0)):
                    times = "at least once"
                elif (op, k) in (("=", 0), ("<", 1)):
                    return f"who never bought {cat}{_within(d)}"
                else:
                    times = f"{_OPS[op]} {k:g} times"
                return f"who bought {cat} {times}{_within(d)}"
    counted = _counted(left)
    if counted is not None and k is not None:
        one, many = counted
        if (op, k) in (("=", 0), ("<", 1)):
            return f"with no {many}"
        word = _OPS[op] if op != "<" else "fewer than"
        return f"with {word} {k:g} {one if k == 1 else many}"
    match left:
        case A.Attr(col="country") if op in ("=", "!=") and isinstance(right, A.Lit):
            return f"{'in' if op == '=' else 'not in'} {right.value}"
        case A.Attr(col="plan") if op == "=" and isinstance(right, A.Lit):
            return f"on the {right.value} plan"
        case A.Func(fn="days_since" | "hours_since" as fn, args=(a,)) if k is not None:
            unit = "day" if fn == "days_since" else "hour"
            when = f"{_OPS[op]} {k:g} {unit}{'s' * (k != 1)} ago".replace("exactly ", "")
            if op == "!=":
                when = f"not {k:g} {unit}{'s' * (k != 1)} ago"
            return f"whose {_event(a)} was {when}"
        case A.TraitRef(phrase=(noun, _)) if k is not None:
            return f"with {noun} of {_OPS[op]} {k:g}"
    rhs = _lit(right)
    if isinstance(right, A.Lit) and isinstance(right.value, datetime):
        dates = {">=": "on or after", ">": "after", "<": "before", "<=": "on or before"}
        if op in dates:
            return f"whose {_event(left)} was {dates[op]} {rhs}"
    verb = {
        "=": "is",
        "!=": "is not",
        ">": "is more than",
        ">=": "is at least",
        "<": "is less than",
        "<=": "is at most",
    }[op]
    if isinstance(left, A.Now | A.Lit) or (
        isinstance(left, A.Binary) and left.op in ("+", "-") and isinstance(left.right, A.Dur)
    ):
        return f"where {value(left)} {verb} {rhs}"
    return f"whose {value(left).removeprefix('the ')} {verb} {rhs}"


def _event(n: A.Node) -> str:
    """'latest skincare order' for last(orders.ordered_at where category = 'skincare')."""
    match n:
        case A.Agg(fn="last" | "max" | "first" | "min" as fn, table=t, where=w, within=d):
            which = "latest" if fn in ("last", "max") else "first"
            cat = _category(w)
            if cat is not None:
                return f"{which} {cat} {_SINGULAR.get(t, t)}{_within(d)}"
            return f"{which} {_SINGULAR.get(t, t)}{_where(w)}{_within(d)}"
        case A.TraitRef(name="last_order_at"):
            return "latest order"
        case A.TraitRef(name="first_order_at"):
            return "first order"
        case A.Attr(col="signup_at"):
            return "signup"
    return value(n).removeprefix("the ")


def _items(items: tuple[A.Node, ...]) -> str:
    parts = [_lit(i) for i in items]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def cond(n: A.Node, neg: bool = False) -> str:
    """A clause for a condition, as it reads after "customers "."""
    match n:
        case A.Binary(op="and" | "or" as op, left=l, right=r):
            if neg:
                return f"excluding those {cond(n)}"

            def part(c: A.Node) -> str:
                s = cond(c)
                mixed = isinstance(c, A.Binary) and c.op in ("and", "or") and c.op != op
                return f"({s})" if mixed else s

            left, right = part(l), part(r)
            if op == "and" and right.startswith("on the "):
                return f"{left} {right}"
            return f"{left} {op} {right}"
        case A.Unary(op="not", arg=a):
            return cond(a, not neg)
        case A.Binary(op=op, left=l, right=r) if op in _OPS:
            return compare(_NEG[op] if neg else op, l, r)
        case A.In(arg=A.Attr(col="country"), items=items, negated=ng):
            return f"{'not in' if ng != neg else 'in'} {_items(items).replace(chr(39), '')}"
        case A.In(arg=A.Attr(col="plan"), items=items, negated=ng) if ng == neg:
            return f"on the {_items(items).replace(chr(39), '')} plan"
        case A.In(arg=a, items=items, negated=ng):
            return f"whose {_event(a)} is {'not ' if ng != neg else ''}{_items(items)}"
        case A.Between(arg=A.Func(fn="days_since" | "hours_since" as fn, args=(a,)), low=lo,
                       high=hi, negated=ng):  # fmt: skip
            unit = "days" if fn == "days_since" else "hours"
            nt = "not " if ng != neg else ""
            return f"whose {_event(a)} was {nt}between {_lit(lo)} and {_lit(hi)} {unit} ago"
        case A.Between(arg=a, low=lo, high=hi, negated=ng):
            nt = "not " if ng != neg else ""
            return f"whose {_event(a)} is {nt}between {_lit(lo)} and {_lit(hi)}"
        case A.Like(arg=a, pattern=p, negated=ng):
            return f"whose {_event(a)} {'does not match' if ng != neg else 'matches'} {_lit(p)}"
        case A.IsNull(arg=a, negated=ng):
            return f"whose {_event(a)} is {'known' if ng != neg else 'missing'}"
        case A.Func(fn="contains", args=(a, b)):
            return f"whose {_event(a)} {'does not contain' if neg else 'contains'} {_lit(b)}"
        case A.Did(event=e, within=d, negated=ng):
            return f"who {'did not do' if ng != neg else 'did'} '{e}'{_within(d)}"
        case A.SeqR(first=a, second=b, negated=ng, within=d, first_within=fw):
            head = f"who did '{a}'{_within(fw)} and then "
            body = f"did not do '{b}'" if ng else f"did '{b}'"
            s = f"{head}{body} within {duration(d)}"
            return f"excluding those {s}" if neg else s
        case A.SegRef(name=nm):
            return f"who are {'not ' if neg else ''}in segment '{nm}'"
        case A.Consent(channel=ch):
            return f"{'without' if neg else 'with'} {_words(ch)} consent"
        case A.Lit(value=bool() as b):
            return "(everyone)" if b != neg else "(no one)"
    text = f"for whom {value(n).removeprefix('the ')} is true"
    if isinstance(n, A.Attr | A.TraitRef):
        return text if not neg else text.replace("is true", "is false")
    return f"excluding those {text}" if neg else text


def sentence(node: A.Node, kind: str, plan: _Plan | None = None) -> str:
    if kind == "trait":
        return value(node)
    return f"customers {cond(node)}"


def fallback(node: A.Node) -> str:
    return render(node)
