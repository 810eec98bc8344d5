"""Suggested segments: subgroup discovery over traits and attributes, written as plain rules.

A target is an outcome per customer: a built-in one (``purchase``: an order within the
horizon; ``churn``: a buyer with no order within it; ``high_clv``: the top predicted-value
tier) or any condition in the rule language. Point in time: the candidate conditions are the
project's traits and customer attributes at the *cut-off* (``as_of - horizon``) and the outcome
is the target evaluated at ``as_of``, so it may only read what happened after the cut-off
(windows no longer than the horizon); a target that reads older data, attributes or model
scores would already be known at the cut-off and is refused, with the part that reads it.

Customers are split once, by a seeded hash of their id, into a search part and a held-out
part. A beam search over conjunctions of conditions (``trait >= t``, ``trait <= t`` at the
search part's deciles, ``trait = 'v'`` for the frequent values of a text, ``flag`` / ``not
flag``, ``trait is null``) keeps the rules with the best binomial quality
``sqrt(n) * (rate - base rate)``; a refinement must beat its parent. Rules that cover nearly
the same customers as a better one are dropped. Only then is each rule measured on the
held-out part (size, share, rate, lift over the held-out base rate with the Wilson 95%
interval of its rate), so the reported lift is not the search's own optimism.

Conditions are evaluated exactly as the engine would: a comparison with a null is not true,
so a customer with a null value is not in the subgroup. Bit-packed masks make one candidate an
AND and a popcount over ``n / 8`` bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from crmseg.errors import RuleTypeError, SuggestError
from crmseg.rules import Definition
from crmseg.rules import ast as A
from crmseg.sources.pii import PII_FIELDS

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pandas as pd
    import pyarrow as pa

    from crmseg.rules import Plan

TARGET = "__suggest_target"
SOURCE = "--target"  # where a target's text comes from, for located errors
_ATTR = "__suggest_attr_"
_DURATION = re.compile(r"\s*(\d+)\s*(min|mo|s|h|d|w|y)\s*")
# text values with more distinct values than this are not used (ids, emails, free text)
MAX_LEVELS = 30
QUANTILES = np.linspace(0.1, 0.9, 9)
# customer columns that name, reach or identify a person: never a suggestion's condition
_SKIP_ATTRS = {"customer_id", "anonymous_id"}
TYPES = ("number", "bool", "string")
_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")
_KEYWORDS = frozenset(
    ("and", "or", "not", "between", "in", "like", "is", "null", "true", "false", "now", "where",
     "within", "then"),
)  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """A resolved target: a rule evaluated at ``as_of``, over customers existing at the cut-off
    (buyers only for churn), with its horizon (None: no time split)."""

    key: str  # short name used in suggested segment names: purchase_30d
    text: str  # the outcome in words
    rule: str
    horizon: timedelta | None
    buyers_only: bool = False
    user: bool = False  # written by the user: check it reads only the outcome window
    campaign: str | None = None  # conversion of this campaign's treatment sends

    @property
    def shown(self) -> str:
        """How errors name it: the built-in's name, or the rule as written."""
        return f"{self.rule!r}" if self.user else self.key


@dataclass(frozen=True)
class Settings:
    top: int = 10
    depth: int = 3
    beam: int = 20
    min_share: float = 0.01  # smallest subgroup, as a share of the searched customers
    min_positives: int = 50
    holdout: float = 0.3
    seed: int = 42
    attributes: tuple[str, ...] = ()  # customer columns the user vouches are static


