"""docs/byod.md, run as written: its files, its commands and their output, on CDNOW as shipped in
the lifetimes wheel; the counts it prints are checked against pandas on the raw file."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from .conftest import run_cli

GUIDE = Path(__file__).parents[1] / "docs" / "byod.md"
BLOCK = re.compile(r"^```(\S+)([^\n]*)\n(.*?)^```", re.M | re.S)


def _cdnow() -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lifetimes (dev extra) is not installed: no CDNOW file")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "CDNOW_master.txt"


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _sizes(lines: list[str]) -> dict[str, list[int]]:
    """segment -> the whole numbers of its table row (members, or one per instant)."""
    out: dict[str, list[int]] = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) > 1 and "." in cells[0]:
            whole = [c for c in cells[1:] if re.fullmatch(r"[\d,]+", c)]
            out[cells[0]] = [int(c.replace(",", "")) for c in whole]
    return out


def test_the_guide_runs_as_written_and_matches_pandas(tmp_path: Path) -> None:
    source = _cdnow()
    root = tmp_path / "cdnow"
    (root / "data").mkdir(parents=True)
    shutil.copy(source, root / "data" / "CDNOW_master.txt")
    text = GUIDE.read_text()
    blocks = BLOCK.findall(text)
    files = [(info, body) for lang, info, body in blocks if info.strip().startswith("file=")]
    assert {info.strip() for info, _ in files} == {"file=crmseg.yml", "file=segments/core.yml"}
    for info, body in files:
        path = root / info.strip().removeprefix("file=")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)

    printed: dict[str, list[str]] = {}
    sessions = [body for lang, _, body in blocks if lang == "console"]
    assert len(sessions) == 5
    for body in sessions:
        command, *expected = body.strip().splitlines()
        assert command.startswith("$ crmseg ")
        args = command.removeprefix("$ crmseg ").split()
        done = run_cli(*args, cwd=root)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        got = _squash(done.stdout)
        for line in expected:
            assert _squash(line) in got, (command, line, done.stdout)
        printed[args[0]] = expected
    assert (root / "members.csv").exists()

    # the same questions of the raw file, answered by pandas
    tx = pd.read_csv(source, sep=r"\s+", dtype={"customer_id": str, "date": str})
    tx["t"] = pd.to_datetime(tx["date"], format="%Y%m%d")
    by = tx.groupby("customer_id")
    end = pd.Timestamp("1998-07-01")
    assert len(tx) == 69_659 and by.ngroups == 23_570  # the published size of the panel
    run = _sizes(printed["run"])
    assert run["value.repeat_buyers"] == [int((by.size() >= 2).sum())]
    assert run["value.big_spenders"] == [int((by.dollar_value.sum() >= 100).sum())]
    assert run["lifecycle.lapsed"] == [int(((end - by.t.max()).dt.days > 180).sum())]
    points = ["1997-01-15", "1997-02-15", "1997-03-15", "1997-04-15"]
    repeat = [int((tx[tx.t <= p].groupby("customer_id").size() >= 2).sum()) for p in points]
    assert _sizes(printed["backfill"])["value.repeat_buyers"] == repeat
    assert f"{by.ngroups:,} customers" in " ".join(printed["run"])
