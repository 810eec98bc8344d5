"""Activation end to end on a small real project: funnel, send log, files, syncs, atomicity."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crmseg.activation import audience as audience_mod
from crmseg.errors import ActivationError, ConfigError
from crmseg.workspace import Workspace
from tests.activation.conftest import AS_OF, ShopFactory, campaign_yml

EXPECTED = {"3", "13", "15", "17", "21", "23", "25", "27", "31", "33", "35", "37"}


def _open(root: Path) -> Workspace:
    ws = Workspace.open(root)
    ws.run(as_of=AS_OF)
    return ws


def test_funnel_applies_consent_suppression_and_counts_every_step(shop: ShopFactory) -> None:
    with _open(shop()) as ws:
        result = ws.activate("welcome", dry_run=True)
        a = result.audience
        steps = {s.label: s.count for s in a.steps}
        assert steps["in segment"] == 40
        # odd ids opted in, minus later opt-outs (9, 19, 29, 39) and 7 (tie at one instant)
        assert steps["with email consent"] == 15
        assert steps["not purchased within 7d"] == 14  # 1 ordered on 07-28
        assert steps["not messaged within 2d"] == 13  # 5 got a message on 07-31
        assert steps["not unsubscribed from email"] == 12  # 11 unsubscribed
        assert {k for k, _ in a.treatment} | set(a.holdout) == EXPECTED
        assert a.funnel().startswith("40 in segment -> 15 with email consent -> ")
        assert ws.activations() == []  # a dry run records nothing


def test_send_log_and_holdout_are_stable_across_runs(shop: ShopFactory) -> None:
    with _open(shop()) as ws:
        first = ws.activate("welcome").audience
        rows = ws.state.con.execute(
            "SELECT customer_key, arm, channel, sent_at FROM send_log ORDER BY customer_key"
        ).fetchall()
        assert {r[0] for r in rows} == EXPECTED
        assert {r[1] for r in rows} == {"treatment", "holdout"}
        assert all(r[2] == "email" and r[3] == AS_OF for r in rows)
        assert len(first.holdout) >= 1
        # three days later: customer 5's message is no longer within 2d, so 5 joins; everyone
        # else keeps their arm
        later = ws.activate("welcome", as_of=AS_OF + timedelta(days=3)).audience
        assert [k for k in later.holdout if k != "5"] == first.holdout
        assert [t for t in later.treatment if t[0] != "5"] == first.treatment
        assert "5" in later.holdout or "5" in dict(later.treatment)
        with pytest.raises(ActivationError, match="already activated"):
            ws.activate("welcome", as_of=AS_OF)
        assert [a["treatment"] for a in ws.activations("welcome")] == [len(first.treatment)] * 2


def test_own_sends_count_for_messaged_within_and_caps(shop: ShopFactory) -> None:
    extra = "    frequency_cap:\n      - {max: 1, per: 7d}\n"
    with _open(shop(campaigns=campaign_yml(extra=extra))) as ws:
        first = ws.activate("welcome").audience
        sent = {k for k, _ in first.treatment}
        # three days later: everyone just sent is capped (1 per 7d); the holdout was not sent,
        # and 5's message from 07-31 lapsed from the 2d suppression but still counts for the cap
        again = ws.activate("welcome", as_of=AS_OF + timedelta(days=3)).audience
        again_all = {k for k, _ in again.treatment} | set(again.holdout)
        assert again_all == EXPECTED - sent
        assert any(s.label.startswith("under cap 1 per 7d") for s in again.steps)


def test_consent_is_not_configurable(shop: ShopFactory) -> None:
    bad = campaign_yml(extra="    consent: false\n")
    with pytest.raises(ConfigError, match=r"campaigns/main.yml:\d+:\d+.*unknown key"):
        _ = Workspace.open(shop(campaigns=bad)).campaigns


def test_a_broken_consent_step_never_reaches_a_send(
    shop: ShopFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _open(shop()) as ws:
        monkeypatch.setattr(audience_mod, "_consent_filter", lambda keys, facts, i: keys)
        # the final check computes consent itself, so it still refuses
        monkeypatch.setattr(audience_mod, "_require_consent", _strict_check)
        with pytest.raises(ActivationError, match="without email consent"):
            ws.activate("welcome")
        assert ws.activations() == []


def _strict_check(c, keys, facts, index):  # type: ignore[no-untyped-def]
    allowed = set(facts.true(f"__c{index}_consent"))
    if set(keys) - allowed:
        raise ActivationError(f"campaign {c.name}: customers without email consent")


def test_file_destinations_csv_parquet_jsonl(shop: ShopFactory) -> None:
    dest = """\
    destination:
      - type: file
        name: csv
        path: out/{campaign}.csv
        fields: [customer_key, email, variant]
        pii: [email]
      - {type: file, name: pq, path: 'out/{campaign}.parquet', fields: [customer_key, arm]}
      - {type: file, name: js, path: 'out/{campaign}.jsonl', fields: [customer_key, channel]}
    """
    root = shop(campaigns=campaign_yml(destination=dest))
    with _open(root) as ws:
        a = ws.activate("welcome").audience
    treated = sorted(k for k, _ in a.treatment)
    csv_lines = (root / "out/welcome.csv").read_text().splitlines()
    assert csv_lines[0] == '"customer_key","email","variant"'
    assert len(csv_lines) == 1 + len(treated)
    assert '"3","User3@Example.com ",' in csv_lines or "3" not in treated
    table = pq.read_table(root / "out/welcome.parquet")
    assert table.column_names == ["customer_key", "arm"]
    assert sorted(table.column("customer_key").to_pylist()) == treated
    assert set(table.column("arm").to_pylist()) == {"treatment"}
    rows = [json.loads(line) for line in (root / "out/welcome.jsonl").read_text().splitlines()]
    assert rows and all(r["channel"] == "email" for r in rows)
    assert not list((root / "out").glob(".*staged"))


def test_file_fields_may_be_traits_at_the_activation_instant(shop: ShopFactory) -> None:
    # a destination personalises with traits (the next best category, a value): the values
    # are the traits' at the audience's instant
    fields = "[customer_key, orders_count, ltv, variant]"
    dest = f"    destination: {{type: file, path: out/t.csv, fields: {fields}}}\n"
    root = shop(campaigns=campaign_yml(destination=dest))
    with _open(root) as ws:
        a = ws.activate("welcome").audience
        tables = ws._loaded_tables()
        wide = ws._plan(tables).wide(tables, a.as_of, select=["orders_count", "ltv"])
        want = {
            str(r["customer_id"]): r
            for r in ws.backend.execute(
                wide.select("customer_id", "orders_count", "ltv")
            ).to_pylist()
        }
    import csv

    with (root / "out/t.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["customer_key"] for r in rows) == sorted(k for k, _ in a.treatment)
    assert any(float(r["ltv"] or 0) > 0 for r in rows)
    for r in rows:
        w = want[r["customer_key"]]
        assert int(r["orders_count"]) == w["orders_count"]
        assert (float(r["ltv"]) if r["ltv"] else None) == w["ltv"]


def test_unknown_field_is_an_error_at_the_campaign(shop: ShopFactory) -> None:
    # the good trait next to it is not blamed, and the checker's hint comes along
    fields = "[customer_key, ltv, orders_cuont]"
    dest = f"    destination: {{type: file, path: out/x.csv, fields: {fields}}}\n"
    root = shop(campaigns=campaign_yml(destination=dest))
    with _open(root) as ws:
        with pytest.raises(ActivationError, match=r"campaigns/main.yml:\d+: campaign welcome: "
                           r"field 'orders_cuont' is neither a customer column, a trait.*"
                           r"did you mean 'orders_count'"):  # fmt: skip
            ws.activate("welcome")
        assert ws.activations() == []


def test_a_trait_reading_personal_data_needs_pii(shop: ShopFactory) -> None:
    traits = "traits:\n  - name: contact\n    expr: email\n"
    dest = "    destination: {type: file, path: out/x.csv, fields: [customer_key, contact]}\n"
    root = shop(campaigns=campaign_yml(destination=dest), **{"traits/contact.yml": traits})
    with _open(root) as ws:
        with pytest.raises(ActivationError, match=r"field 'contact' reads personal data "
                           r"\(email\): list it under 'pii'"):  # fmt: skip
            ws.activate("welcome")
        assert ws.activations() == []
        assert not (root / "out" / "x.csv").exists()
    allowed = dest.replace("fields:", "pii: [email], fields:")
    root2 = shop(campaigns=campaign_yml(destination=allowed), **{"traits/contact.yml": traits})
    with _open(root2) as ws:
        ws.activate("welcome")
    assert "@" in (root2 / "out" / "x.csv").read_text()


def test_pii_must_be_listed(shop: ShopFactory) -> None:
    dest = "    destination: {type: file, path: out/x.csv, fields: [customer_key, email]}\n"
    with pytest.raises(ConfigError, match=r"personal data.*pii"):
        _ = Workspace.open(shop(campaigns=campaign_yml(destination=dest))).campaigns


def test_failed_export_rolls_back_the_activation(shop: ShopFactory) -> None:
    dest = "    destination: {type: file, path: blocked/x.csv}\n"
    root = shop(campaigns=campaign_yml(destination=dest))
    (root / "blocked").write_text("a file where a folder is needed")
    with _open(root) as ws:
        with pytest.raises(ActivationError, match="cannot write"):
            ws.activate("welcome")
        assert ws.activations() == []
        assert ws.state.con.execute("SELECT count(*) FROM send_log").fetchall() == [(0,)]


def test_incremental_file_sync_sends_adds_and_removes(shop: ShopFactory) -> None:
    dest = (
        "    destination: {type: file, path: 'out/diff_{as_of}.csv', "
        "fields: [customer_key], sync: incremental}\n"
    )
    text = campaign_yml(destination=dest).replace("custom.everyone", "custom.low_ids")
    root = shop(campaigns=text)
    with _open(root) as ws:
        first = ws.activate("welcome").audience
        day3 = AS_OF + timedelta(days=3)
        second = ws.activate("welcome", as_of=day3)
    added = (root / f"out/diff_{AS_OF:%Y%m%dT%H%M%S}.csv").read_text().splitlines()
    assert len(added) == 1 + len(first.treatment)
    again = (root / f"out/diff_{day3:%Y%m%dT%H%M%S}.csv").read_text().splitlines()
    assert again == ['"customer_key","op"']  # nothing changed: nothing sent
    assert second.destinations[0].adds == second.destinations[0].removes == 0


def test_group_priority_and_send_window(shop: ShopFactory) -> None:
    campaigns = """\
