"""The type checker: resolves names against the schema and traits, checks types, and
rewrites surface nodes into resolved ones. It collects every error instead of stopping."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from crmseg.errors import RuleTypeError
from crmseg.rules import ast as A
from crmseg.rules.defs import Definition, Library, Schema
from crmseg.rules.parser import locate
from crmseg.sources.model import CHANNELS, TABLES, DType

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Durations past this overflow timestamps around any as_of (and mean a typo anyway).
MAX_DURATION_TEXT = "1000y"
MAX_DURATION = 1000 * 365 * 86400
MAX_ROUND_DIGITS = 30
_OUT_OF_RANGE = object()


def _fold(op: str, x: object, y: object) -> object:
    """``x op y`` for two constant numbers, ``_OUT_OF_RANGE`` when it overflows what the
    engine holds, None when either side reads data."""
    if x is _OUT_OF_RANGE or y is _OUT_OF_RANGE:
        return _OUT_OF_RANGE
    if not isinstance(x, int | float) or not isinstance(y, int | float):
        return None
    if op == "/":
        return None if y == 0 else x / y
    v = x + y if op == "+" else x - y if op == "-" else x * y
    if isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:
        return _OUT_OF_RANGE
    if isinstance(v, float) and not math.isfinite(v):
        return _OUT_OF_RANGE
    return v


Type = Literal["number", "string", "bool", "time", "duration", "null", "any"]
Key = tuple[Literal["segment", "trait"], str]

# Tables an aggregate may range over.
RELATED = ("orders", "order_items", "events", "messages", "tickets", "subscriptions", "reviews")

_DTYPES: dict[DType, Type] = {
    "string": "string",
    "int": "number",
    "float": "number",
    "bool": "bool",
    "timestamp": "time",
    "date": "time",
    "json": "string",
}
_WORDS: dict[Type, str] = {
    "number": "a number",
    "string": "a string",
    "bool": "a condition (true/false)",
    "time": "a timestamp",
    "duration": "a duration",
    "null": "null",
    "any": "a value",
}
_CMP = ("=", "!=", "<", "<=", ">", ">=")


class _Fail(Exception):
    """Internal: abandon the current sub-expression after recording an error."""


def time_column(table: str, schema: Schema) -> str | None:
    """The table's time column, if the project's data has it."""
    spec = TABLES.get(table)
    t = spec.time if spec else None
    return t if t is not None and t in schema.tables.get(table, {}) else None


def suggest(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass
class Checked:
    """A type-checked definition."""

    defn: Definition
    node: A.Node | None  # resolved tree; None for sql segments or when it failed
    type: Type = "any"
    deps: set[Key] = field(default_factory=set)
    lacks: str | None = None  # when it failed for want of data: what it needs ("orders.margin")


class Checker:
    """Checks definitions against a schema. ``trait_names`` and ``segment_names`` are every
    trait and segment; ``trait_type`` resolves a trait's type lazily; ``library`` the model
    traits, functions and English phrases rules may use; ``absent`` names built-ins the data
    cannot support, with what each needs."""

    def __init__(
        self,
        schema: Schema,
        trait_type: Callable[[str], Type],
        trait_names: Iterable[str],
        segment_names: Iterable[str],
        library: Library | None = None,
        absent: Mapping[str, str] | None = None,
    ) -> None:
        lib = library or Library()
        self.schema = schema
        self.trait_type = trait_type
        self.traits = set(trait_names)
        self.segments = set(segment_names)
        self.models = dict(lib.models)
        self.functions = lib.functions
        self.phrases = lib.phrases
        self.hints = lib.hints
        self.absent = dict(absent or {})
        self.customers: Mapping[str, DType] = schema.tables.get("customers", {})

    def check(self, defn: Definition, node: A.Node) -> tuple[Checked, list[RuleTypeError]]:
        run = _Run(self, defn)
        out = Checked(defn, None, "any", run.deps)
        try:
            resolved, t = run.expr(node, None)
        except _Fail:
            out.lacks = run.lacks
            return out, run.errors
        if defn.kind == "segment" and t not in ("bool", "null", "any"):
            run.error(node, f"a segment rule must be a condition (true/false), not {_WORDS[t]}")
        if run.errors:
            out.lacks = run.lacks
            return out, run.errors
        out.node, out.type = resolved, t
        return out, run.errors


class _Run:
    def __init__(self, ck: Checker, defn: Definition) -> None:
        self.ck = ck
        self.defn = defn
        self.errors: list[RuleTypeError] = []
        self.deps: set[Key] = set()
        self.lacks: str | None = None
        self._consts: dict[int, object] = {}  # id(node) -> value of constant arithmetic

    def lack(self, what: str) -> None:
        """Record the first piece of data (``orders.margin``, ``the tickets table``) that
        this definition needs and the project lacks."""
        if self.lacks is None:
            self.lacks = what

    # errors -------------------------------------------------------------------------------

    def error(self, node: A.Node, msg: str) -> None:
        loc, excerpt = locate(
            self.defn.text or "", node.span, self.defn.file, self.defn.line, self.defn.column
        )
        self.errors.append(RuleTypeError(msg, loc, excerpt))

    def fail(self, node: A.Node, msg: str) -> _Fail:
        self.error(node, msg)
        return _Fail()

    def want(self, node: A.Node, got: Type, *allowed: Type) -> None:
        if got not in (*allowed, "null", "any"):
            exp = " or ".join(_WORDS[a] for a in allowed)
            raise self.fail(node, f"expected {exp}, got {_WORDS[got]}")

    @staticmethod
    def unify(a: Type, b: Type) -> Type | None:
        if a == b or b in ("null", "any"):
            return a
        if a in ("null", "any"):
            return b
        return None

    # expressions ----------------------------------------------------------------------------

    def many(self, nodes: Iterable[A.Node], table: str | None) -> list[tuple[A.Node, Type]]:
        """Check several sub-expressions, reporting errors in all of them."""
        out: list[tuple[A.Node, Type]] = []
        failed = False
        for n in nodes:
            try:
                out.append(self.expr(n, table))
            except _Fail:
                failed = True
        if failed:
            raise _Fail()
        return out

    def expr(self, n: A.Node, table: str | None) -> tuple[A.Node, Type]:
        """Resolve and type one node; ``table`` is the related table inside a ``where``."""
        match n:
            case A.Lit(kind=k):
                self.literal(n)
                return n, ("null" if k == "null" else k)
            case A.Now():
                return n, "time"
            case A.Dur():
                self.duration(n)
                return n, "duration"
            case A.Name():
                return self.name(n, table)
            case A.Unary(op=op, arg=a):
                [(ra, ta)] = self.many([a], table)
                inner = self._consts.get(id(a))
                if op == "-" and isinstance(inner, int | float):
                    self._consts[id(n)] = -inner
                self.want(a, ta, "bool" if op == "not" else "number")
                return replace(n, arg=ra), ta if op == "-" else "bool"
            case A.Binary(op=op, left=l, right=r):
                (rl, tl), (rr, tr) = self.many([l, r], table)
                out = self.binary(n, op, tl, tr)
                if op in ("+", "-", "*", "/"):  # constants fold bottom-up, once per node
                    value = _fold(op, self._consts.get(id(l)), self._consts.get(id(r)))
                    if value is _OUT_OF_RANGE:
                        raise self.fail(n, "this arithmetic on numbers overflows a 64-bit number")
                    if value is not None:
                        self._consts[id(n)] = value
                return replace(n, left=rl, right=rr), out
            case A.Between(arg=a, low=lo, high=hi):
                (ra, ta), (rlo, tlo), (rhi, thi) = self.many([a, lo, hi], table)
                self.comparable(n, ta, tlo)
                self.comparable(n, ta, thi)
                return replace(n, arg=ra, low=rlo, high=rhi), "bool"
            case A.In(arg=a, items=items):
                (ra, ta), *rest = self.many([a, *items], table)
                for (_, ti), item in zip(rest, items, strict=True):
                    self.comparable(item, ta, ti)
                return replace(n, arg=ra, items=tuple(x for x, _ in rest)), "bool"
            case A.Like(arg=a, pattern=p):
                (ra, ta), (rp, tp) = self.many([a, p], table)
                self.want(a, ta, "string")
                self.want(p, tp, "string")
                return replace(n, arg=ra, pattern=rp), "bool"
            case A.IsNull(arg=a):
                [(ra, _)] = self.many([a], table)
                return replace(n, arg=ra), "bool"
            case A.Call():
                return self.call(n, table)
            case A.Seq():
                return self.seq(n, table)
            case A.Case():
                return self.case(n, table)
        raise self.fail(n, f"unexpected {type(n).__name__}")

    def literal(self, n: A.Lit) -> None:
        """Reject literals the engine cannot hold: numbers beyond a 64-bit integer or a double,
        NUL characters (they end a C string) and text that is not valid Unicode."""
        v = n.value
        if n.kind == "number" and isinstance(v, int | float):
            self._consts[id(n)] = v
        if n.kind == "number":
            if isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:
                raise self.fail(n, "a whole number beyond the 64-bit range (about ±9.2e18)")
            if isinstance(v, float) and not math.isfinite(v):
                raise self.fail(n, "a number too large for a double (about ±1.8e308)")
        elif n.kind == "string" and isinstance(v, str):
            if "\x00" in v:
                raise self.fail(n, "a string cannot contain a NUL character")
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise self.fail(n, "a string with invalid Unicode (a lone surrogate)") from None

    def case(self, n: A.Case, table: str | None) -> tuple[A.Node, Type]:
        flat = [x for pair in n.whens for x in pair]
        checked = self.many([*flat, *([n.default] if n.default is not None else [])], table)
        acc: Type = "null"
        whens = []
        for i in range(0, len(flat), 2):
            (rc, tc), (rv, _) = checked[i], checked[i + 1]
            self.want(flat[i], tc, "bool")
            whens.append((rc, rv))
        values = [(flat[i + 1], checked[i + 1][1]) for i in range(0, len(flat), 2)]
        if n.default is not None:
            values.append((n.default, checked[-1][1]))
        for node, t in values:
            u = self.unify(acc, t)
            if u is None or u == "duration":
                raise self.fail(
                    node, f"case values must have one type: {_WORDS[acc]} and {_WORDS[t]} differ"
                )
            acc = u
        default = checked[-1][0] if n.default is not None else None
        return replace(n, whens=tuple(whens), default=default), acc

    def comparable(self, n: A.Node, a: Type, b: Type) -> None:
        if self.unify(a, b) is None:
            hint = " (write dates as date('2024-01-01'))" if {a, b} == {"time", "string"} else ""
            raise self.fail(n, f"cannot compare {_WORDS[a]} with {_WORDS[b]}{hint}")

    def binary(self, n: A.Binary, op: str, a: Type, b: Type) -> Type:
        if op in ("and", "or"):
            self.want(n.left, a, "bool")
            self.want(n.right, b, "bool")
            return "bool"
        if op in _CMP:
            if "duration" in (a, b):
                raise self.fail(
                    n, "cannot compare with a duration; compare days_since(...) with a number"
                )
            self.comparable(n, a, b)
            return "bool"
        if op in ("+", "-"):
            pair = (a, b)
            if pair in (("time", "duration"), ("duration", "time")) and not (
                op == "-" and a == "duration"
            ):
                return "time"
            if pair == ("duration", "duration"):
                return "duration"
            if pair == ("time", "time"):
                raise self.fail(n, "cannot subtract timestamps; use days_since or hours_since")
        self.want(n.left, a, "number")
        self.want(n.right, b, "number")
        return "number"

    # names ----------------------------------------------------------------------------------

    def name(self, n: A.Name, table: str | None) -> tuple[A.Node, Type]:
        parts, dotted = n.parts, n.dotted
        tables = self.ck.schema.tables
        if table is not None:
            cols = tables.get(table, {})
            col = parts[-1] if len(parts) == 1 or (len(parts) == 2 and parts[0] == table) else None
            if col is not None and col in cols:
                return A.Col(table, col, span=n.span), _DTYPES[cols[col]]
            self.lack(f"{table}.{parts[-1]}")
            raise self.fail(
                n,
                f"unknown column {dotted!r} of {table} (a where condition can use only "
                f"{table}'s columns){suggest(parts[-1], cols)}",
            )
        if dotted in self.ck.traits:
            self.deps.add(("trait", dotted))
            phrase = self.ck.phrases.get(dotted)
            return A.TraitRef(dotted, phrase, span=n.span), self.ck.trait_type(dotted)
        if dotted in self.ck.models:
            m = self.ck.models[dotted]
            missing = [t for t in m.tables if t not in tables]
            if missing:
                self.lack(f"the {missing[0]} table")
                raise self.fail(
                    n, f"{dotted} needs the {', '.join(missing)} table, which this project lacks"
                )
            return A.ModelRef(dotted, m.description, span=n.span), m.type
        if dotted in self.ck.absent:
            need = self.ck.absent[dotted]
            self.lack(need)
            raise self.fail(n, f"{dotted} needs {need}, which this project does not map")
        if parts[0] == "consent" and len(parts) == 2:
            if "consent" not in tables:
                self.lack("the consent table")
                raise self.fail(n, "consent.* needs the consent table, which this project lacks")
            if parts[1] not in CHANNELS:
                raise self.fail(
                    n,
                    f"unknown consent channel {parts[1]!r}; expected one of "
                    f"{', '.join(CHANNELS)}{suggest(parts[1], CHANNELS)}",
                )
            return A.Consent(parts[1], span=n.span), "bool"
        if len(parts) == 1 and dotted in self.ck.customers:
            return A.Attr(dotted, span=n.span), _DTYPES[self.ck.customers[dotted]]
        if parts[0] in TABLES and parts[0] != "customers":
            if len(parts) == 1:
                raise self.fail(n, f"{dotted} is a table; aggregate it, e.g. count({dotted})")
            raise self.fail(
                n,
                f"{dotted} is a column of {parts[0]}; use it inside an aggregate over "
                f"{parts[0]}, e.g. max({dotted})",
            )
        if len(parts) == 2 and parts[0] == "customers" and parts[1] in self.ck.customers:
            return A.Attr(parts[1], span=n.span), _DTYPES[self.ck.customers[parts[1]]]
        options = [
            *self.ck.customers,
            *self.ck.traits,
            *self.ck.models,
            *(f"consent.{c}" for c in CHANNELS),
        ]
        family = sorted(m for m in self.ck.models if m.split(".", 1)[0] == parts[0])
        hint = self.ck.hints.get(parts[0])
        if len(parts) > 1 and (family or hint):
            # a model trait that does not exist (propensity.<a category not configured>)
            known = f"; {parts[0]}.* are {', '.join(family)}" if family else ""
            more = f"; {hint}" if hint else ""
            raise self.fail(n, f"unknown name {dotted!r}{suggest(dotted, family)}{known}{more}")
        raise self.fail(n, f"unknown name {dotted!r}{suggest(dotted, options)}")

    # calls ----------------------------------------------------------------------------------

    def string_arg(self, n: A.Call, what: str) -> str:
        if len(n.args) != 1 or not isinstance(n.args[0], A.Lit) or n.args[0].kind != "string":
            raise self.fail(n, f"{n.fn}() takes one quoted {what}, e.g. {n.fn}('...')")
        v = n.args[0].value
        assert isinstance(v, str)
        self.literal(n.args[0])
        return v

    def duration(self, d: A.Dur | None) -> None:
        if d is not None and abs(d.seconds) > MAX_DURATION:
            raise self.fail(d, f"durations are at most {MAX_DURATION_TEXT}, got {d.text}")

    def call(self, n: A.Call, table: str | None) -> tuple[A.Node, Type]:
        fn = n.fn
        self.duration(n.within)
        if fn in self.ck.functions and fn not in A.ALL_FNS:
            return self.macro(n, table)
        if fn not in A.ALL_FNS:
            known = (*A.ALL_FNS, *self.ck.functions)
            raise self.fail(n, f"unknown function {fn!r}{suggest(fn, known)}")
        if fn in A.POP_FNS:
            return self.pop(n, table)
        if fn in A.AGG_FNS:
            return self.agg(n, table)
        if n.where is not None:
            raise self.fail(n.where, f"where is only allowed in aggregates, not in {fn}()")
        if n.within is not None and fn not in ("did", "did_not"):
            raise self.fail(n.within, f"within is only allowed in aggregates and did(), not {fn}()")
        if fn == "date":
            text = self.string_arg(n, "date")
            try:
                return A.Lit(datetime.fromisoformat(text), "time", span=n.span), "time"
            except ValueError:
                raise self.fail(n.args[0], f"not a date: {text!r} (use YYYY-MM-DD)") from None
        if fn in ("did", "did_not"):
            if table is not None:
                raise self.fail(n, f"{fn}() cannot be used inside a where condition")
            event = self.string_arg(n, "event name")
            self.events(n)
            return A.Did(event, n.within, fn == "did_not", span=n.span), "bool"
        if fn == "in_segment":
            if table is not None:
                raise self.fail(n, "in_segment() cannot be used inside a where condition")
            seg = self.string_arg(n, "segment name")
            if seg not in self.ck.segments:
                raise self.fail(n, f"unknown segment {seg!r}{suggest(seg, self.ck.segments)}")
            self.deps.add(("segment", seg))
            return A.SegRef(seg, span=n.span), "bool"
        return self.scalar(n, table)

    def macro(self, n: A.Call, table: str | None) -> tuple[A.Node, Type]:
        """A parameterised built-in such as ``last_order_at_in('skincare')``: its template
        with the literal arguments filled in, checked like any expression."""
        from crmseg.rules.parser import parse, render

        f = self.ck.functions[n.fn]
        if n.where is not None or n.within is not None:
            raise self.fail(n, f"{n.fn}() takes no where or within")
        ok = len(n.args) == len(f.params) and all(
            isinstance(a, A.Lit) and a.kind in ("string", "number") for a in n.args
        )
        if not ok:
            raise self.fail(n, f"{n.fn}() takes {f.signature}, e.g. {f.example}")
        text = f.template.format(**{p: render(a) for p, a in zip(f.params, n.args, strict=True)})
        before = len(self.errors)
        try:
            node, t = self.expr(_nospan(parse(text)), table)
        except _Fail:
            why = self.errors[before].message if len(self.errors) > before else "invalid"
            del self.errors[before:]
            raise self.fail(n, f"{n.fn}() is not available here: {why}") from None
        return replace(node, span=n.span), t

    def pop(self, n: A.Call, table: str | None) -> tuple[A.Node, Type]:
        fn = n.fn
        if table is not None:
            raise self.fail(n, f"{fn}() compares customers; it cannot be used in a where")
        if n.where is not None or n.within is not None:
            raise self.fail(n, f"{fn}() takes no where or within")
        want = 2 if fn == "ntile" else 1
        if len(n.args) != want:
            ex = "ntile(ltv, 5)" if fn == "ntile" else f"{fn}(ltv)"
            raise self.fail(n, f"{fn}() takes {want} argument(s), e.g. {ex}")
        [(arg, t)] = self.many(n.args[:1], None)
        if any(isinstance(x, A.PopFunc) for x in A.walk(arg)):
            raise self.fail(n, f"{fn}() cannot contain another ntile/percent_rank/median_all")
        if fn == "median_all":
            self.want(n.args[0], t, "number")
        else:
            self.want(n.args[0], t, "number", "time")
        tiles = 0
        if fn == "ntile":
            k = n.args[1]
            if not (isinstance(k, A.Lit) and isinstance(k.value, int) and 2 <= k.value <= 1000):
                raise self.fail(k, "ntile()'s count must be a whole number from 2 to 1000")
            tiles = k.value
        out: Type = "number"
        return A.PopFunc(fn, arg, tiles, span=n.span), out

    def events(self, n: A.Node) -> None:
        cols = self.ck.schema.tables.get("events")
        if cols is None or "name" not in cols:
            self.lack("the events table" if cols is None else "events.name")
            raise self.fail(n, "did() needs the events table, which this project lacks")
        if time_column("events", self.ck.schema) is None:
            self.lack("events.occurred_at")
            raise self.fail(n, "did() needs events.occurred_at, which this project lacks")

    def scalar(self, n: A.Call, table: str | None) -> tuple[A.Node, Type]:
        fn, args = n.fn, n.args
        arity = {
            "lower": (1, 1),
            "upper": (1, 1),
            "contains": (2, 2),
            "abs": (1, 1),
            "round": (1, 2),
            "days_since": (1, 1),
            "hours_since": (1, 1),
        }.get(fn, (1, 99))
        if not arity[0] <= len(args) <= arity[1]:
            want = str(arity[0]) if arity[0] == arity[1] else f"{arity[0]} to {arity[1]}"
            if arity[1] == 99:
                want = f"at least {arity[0]}"
            raise self.fail(n, f"{fn}() takes {want} argument(s), got {len(args)}")
        checked = self.many(args, table)
        rargs = tuple(x for x, _ in checked)
        types = [t for _, t in checked]
        out: Type
        if fn in ("lower", "upper"):
            self.want(args[0], types[0], "string")
            out = "string"
        elif fn == "contains":
            self.want(args[0], types[0], "string")
            self.want(args[1], types[1], "string")
            out = "bool"
        elif fn in ("abs", "round"):
            for a, t in zip(args, types, strict=True):
                self.want(a, t, "number")
            if (
                fn == "round"
                and len(args) == 2
                and not (isinstance(args[1], A.Lit) and isinstance(args[1].value, int))
            ):
                raise self.fail(args[1], "round()'s digits must be a whole number literal")
            if fn == "round" and len(args) == 2 and abs(args[1].value) > MAX_ROUND_DIGITS:  # type: ignore[attr-defined]
                raise self.fail(
                    args[1], f"round()'s digits must be between -{MAX_ROUND_DIGITS} and "
                    f"{MAX_ROUND_DIGITS}"
                )  # fmt: skip
            out = "number"
        elif fn in ("days_since", "hours_since"):
            self.want(args[0], types[0], "time")
            out = "number"
        else:  # coalesce, least, greatest
            acc: Type = "null"
            for a, t in zip(args, types, strict=True):
                u = self.unify(acc, t)
                if u is None:
                    raise self.fail(
                        a,
                        f"{fn}() arguments must have one type: {_WORDS[acc]} "
                        f"and {_WORDS[t]} differ",
                    )
                acc = u
            if acc == "duration":
                raise self.fail(n, f"{fn}() cannot take durations")
            out = acc
        return A.Func(fn, rargs, span=n.span), out

    def agg(self, n: A.Call, table: str | None) -> tuple[A.Node, Type]:
        fn = n.fn
        if table is not None:
            raise self.fail(n, f"aggregates cannot be nested inside a where condition ({fn})")
        if len(n.args) != 1 or not isinstance(n.args[0], A.Name):
            ex = "count(orders)" if fn == "count" else f"{fn}(orders.amount)"
            raise self.fail(n, f"{fn}() takes a table or table.column, e.g. {ex}")
        ref = n.args[0]
        tname = ref.parts[0]
        if tname not in RELATED:
            if tname in TABLES:
                raise self.fail(
                    ref, f"cannot aggregate over {tname}; use one of {', '.join(RELATED)}"
                )
            raise self.fail(ref, f"unknown table {tname!r}{suggest(tname, RELATED)}")
        cols = self.ck.schema.tables.get(tname)
        if cols is None:
            self.lack(f"the {tname} table")
            raise self.fail(ref, f"table {tname} is not part of this project's data")
        col: str | None = None
        ctype: Type = "number"
        if len(ref.parts) > 2:
            raise self.fail(ref, f"expected {tname} or {tname}.column, got {ref.dotted}")
        if len(ref.parts) == 2:
            col = ref.parts[1]
            if col not in cols:
                self.lack(f"{tname}.{col}")
                raise self.fail(ref, f"unknown column {col!r} of {tname}{suggest(col, cols)}")
            ctype = _DTYPES[cols[col]]
        elif fn != "count":
            raise self.fail(ref, f"{fn}() needs a column, e.g. {fn}({tname}.<column>)")
        if fn in ("sum", "avg"):
            self.want(ref, ctype, "number")
        if fn in ("min", "max", "mode"):
            self.want(ref, ctype, "number", "time", "string")
        if fn == "median":
            self.want(ref, ctype, "number")
        if fn in ("median_gap", "last_gap"):
            self.want(ref, ctype, "time")
        where = None
        if n.where is not None:
            where, wt = self.expr(n.where, tname)
            self.want(n.where, wt, "bool")
        if fn in ("first", "last") and time_column(tname, self.ck.schema) is None:
            spec = TABLES[tname].time
            self.lack(f"{tname}.{spec}")
            raise self.fail(n, f"{fn}() needs a time column, but {tname} has no {spec}")
        if n.within is not None and time_column(tname, self.ck.schema) is None:
            spec = TABLES[tname].time
            self.lack(f"{tname}.{spec}")
            raise self.fail(n.within, f"within needs a time column, but {tname} has no {spec}")
        numeric = ("count", "count_distinct", "sum", "avg", "median", "median_gap", "last_gap")
        out: Type = "number" if fn in numeric else ctype
        return A.Agg(fn, tname, col, where, n.within, span=n.span), out

    def seq(self, n: A.Seq, table: str | None) -> tuple[A.Node, Type]:
        if table is not None:
            raise self.fail(n, "sequences cannot be used inside a where condition")
        for c in (n.first, n.second):
            if c.fn != "did":
                raise self.fail(c, f"a sequence links did('...') calls, not {c.fn}()")
            if c.where is not None:
                raise self.fail(c.where, "where is not allowed in did()")
        if n.second.within is not None:
            raise self.fail(n.second.within, "the within of a sequence goes after the second did")
        self.duration(n.within)
        self.duration(n.first.within)
        first = self.string_arg(n.first, "event name")
        second = self.string_arg(n.second, "event name")
        self.events(n)
        return A.SeqR(first, second, n.negated, n.within, n.first.within, span=n.span), "bool"


def _nospan(node: A.Node) -> A.Node:
    """A copy of a tree without positions (an expanded template has none in the rule)."""
    import dataclasses

    def fix(v: object) -> object:
        if isinstance(v, A.Node):
            return _nospan(v)
        if isinstance(v, tuple):
            return tuple(fix(x) for x in v)
        return v

    changes = {
        f.name: fix(getattr(node, f.name)) for f in dataclasses.fields(node) if f.name != "span"
    }
    return replace(node, span=A.NOSPAN, **changes)
