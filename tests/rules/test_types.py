from __future__ import annotations

import pytest

from crmseg.errors import RuleErrors, RuleSyntaxError, RuleTypeError
from crmseg.rules import Definition, Schema, build_plan
from crmseg.traits import library
from tests.rules.conftest import schema


def errors(*defs: Definition, sch: Schema | None = None) -> list[str]:
    with pytest.raises(RuleErrors) as e:
        build_plan(list(defs), sch or schema(), builtins=library())
    return [str(x) for x in e.value.errors]


def seg(rule: str, name: str = "s", line: int = 1, column: int = 1) -> Definition:
    return Definition(name, "segment", text=rule, file="segments/x.yml", line=line, column=column)


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("contry = 'DE'", "unknown name 'contry'; did you mean 'country'?"),
        ("country > 3", "cannot compare a string with a number"),
        ("sum(orders.amout) > 1", "unknown column 'amout' of orders; did you mean 'amount'?"),
        ("orders.amount > 3", "use it inside an aggregate"),
        ("orders > 3", "orders is a table; aggregate it"),
        ("count(orders where plan = 'x') > 1", "unknown column 'plan' of orders"),
        ("sum(orders.category) > 1", "expected a number, got a string"),
        ("count(ordrs) > 1", "unknown table 'ordrs'; did you mean 'orders'?"),
        ("count(customers) > 1", "cannot aggregate over customers"),
        ("orders_count", "must be a condition"),
        ("signup_at > '2024-01-01'", "date('2024-01-01')"),
        ("in_segment('nope')", "unknown segment 'nope'"),
        ("consent.emial", "unknown consent channel 'emial'"),
        ("lower(3) = 'x'", "expected a string, got a number"),
        ("days_since(country) > 3", "expected a timestamp"),
        ("count(orders where count(orders) > 1) > 1", "nested inside a where"),
        ("lower(country within 3d) = 'x'", "within is only allowed"),
        ("did(country)", "takes one quoted event name"),
        ("fooo(country)", "unknown function 'fooo'"),
        ("date('2024-13-01') < now", "not a date"),
        ("did('a') then did('b' within 1d) within 2d", "goes after the second did"),
        ("signup_at - signup_at > 1", "use days_since"),
        ("days_since(signup_at) > 30d", "cannot compare with a duration"),
    ],
)
def test_type_errors(rule: str, fragment: str) -> None:
    [msg] = errors(seg(rule))
    assert fragment in msg


def test_within_on_a_table_without_time() -> None:
    sch = schema()
    tables = {k: dict(v) for k, v in sch.tables.items()}
    del tables["tickets"]["opened_at"]
    [msg] = errors(seg("count(tickets within 30d) > 1"), sch=Schema(tables))
    assert "within needs a time column, but tickets has no opened_at" in msg


def test_absent_table() -> None:
    sch = Schema({"customers": schema().tables["customers"]})
    [msg] = errors(seg("count(orders) > 1"), sch=sch)
    assert "table orders is not part of this project's data" in msg


def test_all_errors_reported_together_with_locations_and_carets() -> None:
    with pytest.raises(RuleErrors) as e:
        build_plan(
            [
                seg("country = 'DE' and\n  contry > 3", name="a", line=10, column=11),
                seg("country >", name="b", line=20, column=11),
                Definition(
                    "t", "trait", text="sum(orders.amout)", file="traits/t.yml", line=5, column=11
                ),
            ],
            schema(),
            builtins=library(),
        )
    errs = e.value.errors
    assert len(errs) == 3
    by_file = {(x.location.file, x.location.line): x for x in errs}
    a = by_file[("segments/x.yml", 11)]
    assert isinstance(a, RuleTypeError)
    assert a.location.column == 3  # later lines carry their own indentation
    assert a.excerpt.splitlines() == ["    contry > 3", "    ^^^^^^"]
    b = by_file[("segments/x.yml", 20)]
    assert isinstance(b, RuleSyntaxError) and b.location.column == 20
    t = by_file[("traits/t.yml", 5)]
    assert t.location.column == 15  # 'sum(' is 4 chars: the bad name starts at col 5 of text
    assert "(and 2 more errors)" in str(e.value)


def test_cycles_are_named() -> None:
    msgs = errors(seg("in_segment('b')", "a"), seg("in_segment('a')", "b"))
    assert any("reference cycle: a -> b -> a" in m for m in msgs)
    msgs = errors(Definition("x", "trait", text="y + 1"), Definition("y", "trait", text="x * 2"))
    assert any("reference cycle: x -> y -> x" in m for m in msgs)


def test_traits_may_reference_traits_and_user_traits_override_builtins() -> None:
    plan = build_plan(
        [Definition("ltv", "trait", text="sum(orders.amount)"),
         Definition("ltv2", "trait", text="ltv * 2")], schema(), builtins=library())  # fmt: skip
    from crmseg.rules import ast as A

    assert plan.checked[("trait", "ltv")].node == A.Agg("sum", "orders", "amount")
    assert ("trait", "ltv") in plan.checked[("trait", "ltv2")].deps