@dataclass
class Suggestion:
    rule: str
    english: str = ""
    conditions: list[str] = field(default_factory=list)
    quality: float = 0.0
    search: dict[str, float] = field(default_factory=dict)
    holdout: dict[str, float] = field(default_factory=dict)
    members_now: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Result:
    target: Outcome
    as_of: datetime
    cutoff: datetime
    features_at: datetime  # a microsecond before the cut-off when the outcome starts there
    customers: int
    positives: int
    base_rate: float
    holdout_customers: int
    holdout_base_rate: float
    candidates: int
    suggestions: list[Suggestion]
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.key,
            "outcome": self.target.text,
            "rule": self.target.rule,
            "as_of": self.as_of,
            "cutoff": self.cutoff,
            "features_at": self.features_at,
            "customers": self.customers,
            "positives": self.positives,
            "base_rate": self.base_rate,
            "holdout_customers": self.holdout_customers,
            "holdout_base_rate": self.holdout_base_rate,
            "candidates": self.candidates,
            "suggestions": [s.as_dict() for s in self.suggestions],
            "seconds": self.seconds,
        }


# --- targets ------------------------------------------------------------------------------


def parse_horizon(text: str) -> timedelta:
    """A duration as rules write one (``30d``, ``12h``, ``2w``, ``3mo``, ``1y``): the same
    fixed lengths, so a horizon and a window of the same text agree."""
    from crmseg.rules.parser import UNIT_SECONDS

    m = _DURATION.fullmatch(text)
    if m is None or int(m.group(1)) == 0 or m.group(2) in ("s", "min"):
        raise SuggestError(
            f"--horizon: expected a duration like 30d, 12h, 2w, 3mo or 1y, got {text!r}"
        )
    return timedelta(seconds=int(m.group(1)) * UNIT_SECONDS[m.group(2)])


def _days(h: timedelta) -> str:
    return f"{int(h.total_seconds() // 86400)}d" if h % timedelta(days=1) == timedelta(0) else (
        f"{int(h.total_seconds() // 3600)}h"
    )  # fmt: skip


def outcome(target: str, horizon: timedelta | None, churn_days: int) -> Outcome:
    """The outcome a ``--target`` names: a built-in name or a rule."""
    name = target.strip()
    if not name:
        raise SuggestError(f"{SOURCE}: expected a built-in outcome ({', '.join(BUILTINS)}) or a "
                           "rule, got nothing")  # fmt: skip
    if name == "purchase":
        h = horizon or timedelta(days=30)
        d = _days(h)
        return Outcome(f"purchase_{d}", f"an order within {d} after the cut-off",
                       f"count(orders within {d}) >= 1", h)  # fmt: skip
    if name == "churn":
        h = horizon or timedelta(days=churn_days)
        d = _days(h)
        return Outcome(f"churn_{d}", f"no order within {d} after the cut-off (buyers)",
                       f"count(orders within {d}) = 0", h, buyers_only=True)  # fmt: skip
    if name.startswith("campaign:"):
        campaign = name.split(":", 1)[1].strip()
        if not campaign:
            raise SuggestError(f"{SOURCE}: expected campaign:NAME, got {name!r}")
        h = horizon or timedelta(days=14)
        d = _days(h)
        slug = re.sub(r"[^a-z0-9]+", "_", campaign.lower()).strip("_") or "campaign"
        return Outcome(f"{slug}_conversion", f"an order within {d} after a treatment send of "
                       f"{campaign}", "", h, campaign=campaign)  # fmt: skip
    if name == "high_clv":
        if horizon is not None:
            raise SuggestError("--horizon: high_clv describes customers at as_of (no horizon)")
        return Outcome("high_clv", "in the top 20% of predicted 12-month value (buyers)",
                       "value.clv_percentile >= 0.8", None, buyers_only=True)  # fmt: skip
    h = horizon or timedelta(days=30)
    return Outcome("rule", name, name, h, user=True)


BUILTINS = ("purchase", "churn", "high_clv", "campaign:NAME")
MAX_SENDS = 31  # distinct send instants a campaign target reads features at


