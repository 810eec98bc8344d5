"""CDNOW data as shipped inside the lifetimes wheel, read straight from its folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest


def _datasets() -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lifetimes (dev extra) is not installed: no CDNOW files")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets"


@pytest.fixture(scope="session")
def cdnow_summary() -> pd.DataFrame:
    """2,357 CDNOW customers, weeks, calibration to 1997-09-30: ID, frequency, recency, T."""
    return pd.read_csv(_datasets() / "cdnow_customers_summary.csv")


@pytest.fixture(scope="session")
def cdnow_spend() -> pd.DataFrame:
    """The same customers with x, t_x, T and zbar (mean repeat spend)."""
    return pd.read_csv(_datasets() / "cdnow_customers_summary_with_transactions.csv")


def _read_tx(path: Path, names: list[str], skip: int) -> pd.DataFrame:
    tx = pd.read_csv(path, sep=r"\s+", header=None, skiprows=skip, names=names, dtype={"date": str})
    tx["date"] = pd.to_datetime(tx["date"], format="%Y%m%d")
    return tx


@pytest.fixture(scope="session")
def cdnow_sample_tx() -> pd.DataFrame:
    """Transactions of the 2,357-customer sample: master id, id (1..2357), date, cds, amount."""
    return _read_tx(_datasets() / "CDNOW_sample.txt", ["master", "id", "date", "cds", "amt"], 0)


@pytest.fixture(scope="session")
def cdnow_master_tx() -> pd.DataFrame:
    """All 69,659 CDNOW transactions of 23,570 customers."""
    return _read_tx(_datasets() / "CDNOW_master.txt", ["id", "date", "cds", "amt"], 1)
