from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crmseg.backends.base import CANONICAL_SCHEMA
from crmseg.backends.duckdb import DuckDBBackend
from crmseg.config import load_config
from crmseg.errors import ConfigError, SourceError
from crmseg.sources.loader import load_sources, plan_sources, schema_from
from crmseg.workspace import Workspace

from ..conftest import CONFIG, SEGMENTS, MakeProject


def _load(root: Path) -> tuple[DuckDBBackend, dict[str, int]]:
    config = load_config(root)
    backend = DuckDBBackend(root / "w.duckdb")
    return backend, load_sources(config, root, backend)


def test_csv_with_mapping_loads_canonical_columns(make_project: MakeProject) -> None:
    backend, counts = _load(make_project())
    assert counts == {"customers": 4, "orders": 4}
    orders = backend.execute(backend.canonical("orders").order_by("order_id")).to_pylist()
    assert orders[0]["ordered_at"].isoformat() == "2024-05-01T12:00:00"
    assert orders[0]["amount"] == 120.0
    assert orders[0]["customer_id"] == "1"  # ids are strings whatever the file says
    schema = backend.canonical("customers").schema()
    assert str(schema["customer_id"]) == "string"
    assert "tier" in schema  # extra user columns are kept
    types = schema_from({"customers": backend.canonical("customers")})["customers"]
    assert types["signup_at"] == "timestamp" and types["tier"] == "string"


def test_naive_timestamps_use_the_project_timezone(make_project: MakeProject) -> None:
    root = make_project(
        crmseg_yml="name: t\ntimezone: Europe/Berlin\nsources:\n  customers: {path: data/c.csv}\n",
        data__c_csv=(
            "customer_id,signup_at\n"
            "1,2024-01-01 10:00:00\n"  # CET: UTC+1
            "2,2024-07-01 10:00:00\n"  # CEST: UTC+2
            "3,2024-07-01T10:00:00+00:00\n"  # explicit offsets win
            "4,2024-06-01\n"  # a date is local midnight, not an offset of -01
            "5,2024-07-01 10:00:00.5-02:30\n"
        ),
    )
    backend, _ = _load(root)
    rows = backend.execute(backend.canonical("customers").order_by("customer_id")).to_pylist()
    assert [r["signup_at"].isoformat() for r in rows] == [
        "2024-01-01T09:00:00",
        "2024-07-01T08:00:00",
        "2024-07-01T10:00:00",
        "2024-05-31T22:00:00",
        "2024-07-01T12:30:00.500000",
    ]


def test_parquet_glob_source(make_project: MakeProject) -> None:
    root = make_project(crmseg_yml="name: t\nsources:\n  customers: {path: data/part-*.parquet}\n")
    for i in range(2):
        pq.write_table(
            pa.table({"customer_id": [i * 10 + 1, i * 10 + 2], "country": ["DE", "FR"]}),
            root / "data" / f"part-{i}.parquet",
        )
    _backend, counts = _load(root)
    assert counts == {"customers": 4}


def test_backend_table_source(make_project: MakeProject) -> None:
    root = make_project(
        crmseg_yml=(
            "name: t\nbackend: {path: w.duckdb}\nsources:\n  customers: {table: raw.people,"
            " columns: {customer_id: id}}\n"
        )
    )
    backend = DuckDBBackend(root / "w.duckdb")
    backend.con.create_database("raw")
    backend.con.create_table(
        "people", pa.table({"id": [1, 2], "country": ["DE", "AT"]}), database="raw"
    )
    counts = load_sources(load_config(root), root, backend)
    assert counts == {"customers": 2}


def test_every_problem_is_reported_at_once(make_project: MakeProject) -> None:
    root = make_project(
        crmseg_yml=(
            "name: t\nsources:\n"
            "  customers: {path: data/customers.csv}\n"
            "  orders: {path: data/orders.csv, columns: {ordered_at: created_on, amount: total}}\n"
            "  events: {path: data/missing.csv}\n"
            "  tickets: {path: data/tickets.csv}\n"
        ),
        data__tickets_csv=(
            "ticket_id,customer_id,opened_at,csat\n1,1,2024-01-01,great\n2,1,not a date,4\n"
        ),
    )
    with pytest.raises(SourceError) as info:
        plan_sources(load_config(root), root, DuckDBBackend())
    problems = info.value.problems
    text = "\n".join(problems)
    assert (
        "data/orders.csv: column mapping orders.ordered_at -> 'created_on' (set at "
        "crmseg.yml:4:57): no column 'created_on'"
    ) in text
    assert "data/missing.csv: file not found" in text
    assert "data/tickets.csv: column 'csat' (tickets.csat): expected float, found 1 value" in text
    assert "'great'" in text
    assert "column 'opened_at' (tickets.opened_at): expected timestamp" in text
    assert len(problems) == 4


