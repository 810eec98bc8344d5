from __future__ import annotations

from pathlib import Path

import pytest

from crmseg.config import load_config
from crmseg.errors import ConfigError

from .conftest import MakeProject


def test_loads_the_documented_example(tmp_path: Path) -> None:
    (tmp_path / "crmseg.yml").write_text(
        "name: demo-shop\n"
        "backend: {kind: duckdb, path: .crmseg/warehouse.duckdb}\n"
        "timezone: UTC\n"
        "currency: EUR\n"
        "sources:\n"
        "  customers: {path: data/customers.parquet}\n"
        "  orders: {path: data/orders.csv, columns: {ordered_at: created, amount: total}}\n"
        "  events: {table: raw.events}\n"
    )
    config = load_config(tmp_path)
    assert config.sources["orders"].columns == {"ordered_at": "created", "amount": "total"}
    assert config.sources["events"].table == "raw.events"
    assert config.sources["customers"].file_format == "parquet"
    assert config.backend.path == ".crmseg/warehouse.duckdb"


@pytest.mark.parametrize(
    ("text", "line", "column", "needle"),
    [
        ("name: x\nsources:\n  customers: {path: c.csv}\ncolour: red\n", 4, 1, "unknown key"),
        ("name: x\nsources:\n  customers: {path: c.csv, colour: 1}\n", 3, 28, "unknown key"),
        ("name: x\nsources:\n  shoppers: {path: c.csv}\n", 3, 3, "unknown table 'shoppers'"),
        ("name: x\nsources:\n  orders: {path: o.csv}\n", 3, 3, "'customers' source is required"),
        ("name: x\nsources:\n  customers: {}\n", 3, 14, "exactly one of 'path'"),
        ("name: x\ntimezone: Mars/Base\nsources:\n  customers: {path: c.csv}\n", 2, 11, "timezone"),
        (
            "name: x\nsources:\n  customers: {path: c.csv, columns: {emial: mail}}\n",
            3,
            38,  # the mapping's key, not the sources key
            "'emial' is not a column",
        ),
        (
            "name: x\nsources:\n  customers: {path: c.csv}\n  orders:\n    path: o.csv\n"
            "    columns:\n      currency: {value: true}\n",
            7,
            25,  # the constant itself
            "the constant True is not a string",
        ),
        ("name: x\nsources: [\n", 3, 1, "invalid YAML"),
        ("name: x\nsources:\n  customers: {path: c.csv}\nname: y\n", 4, 1, "duplicate key 'name'"),
        ("name: x\nsources:\n  customers: {path: c.csv, path: d.csv}\n", 3, 28, "duplicate key"),
        (
            "name: x\nsources:\n  customers: {path: c.csv}\nx: " + "[" * 1000 + "]" * 1000,
            4,
            67,
            "nested more than 64 levels",
        ),
        (
            "name: x\nsources:\n  customers: {path: c.csv}\n"
            + "".join("  " * i + f"k{i}:\n" for i in range(400)),
            68,
            129,
            "nested more than 64",
        ),
        ("name: x\nlayers: []\nsources:\n  customers: {path: c.csv}\n", 2, 9, "at least 1"),
        ("name: x\nlayers: [Value]\nsources:\n  customers: {path: c.csv}\n", 2, 9, "snake"),
        (
            "name: x\nbackend: {memory_limit: lots}\nsources:\n  customers: {path: c.csv}\n",
            2,
            25,
            "expected a size like 512MB",
        ),
        ("name: x\nsources:\n  customers: {path: ''}\n", 3, 21, "got an empty one"),
        (
            "name: x\nsources:\n  customers: {path: c.csv, delimiter: ';;'}\n",
            3,
            39,
            "expected one character or 'whitespace'",
        ),
        (
            "name: x\nmodels: {clusters_k: [8, 2]}\nsources:\n  customers: {path: c.csv}\n",
            2,
            22,
            "smallest <= largest",
        ),
        ("sources:\n  customers: {path: c.csv}\n", 1, 1, "required key is missing"),
    ],
)
def test_bad_config_is_located(
    tmp_path: Path, text: str, line: int, column: int, needle: str
) -> None:
    (tmp_path / "crmseg.yml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    err = info.value
    assert needle in err.message
    assert err.location.file is not None and err.location.file.endswith("crmseg.yml")
    assert (err.location.line, err.location.column) == (line, column)
    assert "\n" not in str(err)


def test_missing_project_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="crmseg init"):
        load_config(tmp_path)


def test_project_fixture_config_is_valid(make_project: MakeProject) -> None:
    assert load_config(make_project()).name == "test-shop"


@pytest.mark.parametrize(
    "text",
    [
        "name: x\nsources:\n  customers: {path: c.csv}\nnotes:\n"
        + "".join(f"  - Tier [A {i}\n" for i in range(80)),  # brackets inside plain text
        "name: x\nsources:\n  customers: {path: c.csv}\nnotes: |\n"
        + "".join("  " + " " * i + "x\n" for i in range(80)),  # a block scalar's indentation
        "name: x\nsources:\n  customers: {path: c.csv}\nids: [1, '1', \"1\"]\n",
    ],
)
def test_valid_yaml_is_not_mistaken_for_deep_nesting(tmp_path: Path, text: str) -> None:
    (tmp_path / "crmseg.yml").write_text(text)
    with pytest.raises(ConfigError, match="unknown key"):  # read fine; `notes` is not a key
        load_config(tmp_path)


def test_aliases_that_contain_themselves_do_not_hang(tmp_path: Path) -> None:
    from crmseg.config import load_yaml

    (tmp_path / "a.yml").write_text("a: &x {b: *x}\nc: {1: x, '1': y}\n")
    assert load_yaml(tmp_path / "a.yml").data["c"] == {1: "x", "1": "y"}


def test_every_month_is_a_calendar_month_without_drift() -> None:
    from datetime import datetime

    from crmseg.config import Every

    monthly = Every.parse("1mo").instants(datetime(2011, 1, 31), datetime(2011, 6, 30), "UTC")
    assert [f"{d:%m-%d}" for d in monthly] == ["01-31", "02-28", "03-31", "04-30", "05-31", "06-30"]
    yearly = Every.parse("1y").instants(datetime(2020, 2, 29), datetime(2024, 3, 1), "UTC")
    assert [f"{d:%Y-%m-%d}" for d in yearly] == [
        "2020-02-29", "2021-02-28", "2022-02-28", "2023-02-28", "2024-02-29"
    ]  # fmt: skip
    weekly = Every.parse("2w").instants(datetime(2024, 1, 1), datetime(2024, 1, 31), "UTC")
    assert [d.day for d in weekly] == [1, 15, 29]
    with pytest.raises(ValueError, match="expected a duration like 1d, 1w or 1mo"):
        Every.parse("0d")


def test_rule_months_are_thirty_days() -> None:
    from crmseg.rules.parser import UNIT_SECONDS

    # the documented choice: a rule's window spans the same time whatever the month
    assert UNIT_SECONDS["mo"] == 30 * 86_400 and UNIT_SECONDS["y"] == 365 * 86_400
