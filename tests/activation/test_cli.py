"""The real command line: campaigns, activate --dry-run, a real activation writing a CSV."""

from __future__ import annotations

import json

from tests.activation.conftest import ShopFactory, campaign_yml
from tests.conftest import run_cli


def test_activate_dry_run_then_real_csv(shop: ShopFactory) -> None:
    dest = (
        "    destination: {type: file, path: 'out/{campaign}.csv', "
        "fields: [customer_key, arm, email], pii: [email]}\n"
    )
    root = shop(campaigns=campaign_yml(destination=dest))
    assert run_cli("run", "-p", str(root), "--as-of", "2024-08-01").returncode == 0

    listed = run_cli("campaigns", "-p", str(root), "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["name"] == "welcome"

    dry = run_cli("activate", "welcome", "-p", str(root), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "40 in segment -> 15 with email consent" in dry.stdout
    assert "would send" in dry.stdout
    assert not (root / "out").exists()

    real = run_cli("activate", "welcome", "-p", str(root), "--format", "json")
    assert real.returncode == 0, real.stderr
    result = json.loads(real.stdout)[0]
    assert result["activation_id"] == 1 and result["dry_run"] is False
    lines = (root / "out/welcome.csv").read_text().splitlines()
    assert lines[0] == '"customer_key","arm","email"'
    assert len(lines) == 1 + result["treatment"]

    again = run_cli("activate", "welcome", "-p", str(root))
    assert again.returncode == 1
    assert "already activated" in again.stderr and "Traceback" not in again.stderr

    unknown = run_cli("activate", "welcom", "-p", str(root))
    assert unknown.returncode == 1 and "did you mean 'welcome'" in unknown.stderr
    neither = run_cli("activate", "-p", str(root))
    assert neither.returncode == 1 and "--due" in neither.stderr