def check_target(plan: Plan, target: Outcome) -> None:
    """The target must be a condition, and (with a horizon) read only what happens after the
    cut-off: every count, sum or ``did`` within at most the horizon, no attribute, consent,
    other segment or model score (those are known at the cut-off already)."""
    checked = plan.checked.get(("trait", TARGET))
    if checked is None or checked.node is None:  # a campaign's conversion has no rule
        return
    if checked.type != "bool":
        _refuse(target, checked.node, f"the target must be a condition (true or false), "
                f"found a {checked.type}")  # fmt: skip
    if not target.user or target.horizon is None:
        return
    limit = target.horizon.total_seconds()
    d = _days(target.horizon)
    for node in A.walk(checked.node):
        reason = _before_cutoff(plan, node, limit, set())
        if reason is not None:
            _refuse(target, node, f"the target {reason}, so it is partly known at the cut-off "
                    f"(features are taken {d} before as_of); give every count, sum and did a "
                    f"window of at most {d}")  # fmt: skip


def _before_cutoff(plan: Plan, node: A.Node, limit: float, seen: set[str]) -> str | None:
    """Why ``node`` reads data from before the cut-off, or None."""
    match node:
        case A.Agg(fn=fn, table=table, within=within):
            if within is None:
                return f"reads {fn}({table}) with no window"
            if within.seconds > limit:
                return f"reads {fn}({table}) over {within.text}, longer than the horizon"
        case A.Did(event=event, within=within):
            if within is None:
                return f"reads did('{event}') with no window"
            if within.seconds > limit:
                return f"reads did('{event}') over {within.text}, longer than the horizon"
        case A.SeqR(first=first, within=within, first_within=fw):
            span = (fw.seconds if fw else math.inf) + within.seconds
            if span > limit:
                return f"reads a sequence from '{first}' reaching back beyond the horizon"
        case A.Attr(col=col):
            return f"reads the customer attribute {col}"
        case A.Consent(channel=ch):
            return f"reads consent.{ch}"
        case A.ModelRef(name=name):
            return f"reads the model score {name}"
        case A.SegRef(name=name):
            return f"reads the segment {name}"
        case A.TraitRef(name=name) if name not in seen:
            seen.add(name)
            body = plan.checked[plan.key(name)].node
            for inner in A.walk(body) if body is not None else []:
                why = _before_cutoff(plan, inner, limit, seen)
                if why is not None:
                    return f"uses the trait {name}, which {why}"
    return None


def _refuse(target: Outcome, node: A.Node, message: str) -> None:
    from crmseg.rules.parser import locate

    if not target.user:
        raise SuggestError(f"{SOURCE} {target.key}: {message}")
    loc, excerpt = locate(target.rule, node.span, SOURCE)
    raise RuleTypeError(message, loc, excerpt)


# --- candidate conditions -----------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    text: str  # in the rule language
    column: str  # the trait or attribute it reads (one condition per column in a rule)


def features(
    plan: Plan, attributes: Sequence[str], avoid: set[str] | frozenset[str] = frozenset()
) -> dict[str, tuple[str, str]]:
    """Candidate columns: wide-table column -> (name in rules, checker type). Traits of the
    plan that are numbers, flags or text, and customer attributes; none that reads a model
    score in ``avoid`` (the target's own, when target and features share an instant)."""
    out: dict[str, tuple[str, str]] = {}
    usable = {k[1] for k in plan.closure(None) if k[0] == "trait"}
    for name in plan.traits:
        c = plan.checked[("trait", name)]
        if name.startswith("__") or name not in usable or c.node is None:
            continue
        if avoid and _models(plan, name) & avoid:
            continue
        if c.type in TYPES:
            out[name] = (name, str(c.type))
    for col in attributes:
        found = plan.checked.get(("trait", _ATTR + col))
        if found is not None and found.node is not None and found.type in TYPES:
            out[_ATTR + col] = (col, str(found.type))
    return out


def _models(plan: Plan, name: str) -> set[str]:
    """The model groups (``clv``, ``churn``, ...) a trait reads, through other traits too."""
    return {m.split(".", 1)[0] for m in plan.models_read(name)}


