"""`crmseg suggest` on the demo shop: planted drivers come first, the search's numbers are the
engine's, the held-out lift is honest, bad targets are refused, and --write only appends."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crmseg.errors import CrmsegError, RuleErrors, RuleTypeError, SuggestError
from crmseg.models.suggest import Settings, beam_search, split, wilson
from crmseg.workspace import Workspace

SKINCARE = "count(orders where category = 'skincare' within 30d) >= 1"
RECENCY_FREQUENCY = {
    "days_since_last_order", "orders_90d", "orders_365d", "orders_count", "median_order_gap_days",
    "last_order_gap_days", "rfm.recency_score", "rfm.frequency_score", "rfm.score",
    "lifecycle.stage", "tenure_days",
}  # fmt: skip


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    from crmseg.demo.scaffold import DEMO_AS_OF, init_project

    root = tmp_path_factory.mktemp("suggest") / "shop"
    init_project(root, demo=True, customers=6000, seed=11)
    ws = Workspace.open(root)
    with ws:
        ws.run(as_of=DEMO_AS_OF)
        yield ws


@pytest.fixture(scope="module")
def skincare(shop: Workspace) -> dict[str, Any]:
    return shop.suggest(SKINCARE, settings=Settings(top=5))


def _reads(rule: str) -> set[str]:
    return {part.split()[0] for part in rule.split(" and ")}


def test_planted_category_affinity_comes_first(skincare: dict[str, Any]) -> None:
    # the generator plants a favourite category per person (and skincare replenishment)
    top = skincare["suggestions"][:3]
    assert any("top_category = 'skincare'" in s["rule"] for s in top), [s["rule"] for s in top]
    best = skincare["suggestions"][0]["holdout"]
    assert best["lift_low"] > 2.0, best


def test_planted_purchase_rhythm_drives_repurchase(shop: Workspace) -> None:
    # BG/NBD purchasing: heterogeneous rates and dropout, so recency and frequency lead
    got = shop.suggest("purchase", settings=Settings(top=3))
    assert got["target"] == "purchase_30d"
    for s in got["suggestions"]:
        assert _reads(s["rule"]) & RECENCY_FREQUENCY, s["rule"]
        assert s["holdout"]["lift_low"] > 1.5


def test_churn_searches_buyers_and_finds_lapsed_ones(shop: Workspace) -> None:
    got = shop.suggest("churn", settings=Settings(top=3))
    assert got["target"] == "churn_90d" and got["cutoff"] == got["as_of"] - timedelta(days=90)
    assert _reads(got["suggestions"][0]["rule"]) & RECENCY_FREQUENCY | {"value.clv_percentile"}
    assert all(s["holdout"]["lift"] > 1.2 for s in got["suggestions"])


def test_search_counts_are_the_engines(shop: Workspace, skincare: dict[str, Any]) -> None:
    """The search evaluates conditions in numpy; the engine, compiling the same rules as
    segments, must count exactly the same customers at the cut-off and at as_of."""
    from crmseg.rules import Definition

    tables = shop._loaded_tables()
    defs = [
        Definition(f"s{i}", "segment", text=s["rule"])
        for i, s in enumerate(skincare["suggestions"])
    ]
    plan = shop.compiled.plan(tables, defs)
    for at, key in ((skincare["features_at"], "members_at_cutoff"), (skincare["as_of"], None)):
        wide = plan.wide(tables, at, select=[d.name for d in defs])
        counts = shop.backend.execute(
            wide.aggregate(**{d.name: wide[d.name].sum() for d in defs})
        ).to_pylist()[0]
        for d, s in zip(defs, skincare["suggestions"], strict=True):
            want = s["holdout"][key] if key else s["members_now"]
            assert counts[d.name] == want, (s["rule"], at)


def test_holdout_numbers_recomputed(shop: Workspace, skincare: dict[str, Any]) -> None:
    from crmseg.rules import Definition

    tables = shop._loaded_tables()
    s = skincare["suggestions"][0]
    plan = shop.compiled.plan(
        tables, [Definition("__s", "segment", text=s["rule"]), Definition("__y", "segment",
                                                                          text=SKINCARE)]
    )  # fmt: skip
    before = plan.wide(tables, skincare["features_at"], select=["__s"])
    ids = shop.backend.execute(before.select("customer_id", "__s")).to_pandas()
    after = plan.wide(tables, skincare["as_of"], select=["__y"])
    yes = set(shop.backend.execute(after.filter(after["__y"]).select("customer_id")).column(0)
              .to_pylist())  # fmt: skip
    ids["y"] = ids.customer_id.isin(yes)
    held = ids[split(ids.customer_id.astype(str).to_numpy(), 0.3, 42)]
    members = held[held["__s"]]
    assert len(held) == skincare["holdout_customers"]
    assert len(members) == s["holdout"]["size"]
    assert members.y.mean() == pytest.approx(s["holdout"]["rate"])
    assert held.y.mean() == pytest.approx(skincare["holdout_base_rate"])


def test_wilson_matches_scipy() -> None:
    from scipy.stats import binomtest

    for k, n in ((0, 10), (3, 10), (81, 263), (999, 1000)):
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_beam_search_finds_a_planted_conjunction() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    x = rng.integers(0, 10, n)
    c = rng.choice(["a", "b", "c"], n)
    noise = rng.random(n) < 0.5
    planted = (x >= 6) & (c == "b")
    y = rng.random(n) < np.where(planted, 0.6, 0.1)
    masks = [x >= t for t in range(1, 10)] + [c == v for v in "abc"] + [noise]
    names = ["x"] * 9 + ["c"] * 3 + ["noise"]
    rules = beam_search(masks, y, names, Settings(top=3, depth=3), min_size=200)
    best = rules[0]
    assert sorted(best.parts) == [5, 10]  # x >= 6 and c = 'b', nothing else
    assert best.size == int(planted.sum()) and best.positives == int((planted & y).sum())


@pytest.mark.parametrize(
    ("target", "error", "says"),
    [
        ("orders_90d", RuleTypeError, "must be a condition (true or false), found a number"),
        ("orders_count >= 2", RuleTypeError, "trait orders_count, which reads count(orders)"),
        ("count(orders within 60d) >= 1", RuleTypeError, "over 60d, longer than the horizon"),
        ("count(orders within 30d) >= 1 and country = 'DE'", RuleTypeError, "attribute country"),
        ("consent.email and did('page_view' within 7d)", RuleTypeError, "reads consent.email"),
        ("did('page_view' within 1d) and in_segment('value.vip')", RuleTypeError, "segment"),
        ("count(ordrs within 30d) >= 1", RuleErrors, "ordrs"),
        ("", SuggestError, "expected a built-in outcome"),
        ("did('no_such_event' within 30d)", SuggestError, "too rare, 0 of"),
    ],
)  # fmt: skip
def test_bad_targets_are_refused(shop: Workspace, target: str, error: type, says: str) -> None:
    with pytest.raises(error) as info:
        shop.suggest(target)
    assert says in str(info.value)
    if error is RuleTypeError:
        assert str(info.value).startswith("--target:1:")


def test_leak_is_located_at_the_part_that_reads_it(shop: Workspace) -> None:
    with pytest.raises(RuleTypeError) as info:
        shop.suggest("did('page_view' within 7d) and orders_count > 1")
    assert str(info.value).startswith("--target:1:32: the target uses the trait orders_count")
    assert info.value.excerpt.splitlines()[1].strip() == "^" * len("orders_count")


def test_rare_and_horizon_errors(shop: Workspace) -> None:
    with pytest.raises(SuggestError, match=r"too rare, [\d,]+ of [\d,]+ customers .* at least "
                       r"1,000,000 needed"):  # fmt: skip
        shop.suggest("purchase", settings=Settings(min_positives=1_000_000))
    with pytest.raises(SuggestError, match="--horizon: expected a duration like 30d"):
        shop.suggest("purchase", horizon="30 days")
    from crmseg.models.suggest import parse_horizon
    from crmseg.rules.parser import UNIT_SECONDS

    # the rule language's fixed lengths: a 3mo horizon is a 3mo window
    assert parse_horizon("3mo") == timedelta(seconds=3 * UNIT_SECONDS["mo"])
    assert parse_horizon("1y") == timedelta(seconds=UNIT_SECONDS["y"])
    with pytest.raises(SuggestError, match="high_clv describes customers at as_of"):
        shop.suggest("high_clv", horizon="30d")


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crmseg", *args, "--project", str(root)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_write_appends_for_review_and_never_clobbers(shop: Workspace, tmp_path: Path) -> None:
    import re
    import shutil

    root = tmp_path / "shop"
    shutil.copytree(shop.root, root)
    assert _cli(root, "validate", "--strict").returncode == 0
    done = _cli(root, "suggest", "--target", SKINCARE, "--top", "2", "--write")
    assert done.returncode == 0, done.stderr
    names = re.findall(r"wrote (suggested\.rule_[0-9a-f]{6}) to segments/suggested.yml",
                       done.stdout)  # fmt: skip
    assert len(names) == 2
    path = root / "segments" / "suggested.yml"
    first = path.read_text()
    assert first.count("- name: suggested.rule_") == 2 and first.count("# suggested: ") == 2
    strict = _cli(root, "validate", "--strict")
    assert strict.returncode == 1
    assert f"{names[0]}: suggested rule awaiting review" in strict.stdout + strict.stderr
    # a reviewer edits the first and rejects the second by deleting it: a second --write
    # keeps the edit, never brings the rejected rule back, and adds only new rules
    reviewed = first.replace("owner:    # to fill in by the person who reviews and owns it",
                             "owner: growth", 1)  # fmt: skip
    start = reviewed.index(f"  - name: {names[1]}")
    end = reviewed.index("# suggested: ")
    reviewed = reviewed[:start] + reviewed[end:]
    path.write_text(reviewed)
    again = _cli(root, "suggest", "--target", SKINCARE, "--top", "4", "--write")
    assert again.returncode == 0, again.stderr
    text = path.read_text()
    assert text.startswith(reviewed)
    assert names[1] not in text.split("# suggested: ", 1)[1].split("\n", 1)[1]
    assert text.count("- name: suggested.rule_") == 3
    # a file whose items are not indented gets items like its own
    flat = "segments:\n- name: custom.keep\n  owner: me\n  purpose: x\n  rule: orders_count > 9\n"
    path.write_text(flat)
    third = _cli(root, "suggest", "--target", SKINCARE, "--top", "1", "--write")
    assert third.returncode == 0, third.stderr + third.stdout
    assert path.read_text().startswith(flat) and "\n- name: suggested.rule_" in path.read_text()
    # a broken file is reported where it breaks and left exactly as it was
    path.write_text(text + "  - name: [oops\n")
    broken = path.read_text()
    bad = _cli(root, "suggest", "--target", SKINCARE, "--write")
    assert bad.returncode == 1
    assert "segments/suggested.yml" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr
    assert path.read_text() == broken


def test_cli_text_and_json(shop: Workspace, tmp_path: Path) -> None:
    import json
    import shutil

    # a copy: this process may hold the shop's state file open (DuckDB's lock), and
    # nothing writes to it meanwhile (write-ahead logs are copied with their files)
    root = tmp_path / "shop"
    shutil.copytree(shop.root, root)
    done = _cli(root, "suggest", "--target", "purchase", "--top", "2", "--format", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert len(data["suggestions"]) == 2 and data["written"] == []
    text = _cli(root, "suggest", "--target", "purchase", "--top", "1")
    assert "held out:" in text.stdout and "lift" in text.stdout
    bad = _cli(root, "suggest", "--target", "orders_count >= 2")
    assert bad.returncode == 1 and "--target:1:1:" in bad.stderr + bad.stdout


def test_as_of_defaults_to_the_latest_run(shop: Workspace) -> None:
    from crmseg.demo.scaffold import DEMO_AS_OF

    got = shop.suggest("purchase", settings=Settings(top=1, depth=1))
    assert got["as_of"].replace(tzinfo=None) == DEMO_AS_OF
    assert isinstance(got["suggestions"][0]["english"], str) and got["suggestions"][0]["english"]


def test_errors_are_crmseg_errors() -> None:
    assert issubclass(SuggestError, CrmsegError)


def test_campaign_conversion_counts_what_measurement_counts(shop: Workspace) -> None:
    lift = [r for r in shop.measure_campaigns(14) if r["metric"] == "conversion"]
    winback = next(r for r in lift if r["campaign"].startswith("winback"))
    got = shop.suggest(f"campaign:{winback['campaign']}", settings=Settings(top=3))
    assert got["customers"] == winback["treatment_n"]
    assert got["positives"] == round(winback["treatment"] * winback["treatment_n"])
    assert got["cutoff"].replace(tzinfo=None) == winback["first_sent"]
    assert got["suggestions"] and got["suggestions"][0]["holdout"]["lift"] > 1
    with pytest.raises(SuggestError, match=r"no campaign 'nope' in the send log \(campaigns: "):
        shop.suggest("campaign:nope")


def test_high_clv_never_describes_the_model_with_itself(shop: Workspace) -> None:
    # target and conditions share one instant, so no condition may read the CLV model
    got = shop.suggest("high_clv", settings=Settings(top=5))
    assert got["target"] == "high_clv" and got["cutoff"] == got["as_of"]
    assert got["base_rate"] == pytest.approx(0.2, abs=0.02)
    for s in got["suggestions"]:
        assert not any(r.startswith(("value.clv", "clv.")) for r in _reads(s["rule"]))
    # Gamma-Gamma spend and BG/NBD rates make the value: spend or frequency leads
    assert _reads(got["suggestions"][0]["rule"]) & (RECENCY_FREQUENCY | {"aov", "ltv",
                                                    "revenue_total", "revenue_365d"})  # fmt: skip


def test_no_row_is_both_a_feature_and_the_outcome(shop: Workspace) -> None:
    """The outcome ``within 30d`` at as_of starts at the cut-off itself; features stop a
    microsecond before, so an order placed exactly at the cut-off is only an outcome."""
    from crmseg.rules import Definition

    got = shop.suggest("purchase", settings=Settings(top=1, depth=1))
    assert got["features_at"] == got["cutoff"] - timedelta(microseconds=1)
    tables = shop._loaded_tables()
    o = shop.backend.execute(tables["orders"].select("customer_id", "ordered_at")).to_pandas()
    o = o.dropna()
    who, at = str(o.iloc[0].customer_id), o.iloc[0].ordered_at.to_pydatetime()
    plan = shop.compiled.plan(tables, [Definition("__y", "trait", text="count(orders within 30d)")])

    def value(name: str, instant: object) -> object:
        wide = plan.wide(tables, instant, select=[name])  # type: ignore[arg-type]
        row = wide.filter(wide.customer_id.cast("string") == who).select(name)
        return shop.backend.execute(row).column(0)[0].as_py()

    # the order counts at its own instant, not a microsecond before (where features stop)
    assert value("orders_count", at) > value("orders_count", at - timedelta(microseconds=1))
    assert value("__y", at + timedelta(days=30)) >= 1  # and opens the 30d window then


def test_attributes_are_opt_in(shop: Workspace) -> None:
    # customers holds current values: none is a condition unless the user vouches for it
    plain = shop.suggest("purchase", settings=Settings(top=20, depth=1, beam=200))
    columns = set(shop._loaded_tables()["customers"].columns)
    assert not any(_reads(s["rule"]) & columns for s in plain["suggestions"])
    chosen = shop.suggest(
        "purchase", settings=Settings(top=200, depth=1, beam=400, attributes=("country",))
    )
    assert any(s["rule"].startswith("country = ") for s in chosen["suggestions"])
    scalar = "a timestamp.* column; only numbers, flags and text"
    for bad, says in (("email", "personal data"), ("nope", "not a column of customers"),
                      ("signup_at", scalar)):  # fmt: skip
        with pytest.raises(SuggestError, match=f"--attribute {bad}: {says}"):
            shop.suggest("purchase", settings=Settings(attributes=(bad,)))
