"""The audience funnel of one campaign at one instant.

segment members -> exclusions -> consent for the channel -> consent for the campaign's
purpose (when it declares one) -> suppression -> frequency caps -> priority within the group ->
holdout and splits; then, per destination, ads consent (ad lists) and the destination's purpose.

Per-customer facts (consent, suppression rules, messages already sent) come from one rule
language plan over the canonical tables, so ``consent.email`` here means exactly what it means
in a segment rule; crmseg's own send log is joined in as an Ibis memtable. The set logic of the
funnel then runs on the resulting Arrow columns.

The consent step is not a configuration option: ``_consent_filter`` runs for every audience and
``_require_consent`` re-checks the final audience, so no campaign file can switch it off. A
declared purpose is checked the same way. Purpose consent is the latest consent row per customer
and purpose at the instant (rows without a purpose are channel consent); a purpose whose legal
basis is legitimate interest lets everyone pass who has not objected (latest row opted_out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import ibis
import pyarrow as pa

from crmseg.activation.assign import assign
from crmseg.activation.campaigns import (
    Campaign,
    campaign_location,
    evaluate_segment_expr,
    parse_duration,
)
from crmseg.errors import ActivationError
from crmseg.rules import Definition, Plan, Schema, build_plan
from crmseg.traits import library

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.backends.base import Backend

# The project's compiler: (tables, extra definitions) -> a plan with the project's traits,
# library and model traits (``crmseg.segments.compiled.Catalog.plan``).
Compile = Callable[[Mapping[str, "ir.Table"], Sequence[Definition]], Plan]


def default_compile(traits: Sequence[Definition] = ()) -> Compile:
    """A compiler with the default library (projects pass their own catalog's)."""
    from crmseg.sources.loader import schema_from

    def compile_(tables: Mapping[str, ir.Table], extra: Sequence[Definition]) -> Plan:
        return build_plan([*traits, *extra], Schema(schema_from(tables)), builtins=library())

    return compile_


# The send log's Arrow layout (see store.py); audiences read it to count what crmseg sent.
SEND_LOG_SCHEMA = pa.schema(
    [
        ("campaign", pa.string()),
        ("customer_key", pa.string()),
        ("arm", pa.string()),
        ("variant", pa.string()),
        ("channel", pa.string()),
        ("sent_at", pa.timestamp("us")),
    ]
)

Members = Callable[[str], Iterable[str]]


@dataclass(frozen=True)
class Step:
    label: str
    count: int


@dataclass
class Audience:
    campaign: str
    channel: str
    as_of: datetime
    steps: list[Step] = field(default_factory=list)
    treatment: list[tuple[str, str | None]] = field(default_factory=list)
    holdout: list[str] = field(default_factory=list)
    # Treatment customers with ads consent: all an ad list may receive (None: no ad list).
    ads_consent: set[str] | None = None
    # destination name -> treatment customers who pass the destination's own purpose
    purpose_ok: dict[str, set[str]] = field(default_factory=dict)
    after: list[Step] = field(default_factory=list)  # steps after the arms (ad lists)

    @property
    def recorded(self) -> list[Step]:
        """Every step, in order, for the record (the arms are recorded as counts)."""
        return [*self.steps, *self.after]

    def funnel(self) -> str:
        """``10,000 in segment -> 9,100 with email consent -> ... -> 7,300 treatment / 800 holdout``
        on one line."""
        parts = [f"{s.count:,} {s.label}" for s in self.steps]
        parts.append(f"{len(self.treatment):,} treatment / {len(self.holdout):,} holdout")
        parts += [f"{s.count:,} {s.label}" for s in self.after]
        return " -> ".join(parts)


@dataclass
class _Facts:
    """Per-customer columns for every campaign in scope, executed once."""

    customers: set[str]
    columns: dict[str, list[Any]]
    ids: list[str]
    bases: Mapping[str, str] = field(default_factory=dict)  # purpose -> legal basis

    def true(self, column: str) -> set[str]:
        return {k for k, v in zip(self.ids, self.columns[column], strict=True) if v}

    def value(self, column: str) -> dict[str, int]:
        return {k: int(v or 0) for k, v in zip(self.ids, self.columns[column], strict=True)}


def _cap_key(seconds: int, channel: str | None) -> str:
    return f"__sent_{seconds}_{channel or 'all'}"


def _rule_defs(c: Campaign, i: int, tables: Mapping[str, ir.Table]) -> dict[str, Definition]:
    """Suppression and consent as segment definitions (name -> Definition) for campaign i."""
    s, ch = c.spec.suppress, c.spec.channel
    out: dict[str, Definition] = {}

    def add(key: str, text: str, line: int = 1, column: int = 1, file: str | None = None) -> None:
        out[key] = Definition(f"__c{i}_{key}", "segment", text, None, file, line, column)

    if "consent" in tables:
        add("consent", f"consent.{ch}")
        if has_ad_list(c) and ch != "ads":
            add("ads", "consent.ads")
    if s.purchased_within and "orders" in tables:
        add("purchased", f"count(orders within {s.purchased_within}) >= 1")
    if "messages" in tables:
        if s.messaged_within:
            add("messaged", f"count(messages where kind = 'sent' within {s.messaged_within}) >= 1")
        for flag, kind in (
            ("unsubscribed", "unsubscribe"),
            ("complained", "complaint"),
            ("bounced", "bounce"),
        ):
            if getattr(s, flag):
                add(flag, f"count(messages where channel = '{ch}' and kind = '{kind}') >= 1")
    for name, text in s.rules.items():
        line, column = c.rule_locations.get(name, (1, 1))
        add(f"rule_{name}", text, line, column, c.file)
    return out


def check_rules(
    campaigns: Sequence[Campaign],
    tables: Mapping[str, ir.Table],
    compile_: Compile,
    bases: Mapping[str, str] | None = None,
) -> None:
    """Compile every campaign's suppression rules as activation would: a located RuleError
    for the first broken one (``validate`` calls this; nothing runs). Purposes that need
    consent rows need a purpose column."""
    defs = [d for i, c in enumerate(campaigns) for d in _rule_defs(c, i, tables).values()]
    if defs:
        compile_(tables, defs)
    _check_purpose_data(campaigns, tables, bases or {})


def purposes_of(c: Campaign) -> list[str]:
    """Every purpose the campaign or one of its destinations declares."""
    named = [c.spec.purpose, *(d.purpose for d in c.spec.destination)]
    return sorted({p for p in named if p is not None})


def _check_purpose_data(
    campaigns: Sequence[Campaign], tables: Mapping[str, ir.Table], bases: Mapping[str, str]
) -> None:
    """A purpose that needs consent, on data that cannot hold any: nobody could pass, which
    is a mapping mistake rather than an audience."""
    consent = tables.get("consent")
    if consent is not None and "purpose" in consent.columns:
        return
    for c in campaigns:
        for p in purposes_of(c):
            if bases.get(p, "consent") == "consent":
                lack = "no consent table" if consent is None else "no purpose column in consent"
                raise ActivationError(
                    f"{campaign_location(c)}: campaign {c.name} needs consent for purpose {p!r}, "
                    f"but the project has {lack}: map one (columns: {{purpose: <your column>}})"
                )


def _purpose_col(purpose: str, status: str) -> str:
    return f"__purpose_{status}_{purpose}"


def _with_purposes(
    wide: ir.Table, tables: Mapping[str, ir.Table], names: Sequence[str], as_of: datetime
) -> ir.Table:
    """Per purpose, whether the customer's latest row for it at ``as_of`` is opted_in, and
    whether it is opted_out (a tie at one instant: opted_out, the safe answer)."""
    cs = tables.get("consent")
    if not names or cs is None or "purpose" not in cs.columns:
        return wide
    at = ibis.literal(as_of, type="timestamp")
    cs = cs.filter(cs.purpose.isin(list(names)), cs.updated_at <= at, cs.customer_id.notnull())
    w = ibis.window(
        group_by=[cs.customer_id, cs.purpose], order_by=[cs.updated_at.desc(), cs.status.desc()]
    )
    cs = cs.mutate(__rn=ibis.row_number().over(w))
    cs = cs.filter(cs["__rn"] == 0)
    metrics = {
        _purpose_col(p, status): cs.count(where=(cs.purpose == p) & (cs.status == status))
        for p in names
        for status in ("opted_in", "opted_out")
    }
    g = cs.group_by(__pk=cs.customer_id.cast("string")).aggregate(**metrics)
    j = wide.left_join(g, wide.customer_id == g["__pk"])
    return j.select(*wide.columns, **{k: j[k].fill_null(0) for k in metrics})


def _purpose_filter(keys: set[str], facts: _Facts, purpose: str) -> set[str]:
    """Of ``keys``, those who may be reached for ``purpose``: consent needs a latest row
    opted_in; legitimate interest needs no objection (latest row opted_out)."""
    if facts.bases.get(purpose, "consent") == "legitimate_interest":
        column = _purpose_col(purpose, "opted_out")
        return keys - facts.true(column) if column in facts.columns else set(keys)
    column = _purpose_col(purpose, "opted_in")
    return keys & facts.true(column) if column in facts.columns else set()


def _purpose_label(purpose: str, facts: _Facts) -> str:
    if facts.bases.get(purpose, "consent") == "legitimate_interest":
        return f"no objection to {purpose} (legitimate interest)"
    return f"with consent for {purpose}"


def _windows(c: Campaign) -> list[tuple[int, str | None]]:
    """(window seconds, channel or None) of every count the campaign needs."""
    out: list[tuple[int, str | None]] = []
    for cap in c.spec.frequency_cap:
        out.append(
            (
                int(parse_duration(cap.per).total_seconds()),
                c.spec.channel if cap.scope == "channel" else None,
            )
        )
    if c.spec.suppress.messaged_within:
        out.append((int(parse_duration(c.spec.suppress.messaged_within).total_seconds()), None))
    return out


def _facts(
    campaigns: Sequence[Campaign],
    backend: Backend,
    tables: Mapping[str, ir.Table],
    compile_: Compile,
    send_log: pa.Table,
    as_of: datetime,
    bases: Mapping[str, str],
) -> _Facts:
    defs: list[Definition] = []
    windows: set[tuple[int, str | None]] = set()
    purposes: set[str] = set()
    for i, c in enumerate(campaigns):
        defs.extend(_rule_defs(c, i, tables).values())
        windows.update(_windows(c))
        purposes.update(purposes_of(c))
    counts: dict[str, Definition] = {}
    if "messages" in tables:
        for seconds, ch in sorted(windows, key=str):
            where = "kind = 'sent'" + (f" and channel = '{ch}'" if ch else "")
            key = _cap_key(seconds, ch)
            # every duration unit is a whole number of hours
            text = f"count(messages where {where} within {seconds // 3600}h)"
            counts[key] = Definition(key, "trait", text)
    plan = compile_(tables, [*counts.values(), *defs])
    names = [d.name for d in defs] + list(counts)
    wide = plan.wide(tables, as_of, select=names)
    wide = _with_send_log(wide, tables, send_log, as_of, sorted(windows, key=str))
    wide = _with_purposes(wide, tables, sorted(purposes), as_of)
    result = backend.execute(wide)
    ids = [str(v) for v in result.column("customer_id").to_pylist()]
    cols = {n: result.column(n).to_pylist() for n in result.column_names if n != "customer_id"}
    return _Facts(set(ids), cols, ids, bases)


def _with_send_log(
    wide: ir.Table,
    tables: Mapping[str, ir.Table],
    send_log: pa.Table,
    as_of: datetime,
    windows: Sequence[tuple[int, str | None]],
) -> ir.Table:
    """Add crmseg's own sends (treatment arm) per window; a send the messages table already
    mirrors (same customer, campaign_id = campaign, kind sent) is counted once."""
    if not windows:
        return wide
    log = ibis.memtable(send_log.cast(SEND_LOG_SCHEMA))
    at = ibis.literal(as_of, type="timestamp")
    log = log.filter(log.arm == "treatment", log.sent_at <= at)
    if "messages" in tables:
        m = tables["messages"]
        m = m.filter(m.kind == "sent", m.occurred_at <= at, m.campaign_id.notnull())
        m = m.select(
            __mk=m.customer_id.cast("string"), __mc=m.campaign_id.cast("string")
        ).distinct()
        log = log.anti_join(m, [log.customer_key == m["__mk"], log.campaign == m["__mc"]])
    metrics = {}
    for seconds, ch in windows:
        cond = log.sent_at >= at - ibis.interval(seconds=seconds)
        if ch:
            cond &= log.channel == ch
        metrics[f"__log{_cap_key(seconds, ch)}"] = log.count(where=cond)
    g = log.group_by(__lk=log.customer_key).aggregate(**metrics)
    j = wide.left_join(g, wide.customer_id == g["__lk"])
    cols = {k: j[k].fill_null(0) for k in metrics}
    return j.select(*wide.columns, **cols)


def has_ad_list(c: Campaign) -> bool:
    return any(d.type == "ad_list" for d in c.spec.destination)


def _ads_consent(c: Campaign, keys: Iterable[str], facts: _Facts, index: int) -> set[str]:
    """Of ``keys``, those with ads consent: uploading to an ad platform is an ads activation,
    whatever the campaign's channel."""
    if c.spec.channel == "ads":
        return _consent_filter(set(keys), facts, index)
    column = f"__c{index}_ads"
    if column not in facts.columns:  # no consent table: nobody has consent
        return set()
    return set(keys) & facts.true(column)


def _consent_filter(keys: set[str], facts: _Facts, index: int) -> set[str]:
    """Only customers whose latest consent row for the channel at as_of is opted_in."""
    column = f"__c{index}_consent"
    if column not in facts.columns:  # no consent table: nobody has consent
        return set()
    return keys & facts.true(column)


def _require_consent(c: Campaign, keys: Iterable[str], facts: _Facts, index: int) -> None:
    allowed = _consent_filter(set(keys), facts, index)
    leaked = set(keys) - allowed
    if leaked:  # cannot happen unless the funnel is broken; never send in that case
        raise ActivationError(
            f"campaign {c.name}: {len(leaked)} customers without {c.spec.channel} consent "
            "reached the audience; nothing was sent"
        )
    p = c.spec.purpose
    if p is not None and (leaked := set(keys) - _purpose_filter(set(keys), facts, p)):
        raise ActivationError(
            f"campaign {c.name}: {len(leaked)} customers who may not be reached for {p} "
            "reached the audience; nothing was sent"
        )


def _sent(facts: _Facts, seconds: int, channel: str | None) -> dict[str, int]:
    key = _cap_key(seconds, channel)
    out = {k: 0 for k in facts.ids}
    if key in facts.columns:
        for k, v in facts.value(key).items():
            out[k] += v
    logged = f"__log{key}"
    if logged in facts.columns:
        for k, v in facts.value(logged).items():
            out[k] += v
    return out


def _eligible(
    c: Campaign,
    index: int,
    facts: _Facts,
    members: Members,
    steps: list[Step] | None = None,
) -> set[str]:
    """Everything up to (not including) the group step; records the funnel in ``steps``."""
    spec = c.spec
    note = steps.append if steps is not None else (lambda _s: None)
    cache: dict[str, set[str]] = {}

    def seg(name: str) -> set[str]:
        if name not in cache:
            cache[name] = {str(k) for k in members(name)}
        return cache[name]

    names = {n: seg(n) for n in c.segments}
    keys = evaluate_segment_expr(spec.segment, names, facts.customers)
    note(Step("in segment", len(keys)))
    if spec.exclude:
        for name in spec.exclude:
            keys = keys - seg(name)
        note(Step("after exclusions", len(keys)))
    keys = _consent_filter(keys, facts, index)
    note(Step(f"with {spec.channel} consent", len(keys)))
    if spec.purpose is not None:
        keys = _purpose_filter(keys, facts, spec.purpose)
        note(Step(_purpose_label(spec.purpose, facts), len(keys)))
    s = spec.suppress
    labels = {
        "purchased": f"not purchased within {s.purchased_within}",
        "messaged": f"not messaged within {s.messaged_within}",
        "unsubscribed": f"not unsubscribed from {spec.channel}",
        "complained": f"no {spec.channel} complaint",
        "bounced": f"no {spec.channel} bounce",
    }
    for key in _suppression_keys(c):
        column = f"__c{index}_{key}"
        hit = facts.true(column) if column in facts.columns else set()
        if key == "messaged" and s.messaged_within:
            seconds = int(parse_duration(s.messaged_within).total_seconds())
            logged = facts.value(f"__log{_cap_key(seconds, None)}") if _has_log(facts) else {}
            hit |= {k for k, v in logged.items() if v}
        keys = keys - hit
        note(Step(labels.get(key, f"not {key.removeprefix('rule_')}"), len(keys)))
    for cap in spec.frequency_cap:
        seconds = int(parse_duration(cap.per).total_seconds())
        sent = _sent(facts, seconds, spec.channel if cap.scope == "channel" else None)
        keys = {k for k in keys if sent.get(k, 0) + 1 <= cap.max}
        where = spec.channel if cap.scope == "channel" else "all channels"
        note(Step(f"under cap {cap.max} per {cap.per} ({where})", len(keys)))
    return keys


def _has_log(facts: _Facts) -> bool:
    return any(k.startswith("__log") for k in facts.columns)


def _suppression_keys(c: Campaign) -> list[str]:
    s = c.spec.suppress
    keys = []
    if s.purchased_within:
        keys.append("purchased")
    if s.messaged_within:
        keys.append("messaged")
    keys += [f for f in ("unsubscribed", "complained", "bounced") if getattr(s, f)]
    keys += [f"rule_{n}" for n in s.rules]
    return keys


def _outranks(a: Campaign, b: Campaign) -> bool:
    """Whether ``a`` wins a customer over ``b`` in their group (ties: the smaller name)."""
    return (a.spec.priority, b.name) > (b.spec.priority, a.name)


def build_audience(
    campaign: Campaign,
    campaigns: Sequence[Campaign],
    backend: Backend,
    tables: Mapping[str, ir.Table],
    members: Members,
    send_log: pa.Table,
    as_of: datetime,
    compile_: Compile | None = None,
    purposes: Mapping[str, str] | None = None,
) -> Audience:
    """The funnel and arms of ``campaign`` at ``as_of``.

    ``campaigns`` is the whole catalog (for the group step); ``members(segment)`` answers
    segment membership at ``as_of``; ``send_log`` is crmseg's send log so far; ``compile_``
    compiles the suppression rules with the project's traits and library; ``purposes`` maps
    each purpose to its legal basis (``consent`` when not listed).
    """
    spec = campaign.spec
    peers = [
        p
        for p in campaigns
        if spec.group is not None
        and p.spec.group == spec.group
        and p.name != campaign.name
        and p.spec.enabled
    ]
    scope = [campaign, *(p for p in peers if _outranks(p, campaign))]
    bases = purposes or {}
    _check_purpose_data(scope, tables, bases)
    compiler = compile_ or default_compile()
    facts = _facts(scope, backend, tables, compiler, send_log, as_of, bases)
    audience = Audience(campaign.name, spec.channel, as_of)
    keys = _eligible(campaign, 0, facts, members, audience.steps)
    if spec.group is not None:
        for i, peer in enumerate(scope[1:], start=1):
            keys -= _eligible(peer, i, facts, members)
        # Whoever an activation of another group campaign at this instant already took stays
        # theirs, whatever the data says now.
        names = {p.name for p in peers}
        taken = {
            str(row["customer_key"])
            for row in send_log.to_pylist()
            if row["campaign"] in names and row["sent_at"] == as_of
        }
        keys -= taken
        audience.steps.append(Step(f"first in group {spec.group}", len(keys)))
    ordered = sorted(keys)
    _require_consent(campaign, ordered, facts, 0)
    splits = [(s.name, s.weight) for s in spec.splits]
    audience.holdout, audience.treatment = assign(campaign.name, ordered, spec.holdout, splits)
    if has_ad_list(campaign):
        treated = [k for k, _ in audience.treatment]
        audience.ads_consent = _ads_consent(campaign, treated, facts, 0)
        audience.after.append(Step("with ads consent (ad lists)", len(audience.ads_consent)))
    for d in spec.destination:
        if d.purpose is not None:
            name = d.name or d.type
            passed = _purpose_filter({k for k, _ in audience.treatment}, facts, d.purpose)
            if d.type == "ad_list":
                passed &= audience.ads_consent or set()
            audience.purpose_ok[name] = passed
            label = f"{_purpose_label(d.purpose, facts)} ({name})"
            audience.after.append(Step(label, len(passed)))
    return audience


def empty_send_log() -> pa.Table:
    return SEND_LOG_SCHEMA.empty_table()