def attribute_definitions(schema: Mapping[str, Any], names: Sequence[str]) -> list[Definition]:
    """The customer attributes a user lets the search use (``--attribute``), as hidden traits
    so the wide table carries them. Opt-in: ``customers`` holds each person's current
    values, so only columns that do not change (an acquisition channel, a signup country)
    belong in a search whose conditions are taken at a past cut-off."""
    out = []
    for col in dict.fromkeys(names):
        where = f"--attribute {col}"
        if col not in schema:
            raise SuggestError(f"{where}: not a column of customers "
                               f"({', '.join(sorted(schema)[:12])})")  # fmt: skip
        if col in PII_FIELDS or col in _SKIP_ATTRS:
            raise SuggestError(f"{where}: personal data or an id, never a suggestion's condition")
        dtype = schema[col]
        if not (dtype.is_numeric() or dtype.is_boolean() or dtype.is_string()):
            raise SuggestError(f"{where}: a {dtype} column; only numbers, flags and text can "
                               "be conditions")  # fmt: skip
        if not _PLAIN.fullmatch(col) or col in _KEYWORDS:
            raise SuggestError(f"{where}: a rule cannot name this column bare")
        out.append(Definition(_ATTR + col, "trait", text=col))
    return out


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _nice(values: np.ndarray) -> np.ndarray:
    """Thresholds a person would write: whole numbers for whole data, else 3 significant
    digits (the condition is then evaluated with the rounded number, so it stays exact)."""
    if np.all(np.equal(np.mod(values, 1), 0)):
        return np.unique(values)
    out = [float(f"{v:.3g}") for v in values]
    return np.unique(np.asarray(out, dtype=np.float64))


def conditions(
    frame: pd.DataFrame, columns: Mapping[str, tuple[str, str]], search: np.ndarray,
    min_size: int,
) -> list[tuple[Condition, np.ndarray]]:  # fmt: skip
    """Candidate conditions with their masks over all rows (null: not true). Thresholds come
    from the search part only."""
    import pandas as pd

    out: list[tuple[Condition, np.ndarray]] = []
    n = int(search.sum())

    def add(text: str, column: str, mask: np.ndarray) -> None:
        size = int(mask[search].sum())
        if min_size <= size <= n - min_size:  # a condition true for (nearly) all says nothing
            out.append((Condition(text, column), mask))

    for col, (name, kind) in columns.items():
        series = frame[col]
        if kind == "number":
            v = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            known = ~np.isnan(v)
            s = v[search & known]
            if len(np.unique(s)) < 2:
                continue
            for t in _nice(np.quantile(s, QUANTILES, method="lower")):
                lit = _literal(float(t))
                with np.errstate(invalid="ignore"):
                    add(f"{name} >= {lit}", name, known & (v >= t))
                    add(f"{name} <= {lit}", name, known & (v <= t))
            if 0 < (~known[search]).sum() < n:
                add(f"{name} is null", name, ~known)
        elif kind == "bool":
            b = series.astype("boolean")
            add(name, name, b.fillna(False).to_numpy(dtype=bool))
            add(f"not {name}", name, (~b).fillna(False).to_numpy(dtype=bool))
        else:
            text = series.astype("string")
            counts = text[search].value_counts()
            if len(counts) > MAX_LEVELS or len(counts) < 2:
                continue
            for value in counts.index:
                add(f"{name} = {_literal(str(value))}", name,
                    (text == value).fillna(False).to_numpy(dtype=bool))  # fmt: skip
    return out


# --- the search ---------------------------------------------------------------------------


def _count(bits: np.ndarray) -> int:
    return int(np.bitwise_count(bits).sum(dtype=np.int64))


@dataclass
class _Rule:
    parts: tuple[int, ...]
    bits: np.ndarray
    size: int
    positives: int
    quality: float


