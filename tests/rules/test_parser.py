from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmseg.errors import RuleSyntaxError
from crmseg.rules import ast as A
from crmseg.rules.parser import parse, render


def test_precedence_and_binds_tighter_than_or() -> None:
    n = parse("a = 1 or b = 2 and c = 3")
    assert isinstance(n, A.Binary) and n.op == "or"
    assert isinstance(n.right, A.Binary) and n.right.op == "and"


def test_durations_in_seconds() -> None:
    n = parse("count(orders within 6mo) + count(orders within 1y) + count(events within 12h)")
    durs = [x.seconds for x in A.walk(n) if isinstance(x, A.Dur)]
    assert sorted(durs) == [12 * 3600, 180 * 86_400, 365 * 86_400]
    assert parse("count(orders within 2w)") == parse("count(orders within 14d)")
    # seconds and minutes, for real-time rules
    n = parse("did('a' within 30min) and count(events within 45s) > 1")
    assert sorted(x.seconds for x in A.walk(n) if isinstance(x, A.Dur)) == [45, 1800]
    assert parse("count(events within 60min)") == parse("count(events within 1h)")


def test_aggregate_with_where_and_within() -> None:
    n = parse("count(orders where category = 'skincare' within 60d) >= 1")
    assert isinstance(n, A.Binary)
    call = n.left
    assert isinstance(call, A.Call) and call.fn == "count"
    assert call.args == (A.Name(("orders",)),)
    assert call.where == A.Binary("=", A.Name(("category",)), A.Lit("skincare", "string"))
    assert call.within == A.Dur(60 * 86_400)


def test_sequence_and_negated_forms() -> None:
    s = parse("did('added_to_cart') then not did('order_completed') within 1h")
    assert isinstance(s, A.Seq) and s.negated and s.within.seconds == 3600
    assert s.first.args == (A.Lit("added_to_cart", "string"),)
    assert not parse("did('a') then did('b') within 2d").negated  # type: ignore[attr-defined]


def test_keywords_case_insensitive_but_names_may_contain_them() -> None:
    n = parse("android > 1 AND index IS NOT NULL and nowhere NOT IN (1, 2)")
    names = {x.dotted for x in A.walk(n) if isinstance(x, A.Name)}
    assert names == {"android", "index", "nowhere"}


def test_string_escape_and_comments() -> None:
    n = parse("name = 'O''Brien'  # irish\n and x = 1")
    assert A.Lit("O'Brien", "string") in A.walk(n)


def test_positions_are_recorded() -> None:
    n = parse("a = 1 and\n  bb > 2")
    assert isinstance(n, A.Binary)
    assert (n.right.span.line, n.right.span.column) == (2, 3)


def test_span_does_not_affect_equality() -> None:
    assert parse("count(orders)") == parse("  count( orders )")


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ("a >", 3, 14, "ended too early"),
        ("a > > 1", 3, 15, "unexpected '>'"),
        ("a = 'x", 3, 15, "unexpected character"),
        ("x between 1", 3, 22, "ended too early"),
        ("a = 1 and\nb @ 2", 4, 3, "unexpected character '@'"),
    ],
)
def test_syntax_errors_point_into_the_yaml_file(
    text: str, line: int, col: int, fragment: str
) -> None:
    with pytest.raises(RuleSyntaxError) as e:
        parse(text, file="segments/x.yml", line=3, column=11)
    err = e.value
    assert (err.location.file, err.location.line, err.location.column) == (
        "segments/x.yml",
        line,
        col,
    )
    assert fragment in err.message
    assert "^" in err.excerpt


# --- round trip: parse(render(ast)) == ast ---------------------------------------------------

_names = st.sampled_from(["country", "plan", "ltv", "rfm.segment", "x_1"]).map(
    lambda s: A.Name(tuple(s.split(".")))
)
_lits = st.one_of(
    st.integers(0, 10**6).map(lambda i: A.Lit(i, "number")),
    st.floats(0, 1e6, allow_nan=False).map(lambda f: A.Lit(f, "number")),
    st.text("ab' %_", max_size=5).map(lambda s: A.Lit(s, "string")),
    st.sampled_from([A.Lit(True, "bool"), A.Lit(False, "bool"), A.Lit(None, "null")]),
    st.just(A.Now()),
)
_durs = st.sampled_from(["12h", "30d", "8w", "6mo", "1y"]).map(
    lambda s: A.Dur(parse(f"count(o within {s})").within.seconds)  # type: ignore[attr-defined]
)


def _extend(inner: st.SearchStrategy[A.Node]) -> st.SearchStrategy[A.Node]:
    ops = st.sampled_from(["and", "or", "=", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/"])
    return st.one_of(
        st.builds(A.Binary, ops, inner, inner),
        st.builds(lambda a: A.Unary("not", a), inner),
        st.builds(lambda a: A.Unary("-", a), _names),
        st.builds(A.Between, inner, inner, inner, st.booleans()),
        st.builds(
            lambda a, xs, n: A.In(a, tuple(xs), n),
            inner,
            st.lists(inner, min_size=1, max_size=3),
            st.booleans(),
        ),
        st.builds(A.Like, inner, inner, st.booleans()),
        st.builds(A.IsNull, inner, st.booleans()),
        st.builds(
            lambda f, args: A.Call(f, tuple(args)),
            st.sampled_from(["coalesce", "lower", "days_since"]),
            st.lists(inner, min_size=1, max_size=2),
        ),
        st.builds(
            lambda w, d: A.Call("count", (A.Name(("orders",)),), w, d),
            st.none() | inner,
            st.none() | _durs,
        ),
    )


_exprs = st.recursive(st.one_of(_names, _lits), _extend, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_exprs)
def test_render_parse_round_trip(node: A.Node) -> None:
    assert parse(render(node)) == node


def test_a_text_parsed_again_comes_from_the_memo_and_errors_keep_their_place() -> None:
    first = parse("orders_count >= 3 and ltv > 10", file="a.yml", line=4)
    assert parse("orders_count >= 3 and ltv > 10", file="b.yml", line=9) is first
    for where, line in (("a.yml", 3), ("b.yml", 7)):
        with pytest.raises(RuleSyntaxError) as err:
            parse("orders_count >=", file=where, line=line)
        assert f"{where}:{line}:" in str(err.value)