campaigns:
  - name: high
    segment: custom.low_ids
    channel: email
    group: weekly
    priority: 10
  - name: low
    segment: custom.everyone
    channel: email
    group: weekly
    priority: 1
    send_window: {start: 2024-07-01, end: 2024-09-01, every: 7d}
  - name: later
    segment: custom.everyone
    channel: email
    send_window: {start: 2025-01-01}
"""
    with _open(shop(campaigns=campaigns)) as ws:
        # activating the low-priority one first still leaves the high one its customers
        low = ws.activate("low")
        high = ws.activate("high")
        low_keys = {k for k, _ in low.audience.treatment}
        high_keys = {k for k, _ in high.audience.treatment}
        assert high_keys and low_keys and not low_keys & high_keys
        assert low.audience.steps[-1].label == "first in group weekly"
        assert [r.campaign for r in ws.activate_due(dry_run=True)] == []  # low: every 7d
        due = ws.activate_due(dry_run=True, as_of=AS_OF + timedelta(days=7))
        assert [r.campaign for r in due] == ["high", "low"]


def test_a_path_led_outside_by_a_symlink_writes_nothing(shop: ShopFactory, tmp_path: Path) -> None:
    dest = "    destination: {type: file, path: 'out/{campaign}.csv', fields: [customer_key]}\n"
    root = shop(campaigns=campaign_yml(destination=dest))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "out").symlink_to(elsewhere, target_is_directory=True)
    with Workspace.open(root) as ws:
        ws.run(as_of=AS_OF)
        with pytest.raises(ActivationError, match="outside the project folder"):
            ws.activate("welcome")
        assert ws.activations("welcome") == []
    assert list(elsewhere.iterdir()) == []
