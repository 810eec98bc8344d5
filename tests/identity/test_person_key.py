"""identity.person_key: people named as the business knows them (a marketplace's per-order
customer ids grouped by its customer_unique_id)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crmseg.errors import ConfigError
from crmseg.workspace import Workspace

from ..conftest import MakeProject, run_cli

CONFIG = """\
name: market
timezone: UTC
sources:
  customers: {path: data/customers.csv}
  orders: {path: data/orders.csv}
identity:
  max_cluster_size: 2
  person_key: customer_unique_id
"""

# Per-order customer records, as a marketplace exports them: u1 bought three times.
CUSTOMERS = """\
customer_id,customer_unique_id,email,signup_at
c1,u1,,2024-01-01
c2,u1,,2024-02-01
c3,u1,,2024-03-01
c4,u2,bo@example.com,2024-01-15
c5,,bo@example.com,2024-04-01
c6,,,2024-04-01
"""

ORDERS = """\
order_id,customer_id,ordered_at,amount
o1,c1,2024-01-01,10
o2,c2,2024-02-01,20
o3,c3,2024-03-01,30
o4,c4,2024-01-15,5
o5,c5,2024-04-01,7
o6,c6,2024-04-01,1
"""

SEGMENTS = """\
segments:
  - name: repeat.buyers
    description: Two orders or more.
    owner: crm
    rule: count(orders) >= 2
  - name: everyone
    description: Everyone.
    owner: crm
    rule: count(orders) >= 0
"""


def _root(make_project: MakeProject, name: str = "shop", **files: str) -> Path:
    defaults = {
        "crmseg_yml": CONFIG,
        "data__customers_csv": CUSTOMERS,
        "data__orders_csv": ORDERS,
        "segments__core_yml": SEGMENTS,
    }
    return make_project(name, **{**defaults, **files})


def test_people_are_named_by_their_person_key(make_project: MakeProject, tmp_path: Path) -> None:
    root = _root(make_project)
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 6, 1))
        # u1's three records are one person although the cluster limit is 2: the limit
        # counts people, not per-order records. c5 shares u2's email: merged into u2.
        assert ws.members("everyone") == ["c6", "u1", "u2"]
        assert ws.members("repeat.buyers") == ["u1", "u2"]
        profile = ws.profile("c2")  # any record id finds the person
        assert profile["customer_id"] == "u1"
        assert [r["customer_id"] for r in profile["records"]] == ["c1", "c2", "c3"]
        assert "repeat.buyers" in profile["current"]
        out = tmp_path / "all.parquet"
        ws.export(out)
    rows = pq.read_table(out).to_pylist()
    assert {r["customer_id"] for r in rows if r["segment"] == "repeat.buyers"} == {"u1", "u2"}


def test_a_key_that_is_not_unique_per_person_is_refused_and_nothing_changes(
    make_project: MakeProject,
) -> None:
    root = _root(make_project)
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 6, 1))
    # c5 now carries its own key u3 while sharing u2's email: one person, two keys
    data = root / "data" / "customers.csv"
    data.write_text(CUSTOMERS.replace("c5,,bo@", "c5,u3,bo@"))
    done = run_cli("run", "--as-of", "2024-06-02", "--project", str(root))
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "error: crmseg.yml:8:15 [identity.person_key]: 'customer_unique_id' is not"
    )
    assert "record 'c4' has 'u2', record 'c5' has 'u3'" in line
    with Workspace.open(root) as ws:
        assert ws.members("repeat.buyers") == ["u1", "u2"]  # the last good run still answers
        assert len(ws.runs()) == 1


def test_person_key_errors_are_located(make_project: MakeProject) -> None:
    root = _root(
        make_project,
        "typo",
        crmseg_yml=CONFIG.replace(": customer_unique_id", ": customer_uniq_id"),
    )
    with (
        Workspace.open(root) as ws,
        pytest.raises(
            ConfigError,
            match=r"^crmseg.yml:8:15 \[identity.person_key\]: customers "
            r"has no column 'customer_uniq_id' to key people by \(did you mean "
            r"'customer_unique_id'\?\)",
        ),  # fmt: skip
    ):
        ws.run(as_of=datetime(2024, 6, 1))
    off = CONFIG.replace("identity:\n", "identity:\n  enabled: false\n")
    with pytest.raises(
        ConfigError, match=r"crmseg.yml:7:3 \[identity\]: person_key keys people by identity"
    ):
        Workspace.open(_root(make_project, "off", crmseg_yml=off))
    # a record without a key whose own id is someone's key would merge them by accident
    clash = CUSTOMERS.replace("c6,,,", "u1,,,").replace("c1,u1,", "c1,u1,")
    root = _root(
        make_project,
        "clash",
        data__customers_csv=clash,
        data__orders_csv=ORDERS.replace("o6,c6", "o6,u1"),
    )
    with (
        Workspace.open(root) as ws,
        pytest.raises(ConfigError, match=r"records without a 'customer_unique_id' have ids that"),
    ):
        ws.run(as_of=datetime(2024, 6, 1))


def test_a_record_with_two_keys_is_refused_before_anything_is_written(
    make_project: MakeProject,
) -> None:
    # c1 listed twice with different keys: the record belongs to u1 or to u9, not both
    two = CUSTOMERS + "c1,u9,,2024-01-01\nc4,u2,bo@example.com,2024-01-15\n"
    root = _root(make_project, data__customers_csv=two)
    said = (
        "crmseg.yml:8:15 [identity.person_key]: 'customer_unique_id' is not one value per "
        "record: record 'c1' has 'u1' and 'u9'; a record belongs to one person: fix the "
        "customers source so each customer_id has one key"
    )
    done = run_cli("run", "--project", str(root))
    assert done.returncode == 1, done.stdout
    assert done.stderr.strip() == f"error: {said}"
    checked = run_cli("validate", "--project", str(root))  # the lint errors come first here
    assert checked.returncode == 1 and said in checked.stderr.splitlines()[-1]
    with Workspace.open(root) as ws:
        assert ws.runs() == []
        assert "customers" not in ws.backend.canonical_tables()


def test_validate_reports_a_person_key_that_is_not_a_column(make_project: MakeProject) -> None:
    typo = CONFIG.replace(": customer_unique_id", ": customer_uniq_id")
    root = _root(
        make_project,
        crmseg_yml=typo,
        segments__core_yml=SEGMENTS.replace("name: repeat.buyers", "name: value.repeat").replace(
            "name: everyone", "name: custom.all"
        ),
    )
    done = run_cli("validate", "--project", str(root))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: crmseg.yml:8:15 [identity.person_key]: customers has no column "
        "'customer_uniq_id' to key people by (did you mean 'customer_unique_id'?)"
    )
