"""Identity resolution on real small data: the demo shop's planted duplicates, guard rails,
survivorship, and people (not records) in segment counts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import ibis
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmseg.backends.duckdb import DuckDBBackend
from crmseg.config import GoldenConfig, IdentityConfig
from crmseg.demo.generator import generate
from crmseg.identity.components import Scratch, connected_components
from crmseg.identity.normalize import PhoneBook, email_key
from crmseg.identity.report import pairwise_scores
from crmseg.identity.resolve import resolve
from crmseg.workspace import Workspace

from ..conftest import MakeProject


@pytest.fixture
def backend() -> Iterator[DuckDBBackend]:
    b = DuckDBBackend()
    yield b
    b.close()


def _resolve(backend: DuckDBBackend, tables: dict[str, pa.Table], **cfg: object) -> pa.Table:
    res = resolve(
        backend,
        IdentityConfig.model_validate(cfg),
        {n: ibis.memtable(t) for n, t in tables.items()},
        PhoneBook("DE"),
    )
    try:
        return backend.execute(res.tables["identity_map"].order_by("customer_id"))
    finally:
        res.close()


def test_demo_duplicates_are_found_with_high_precision_and_recall(backend: DuckDBBackend) -> None:
    data = generate(10_000, 11, datetime(2026, 11, 1))
    idmap = _resolve(backend, {n: data[n] for n in ("customers", "identifiers")})
    scores = pairwise_scores(idmap, data["truth_people"])
    assert scores["true_pairs"] >= 150
    assert scores["precision"] >= 0.99
    assert scores["recall"] >= 0.95
    # Nothing is left behind in scratch tables.
    assert not [t for t in backend.canonical_tables() if t.startswith("_tmp")]


def _customers(rows: list[tuple[str, str | None, str | None, str]]) -> pa.Table:
    return pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "email": pa.array([r[1] for r in rows], pa.string()),
            "phone": pa.array([r[2] for r in rows], pa.string()),
            "country": ["DE"] * len(rows),
            "signup_at": pa.array([datetime.fromisoformat(r[3]) for r in rows], pa.timestamp("us")),
        }
    )


def test_survivor_is_the_earliest_record_and_chains_merge(backend: DuckDBBackend) -> None:
    customers = _customers(
        [
            ("a", " Anna@Example.com", None, "2024-03-01"),
            ("b", "anna@example.com", "0151 1234567", "2024-01-01"),
            ("c", "other@example.com", "+49 151 1234567", "2024-02-01"),
            ("d", "dan@example.com", None, "2024-01-01"),
            ("e", "x@example.com", None, "2024-05-01"),
            ("f", "y@example.com", None, "2024-05-01"),
        ]
    )
    identifiers = pa.table(
        {"customer_id": ["e", "f"], "id_type": ["device_id", "device_id"], "id_value": ["d1", "d1"]}
    )
    idmap = _resolve(backend, {"customers": customers, "identifiers": identifiers})
    key = dict(
        zip(idmap["customer_id"].to_pylist(), idmap["customer_key"].to_pylist(), strict=True)
    )
    # a-b by email, b-c by phone: one person, named by b (signed up first)
    assert key == {"a": "b", "b": "b", "c": "b", "d": "d", "e": "e", "f": "e"}  # tie -> smaller id
    status = dict(zip(idmap["customer_id"].to_pylist(), idmap["status"].to_pylist(), strict=True))
    assert status["d"] == "single" and status["a"] == "merged"


def test_shared_values_beyond_the_cluster_limit_are_not_merged(backend: DuckDBBackend) -> None:
    rows = [(f"c{i:02d}", "info@shop.example", None, "2024-01-01") for i in range(25)]
    rows += [
        ("x1", "x@shop.example", None, "2024-01-01"),
        ("x2", "X@shop.example", None, "2024-02-01"),
    ]
    idmap = _resolve(backend, {"customers": _customers(rows)}, max_cluster_size=20)
    key = dict(
        zip(idmap["customer_id"].to_pylist(), idmap["customer_key"].to_pylist(), strict=True)
    )
    assert all(key[f"c{i:02d}"] == f"c{i:02d}" for i in range(25))
    assert key["x2"] == "x1"


def test_chains_beyond_the_limit_stay_single_and_are_blocked(backend: DuckDBBackend) -> None:
    # Each value is shared by two records only, but the chain links six.
    rows = [(f"r{i}", f"e{i // 2}@x.example", None, "2024-01-01") for i in range(6)]
    ids = pa.table(
        {
            "customer_id": ["r1", "r2", "r3", "r4"],
            "id_type": ["card"] * 4,
            "id_value": ["k1", "k1", "k2", "k2"],
        }
    )
    idmap = _resolve(
        backend, {"customers": _customers(rows), "identifiers": ids}, max_cluster_size=5
    )
    assert idmap["customer_key"].to_pylist() == idmap["customer_id"].to_pylist()
    assert set(idmap["status"].to_pylist()) == {"blocked"}


def test_email_options_and_validity(backend: DuckDBBackend) -> None:
    raw = ibis.memtable(
        pa.table({"e": pa.array([" A.B+news@Gmail.com ", "ab@gmail.com", "n/a", "x@", None])})
    )
    plain = backend.execute(raw.select(k=email_key(raw.e))).column(0).to_pylist()
    assert plain == ["a.b+news@gmail.com", "ab@gmail.com", None, None, None]
    both = backend.execute(raw.select(k=email_key(raw.e, True, True))).column(0).to_pylist()
    assert both[:2] == ["ab@gmail.com", "ab@gmail.com"]


def test_phone_formats_normalise_to_one_number_once_per_distinct_value() -> None:
    book = PhoneBook("DE")
    same = ["+49 151 1234567", "0151-1234567", "(0151) 123 4567", "+491511234567"]
    out = book.normalise([(p, "DE") for p in same] + [("0151-1234567", None)])
    assert {e for e, _ in out} == {"+491511234567"}
    assert len(book._cache) == 4  # the repeated value was parsed once
    # A French number of implausible length still links across its spellings.
    fr = book.normalise([("06-5171548", "FR"), ("+33 6 5171548", None)])
    assert fr[0][0] == fr[1][0] and not fr[0][1]
    assert book.normalise([("not a phone", "DE")]) == [(None, False)]


def test_golden_profile_survivorship(backend: DuckDBBackend) -> None:
    customers = pa.table(
        {
            "customer_id": ["1", "2", "3"],
            "email": ["p@x.example", "P@x.example", "p@x.example"],
            "city": ["Berlin", "Hamburg", "Hamburg"],
            "plan": ["pro", None, None],
            "source": ["shop", "crm", "shop"],
            "signup_at": pa.array(
                [datetime(2024, 1, 1), datetime(2024, 2, 1), datetime(2024, 3, 1)],
                pa.timestamp("us"),
            ),
        }
    )
    cfg = IdentityConfig(
        golden=GoldenConfig(
            attributes={"city": "most_frequent", "plan": "most_recent", "email": "source_priority"},
            source_column="source",
            source_priority=("crm", "shop"),
        )
    )
    res = resolve(backend, cfg, {"customers": ibis.memtable(customers)}, PhoneBook("DE"))
    try:
        golden = backend.execute(res.golden).to_pylist()
    finally:
        res.close()
    assert len(golden) == 1
    row = golden[0]
    assert row["customer_id"] == "1"  # the earliest record names the person
    assert row["city"] == "Hamburg"  # most frequent
    assert row["plan"] == "pro"  # most recent non-null
    assert row["email"] == "P@x.example"  # from the most trusted system
    assert row["signup_at"] == datetime(2024, 1, 1)  # always the earliest record: exists since


def _union_find(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, str]:
    parent = {n: n for n in nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {n: min(m for m in nodes if find(m) == find(n)) for n in nodes}


_shared_backend = DuckDBBackend()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 12)), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
)
def test_components_match_union_find_in_any_order(
    pairs: list[tuple[int, int]], rnd: object
) -> None:
    rows = [(f"c{c:02d}", f"v{v}") for c, v in pairs]
    shuffled = list(rows)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    scratch = Scratch(_shared_backend)
    try:
        got = []
        for order in (rows, shuffled):
            edges = ibis.memtable(
                pa.table({"customer_id": [r[0] for r in order], "value": [r[1] for r in order]})
            )
            comp, _ = connected_components(scratch, edges)
            result = _shared_backend.execute(comp)
            got.append(
                dict(
                    zip(
                        result["customer_id"].to_pylist(),
                        result["component"].to_pylist(),
                        strict=True,
                    )
                )
            )
    finally:
        scratch.close()
    assert got[0] == got[1]  # union is order-independent
    nodes = sorted({r[0] for r in rows})
    by_value: dict[str, list[str]] = {}
    for c, v in rows:
        by_value.setdefault(v, []).append(c)
    edges_cc = [(m[0], x) for m in by_value.values() for x in m[1:]]
    assert got[0] == _union_find(nodes, edges_cc)
    labels = got[0]
    assert all(labels[labels[n]] == labels[n] for n in nodes)  # idempotent
    assert all(labels[a] == labels[b] for a, b in edges_cc)  # every edge inside a component


CUSTOMERS = """\
customer_id,email,country,signup_at,plan,tier
1,anna@example.com,DE,2024-01-01 10:00:00,pro,gold
2,ben@example.com,AT,2024-02-01 10:00:00,basic,silver
3,cleo@example.com,FR,2024-03-01 10:00:00,,
4,dan@example.com,,2024-04-01 10:00:00,pro,gold
5, Anna@Example.COM ,DE,2024-06-01 10:00:00,,
"""
ORDERS = """\
order_id,customer_id,created,total,category
10,1,2024-05-01 12:00:00,120.0,skincare
11,1,2024-06-01 12:00:00,80.5,makeup
12,2,2024-05-15 12:00:00,300.0,skincare
13,4,2024-07-01 12:00:00,50.0,haircare
14,5,2024-07-02 12:00:00,10.0,skincare
15,5,2024-07-03 12:00:00,20.0,skincare
"""
SEGMENTS = """\
segments:
  - name: value.four_orders
    description: People with at least four orders.
    owner: crm-team
    rule: count(orders) >= 4
  - name: value.buyers
    description: Customers with at least one order.
    owner: crm-team
    rule: count(orders) >= 1
