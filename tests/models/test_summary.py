"""rfm_summary against the CDNOW summary shipped with lifetimes and lifetimes' own summariser."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

from crmseg.errors import ModelError
from crmseg.models import rfm_summary


def _lifetimes_utils() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lifetimes import utils
    except Exception as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"lifetimes does not import here: {e!r}")
    return utils


def test_matches_shipped_cdnow_summary(
    cdnow_sample_tx: pd.DataFrame, cdnow_spend: pd.DataFrame
) -> None:
    # The shipped file is in weeks rounded to 2 decimals; days / 7 must round to it.
    tx = cdnow_sample_tx
    got = rfm_summary(tx["id"], tx["date"], tx["amt"], "1997-09-30", freq="D")
    want = cdnow_spend.set_index("ID")
    assert len(got) == len(want) == 2357
    got = got.loc[want.index]
    assert (got["frequency"] == want["x"]).all()
    assert np.abs(got["recency"] / 7 - want["t_x"]).max() <= 0.005
    assert np.abs(got["T"] / 7 - want["T"]).max() <= 0.005
    assert np.abs(got["monetary_value"] - want["zbar"]).max() <= 0.0051


@pytest.mark.parametrize("freq", ["D", "W"])
def test_matches_lifetimes_summary(cdnow_master_tx: pd.DataFrame, freq: str) -> None:
    utils = _lifetimes_utils()
    tx = cdnow_master_tx
    got = rfm_summary(tx["id"], tx["date"], tx["amt"], "1998-03-31", freq=freq)
    want = utils.summary_data_from_transaction_data(
        tx, "id", "date", "amt", observation_period_end="1998-03-31", freq=freq
    )
    assert len(got) == len(want)
    want = want.loc[got.index, ["frequency", "recency", "T", "monetary_value"]]
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12)


def test_calibration_holdout_matches_lifetimes(cdnow_master_tx: pd.DataFrame) -> None:
    utils = _lifetimes_utils()
    tx = cdnow_master_tx
    got = rfm_summary(
        tx["id"], tx["date"], tx["amt"], "1997-12-31", freq="W", calibration_end="1997-06-30"
    )
    want = utils.calibration_and_holdout_data(
        tx,
        "id",
        "date",
        calibration_period_end="1997-06-30",
        observation_period_end="1997-12-31",
        freq="W",
        monetary_value_col="amt",
    ).loc[got.index]
    assert len(got) == len(want)
    pairs = {
        "frequency": "frequency_cal",
        "recency": "recency_cal",
        "T": "T_cal",
        "monetary_value": "monetary_value_cal",
        "frequency_holdout": "frequency_holdout",
        "duration_holdout": "duration_holdout",
    }
    for ours, theirs in pairs.items():
        np.testing.assert_allclose(got[ours], want[theirs], rtol=1e-12, err_msg=ours)
    # lifetimes averages raw holdout transactions; we average period totals, like calibration
    hold = tx[(tx["date"] > "1997-06-30") & (tx["date"] <= "1997-12-31")]
    week = hold["date"].dt.to_period("W")
    totals = hold.groupby(["id", week])["amt"].sum().groupby(level=0).mean()
    expect = totals.reindex(got.index).fillna(0.0)
    np.testing.assert_allclose(got["monetary_value_holdout"], expect, rtol=1e-12)


def test_periods_counted_once_and_window_respected() -> None:
    ids = ["a", "a", "a", "a", "b", "c", "c"]
    ts = [
        "2024-01-01 09:00",
        "2024-01-01 17:00",  # same day: one period, amounts add up
        "2024-01-05 00:00",
        "2024-01-20 00:00",  # after as_of: ignored
        "2024-01-03 00:00",
        "2024-01-15 00:00",  # c only buys after as_of: not a customer yet
        "2024-01-16 00:00",
    ]
    amounts = [10.0, 5.0, 7.0, 100.0, 3.0, 1.0, 1.0]
    got = rfm_summary(ids, ts, amounts, "2024-01-10")
    assert list(got.index) == ["a", "b"]
    assert got.loc["a"].to_dict() == {
        "frequency": 1.0,
        "recency": 4.0,
        "T": 9.0,
        "monetary_value": 7.0,
    }
    assert got.loc["b"].to_dict() == {
        "frequency": 0.0,
        "recency": 0.0,
        "T": 7.0,
        "monetary_value": 0.0,
    }


def test_bad_inputs_raise() -> None:
    with pytest.raises(ModelError, match="same length"):
        rfm_summary([1, 2], ["2024-01-01"], [1.0, 2.0], "2024-02-01")
    with pytest.raises(ModelError, match="calibration_end is after as_of"):
        rfm_summary([1], ["2024-01-01"], [1.0], "2024-02-01", calibration_end="2024-03-01")
    with pytest.raises(ModelError, match="timestamps"):
        rfm_summary([1], ["not a date"], [1.0], "2024-02-01")
    with pytest.raises(ModelError, match="NaN"):
        rfm_summary([1], ["2024-01-01"], [float("nan")], "2024-02-01")


def test_empty_holdout_gives_zeros() -> None:
    got = rfm_summary(
        [1, 1], ["2024-01-01", "2024-01-03"], [2.0, 4.0], "2024-02-01", "D", "2024-01-20"
    )
    assert got.loc[1, "frequency_holdout"] == 0.0
    assert got.loc[1, "monetary_value_holdout"] == 0.0
    assert got.loc[1, "duration_holdout"] == 12.0
    assert got.loc[1, "T"] == 19.0


def test_day_periods_match_pandas_and_mixed_layouts_parse() -> None:
    stamps = pd.Series(
        pd.to_datetime(
            ["1969-12-31 23:59:59", "1970-01-01", "2024-02-29 13:00", "1900-03-01"], format="mixed"
        )
    )
    for unit in ("ns", "s"):
        got = rfm_summary([1, 2, 3, 4], stamps.dt.as_unit(unit), None, "2030-01-01")
        days = pd.DatetimeIndex(stamps).to_period("D").asi8
        want = pd.Period("2030-01-01", "D").ordinal - days
        np.testing.assert_array_equal(got["T"].to_numpy(), want)
    mixed = rfm_summary(["a", "a"], ["2024-01-01 09:00", "2024-01-03"], [1.0, 2.0], "2024-01-10")
    assert mixed.loc["a", "recency"] == 2.0


def test_sparse_and_dense_integer_ids_agree() -> None:
    ts = ["2024-01-01", "2024-01-02", "2024-01-05", "2024-01-02"]
    amounts = [1.0, 2.0, 3.0, 4.0]
    dense = rfm_summary([5, 5, 5, 7], ts, amounts, "2024-01-10")
    sparse = rfm_summary([5, 5, 5, 10**12], ts, amounts, "2024-01-10")  # hashed path
    assert list(dense.index) == [5, 7] and list(sparse.index) == [5, 10**12]
    np.testing.assert_array_equal(dense.to_numpy(), sparse.to_numpy())
    assert dense.loc[5].to_dict() == {
        "frequency": 2.0,
        "recency": 4.0,
        "T": 9.0,
        "monetary_value": 2.5,
    }
