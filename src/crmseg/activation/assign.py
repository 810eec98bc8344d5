"""Holdout and split assignment by a stable hash, so a customer keeps their arm across runs.

``unit(campaign, key, salt)`` maps sha256 of ``"{campaign}:{salt}{key}"`` to [0, 1). It depends
only on the campaign name and the customer, never on who else is in the audience, the run or the
machine, so re-running an activation (or growing the audience) never moves anyone between arms.
Holdout and variant use different salts so that the split is independent of the holdout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import accumulate

_SCALE = float(2**64)


def unit(campaign: str, key: str, salt: str = "") -> float:
    digest = hashlib.sha256(f"{campaign}:{salt}{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def in_holdout(campaign: str, key: str, share: float) -> bool:
    return share > 0 and unit(campaign, key) < share


def variant(campaign: str, key: str, splits: Sequence[tuple[str, float]]) -> str | None:
    """The variant for a customer, drawn in proportion to the weights (None without splits)."""
    if not splits:
        return None
    total = sum(w for _, w in splits)
    u = unit(campaign, key, "split:") * total
    for (name, _), edge in zip(splits, accumulate(w for _, w in splits), strict=True):
        if u < edge:
            return name
    return splits[-1][0]


def assign(
    campaign: str, keys: Sequence[str], holdout: float, splits: Sequence[tuple[str, float]]
) -> tuple[list[str], list[tuple[str, str | None]]]:
    """(holdout keys, [(treatment key, variant)]), both in the order of ``keys``."""
    held: list[str] = []
    treated: list[tuple[str, str | None]] = []
    for key in keys:
        if in_holdout(campaign, key, holdout):
            held.append(key)
        else:
            treated.append((key, variant(campaign, key, splits)))
    return held, treated
