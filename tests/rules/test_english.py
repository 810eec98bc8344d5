from __future__ import annotations

import re
from pathlib import Path

import pytest

from crmseg.demo.scaffold import init_project
from crmseg.errors import RuleError, RuleErrors
from crmseg.rules import Definition, build_plan
from crmseg.sources.loader import plan_sources
from crmseg.traits import library
from crmseg.workspace import Workspace
from tests.rules.conftest import schema
from tests.rules.test_compile import RULES


@pytest.mark.parametrize(
    ("rule", "english"),
    [
        (
            "orders_count >= 3 and ltv >= 500",
            "customers with at least 3 orders and with a lifetime value of at least 500",
        ),
        ("country in ('DE', 'AT') and plan = 'pro'", "customers in DE or AT on the pro plan"),
        (
            "count(orders where category = 'skincare' within 60d) >= 1",
            "customers who bought skincare at least once in the last 60 days",
        ),
        (
            "did('added_to_cart') then not did('order_completed') within 1h",
            "customers who did 'added_to_cart' and then did not do 'order_completed' within 1 hour",
        ),
        (
            "days_since(last(orders.ordered_at where category = 'skincare')) between 45 and 60",
            "customers whose latest skincare order was between 45 and 60 days ago",
        ),
        (
            "did('project_created' within 8w) and not did('teammate_invited')",
            "customers who did 'project_created' in the last 8 weeks and who did not do "
            "'teammate_invited'",
        ),
        ("orders_count = 0", "customers with no orders"),
        ("not consent.email", "customers without email consent"),
        (
            "days_since(last_order_at) > 30",
            "customers whose latest order was more than 30 days ago",
        ),
        ("avg(orders.amount) > 50", "customers whose average order amount is more than 50"),
        ("city is null or country = 'DE'", "customers whose city is missing or in DE"),
        (
            "(country = 'DE' or country = 'AT') and in_segment('vip')",
            "customers (in DE or in AT) and who are in segment 'vip'",
        ),
        ("signup_at >= date('2024-01-01')", "customers whose signup was on or after 2024-01-01"),
        (
            "count(events where name = 'login' within 30d) < 2",
            "customers with fewer than 2 events where name is 'login' in the last 30 days",
        ),
    ],
)
def test_sentences(rule: str, english: str) -> None:
    defs = [Definition("s", "segment", text=rule), Definition("vip", "segment", text="true")]
    assert build_plan(defs, schema(), builtins=library()).english("s") == english


def test_every_rule_renders() -> None:
    defs = [Definition(n, "segment", text=r) for n, r, _ in RULES]
    defs += [Definition("big_spender", "trait", text="ltv >= 100"),
             Definition("double_ltv", "trait", text="ltv * 2"),
             Definition("wien", "segment", sql="select 1")]  # fmt: skip
    plan = build_plan(defs, schema(), builtins=library())
    for name in plan.segments:
        text = plan.english(name)
        assert text.startswith("customers ") and len(text) > 12
        assert "__" not in text and "Agg(" not in text


def test_trait_english() -> None:
    plan = build_plan([], schema(), builtins=library())
    assert plan.english("ltv") == "the total order amount minus the total order returned amount"
    assert plan.english("orders_count") == "the number of orders"


SLIPS = [
    (re.compile(r"\b(a|an|the) (a|an|the)\b"), "doubled article"),
    (re.compile(r"\bwhose (a|an|the)\b"), "article after 'whose'"),
    (re.compile(r"\ba [aeiou]"), "'a' before a vowel"),
    (re.compile(r"\ban [b-df-hj-np-tv-z]"), "'an' before a consonant"),
]


# What follows a counted noun: "1 review scoring 2 or less", "1 order in the last 90 days".
_AFTER = re.compile(r"^(in|of|with|without|where|who|that|from|over|by|for|on|at|since|and|or|"
                    r"[a-z]+ing)$")  # fmt: skip
_ONE = re.compile(r"\b(?:exactly|at least|at most|more than|fewer than) 1 ([a-z0-9 ]+)")


def _noun(words: list[str]) -> int:
    """The index of the counted noun in the words after a number."""
    return next((i for i, w in enumerate(words) if i and _AFTER.match(w)), len(words)) - 1


def _slips(text: str) -> list[str]:
    out = [f"{why}: {text!r}" for pattern, why in SLIPS if pattern.search(text)]
    # "exactly 1 push clicks in the last 30 days": one thing is singular
    for m in _ONE.finditer(text):
        words = m.group(1).split(" ")
        noun = words[_noun(words)]
        if noun.endswith("s") and not noun.endswith("ss"):
            out.append(f"plural after 1: {text!r}")
    return out


