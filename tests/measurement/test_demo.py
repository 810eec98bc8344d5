"""End to end on the demo shop: the planted campaign lift is found inside its interval, the
null campaign is not significant, and the HTML report renders in a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crmseg.demo.scaffold import init_project
from crmseg.workspace import Workspace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=15000",
]


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("measure") / "shop"
    init_project(root, demo=True, customers=5000, seed=42)
    with Workspace.open(root) as ws:
        ws.backfill(datetime(2026, 1, 1), datetime(2026, 11, 1), timedelta(days=60))
    return root


def test_planted_lift_is_found_and_the_null_campaign_is_not(shop: Path) -> None:
    truth = {
        r["campaign"]: r for r in pq.read_table(shop / "history/campaigns.parquet").to_pylist()
    }
    with Workspace.open(shop) as ws:
        rows = ws.measure_campaigns(14)
        stored = ws.measure_review()
    lift = {(r["campaign"], r["metric"]): r for r in rows}
    assert {c for c, _ in lift} == set(truth)
    for name, t in truth.items():
        conv = lift[(name, "conversion")]
        assert conv["complete"]
        if t["planted_conversion_lift"] > 0:
            # The planted +4 points lies inside the measured 95% interval, which excludes 0.
            assert conv["lower"] <= t["planted_conversion_lift"] <= conv["upper"]
            assert conv["significant"] and conv["lower"] > 0
            assert lift[(name, "revenue_per_member")]["lift"] > 0
        else:
            assert not conv["significant"] and conv["lower"] < 0 < conv["upper"]
    no_lift = [f["subject"] for f in stored if f["kind"] == "no_lift"]
    assert no_lift == [n for n, t in truth.items() if t["planted_conversion_lift"] == 0]


def test_outcomes_transitions_and_stability_on_the_demo(shop: Path) -> None:
    with Workspace.open(shop) as ws:
        outcomes = ws.measure_outcomes(30, ["lifecycle.stage_loyal", "lifecycle.stage_churned"])
        runs = ws.runs()
        moves = ws.measure_transitions("lifecycle.stage")
        stable = ws.measure_stability(["value.vip"])
    assert len(outcomes) == 2 * len(runs)
    done = [r for r in outcomes if r["complete"]]
    assert done and not outcomes[-1]["complete"]  # the last run's window is still open
    loyal = [r for r in done if r["segment"] == "lifecycle.stage_loyal"]
    churned = [r for r in done if r["segment"] == "lifecycle.stage_churned"]
    # Loyal customers buy again far more often than churned ones: outcomes see the data.
    assert min(r["conversion_rate"] for r in loyal) > 3 * max(r["conversion_rate"] for r in churned)
    assert moves["from_run"] == runs[-2].run_id and moves["to_run"] == runs[-1].run_id
    at = moves["from"].index("loyal"), moves["to"].index("at_risk")
    assert moves["counts"][at[0]][at[1]] > 0  # somebody moved from loyal to at risk
    assert len(stable) == len(runs) - 1 and all(0.5 < r["jaccard"] <= 1 for r in stable)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it)")
def test_report_renders_in_headless_chromium(shop: Path, tmp_path: Path) -> None:
    with Workspace.open(shop) as ws:
        path = ws.report(tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    page = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)
    # Opens offline: plotly.js is inlined, nothing is fetched.
    assert "<script src=" not in text and "<link" not in page and "http" not in page
    for section in ("campaigns", "catalog", "sizes", "outcomes", "lifecycle", "rfm", "clv",
                    "overlap", "cohorts", "power", "quality", "review"):  # fmt: skip
        assert f'<section id="{section}">' in text, section
    assert "not available" not in page
    charts = set(re.findall(r'<div id="(chart-\d+)" class="plotly-graph-div"', text))
    assert len(charts) >= 12

    run = _chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", path.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not [c for c in console if "Uncaught" in c or "ERROR" in c or "WARN" in c], console
    # Every chart div got drawn: plotly adds its SVG inside the div.
    for chart in charts:
        start = dom.index(f'id="{chart}"')
        nxt = dom.find('class="plotly-graph-div"', start + 1)
        assert 'class="main-svg"' in dom[start : nxt if nxt > 0 else None], chart

    shot = tmp_path / "report.png"
    _chromium(tmp_path, "--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}",
              path.as_uri())  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 50_000