def test_missing_required_column(make_project: MakeProject) -> None:
    root = make_project(
        crmseg_yml=(
            "name: t\nsources:\n  customers: {path: data/customers.csv}\n"
            "  orders: {path: data/orders.csv, columns: {ordered_at: created}}\n"
        ),
        data__orders_csv="order_id,customer_id,created\n1,1,2024-01-01\n",
    )
    with pytest.raises(SourceError, match=r"required column orders\.amount is missing"):
        plan_sources(load_config(root), root, DuckDBBackend())


def test_unreadable_file(make_project: MakeProject) -> None:
    root = make_project(crmseg_yml="name: t\nsources:\n  customers: {path: data/c.parquet}\n")
    (root / "data" / "c.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(SourceError, match=r"data/c\.parquet: cannot read parquet"):
        plan_sources(load_config(root), root, DuckDBBackend())


def test_failed_load_keeps_previous_tables(make_project: MakeProject) -> None:
    root = make_project()
    backend, _ = _load(root)
    (root / "data" / "orders.csv").write_text("order_id,customer_id,created,total\n1,1,x,y\n")
    with pytest.raises(SourceError):
        load_sources(load_config(root), root, backend)
    assert backend.scalar(backend.canonical("orders").count()) == 4


def test_removed_source_is_dropped(make_project: MakeProject) -> None:
    root = make_project()
    backend, _ = _load(root)
    (root / "crmseg.yml").write_text("name: t\nsources:\n  customers: {path: data/customers.csv}\n")
    load_sources(load_config(root), root, backend)
    assert backend.canonical_tables() == ["customers"]
    assert CANONICAL_SCHEMA == "crmseg"


def test_order_items_get_customer_and_time_from_orders(make_project: MakeProject) -> None:
    root = make_project(
        crmseg_yml=(
            "name: t\nsources:\n  customers: {path: data/customers.csv}\n"
            "  orders: {path: data/orders.csv, columns: {ordered_at: created, amount: total}}\n"
            "  order_items: {path: data/items.csv}\n"
        ),
        data__items_csv="order_id,product,quantity,price\n10,serum,2,30.0\n13,shampoo,1,50.0\n",
    )
    backend, _ = _load(root)
    items = backend.execute(backend.canonical("order_items").order_by("order_id")).to_pylist()
    assert [(i["customer_id"], i["ordered_at"].month) for i in items] == [("1", 5), ("4", 7)]


US_ORDERS = """\
order_id,customer_id,created,total
10,1,10/2/2017 10:56,120.0
11,2,12/31/2017 23:05,80.5
"""


def _us_shop(make_project: MakeProject, orders: str, formats: str) -> Path:
    config = CONFIG.replace(
        "columns: {ordered_at: created, amount: total}}",
        f"columns: {{ordered_at: created, amount: total}}, formats: {formats}}}",
    )
    return make_project("us", crmseg_yml=config, data__orders_csv=orders)


def test_a_timestamp_format_reads_what_iso_parsing_cannot(make_project: MakeProject) -> None:
    root = _us_shop(make_project, US_ORDERS, '{ordered_at: "%m/%d/%Y %H:%M"}')
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2018, 1, 1))
        rows = ws.backend.execute(ws.backend.canonical("orders").order_by("order_id")).to_pylist()
    assert [r["ordered_at"] for r in rows] == [
        datetime(2017, 10, 2, 10, 56),
        datetime(2017, 12, 31, 23, 5),
    ]


def test_values_not_in_the_format_are_counted_with_an_example(make_project: MakeProject) -> None:
    bad = US_ORDERS + "12,3,2017-10-02 10:56,5\n"
    root = _us_shop(make_project, bad, '{ordered_at: "%m/%d/%Y %H:%M"}')
    with Workspace.open(root) as ws, pytest.raises(SourceError) as err:
        ws.run(as_of=datetime(2018, 1, 1))
    assert (
        "column 'created' (orders.ordered_at): expected timestamp in the format "
        "'%m/%d/%Y %H:%M', found 1 value that is not (e.g. '2017-10-02 10:56')"
    ) in str(err.value)
    with Workspace.open(root) as ws:
        assert ws.last_run() is None  # nothing was written


def test_formats_name_a_time_column_and_a_format(make_project: MakeProject) -> None:
    root = _us_shop(make_project, US_ORDERS, '{amount: "%d"}')
    with Workspace.open(root) as ws, pytest.raises(SourceError, match=r"formats\.amount: orders"):
        ws.run(as_of=datetime(2018, 1, 1))
    root = _us_shop(make_project, US_ORDERS, "{ordered_at: month-day-year}")
    with pytest.raises(ConfigError, match=r"crmseg.yml:6:\d+ .*expected a strptime format"):
        Workspace.open(root)


