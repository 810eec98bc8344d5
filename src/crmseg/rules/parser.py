"""Rule text -> AST (with positions), and AST -> canonical rule text."""

from __future__ import annotations

import dataclasses
import functools
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.tree import Meta

from crmseg.errors import Location, RuleSyntaxError
from crmseg.rules import ast as A

# seconds and minutes are for real-time rules ("no order within 30min")
UNIT_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400, "mo": 30 * 86_400,
                "y": 365 * 86_400}  # fmt: skip
_DUR = re.compile(r"(\d+)(mo|min|s|h|d|w|y)")


@functools.cache
def _lark() -> Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text()
    # cache=True keeps the built LALR tables in the temp folder: a new process loads them
    # instead of rebuilding the parser (half a second on every command).
    return Lark(
        grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True, cache=True
    )


def duration(text: str) -> A.Dur:
    m = _DUR.fullmatch(text)
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return A.Dur(int(m.group(1)) * UNIT_SECONDS[m.group(2)], text)


def locate(
    text: str, span: A.Span, file: str | None, line: int = 1, column: int = 1
) -> tuple[Location, str]:
    """The YAML-file location of a span of rule text, and a caret excerpt under it.

    Lines are offset by ``line - 1``; columns only on the first line of the text (later
    lines of a YAML block scalar carry their own indentation).
    """
    lines = text.splitlines() or [""]
    src = lines[min(span.line, len(lines)) - 1]
    width = span.end_column - span.column if span.end_line == span.line else len(src)
    width = max(1, min(width, len(src) - span.column + 1))
    col = span.column + (column - 1 if span.line == 1 else 0)
    # A long line is cut to a window around the span; characters a terminal cannot show
    # (controls, NUL, lone surrogates) become U+FFFD one for one, so the carets still align.
    start = max(0, span.column - 1 - _EXCERPT // 2) if len(src) > _EXCERPT else 0
    shown = "".join(_visible(ch) if _hidden(ch) else ch for ch in src)
    head, tail = ("…" if start else ""), ("…" if start + _EXCERPT < len(src) else "")
    shown = head + shown[start : start + _EXCERPT] + tail
    pad = span.column - 1 - start + len(head)
    carets = "^" * max(1, min(width, _EXCERPT - (span.column - 1 - start)))
    excerpt = f"  {shown}\n  {' ' * pad}{carets}"
    return Location(file, line + span.line - 1, col), excerpt


_EXCERPT = 120  # characters of a rule line shown under an error
_SHOWN = {9: " "}  # a tab shows as one space (the caret line counts characters)


def _hidden(ch: str) -> bool:
    code = ord(ch)
    return code < 32 or 0xD800 <= code <= 0xDFFF or code == 0x7F


def _visible(ch: str) -> str:
    return _SHOWN.get(ord(ch), "\ufffd")


def _span(meta: Meta | Token) -> A.Span:
    if isinstance(meta, Token):
        return A.Span(
            meta.line or 1,
            meta.column or 1,
            meta.end_line or 1,
            meta.end_column or 1,
            meta.start_pos or 0,
            meta.end_pos or 0,
        )
    if getattr(meta, "empty", True):
        return A.NOSPAN
    return A.Span(
        meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos, meta.end_pos
    )


@v_args(meta=True)
class _Build(Transformer_NonRecursive[Token, A.Node]):  # iterative: long rules do not hit the stack
    def number(self, meta: Meta, c: list[Token]) -> A.Node:
        s = str(c[0])
        v: int | float = float(s) if any(ch in s for ch in ".eE") else int(s)
        return A.Lit(v, "number", span=_span(meta))

    def string(self, meta: Meta, c: list[Token]) -> A.Node:
        return A.Lit(str(c[0])[1:-1].replace("''", "'"), "string", span=_span(meta))

    def duration(self, meta: Meta, c: list[Token]) -> A.Node:
        d = duration(str(c[0]))
        return A.Dur(d.seconds, d.text, span=_span(meta))

    def true(self, meta: Meta, c: list[Token]) -> A.Node:
        return A.Lit(True, "bool", span=_span(meta))

    def false(self, meta: Meta, c: list[Token]) -> A.Node:
        return A.Lit(False, "bool", span=_span(meta))

    def null(self, meta: Meta, c: list[Token]) -> A.Node:
        return A.Lit(None, "null", span=_span(meta))

    def now(self, meta: Meta, c: list[Token]) -> A.Node:
        return A.Now(span=_span(meta))

    def name(self, meta: Meta, c: list[Token]) -> A.Node:
        return A.Name(tuple(str(t) for t in c), span=_span(meta))

    def binop(self, meta: Meta, c: list[Any]) -> A.Node:
        op = str(c[1]).lower()
        return A.Binary("!=" if op == "<>" else op, c[0], c[2], span=_span(meta))

    def not_(self, meta: Meta, c: list[Any]) -> A.Node:
        return A.Unary("not", c[1], span=_span(meta))

    def neg(self, meta: Meta, c: list[Any]) -> A.Node:
        arg = c[1]
        if isinstance(arg, A.Lit) and arg.kind == "number" and isinstance(arg.value, int | float):
            return A.Lit(-arg.value, "number", span=_span(meta))
        return A.Unary("-", arg, span=_span(meta))

    def between(self, meta: Meta, c: list[Any]) -> A.Node:
        return A.Between(c[0], c[2], c[4], span=_span(meta))

    def not_between(self, meta: Meta, c: list[Any]) -> A.Node:
        return A.Between(c[0], c[3], c[5], True, span=_span(meta))

    def in_(self, meta: Meta, c: list[Any]) -> A.Node:
        return A.In(c[0], tuple(c[2:]), span=_span(meta))

    def not_in(self, meta: Meta, c: list[Any]) -> A.Node:
        return A.In(c[0], tuple(c[3:]), True, span=_span(meta))

    def like(self, meta: Meta, c: list[Any]) -> A.Node:
        return A.Like(c[0], c[2], span=_span(meta))

    def not_like(self, meta: Meta, c: list[Any]) -> A.Node:
        return A.Like(c[0], c[3], True, span=_span(meta))

    def is_null(self, meta: Meta, c: list[Any]) -> A.Node:
        return A.IsNull(c[0], span=_span(meta))

    def is_not_null(self, meta: Meta, c: list[Any]) -> A.Node:
        return A.IsNull(c[0], True, span=_span(meta))

    def args(self, meta: Meta, c: list[Any]) -> Any:
        return tuple(c)

    def call(self, meta: Meta, c: list[Any]) -> A.Node:
        # maybe_placeholders: [NAME, args|None, WHERE|None, expr|None, WITHIN|None, DUR|None]
        name, args, _, where, _, dur = c
        within = None
        if isinstance(dur, Token):
            d = duration(str(dur))
            within = A.Dur(d.seconds, d.text, span=_span(dur))
        return A.Call(str(name).lower(), tuple(args or ()), where, within, span=_span(meta))

    def case_expr(self, meta: Meta, c: list[Any]) -> A.Node:
        # [CASE, (WHEN, cond, THEN, value)+, ELSE|None, default|None, END]
        body = c[1:-3]
        whens = tuple((body[i + 1], body[i + 3]) for i in range(0, len(body), 4))
        return A.Case(whens, c[-2], span=_span(meta))

    def seq(self, meta: Meta, c: list[Any]) -> A.Node:
        d = duration(str(c[-1]))
        w = A.Dur(d.seconds, d.text, span=_span(c[-1]))
        return A.Seq(c[0], c[2], False, w, span=_span(meta))

    def seq_not(self, meta: Meta, c: list[Any]) -> A.Node:
        d = duration(str(c[-1]))
        w = A.Dur(d.seconds, d.text, span=_span(c[-1]))
        return A.Seq(c[0], c[3], True, w, span=_span(meta))


def _expected(e: UnexpectedInput) -> str:
    exp = sorted(getattr(e, "expected", None) or getattr(e, "allowed", None) or [])
    names = {
        "RPAR": "')'",
        "LPAR": "'('",
        "COMMA": "','",
        "NAME": "a name",
        "NUMBER": "a number",
        "STRING": "a 'string'",
        "DURATION": "a duration like 30d",
        "CMP": "a comparison",
        "MINUS": "'-'",
        "PLUS": "'+'",
        "MULOP": "'*' or '/'",
        "DOT": "'.'",
    }
    shown = [names.get(x, x.lower()) for x in exp if not x.startswith("__")][:8]
    return ", ".join(shown)


def parse(text: str, *, file: str | None = None, line: int = 1, column: int = 1) -> A.Node:
    """Parse one rule or trait expression; raises RuleSyntaxError pointing into ``file``.

    Nodes are immutable and their spans are relative to ``text``, so a text parsed before
    in this process is answered from a memo (a run builds the catalog's plan and the model
    features' plan over the same built-in traits; a server parses on every request)."""
    node = _PARSED.get(text)
    if node is None:
        node = _parse(text, file, line, column)
        if len(_PARSED) >= _MEMO:
            _PARSED.pop(next(iter(_PARSED)))  # the oldest entry
        _PARSED[text] = node
    return node


_PARSED: dict[str, A.Node] = {}
_MEMO = 8192  # texts kept


def _parse(text: str, file: str | None, line: int, column: int) -> A.Node:
    if len(text) > MAX_RULE:
        loc, excerpt = locate(text, A.Span(1, 1, 1, 2), file, line, column)
        raise RuleSyntaxError(
            f"a rule is at most {MAX_RULE:,} characters, this one has {len(text):,}", loc, excerpt
        )
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        if isinstance(e, UnexpectedEOF) or (
            isinstance(e, UnexpectedToken) and e.token.type == "$END"
        ):
            lines = text.splitlines() or [""]
            ln, col = len(lines), len(lines[-1]) + 1
            what = "the rule ended too early"
        elif isinstance(e, UnexpectedCharacters):
            ln, col = e.line, e.column
            what = f"unexpected character {text[e.pos_in_stream or 0]!r}"
        else:
            ln, col = e.line, e.column
            tok = getattr(e, "token", None)
            what = f"unexpected {str(tok)!r}" if tok is not None else "unexpected input"
        exp = _expected(e)
        msg = what + (f"; expected {exp}" if exp else "")
        loc, excerpt = locate(text, A.Span(ln, col, ln, col + 1), file, line, column)
        raise RuleSyntaxError(msg, loc, excerpt) from None
    node = _Build().transform(tree)
    assert isinstance(node, A.Node)
    node = _balanced(node)
    deep = _too_deep(node)
    if deep is not None:
        loc, excerpt = locate(text, deep.span, file, line, column)
        raise RuleSyntaxError(
            f"nested more than {MAX_DEPTH} levels deep (long and/or/+/-/* chains are fine; "
            "split deeper rules into traits)",
            loc,
            excerpt,
        )
    return node


MAX_RULE = 1_000_000  # characters in one rule or trait
MAX_DEPTH = 48  # nesting levels after chains are balanced; every later pass recurses per level
# ``and``/``or`` chains longer than this are regrouped as balanced trees (exactly the same
# result); ``+``/``-`` and ``*`` chains only when they could not be nested otherwise, as
# regrouping floating-point sums can change the last digit.
_LOGIC_CHAIN = 8
_ARITH_CHAIN = MAX_DEPTH - 8


def _too_deep(root: A.Node) -> A.Node | None:
    """The first node nested deeper than ``MAX_DEPTH`` (an explicit stack, no recursion)."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return node
        stack.extend((c, depth + 1) for c in A.children(node))
    return None


def _terms(node: A.Node) -> tuple[str, list[tuple[bool, A.Node]]]:
    """(operator of the balanced tree, [(negated?, term)]) of a chain worth regrouping; an
    empty list when ``node`` heads no such chain. Explicit stacks, no recursion."""
    if not isinstance(node, A.Binary):
        return "", []
    if node.op in ("and", "or", "*"):
        out: list[tuple[bool, A.Node]] = []
        stack: list[A.Node] = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, A.Binary) and n.op == node.op:
                stack.extend((n.right, n.left))
            else:
                out.append((False, n))
        least = _LOGIC_CHAIN if node.op != "*" else _ARITH_CHAIN
        return (node.op, out) if len(out) > least else ("", [])
    if node.op in ("+", "-"):  # a - b + c: the left spine, with signs
        signed: list[tuple[bool, A.Node]] = []
        spine: A.Node = node
        while isinstance(spine, A.Binary) and spine.op in ("+", "-"):
            signed.append((spine.op == "-", spine.right))
            spine = spine.left
        signed.append((False, spine))
        signed.reverse()
        return ("+", signed) if len(signed) > _ARITH_CHAIN else ("", [])
    return "", []


def _balanced(root: A.Node) -> A.Node:
    """The same rule with long chains regrouped as balanced trees (see ``_LOGIC_CHAIN``), so a
    chain of 2,000 ``or`` nests 11 levels, not 2,000. Iterative, linear in size."""
    done: dict[int, A.Node] = {}
    stack: list[tuple[A.Node, bool]] = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if id(node) in done:
            continue
        op, chain = _terms(node)
        kids = [t for _, t in chain] if chain else A.children(node)
        if not ready:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in done)
            continue
        if chain:
            items = [
                A.Unary("-", done[id(t)], span=t.span) if negated else done[id(t)]
                for negated, t in chain
            ]
            done[id(node)] = _tree(op, items)
        else:
            done[id(node)] = _rebuilt(node, done)
    return done[id(root)]


def _tree(op: str, items: list[A.Node]) -> A.Node:
    """``items`` joined by ``op`` as a balanced tree (pairwise rounds, no recursion)."""
    level = items
    while len(level) > 1:
        nxt: list[A.Node] = []
        for i in range(0, len(level) - 1, 2):
            a, b = level[i], level[i + 1]
            span = A.Span(
                a.span.line, a.span.column, b.span.end_line, b.span.end_column,
                a.span.start, b.span.end,
            )  # fmt: skip
            nxt.append(A.Binary(op, a, b, span=span))
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def _rebuilt(node: A.Node, done: dict[int, A.Node]) -> A.Node:
    changes = {}
    for f in dataclasses.fields(node):
        if f.name == "span":
            continue
        value = getattr(node, f.name)
        new = _mapped(value, done)
        if new is not value:
            changes[f.name] = new
    return dataclasses.replace(node, **changes) if changes else node


def _mapped(value: Any, done: dict[int, A.Node]) -> Any:
    if isinstance(value, A.Node):
        return done.get(id(value), value)
    if isinstance(value, tuple):
        items = tuple(_mapped(v, done) for v in value)
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


# --- rendering ----------------------------------------------------------------------------

_PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "neg": 7}
_CMP = ("=", "!=", "<", "<=", ">", ">=")


def _prec(n: A.Node) -> int:
    match n:
        case A.Binary(op=op):
            return _PREC["cmp"] if op in _CMP else _PREC[op]
        case A.Unary(op="not"):
            return _PREC["not"]
        case A.Unary(op="-"):
            return _PREC["neg"]
        case A.Between() | A.In() | A.Like() | A.IsNull():
            return _PREC["cmp"]
        case A.Lit(kind="number", value=v) if isinstance(v, int | float) and v < 0:
            return _PREC["neg"]
    return 9


def _lit(v: A.Value) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return f"date('{v.date().isoformat()}')"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


def _dur(d: A.Dur) -> str:
    if d.text:
        return d.text
    for unit in ("y", "w", "d", "h"):
        if d.seconds % UNIT_SECONDS[unit] == 0:
            return f"{d.seconds // UNIT_SECONDS[unit]}{unit}"
    raise ValueError(f"duration of {d.seconds}s is not a whole number of hours")


def render(n: A.Node) -> str:
    """Canonical text of a node; ``parse(render(n)) == n`` for surface nodes."""

    def sub(c: A.Node, p: int, strict: bool = False) -> str:
        s = render(c)
        cp = _prec(c)
        return f"({s})" if cp < p or (strict and cp == p) else s

    match n:
        case A.Lit(value=v):
            return _lit(v)
        case A.Now():
            return "now"
        case A.Dur():
            return _dur(n)
        case A.Name(parts=parts):
            return ".".join(parts)
        case A.Unary(op="not", arg=a):
            return f"not {sub(a, _PREC['not'])}"
        case A.Unary(op="-", arg=a):
            return f"-{sub(a, _PREC['neg'] + 1)}"
        case A.Binary(op=op, left=l, right=r):
            pr = _prec(n)
            if op in _CMP:
                return f"{sub(l, pr + 1)} {op} {sub(r, pr + 1)}"
            return f"{sub(l, pr)} {op} {sub(r, pr, strict=True)}"
        case A.Between(arg=a, low=lo, high=hi, negated=neg):
            k = "not between" if neg else "between"
            c = _PREC["cmp"] + 1
            return f"{sub(a, c)} {k} {sub(lo, c)} and {sub(hi, c)}"
        case A.In(arg=a, items=items, negated=neg):
            inner = ", ".join(render(i) for i in items)
            return f"{sub(a, _PREC['cmp'] + 1)} {'not in' if neg else 'in'} ({inner})"
        case A.Like(arg=a, pattern=pat, negated=neg):
            c = _PREC["cmp"] + 1
            return f"{sub(a, c)} {'not like' if neg else 'like'} {sub(pat, c)}"
        case A.IsNull(arg=a, negated=neg):
            return f"{sub(a, _PREC['cmp'] + 1)} is {'not null' if neg else 'null'}"
        case A.Call(fn=fn, args=args, where=w, within=d):
            s = ", ".join(render(a) for a in args)
            if w is not None:
                s += f" where {render(w)}"
            if d is not None:
                s += f" within {_dur(d)}"
            return f"{fn}({s.strip()})"
        case A.Seq(first=f, second=s2, negated=neg, within=d):
            return f"{render(f)} then {'not ' if neg else ''}{render(s2)} within {_dur(d)}"
        case A.Case(whens=whens, default=dflt):
            # `when did('a') then` would read as a sequence: a condition ending in a call
            # gets parentheses
            conds = [render(c) for c, _ in whens]
            conds = [f"({c})" if c.endswith(")") else c for c in conds]
            clauses = [f"when {c} then {render(v)}" for c, (_, v) in zip(conds, whens, strict=True)]
            tail = f" else {render(dflt)}" if dflt is not None else ""
            return f"case {' '.join(clauses)}{tail} end"
        case A.ModelRef(name=nm):
            return nm
        case A.PopFunc(fn=fn, arg=a, n=k):
            return f"{fn}({render(a)}{f', {k}' if fn == 'ntile' else ''})"
        # resolved nodes render back to equivalent surface text
        case A.Attr(col=c):
            return c
        case A.Col(table=t, col=c):
            return c
        case A.TraitRef(name=nm):
            return nm
        case A.SegRef(name=nm):
            return f"in_segment({_lit(nm)})"
        case A.Consent(channel=ch):
            return f"consent.{ch}"
        case A.Func(fn=fn, args=args):
            return f"{fn}({', '.join(render(a) for a in args)})"
        case A.Agg(fn=fn, table=t, col=c, where=w, within=d):
            s = t if c is None else f"{t}.{c}"
            if w is not None:
                s += f" where {render(w)}"
            if d is not None:
                s += f" within {_dur(d)}"
            return f"{fn}({s})"
        case A.Did(event=e, within=d, negated=neg):
            wt = f" within {_dur(d)}" if d is not None else ""
            return f"{'did_not' if neg else 'did'}({_lit(e)}{wt})"
        case A.SeqR(first=f, second=s2, negated=neg, within=d, first_within=fw):
            w1 = f" within {_dur(fw)}" if fw is not None else ""
            return (
                f"did({_lit(f)}{w1}) then {'not ' if neg else ''}did({_lit(s2)}) within {_dur(d)}"
            )
    raise TypeError(f"cannot render {type(n).__name__}")
