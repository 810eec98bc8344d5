"""Per-segment checks (size, share, churn, stability, overlap) on the recorded history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crmseg.segments.catalog import Segment
from crmseg.segments.store import History


@dataclass(frozen=True)
class CheckResult:
    segment: str
    check: str
    ok: bool
    message: str

    def __str__(self) -> str:
        return f"{self.segment}: {self.message}"


def evaluate(segments: Sequence[Segment], state: History) -> list[CheckResult]:
    """Every configured check of every segment, against the latest run of that segment."""
    out: list[CheckResult] = []
    for seg in segments:
        checks = seg.spec.checks
        if checks is None:
            continue
        history = state.history(seg.name)
        if not history:
            out.append(CheckResult(seg.name, "run", False, "never computed: run 'crmseg run'"))
            continue
        last = history[-1]
        size, customers = last["size"], last["customers"]
        when = f"(run {last['run_id']} as of {last['as_of']:%Y-%m-%d %H:%M})"

        def add(name: str, ok: bool, text: str, seg: Segment = seg, when: str = when) -> None:
            out.append(CheckResult(seg.name, name, ok, f"{text} {when}"))

        if checks.min_size is not None:
            add(
                "min_size",
                size >= checks.min_size,
                f"size {size:,} {'>=' if size >= checks.min_size else 'is below'} "
                f"min_size {checks.min_size:,}",
            )
        if checks.max_size is not None:
            add(
                "max_size",
                size <= checks.max_size,
                f"size {size:,} {'<=' if size <= checks.max_size else 'is above'} "
                f"max_size {checks.max_size:,}",
            )
        if checks.max_share is not None:
            share = size / customers if customers else 0.0
            add(
                "max_share",
                share <= checks.max_share,
                f"share {share:.1%} {'<=' if share <= checks.max_share else 'is above'} "
                f"max_share {checks.max_share:.1%}",
            )
        churn_limit = checks.max_churn if checks.max_churn is not None else checks.max_daily_churn
        has_previous = len(history) > 1
        previous = size - last["entered"] + last["exited"]
        if churn_limit is not None and has_previous:
            churn = (last["entered"] + last["exited"]) / previous if previous else 0.0
            add(
                "max_churn",
                churn <= churn_limit,
                f"churn {churn:.1%} of members since the previous run "
                f"{'<=' if churn <= churn_limit else 'is above'} max_churn {churn_limit:.1%}",
            )
        if checks.min_stability is not None and has_previous:
            union = size + last["exited"]
            jaccard = (size - last["entered"]) / union if union else 1.0
            add(
                "min_stability",
                jaccard >= checks.min_stability,
                f"stability (Jaccard with the previous run) {jaccard:.2f} "
                f"{'>=' if jaccard >= checks.min_stability else 'is below'} "
                f"min_stability {checks.min_stability:.2f}",
            )
        if checks.max_overlap_with:
            others = list(checks.max_overlap_with)
            pairs = {(a, b): n for a, b, n in state.overlap([seg.name, *others], last["as_of"])}
            for other, limit in checks.max_overlap_with.items():
                shared = pairs.get((seg.name, other), 0)
                share = shared / size if size else 0.0
                add(
                    f"max_overlap_with.{other}",
                    share <= limit,
                    f"{share:.1%} of members are also in {other} "
                    f"{'<=' if share <= limit else 'is above'} max_overlap_with {limit:.1%}",
                )
    return out
