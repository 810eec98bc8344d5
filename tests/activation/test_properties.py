"""Property tests of the audience funnel on generated shops (thousands of customers).

Whatever the campaign configs, consent histories and earlier sends: no audience contains a
customer without consent for its channel, no send takes a customer over any cap of the campaign
that sends it, no customer is in two campaigns of one group, and no ad list receives a customer
without ads consent. Campaigns may declare a purpose (one with legitimate interest as its
basis) and ad lists one of their own: nobody without consent for it (or, under legitimate
interest, with an objection) passes, and purpose rows never count as channel consent. Consent
and caps are recomputed here independently, in plain Python, from the generated rows. Each
example checks every customer of every campaign (1,000-3,000 x 2-5), so 40 examples decide
well over 10,000 cases.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmseg.activation.audience import build_audience, empty_send_log
from crmseg.activation.campaigns import Campaign, CampaignSpec, parse_duration
from crmseg.activation.runner import _log_rows
from crmseg.backends.base import CANONICAL_SCHEMA
from crmseg.backends.duckdb import DuckDBBackend

AS_OF = datetime(2025, 6, 1)
CHANNELS = ["email", "sms", "push"]
CONSENT_CHANNELS = [*CHANNELS, "ads"]  # ads consent: what an ad list needs
AD_LIST = {"type": "ad_list", "platform": "google", "path": "out/{campaign}.csv"}
# an ad list that also needs the personalization purpose
AD_LIST_P = {**AD_LIST, "name": "personal", "path": "out/{campaign}.p.csv"}
PURPOSES = ["marketing_email", "personalization", "analytics"]
BASES = {"marketing_email": "consent", "personalization": "consent"}
BASES["analytics"] = "legitimate_interest"
SEGMENTS = ["seg.a", "seg.b", "seg.c"]

caps = st.lists(
    st.fixed_dictionaries(
        {
            "max": st.integers(1, 3),
            "per": st.sampled_from(["1d", "3d", "7d", "30d"]),
            "scope": st.sampled_from(["all", "channel"]),
        }
    ),
    max_size=2,
)
campaign_st = st.fixed_dictionaries(
    {
        "segment": st.sampled_from(["seg.a", "seg.b", "seg.a or seg.c", "seg.b and not seg.c"]),
        "exclude": st.lists(st.sampled_from(SEGMENTS), max_size=1),
        "channel": st.sampled_from(CHANNELS),
        "frequency_cap": caps,
        "group": st.sampled_from([None, "g1", "g1", "g2"]),
        "priority": st.integers(0, 3),
        "holdout": st.sampled_from([0.0, 0.1, 0.5]),
        "destination": st.sampled_from(
            [[], [AD_LIST], [AD_LIST, {**AD_LIST_P, "purpose": "personalization"}]]
        ),
        "purpose": st.sampled_from([None, None, *PURPOSES]),
        "suppress": st.fixed_dictionaries(
            {"messaged_within": st.sampled_from([None, "1d", "2d"]), "bounced": st.booleans()}
        ),
    }
)


def _shop(seed: int, n: int) -> tuple[dict[str, pa.Table], dict[str, set[str]]]:
    rng = np.random.default_rng(seed)
    ids = [f"c{i:05d}" for i in range(n)]
    customers = pa.table(
        {
            "customer_id": ids,
            "signup_at": pa.array([AS_OF - timedelta(days=400)] * n, pa.timestamp("us")),
        }
    )
    # consent: 0-4 changes per customer and channel on whole days, so same-instant ties occur;
    # some rows lie after as_of and must be invisible
    k = rng.integers(0, 5, size=(n, len(CONSENT_CHANNELS)))
    rows: dict[str, list[Any]] = defaultdict(list)
    for i in range(n):
        for j, ch in enumerate(CONSENT_CHANNELS):
            for _ in range(k[i, j]):
                rows["customer_id"].append(ids[i])
                rows["channel"].append(ch)
                rows["status"].append("opted_in" if rng.random() < 0.6 else "opted_out")
                rows["purpose"].append(None)
                rows["updated_at"].append(AS_OF - timedelta(days=int(rng.integers(-3, 12))))
    # purpose rows: 0-3 per customer and purpose, on a channel or none (a purpose row is never
    # channel consent, whatever its channel)
    k = rng.integers(0, 4, size=(n, len(PURPOSES)))
    for i in range(n):
        for j, purpose in enumerate(PURPOSES):
            for _ in range(k[i, j]):
                rows["customer_id"].append(ids[i])
                rows["channel"].append([None, *CONSENT_CHANNELS][int(rng.integers(0, 5))])
                rows["status"].append("opted_in" if rng.random() < 0.6 else "opted_out")
                rows["purpose"].append(purpose)
                rows["updated_at"].append(AS_OF - timedelta(days=int(rng.integers(-3, 12))))
    consent = pa.table(
        {
            "customer_id": pa.array(rows["customer_id"], pa.string()),
            "channel": pa.array(rows["channel"], pa.string()),
            "status": pa.array(rows["status"], pa.string()),
            "purpose": pa.array(rows["purpose"], pa.string()),
            "updated_at": pa.array(rows["updated_at"], pa.timestamp("us")),
        }
    )
    m = int(n * 1.5)
    messages = pa.table(
        {
            "customer_id": [ids[i] for i in rng.integers(0, n, m)],
            "channel": [CHANNELS[i] for i in rng.integers(0, 3, m)],
            "campaign_id": ["external"] * m,
            "message_id": [f"m{i}" for i in range(m)],
            "occurred_at": pa.array(
                [AS_OF - timedelta(hours=int(h)) for h in rng.integers(-48, 24 * 35, m)],
                pa.timestamp("us"),
            ),
            "kind": [["sent", "sent", "sent", "bounce", "open"][i] for i in rng.integers(0, 5, m)],
        }
    )
    members = {s: {c for c in ids if rng.random() < 0.45} for s in SEGMENTS}
    return {"customers": customers, "consent": consent, "messages": messages}, members


def _consented(consent: pa.Table, by: str = "channel") -> dict[str, set[str]]:
    """Latest row at as_of per customer and channel (rows without a purpose), or per customer
    and purpose (``by="purpose"``): who opted in; a tie goes to opted_out."""
    latest: dict[tuple[str, str], tuple[datetime, int]] = {}
    for r in consent.to_pylist():
        if r["updated_at"] > AS_OF or (by == "channel") != (r["purpose"] is None):
            continue
        key = (r["customer_id"], r[by])
        rank = (r["updated_at"], 0 if r["status"] == "opted_in" else 1)
        latest[key] = max(latest.get(key, rank), rank)
    out: dict[str, set[str]] = defaultdict(set)
    for (cust, ch), (_, status) in latest.items():
        if status == 0:
            out[ch].add(cust)
        elif by == "purpose":
            out[f"objected:{ch}"].add(cust)
    return out


def _may_reach(purpose: str, everyone: set[str], purposes: dict[str, set[str]]) -> set[str]:
    if BASES[purpose] == "legitimate_interest":
        return everyone - purposes[f"objected:{purpose}"]
    return purposes[purpose]


def _prior_sends(seed: int, customers: list[str]) -> pa.Table:
    """crmseg's own earlier sends (counted by caps), some holdout rows (not counted)."""
    rng = np.random.default_rng(seed + 1)
    m = len(customers) // 2
    return pa.table(
        {
            "campaign": ["earlier"] * m,
            "customer_key": [customers[i] for i in rng.integers(0, len(customers), m)],
            "arm": [["treatment", "holdout"][i] for i in rng.integers(0, 2, m)],
            "variant": pa.array([None] * m, pa.string()),
            "channel": [CHANNELS[i] for i in rng.integers(0, 3, m)],
            "sent_at": pa.array(
                [AS_OF - timedelta(days=int(d)) for d in rng.integers(0, 10, m)],
                pa.timestamp("us"),
            ),
        },
        schema=empty_send_log().schema,
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(1000, 3000),
    configs=st.lists(campaign_st, min_size=2, max_size=5),
    order_seed=st.integers(0, 1000),
)
def test_consent_caps_and_groups_always_hold(
    seed: int, n: int, configs: list[dict[str, Any]], order_seed: int
) -> None:
    data, members = _shop(seed, n)
    campaigns = [
        Campaign(CampaignSpec.model_validate({"name": f"camp{i}", **cfg}), "<generated>", i + 1)
        for i, cfg in enumerate(configs)
    ]
    backend = DuckDBBackend()
    try:
        backend.con.create_database(CANONICAL_SCHEMA)
        for name, table in data.items():
            backend.con.create_table(name, table, database=CANONICAL_SCHEMA)
        tables = {name: backend.canonical(name) for name in data}
        log = _prior_sends(seed, data["customers"].column("customer_id").to_pylist())
        order = np.random.default_rng(order_seed).permutation(len(campaigns))
        audiences = {}
        for i in order:
            c = campaigns[i]
            a = build_audience(
                c, campaigns, backend, tables, members.__getitem__, log, AS_OF, None, BASES
            )
            _check_caps(c, a, data["messages"], log)
            audiences[c.name] = a
            log = pa.concat_tables([log, _log_rows(a)])
    finally:
        backend.close()

    consented = _consented(data["consent"])
    purposes = _consented(data["consent"], "purpose")
    universe = set(data["customers"].column("customer_id").to_pylist())
    in_group: dict[str, dict[str, str]] = defaultdict(dict)
    for c in campaigns:
        a = audiences[c.name]
        everyone = [k for k, _ in a.treatment] + a.holdout
        assert len(everyone) == len(set(everyone))
        # consent: never overridable, whatever the config
        assert set(everyone) <= consented[c.spec.channel], c.name
        if c.spec.purpose is not None:
            assert set(everyone) <= _may_reach(c.spec.purpose, universe, purposes), c.name
        # an ad list is an ads activation: only treatment customers with ads consent
        if c.spec.destination:
            treated = {k for k, _ in a.treatment}
            assert a.ads_consent == treated & consented["ads"], c.name
            if len(c.spec.destination) == 2:
                personal = treated & consented["ads"] & purposes["personalization"]
                assert a.purpose_ok == {"personal": personal}, c.name
        else:
            assert a.ads_consent is None
        for ex in c.spec.exclude:
            assert not set(everyone) & members[ex]
        if c.spec.group:
            for k in everyone:
                other = in_group[c.spec.group].get(k)
                assert other is None, f"{k} in {other} and {c.name} of group {c.spec.group}"
                in_group[c.spec.group][k] = c.name


def _check_caps(c: Campaign, a: Any, messages: pa.Table, log: pa.Table) -> None:
    """Counting this send, nobody is over any cap of the campaign that sends it."""
    treated = {k for k, _ in a.treatment}
    sent = [
        (r["customer_id"], r["channel"], r["occurred_at"])
        for r in messages.to_pylist()
        if r["kind"] == "sent" and r["customer_id"] in treated
    ]
    sent += [
        (r["customer_key"], r["channel"], r["sent_at"])
        for r in log.to_pylist()
        if r["arm"] == "treatment" and r["customer_key"] in treated
    ]
    for cap in c.spec.frequency_cap:
        start = AS_OF - parse_duration(cap.per)
        counts: dict[str, int] = defaultdict(int)
        for cust, ch, at in sent:
            if start <= at <= AS_OF and (cap.scope == "all" or ch == c.spec.channel):
                counts[cust] += 1
        over = {k for k in treated if counts[k] + 1 > cap.max}
        assert not over, f"{c.name}: {len(over)} customers over {cap}"