def test_a_mapping_may_set_a_constant(make_project: MakeProject) -> None:
    config = CONFIG.replace(
        "columns: {ordered_at: created, amount: total}}",
        "columns: {ordered_at: created, amount: total, currency: {value: USD}, "
        "discount: {value: 0}}}",
    )
    root = make_project("constant", crmseg_yml=config)
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 1))
        rows = ws.backend.execute(ws.backend.canonical("orders")).to_pylist()
    assert {r["currency"] for r in rows} == {"USD"}
    assert {r["discount"] for r in rows} == {0.0}
    bad = CONFIG.replace(
        "columns: {ordered_at: created, amount: total}}",
        "columns: {ordered_at: created, amount: {value: lots}}}",
    )
    # at the constant itself, not at the sources key
    with pytest.raises(
        ConfigError,
        match=r"crmseg.yml:6:82 \[sources\.orders\.columns\.amount\.value\]: the constant "
        r"'lots' is not a float$",
    ):
        Workspace.open(make_project("bad", crmseg_yml=bad))
    unknown = CONFIG.replace("amount: total}}", "amount: total, amont: total}}")
    with pytest.raises(
        ConfigError,
        match=r"crmseg.yml:6:81 \[sources\.orders\.columns\.amont\]: 'amont' is not a column "
        r"of the canonical orders table",
    ):
        Workspace.open(make_project("unknown", crmseg_yml=unknown))


def test_customers_derived_from_orders(make_project: MakeProject) -> None:
    config = CONFIG.replace("customers: {path: data/customers.csv}", "customers: {derive: orders}")
    buyers = SEGMENTS.split("  - name: value.buyers")[1]
    root = make_project(
        "derived",
        crmseg_yml=config,
        data__customers_csv=None,
        segments__core_yml="segments:\n  - name: value.buyers" + buyers,
    )
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 1))
        rows = ws.backend.execute(ws.backend.canonical("customers")).to_pylist()
        assert sorted((r["customer_id"], r["signup_at"]) for r in rows) == [
            ("1", datetime(2024, 5, 1, 12)),
            ("2", datetime(2024, 5, 15, 12)),
            ("4", datetime(2024, 7, 1, 12)),
        ]
        assert set(ws.members("value.buyers")) == {"1", "2", "4"}
        again = ws.run(as_of=datetime(2024, 8, 2))
        assert again.details["sources"] == {"customers": "unchanged", "orders": "unchanged"}
    orders = root / "data" / "orders.csv"
    orders.write_text(orders.read_text() + "14,9,2024-07-20 12:00:00,10.0,skincare\n")
    with Workspace.open(root) as ws:
        run = ws.run(as_of=datetime(2024, 8, 3))
        assert run.details["sources"] == {"customers": "loaded", "orders": "loaded"}
        assert "9" in ws.members("value.buyers")
    bad = CONFIG.replace("customers: {path: data/customers.csv}", "customers: {derive: events}")
    with pytest.raises(ConfigError, match=r"customers\.derive: 'events' is not another configured"):
        Workspace.open(make_project("bad", crmseg_yml=bad))


def test_decimal_commas(make_project: MakeProject) -> None:
    orders = "order_id;customer_id;created;total\n10;1;2024-05-01 12:00:00;1.234,56\n"
    orders += "11;2;2024-05-02 12:00:00;80,5\n12;4;2024-05-03 12:00:00;7\n"
    config = CONFIG.replace(
        "columns: {ordered_at: created, amount: total}}",
        "columns: {ordered_at: created, amount: total}, delimiter: ';', decimal: ','}",
    )
    root = make_project("comma", crmseg_yml=config, data__orders_csv=orders)
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 1))
        rows = ws.backend.execute(ws.backend.canonical("orders").order_by("order_id")).to_pylist()
    assert [r["amount"] for r in rows] == [1234.56, 80.5, 7.0]


MARKETPLACE = """\
order_id,customer_id,created,price,freight_value
10,1,2024-05-01 12:00:00,100.0,20.5
11,2,2024-05-02 12:00:00,50.0,
"""


def _mapped(make_project: MakeProject, amount: str) -> Path:
    config = CONFIG.replace(
        "columns: {ordered_at: created, amount: total}}",
        f'columns: {{ordered_at: created, amount: "{amount}"}}}}',
    )
    return make_project("market", crmseg_yml=config, data__orders_csv=MARKETPLACE)


