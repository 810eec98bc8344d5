"""Holdout and split assignment: stable, independent of the audience, and on target."""

from __future__ import annotations

import random

from crmseg.activation.assign import assign, in_holdout, unit, variant


def test_holdout_share_within_one_point_on_100k_customers() -> None:
    keys = [f"C{i:07d}" for i in range(100_000)]
    for campaign, share in (("vip_early_access", 0.1), ("churn_save", 0.25), ("x", 0.5)):
        held, treated = assign(campaign, keys, share, [])
        assert len(held) + len(treated) == len(keys)
        assert abs(len(held) / len(keys) - share) < 0.01, (campaign, len(held))


def test_holdout_is_stable_across_runs_and_audiences() -> None:
    keys = [f"C{i:06d}" for i in range(20_000)]
    held, _ = assign("spring", keys, 0.1, [])
    shuffled = keys[:]
    random.Random(7).shuffle(shuffled)
    # another run: other order, half the audience gone, new customers added
    again, _ = assign("spring", [*shuffled[:10_000], "new1", "new2"], 0.1, [])
    assert set(again) - {"new1", "new2"} == set(held) & set(shuffled[:10_000])
    # a different campaign draws a different holdout
    other, _ = assign("autumn", keys, 0.1, [])
    assert len(set(other) & set(held)) < 0.2 * len(held)


def test_splits_follow_weights_and_do_not_depend_on_the_holdout() -> None:
    keys = [f"C{i:06d}" for i in range(100_000)]
    splits = [("a", 1.0), ("b", 3.0)]
    _, treated = assign("launch", keys, 0.2, splits)
    share_b = sum(v == "b" for _, v in treated) / len(treated)
    assert abs(share_b - 0.75) < 0.01
    # the variant of a customer is the same with or without a holdout
    assert all(variant("launch", k, splits) == v for k, v in treated[:1000])
    assert variant("launch", "C1", []) is None


def test_unit_is_a_fixed_function_of_campaign_and_key() -> None:
    # pinned: changing the hash would silently move every customer between arms
    assert round(unit("vip_early_access", "C0000001"), 12) == round(
        int.from_bytes(
            __import__("hashlib").sha256(b"vip_early_access:C0000001").digest()[:8], "big"
        )
        / 2**64,
        12,
    )
    assert not in_holdout("x", "k", 0.0)