def beam_search(
    masks: Sequence[np.ndarray], label: np.ndarray, columns: Sequence[str], s: Settings,
    min_size: int,
) -> list[_Rule]:  # fmt: skip
    """The best conjunctions of ``masks`` (rows: the search part) by binomial quality."""
    n = len(label)
    total = int(label.sum())
    p0 = total / n
    ybits = np.packbits(label)
    packed = [np.packbits(m) for m in masks]
    everyone = np.packbits(np.ones(n, dtype=bool))
    beam = [_Rule((), everyone, n, total, 0.0)]
    found: dict[frozenset[int], _Rule] = {}
    for _ in range(s.depth):
        level: dict[frozenset[int], _Rule] = {}
        for rule in beam:
            used = {columns[i] for i in rule.parts}
            for i, bits in enumerate(packed):
                if columns[i] in used:
                    continue
                key = frozenset((*rule.parts, i))
                if key in level or key in found:
                    continue
                both = rule.bits & bits
                size = _count(both)
                if size < min_size or size == rule.size:
                    continue
                pos = _count(both & ybits)
                q = math.sqrt(size) * (pos / size - p0)
                if q <= rule.quality:  # a refinement must earn its condition
                    continue
                level[key] = _Rule((*rule.parts, i), both, size, pos, q)
        if not level:
            break
        beam = sorted(level.values(), key=lambda r: (-r.quality, r.parts))[: s.beam]
        found.update({frozenset(r.parts): r for r in beam})
    ranked = sorted(found.values(), key=lambda r: (-r.quality, len(r.parts), r.parts))
    kept: list[_Rule] = []
    for rule in ranked:  # drop near-copies of a better rule (Jaccard >= 0.9)
        if all(_jaccard(rule, k) < 0.9 for k in kept):
            kept.append(rule)
        if len(kept) == s.top:
            break
    return kept


def _jaccard(a: _Rule, b: _Rule) -> float:
    both = _count(a.bits & b.bits)
    return both / (a.size + b.size - both) if a.size + b.size > both else 1.0