def test_builtins_skip_absent_tables() -> None:
    sch = Schema({"customers": schema().tables["customers"]})
    plan = build_plan([seg("country = 'DE'")], sch, builtins=library())
    assert plan.traits == []
    full = build_plan([seg("country = 'DE'")], schema(), builtins=library())
    assert {"orders_count", "ltv", "aov", "tickets_90d", "avg_csat", "refund_total"} <= set(
        full.traits
    )


def _minimal_orders() -> Schema:
    """customers and orders with only id, customer, time and amount."""
    full = schema().tables
    orders = {c: full["orders"][c] for c in ("order_id", "customer_id", "ordered_at", "amount")}
    return Schema({"customers": full["customers"], "orders": orders})


def test_ltv_falls_back_to_order_value_without_returns() -> None:
    plan = build_plan([seg("ltv > 100")], _minimal_orders(), builtins=library())
    assert plan.checked[("trait", "ltv")].defn.text == "sum(orders.amount)"
    assert "value.ltv_tier" in plan.traits
    full = build_plan([seg("ltv > 100")], schema(), builtins=library())
    text = "sum(orders.amount) - sum(orders.returned_amount)"
    assert full.checked[("trait", "ltv")].defn.text == text


def test_unsupported_builtins_say_what_they_need() -> None:
    sch = _minimal_orders()
    msgs = errors(seg("margin_total > 1"), sch=sch)
    assert "margin_total needs orders.margin, which this project does not map" in msgs[0]
    assert "return_rate needs orders.returned_amount" in errors(seg("return_rate > 0"), sch=sch)[0]
    assert "top_category needs orders.category" in errors(seg("top_category = 'x'"), sch=sch)[0]
    assert "discount_share needs orders.discount" in errors(seg("discount_share > 0"), sch=sch)[0]
    # a layer over a dropped built-in names the data at the root
    assert (
        "value.margin_tier needs orders.margin"
        in errors(seg("value.margin_tier = 'top'"), sch=sch)[0]
    )
    assert "tickets_90d needs the tickets table" in errors(seg("tickets_90d > 0"), sch=sch)[0]
    # a name that is no built-in is still just unknown
    assert "unknown name 'nonsense'" in errors(seg("nonsense > 0"), sch=sch)[0]


def test_duplicate_and_clashing_names() -> None:
    msgs = errors(seg("true", "a"), seg("false", "a"))
    assert any("defined twice" in m for m in msgs)
    msgs = errors(Definition("country", "trait", text="1"))
    assert any("name of a customers column" in m for m in msgs)


@pytest.mark.parametrize(
    ("rule", "fragment", "column"),
    [  # the audit's minimal cases: each validated, then crashed in preview or run
        ("ltv>9223372036854775808", "beyond the 64-bit range", 5),
        ("ltv > 18446744073709551616", "beyond the 64-bit range", 7),
        ("ltv > " + "1" * 400, "beyond the 64-bit range", 7),
        ("ltv > " + "1" * 400 + ".5", "too large for a double", 7),
        ("now+9471y>signup_at", "durations are at most 1000y, got 9471y", 5),
        ("signup_at>now-99999999mo", "durations are at most 1000y", 15),
        ("did(''within2471y)", "durations are at most 1000y, got 2471y", 13),
        ("did('a') then not did('o') within 2471y", "durations are at most 1000y", 35),
        ("9223372036854775807 * 9223372036854775807 > ltv", "overflows a 64-bit number", 1),
        ("round(ltv,2233775807)>1", "digits must be between -30 and 30", 11),
        ("did('\x00')", "cannot contain a NUL character", 5),
        ("country = 'a\udcffb'", "invalid Unicode", 11),
        ("not " * 60 + "ltv > 1", "nested more than 48 levels deep", 1),
        ("-" * 60 + "ltv > 1", "nested more than 48 levels deep", 1),
        ("abs(" * 60 + "ltv" + ")" * 60 + " > 1", "nested more than 48 levels deep", 1),
    ],
)
def test_what_the_engine_cannot_run_is_rejected_with_a_location(
    rule: str, fragment: str, column: int
) -> None:
    (msg,) = errors(seg(rule, column=11))
    assert fragment in msg, msg
    if "nested" not in fragment:
        assert msg.startswith(f"segments/x.yml:1:{10 + column}: "), msg
    assert msg.startswith("segments/x.yml:1:")
    msg.encode("utf-8")  # printable: no lone surrogate reaches the terminal


@pytest.mark.parametrize("op", ["or", "and", "+", "*", "-", "+ ltv -"])
def test_long_flat_chains_check_and_compile(op: str) -> None:
    term = "ltv > 1" if op in ("or", "and") else "ltv"
    text = f" {op} ".join([term] * 3000) + ("" if op in ("or", "and") else " > 1")
    plan = build_plan([seg(text)], schema(), builtins=library())
    plan.english("s")


def test_short_sums_keep_their_written_order() -> None:
    """Regrouping a float sum can change its last digit: only chains too long to nest are."""
    from crmseg.rules import ast as A
    from crmseg.rules.parser import parse

    node = parse(" + ".join(["ltv"] * 30) + " > 1")
    assert isinstance(node, A.Binary)
    left, depth = node.left, 0
    while isinstance(left, A.Binary) and left.op == "+":
        left, depth = left.left, depth + 1
    assert depth == 29  # left to right, as written