"""


def test_segment_counts_use_resolved_people(make_project: MakeProject) -> None:
    root = make_project(
        data__customers_csv=CUSTOMERS, data__orders_csv=ORDERS, segments__core_yml=SEGMENTS
    )
    with Workspace.open(root) as ws:
        result = ws.run(as_of=datetime(2024, 12, 31))
        assert result.customers == 4  # five records, four people
        assert ws.members("value.four_orders") == ["1"]  # 2 + 2 orders of one person
        assert ws.members("value.buyers") == ["1", "2", "4"]
        assert ws.preview("value.four_orders", as_of=datetime(2024, 12, 31)).size == 1
        profile = ws.profile("5")  # any of the person's ids finds them
        assert profile["customer_id"] == "1"
        assert [r["customer_id"] for r in profile["records"]] == ["1", "5"]
        assert profile["records"][1]["rows"] == {"orders": 2}
        stats = ws.identity()
        assert stats["records"] == 5 and stats["people"] == 4
        assert stats["clusters_by_size"] == {2: 1}
        assert result.sources == {"customers": 5, "orders": 6}  # identity tables not counted


def test_identity_off_keeps_records(make_project: MakeProject, tmp_path: Path) -> None:
    config = (
        "name: t\nidentity: {enabled: false}\nsources:\n  customers: {path: data/customers.csv}\n"
        "  orders: {path: data/orders.csv, columns: {ordered_at: created, amount: total}}\n"
    )
    root = make_project(
        crmseg_yml=config,
        data__customers_csv=CUSTOMERS,
        data__orders_csv=ORDERS,
        segments__core_yml=SEGMENTS,
    )
    with Workspace.open(root) as ws:
        assert ws.run(as_of=datetime(2024, 12, 31)).customers == 5
        assert ws.members("value.four_orders") == []
        assert ws.identity() == {"enabled": False}


def test_repeated_customer_id_is_one_customer(make_project: MakeProject) -> None:
    from crmseg import Workspace

    root = make_project(
        data__customers_csv=(
            "customer_id,email,country,signup_at\n"
            "1,a@x.de,DE,2024-01-01 00:00:00\n"
            "1,a@x.de,FR,2024-02-01 00:00:00\n"
            "2,b@x.de,AT,2024-01-01 00:00:00\n"
        ),
        segments__core_yml=(
            "segments:\n"
            "  - {name: demographic.de, description: d, owner: o, rule: country = 'DE'}\n"
            "  - {name: demographic.not_de, description: d, owner: o, rule: not country = 'DE'}\n"
        ),
    )
    with Workspace.open(root) as ws:
        result = ws.run(as_of=datetime(2024, 12, 31))
        assert result.customers == 2
        in_de, not_de = ws.members("demographic.de"), ws.members("demographic.not_de")
        assert not set(in_de) & set(not_de)


def test_merged_person_exists_from_their_first_record(make_project: MakeProject) -> None:
    from crmseg import Workspace

    root = make_project(
        data__customers_csv=(
            "customer_id,email,country,signup_at\n"
            "1,a@x.de,DE,2023-01-01 00:00:00\n"
            "9,A@X.de ,DE,2024-06-01 00:00:00\n"
        ),
        data__orders_csv="order_id,customer_id,created,total\n10,1,2023-02-01 12:00:00,5\n",
    )
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 12, 31))
        assert ws.members("value.buyers", as_of=datetime(2023, 6, 1)) == ["1"]