def _count_slips(one: str, many: str) -> list[str]:
    """'... exactly 1 X' against '... at least 2 Xs': the same words but the counted noun,
    which is its plural's singular ('or les' for 'or less' is a slip)."""
    head_one, _, tail_one = one.partition(" exactly 1 ")
    head_many, _, tail_many = many.partition(" at least 2 ")
    if not (tail_one and tail_many):
        return []
    a, b = tail_one.split(" "), tail_many.split(" ")
    i = _noun(b)
    same = head_one == head_many and len(a) == len(b) and a[:i] + a[i + 1 :] == b[:i] + b[i + 1 :]
    plural = b[i] in (a[i] + "s", a[i].removesuffix("y") + "ies")
    return [] if same and plural else [f"1 vs 2: {one!r} / {many!r}"]


def test_no_slips_in_the_english_of_built_ins_and_demo_rules(tmp_path: Path) -> None:
    """Every built-in and model trait compared as rules compare them, and every demo segment,
    on the demo shop's data: no doubled or misplaced articles, no plural after 1, and a count
    of 1 reads as a count of 2 but for the counted noun."""
    init_project(tmp_path / "demo", demo=True, customers=300, seed=3)
    with Workspace.open(tmp_path / "demo") as ws:
        planned = plan_sources(ws.config, ws.root, ws.backend)
        tables = {n: p.expr for n, p in planned.items()}
        base = ws.compiled.plan(tables)
        names = sorted(set(base.traits) | set(ws.compiled.library.models))
        texts = [base.english(s.name) for s in ws.compiled.segments]
        forms = ("{} >= 2", "{} = 1", "{} = 'x'", "{} in ('x', 'y')", "{} is null", "not {}",
                 "days_since({}) > 30")  # fmt: skip
        rendered = set()
        counts: dict[str, dict[str, str]] = {}
        for i, name in enumerate(names):
            for j, form in enumerate(forms):
                d = Definition(f"t{i}_{j}", "segment", text=form.format(name))
                try:
                    plan = ws.compiled.plan(tables, [d])
                except (RuleError, RuleErrors):
                    continue  # a form the trait's type does not take
                texts.append(plan.english(d.name))
                counts.setdefault(name, {})[form] = texts[-1]
                rendered.add(name)
    assert len(names) > 60 and rendered == set(names)
    assert [s for t in texts for s in _slips(t)] == []
    pairs = [(c["{} = 1"], c["{} >= 2"]) for c in counts.values() if "{} = 1" in c]
    assert sum(" exactly 1 " in one for one, _ in pairs) >= 15  # every counted built-in
    assert [s for one, many in pairs for s in _count_slips(one, many)] == []


def test_slips_are_found() -> None:
    assert _slips("customers whose an RFM segment is 'Champions'")
    assert _slips("customers with exactly 1 push clicks in the last 30 days")
    assert _slips("customers with a average order value of at least 2")
    assert _slips("customers with at least 1 reviews scoring 2 or les in the last 90 days")
    assert not _slips("customers whose RFM segment is 'Champions'")
    assert not _slips("customers with exactly 1 order and whose first order was at most 30 days")
    assert not _slips("customers with exactly 1 sms click in the last 30 days")
    assert not _slips("customers with exactly 1 review scoring 2 or less in the last 90 days")
    many = "customers with at least 2 reviews scoring 2 or less in the last 90 days"
    assert _count_slips(
        "customers with exactly 1 review scoring 2 or les in the last 90 days", many
    )
    assert _count_slips(
        "customers with exactly 1 reviews scoring 2 or less in the last 90 days", many
    )
    assert not _count_slips(
        "customers with exactly 1 review scoring 2 or less in the last 90 days", many
    )
    assert not _count_slips(
        "customers with exactly 1 distinct category",
        "customers with at least 2 distinct categories",
    )


def test_a_counted_trait_is_singular_after_1() -> None:
    from crmseg.rules import Schema
    from crmseg.sources.model import TABLES

    reviews = {c.name: c.dtype for c in TABLES["reviews"].columns}
    with_reviews = Schema({**schema().tables, "reviews": reviews})
    defs = [Definition("s", "segment", text="low_reviews_90d >= 1")]
    plan = build_plan(defs, with_reviews, builtins=library())
    assert plan.english("s") == (
        "customers with at least 1 review scoring 2 or less in the last 90 days"
    )