def test_a_mapping_may_compute_a_column(make_project: MakeProject) -> None:
    root = _mapped(make_project, "price + coalesce(freight_value, 0)")
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 1))
        rows = ws.backend.execute(ws.backend.canonical("orders").order_by("order_id")).to_pylist()
    assert [r["amount"] for r in rows] == [120.5, 50.0]


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("price + freight", "no column 'freight' in 'price + freight' (found: order_id,"),
        ("price * (freight_value", "cannot parse 'price * (freight_value'"),
        ("(select 1)", "is not supported (supported: + - * /"),
        # sqlglot reads these as (price + *) AS freight_value and price + 1 AS x
        ("price + * freight_value", "cannot parse 'price + * freight_value': '*' needs a value"),
        ("price + 1 x", "cannot parse 'price + 1 x': no operator between 'price + 1' and 'x'"),
        ("lower(price) - 1", "cannot compute 'LOWER(price) - 1': expected numbers, got string"),
        ("round(price, freight_value)", "the digits must be a whole number"),
    ],
)
def test_a_broken_mapping_expression_is_located(
    make_project: MakeProject, amount: str, expected: str
) -> None:
    root = _mapped(make_project, amount)
    with Workspace.open(root) as ws, pytest.raises(SourceError) as err:
        ws.run(as_of=datetime(2024, 8, 1))
    with Workspace.open(root) as ws:
        assert ws.last_run() is None
    text = str(err.value)
    # the mapping's own line and column, not the source's
    assert "data/orders.csv: column mapping orders.amount (set at crmseg.yml:6:74): " in text
    assert expected in text


def test_a_missing_mapped_column_is_located_at_its_mapping(make_project: MakeProject) -> None:
    root = _mapped(make_project, "amount_total")
    with Workspace.open(root) as ws, pytest.raises(SourceError) as err:
        ws.run(as_of=datetime(2024, 8, 1))
    assert str(err.value).startswith(
        "data/orders.csv: column mapping orders.amount -> 'amount_total' (set at "
        "crmseg.yml:6:74): no column 'amount_total' (found: order_id,"
    )


COMMA_ORDERS = """\
order_id;customer_id;created;Total;Discount;note
10;1;2024-05-01 12:00:00;1.234,56;34,56;x
11;2;2024-05-02 12:00:00;80,50;0;y
"""


def test_an_expression_reads_numbers_the_source_way(make_project: MakeProject) -> None:
    config = CONFIG.replace(
        "columns: {ordered_at: created, amount: total}}",
        "columns: {ordered_at: created, amount: 'Total - Discount', discount: Discount}, "
        "delimiter: ';', decimal: ','}",
    )
    root = make_project("comma", crmseg_yml=config, data__orders_csv=COMMA_ORDERS)
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 1))
        rows = ws.backend.execute(ws.backend.canonical("orders").order_by("order_id")).to_pylist()
    assert [(r["amount"], r["discount"]) for r in rows] == [(1200.0, 34.56), (80.5, 0.0)]
    # text that is not a number is counted like a mapped column's
    bad = make_project("bad", crmseg_yml=config.replace("Total - Discount", "Total - note"),
                       data__orders_csv=COMMA_ORDERS)  # fmt: skip
    with Workspace.open(bad) as ws, pytest.raises(SourceError) as err:
        ws.run(as_of=datetime(2024, 8, 1))
    assert err.value.problems == [
        "data/orders.csv: column 'note' (read by orders.amount): expected a number, found 2 "
        "values that are not (e.g. 'x')"
    ]


def test_whitespace_delimited_text_files(make_project: MakeProject) -> None:
    config = CONFIG.replace(
        "orders: {path: data/orders.csv, columns: {ordered_at: created, amount: total}}",
        "orders: {path: 'data/orders_*.txt', delimiter: whitespace,"
        " columns: {ordered_at: created, amount: total}, formats: {ordered_at: '%Y%m%d'}}",
    )
    header = "order_id  customer_id\tcreated   total category\n"
    root = make_project(
        "spaced",
        crmseg_yml=config,
        data__orders_1_txt=header + "  10 1 20240501   120.0 skincare\n\n 11  1\t20240601 80.5\n",
        data__orders_2_txt=header + "12 2 20240515 300.0 skincare\n",
    )
    for name in ("orders_1.txt", "orders_2.txt"):  # make_project names only .csv/.yml files
        (root / "data" / name.replace(".txt", "_txt")).rename(root / "data" / name)
    backend, counts = _load(root)
    assert counts["orders"] == 3  # each file's header and blank lines are skipped
    rows = backend.execute(backend.canonical("orders").order_by("order_id")).to_pylist()
    assert [(r["order_id"], r["ordered_at"], r["amount"], r["category"]) for r in rows] == [
        ("10", datetime(2024, 5, 1), 120.0, "skincare"),
        ("11", datetime(2024, 6, 1), 80.5, None),  # a short line: the missing column is null
        ("12", datetime(2024, 5, 15), 300.0, "skincare"),
    ]
    bad = config.replace("delimiter: whitespace", "delimiter: spaces")
    where = r"\[sources.orders.delimiter\]: expected one character or 'whitespace', got"
    with pytest.raises(ConfigError, match=where):
        load_config(make_project("bad_delimiter", crmseg_yml=bad))
