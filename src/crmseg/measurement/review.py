"""The quarterly review: segments nobody uses, that are too small to measure, that churn
their membership run to run, and campaigns without measurable lift; each with an action."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

MIN_SIZE = 100  # below this a segment is tiny whatever its conversion rate
UNSTABLE_JACCARD = 0.5  # median Jaccard between consecutive runs below this is unstable


@dataclass(frozen=True)
class Finding:
    kind: str  # unused | tiny | unmeasurable | unstable | no_lift
    subject: str  # segment or campaign name
    detail: str
    action: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def review(
    catalog: Sequence[dict[str, Any]],
    stability: Sequence[dict[str, Any]],
    power: Sequence[dict[str, Any]],
    lift: Sequence[dict[str, Any]],
    min_size: int = MIN_SIZE,
    unstable_below: float = UNSTABLE_JACCARD,
) -> list[Finding]:
    out: list[Finding] = []
    by_power = {p["segment"]: p for p in power}
    jaccards: dict[str, list[float]] = {}
    for row in stability:
        jaccards.setdefault(row["segment"], []).append(row["jaccard"])
    for seg in catalog:
        name, size = seg["name"], seg.get("size")
        if not seg.get("used_by"):
            out.append(
                Finding(
                    "unused",
                    name,
                    "no campaign or segment uses it",
                    "retire it, or attach it to a campaign with an owner and purpose",
                )
            )
        if size is not None and size < min_size:
            out.append(
                Finding(
                    "tiny",
                    name,
                    f"{size:,} members at the last run (fewer than {min_size:,})",
                    "merge it into a broader segment or widen the rule",
                )
            )
        elif name in by_power and by_power[name]["too_small"]:
            p = by_power[name]
            out.append(
                Finding(
                    "unmeasurable",
                    name,
                    f"with a {p['holdout_share']:.0%} holdout it could only detect a lift of "
                    f"{p['mde'] * 100:.1f} points ({p['relative_mde']:.0%} relative) on a "
                    f"{p['baseline']:.1%} conversion",
                    "use a larger holdout, pool sends over time, or merge it before testing",
                )
            )
        values = jaccards.get(name, [])
        if len(values) >= 2 and statistics.median(values) < unstable_below:
            out.append(
                Finding(
                    "unstable",
                    name,
                    f"median Jaccard {statistics.median(values):.2f} between consecutive runs",
                    "use longer windows or thresholds with some slack, or refresh less often",
                )
            )
    for row in lift:
        if row["metric"] != "conversion" or not row["complete"] or row["significant"]:
            continue
        out.append(
            Finding(
                "no_lift",
                row["campaign"],
                f"conversion lift {row['lift'] * 100:+.1f} points, 95% CI "
                f"{row['lower'] * 100:+.1f} to {row['upper'] * 100:+.1f} "
                f"(p = {row['p_value']:.2f})",
                "change the offer or audience, or stop it and save the sends",
            )
        )
    return out