def wilson(positives: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a rate."""
    if n == 0:
        return (math.nan, math.nan)
    p = positives / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def split(ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """True for the held-out customers: a seeded hash of the id, so a customer stays on the
    same side whatever else changes."""
    import pandas as pd

    h = pd.util.hash_array(np.asarray(ids, dtype=object), hash_key=f"{seed:016d}"[:16])
    return (h % np.uint64(1_000_000)).astype(np.float64) / 1_000_000 < share


# --- the whole thing ----------------------------------------------------------------------


def suggest(
    plan: Plan,
    tables: Mapping[str, ir.Table],
    execute: Callable[[ir.Expr], pa.Table],
    target: Outcome,
    as_of: datetime,
    attributes: Sequence[str],
    settings: Settings | None = None,
    progress: Callable[[str, float], None] | None = None,
    sends: pa.Table | None = None,
) -> Result:
    """Search rules for ``target`` on ``plan`` (which holds the target and the attributes as
    hidden traits, see :func:`attribute_definitions`). A campaign target reads ``sends``
    (the send log: campaign, customer_key, arm, sent_at)."""
    import time

    s = settings or Settings()
    tick = progress or (lambda step, fraction: None)
    clock = time.perf_counter()
    seconds: dict[str, float] = {}
    check_target(plan, target)
    cutoff = as_of - (target.horizon or timedelta(0))
    # The outcome's window at as_of starts at the cut-off itself (within 30d includes its
    # first instant): features stop a microsecond before, so no row is on both sides.
    seen_at = cutoff - timedelta(microseconds=1) if target.horizon else cutoff
    # without a time split the features must not read the model the target is made of
    avoid = _models(plan, TARGET) if target.horizon is None else set()
    columns = features(plan, attributes, avoid)
    tick("features at the cut-off", 0.05)
    wanted = list(columns)
    if target.buyers_only:
        if "orders_count" not in plan.traits:
            raise SuggestError(f"{SOURCE} {target.shown}: needs an orders table")
        wanted = list(dict.fromkeys(["orders_count", *columns]))
    if target.campaign is not None:
        frame, label, cutoff = _campaign(plan, tables, execute, target, as_of, wanted, sends)
    else:
        wide = plan.wide(tables, seen_at, select=wanted)
        frame = execute(wide.select("customer_id", *wanted)).to_pandas()
        if target.buyers_only:
            frame = frame[frame["orders_count"].fillna(0) > 0]
        tick("the outcome", 0.45)
        later = plan.wide(tables, as_of, select=[TARGET])
        got = execute(later.filter(later[TARGET]).select("customer_id")).column(0).to_pylist()
        # hashed (np.isin on objects compares every pair)
        label = frame["customer_id"].astype(str).isin({str(v) for v in got}).to_numpy(bool)
    seconds["data"] = time.perf_counter() - clock
    ids = frame["customer_id"].astype(str).to_numpy()
    positives = int(label.sum())
    if len(ids) == 0:
        raise SuggestError(
            f"{SOURCE} {target.shown}: no customers at the cut-off {cutoff:%Y-%m-%d}"
        )
    if positives < s.min_positives:
        raise SuggestError(
            f"{SOURCE} {target.shown}: too rare, {positives:,} of {len(ids):,} customers "
            f"({positives / len(ids):.2%}) at as_of {as_of:%Y-%m-%d %H:%M}; at least "
            f"{s.min_positives:,} needed (another --as-of, a longer --horizon or --min-positives)"
        )
    if positives == len(ids):
        raise SuggestError(f"{SOURCE} {target.shown}: true for every customer, nothing to find")
    held = split(ids, s.holdout, s.seed)
    search = ~held
    if label[search].sum() == 0 or label[held].sum() == 0:
        raise SuggestError(f"{SOURCE} {target.shown}: too rare to hold customers out; lower "
                           "--holdout or raise the horizon")  # fmt: skip
    tick("candidate conditions", 0.55)
    min_size = max(1, math.ceil(s.min_share * int(search.sum())))
    found = conditions(frame, columns, search, min_size)
    names = [c.column for c, _ in found]
    clock2 = time.perf_counter()
    tick("beam search", 0.65)
    rules = beam_search([m[search] for _, m in found], label[search], names, s, min_size)
    seconds["search"] = time.perf_counter() - clock2
    n_h = int(held.sum())
    base_h = float(label[held].mean())
    out: list[Suggestion] = []
    for r in rules:
        parts = [found[i][0].text for i in sorted(r.parts, key=lambda i: found[i][0].text)]
        mask = np.logical_and.reduce([found[i][1] for i in r.parts])
        size_h = int(mask[held].sum())
        pos_h = int((mask & label)[held].sum())
        rate = pos_h / size_h if size_h else math.nan
        lo, hi = wilson(pos_h, size_h)
        out.append(
            Suggestion(
                " and ".join(parts),
                conditions=parts,
                quality=r.quality,
                search={
                    "size": r.size,
                    "positives": r.positives,
                    "rate": r.positives / r.size,
                    "lift": (r.positives / r.size) / float(label[search].mean()),
                },
                holdout={
                    "size": size_h,
                    "share": size_h / n_h,
                    "rate": rate,
                    "base_rate": base_h,
                    "lift": rate / base_h,
                    "lift_low": lo / base_h,
                    "lift_high": hi / base_h,
                    "members_at_cutoff": int(mask.sum()),
                },
            )
        )
    tick("done", 1.0)
    seconds["total"] = time.perf_counter() - clock
    return Result(
        target, as_of, cutoff, cutoff if target.campaign else seen_at, len(ids), positives,
        positives / len(ids), n_h, base_h, len(found), out, seconds,
    )  # fmt: skip


def _campaign(
    plan: Plan,
    tables: Mapping[str, ir.Table],
    execute: Callable[[ir.Expr], pa.Table],
    target: Outcome,
    as_of: datetime,
    wanted: Sequence[str],
    sends: pa.Table | None,
) -> tuple[pd.DataFrame, np.ndarray, datetime]:
    """One row per treatment send of the campaign whose window is over by ``as_of``: the
    customer's conditions at the send instant, and whether they ordered in (sent, sent +
    horizon] (as campaign measurement counts a conversion). Features at the latest
    ``MAX_SENDS`` send instants."""
    import ibis
    import pandas as pd

    assert target.horizon is not None and target.campaign is not None
    if sends is None or sends.num_rows == 0:
        raise SuggestError(f"{SOURCE} {target.shown}: the send log is empty")
    log = sends.to_pandas()
    mine = log[log["campaign"] == target.campaign]
    if mine.empty:
        known = ", ".join(sorted(set(log["campaign"]))[:10])
        raise SuggestError(f"{SOURCE} {target.shown}: no campaign {target.campaign!r} in the "
                           f"send log (campaigns: {known})")  # fmt: skip
    naive = as_of.replace(tzinfo=None)
    sent = pd.to_datetime(mine["sent_at"]).dt.tz_localize(None)
    mine = mine.assign(sent_at=sent)
    mine = mine[(mine["arm"] == "treatment") & (sent + target.horizon <= naive)]
    if mine.empty:
        raise SuggestError(f"{SOURCE} {target.shown}: no treatment send whose "
                           f"{_days(target.horizon)} window is over by as_of")  # fmt: skip
    instants = sorted(mine["sent_at"].unique())[-MAX_SENDS:]
    mine = mine[mine["sent_at"].isin(instants)]
    parts = []
    for at in instants:
        at = pd.Timestamp(at).to_pydatetime()
        who = mine.loc[mine["sent_at"] == at, "customer_key"].astype(str)
        wide = plan.wide(tables, at, select=list(wanted))
        rows = wide.filter(wide.customer_id.cast("string").isin(list(set(who))))
        part = execute(rows.select("customer_id", *wanted)).to_pandas()
        part["customer_id"] = part["customer_id"].astype(str)
        units = pd.DataFrame({"customer_id": who.to_numpy(), "__sent": at})
        parts.append(units.merge(part, on="customer_id", how="inner"))
    frame = pd.concat(parts, ignore_index=True)
    o = tables["orders"]
    keys = ibis.memtable(frame[["customer_id", "__sent"]].drop_duplicates())
    hit = keys.join(
        o,
        (o.customer_id.cast("string") == keys.customer_id)
        & (o.ordered_at > keys["__sent"])
        & (o.ordered_at <= keys["__sent"] + ibis.interval(seconds=int(target.horizon
                                                                       .total_seconds()))),
    ).select(keys.customer_id, keys["__sent"]).distinct()  # fmt: skip
    converted = execute(hit).to_pandas()
    converted["__hit"] = True
    frame["__sent"] = pd.to_datetime(frame["__sent"])
    converted["__sent"] = pd.to_datetime(converted["__sent"]).dt.tz_localize(None)
    frame = frame.merge(converted, on=["customer_id", "__sent"], how="left")
    label = frame.pop("__hit").fillna(False).to_numpy(dtype=bool)
    return frame, label, pd.Timestamp(instants[0]).to_pydatetime()


def described(
    plan_for: Callable[[Sequence[Definition]], Plan],
    tables: Mapping[str, ir.Table],
    execute: Callable[[ir.Expr], pa.Table],
    result: Result,
) -> None:
    """Each suggestion's English and its members at as_of, from the engine: the rules are
    compiled as segments of the project, so they are exactly what ``--write`` saves."""
    if not result.suggestions:
        return
    defs = [
        Definition(f"__suggested_{i}", "segment", text=s.rule)
        for i, s in enumerate(result.suggestions)
    ]
    plan = plan_for(defs)
    wide = plan.wide(tables, result.as_of, select=[d.name for d in defs])
    counts = execute(wide.aggregate(**{d.name: wide[d.name].sum() for d in defs})).to_pylist()[0]
    for d, s in zip(defs, result.suggestions, strict=True):
        s.english = plan.english(d.name)
        s.members_now = int(counts[d.name] or 0)


def evidence(s: Suggestion, result: Result) -> str:
    """A suggested segment's description: its English and what the held-out part showed."""
    h = s.holdout
    return (
        f"{s.english[:1].upper()}{s.english[1:]}. Suggested for {result.target.text}: "
        f"{h['rate']:.1%} of held-out members vs {h['base_rate']:.1%} of all, lift "
        f"{h['lift']:.2f} (95% CI {h['lift_low']:.2f}-{h['lift_high']:.2f}), as of "
        f"{result.as_of:%Y-%m-%d}."
    )
