"""The demo shop generator: contract, determinism and the planted patterns."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crmseg.demo.generator import DEFAULT_AS_OF, HISTORY, dirty_counts, generate, write_data
from crmseg.sources.model import CHANNELS, MESSAGE_KINDS, TABLES

N = 3000
AS_OF = datetime(2026, 11, 1)
ARROW_TYPES = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us"),
    "date": pa.date32(),
    "json": pa.string(),
}
# Required columns that may be null by design: anonymous events have no customer.
NULLABLE = {("events", "customer_id")}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@pytest.fixture(scope="module")
def data() -> dict[str, pa.Table]:
    return generate(N, seed=7, as_of=AS_OF)


@pytest.fixture(scope="module")
def frames(data: dict[str, pa.Table]) -> dict[str, pd.DataFrame]:
    return {name: table.to_pandas() for name, table in data.items()}


def test_same_seed_same_data() -> None:
    a, b = generate(500, seed=3, as_of=AS_OF), generate(500, seed=3, as_of=AS_OF)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].equals(b[name]), name


def test_same_seed_same_files(tmp_path: Path) -> None:
    write_data(tmp_path / "a", 400, seed=5)
    write_data(tmp_path / "b", 400, seed=5)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    assert len(files) == len(TABLES) + len(HISTORY)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_other_seed_other_data() -> None:
    a, b = generate(500, seed=3, as_of=AS_OF), generate(500, seed=4, as_of=AS_OF)
    assert not a["orders"].equals(b["orders"])
    assert not a["customers"].column("email").equals(b["customers"].column("email"))


def test_tables_match_the_canonical_model(data: dict[str, pa.Table]) -> None:
    assert set(TABLES) <= set(data)
    for name, spec in TABLES.items():
        table = data[name]
        assert table.num_rows > 0, name
        for col in spec.columns:
            assert col.name in table.column_names, (name, col.name)
            assert table.schema.field(col.name).type == ARROW_TYPES[col.dtype], (name, col.name)
            if col.required and (name, col.name) not in NULLABLE:
                assert table.column(col.name).null_count == 0, (name, col.name)
    extra = set(data["customers"].column_names) - {c.name for c in TABLES["customers"].columns}
    assert {"loyalty_tier", "acquisition_channel"} <= extra


def test_anonymous_events_are_the_only_missing_customers(frames: dict[str, pd.DataFrame]) -> None:
    events = frames["events"]
    anonymous = events.customer_id.isna()
    assert anonymous.any()
    assert events.anonymous_id[anonymous].notna().all()
    assert (events.name[anonymous] == "page_view").all()


def test_nothing_after_as_of_except_planted(frames: dict[str, pd.DataFrame]) -> None:
    dirty = dirty_counts(N)
    late = {}
    for name, spec in TABLES.items():
        for col in spec.columns:
            if col.dtype == "timestamp":
                late[(name, col.name)] = int((frames[name][col.name] > AS_OF).sum())
    assert late.pop(("orders", "ordered_at")) == dirty["future_orders"]
    assert late.pop(("subscriptions", "next_billing_at")) > 0  # scheduled renewals
    assert all(v == 0 for v in late.values()), late
    assert (frames["customers"].birth_date < AS_OF.date()).all()


def test_data_spans_about_three_years(frames: dict[str, pd.DataFrame]) -> None:
    signup = frames["customers"].signup_at
    assert signup.min() >= AS_OF - timedelta(days=3 * 365 + 1)
    assert signup.min() < AS_OF - timedelta(days=2 * 365)
    # Growth: more signups in the last year than in the first.
    assert (signup > AS_OF - timedelta(days=365)).sum() > 1.5 * (
        signup < AS_OF - timedelta(days=730)
    ).sum()


def test_no_order_before_its_customer_signed_up(frames: dict[str, pd.DataFrame]) -> None:
    o = frames["orders"].merge(frames["customers"][["customer_id", "signup_at"]], "inner")
    assert len(o) == len(frames["orders"]) - dirty_counts(N)["orphan_orders"]
    assert (o.ordered_at >= o.signup_at).all()


def test_duplicates_and_truth(frames: dict[str, pd.DataFrame], data: dict[str, pa.Table]) -> None:
    truth = frames["truth_people"]
    customers = frames["customers"]
    assert list(truth.customer_id) == list(customers.customer_id)
    records = truth.groupby("person_id").customer_id.count()
    assert records.max() == 2
    assert (records == 2).sum() == round(0.02 * N)
    assert truth.duplicate_kind.notna().sum() == round(0.02 * N)
    # Every duplicate still shares a normalised email, phone or device with its person.
    c = customers.set_index("customer_id")
    email = c.email.str.strip().str.lower()
    phone = c.phone.str.replace(r"\D", "", regex=True).str[-7:]
    devices = frames["identifiers"].query("id_type == 'device_id'")
    pairs = truth[truth.person_id.isin(records[records == 2].index)].groupby("person_id")
    linked = 0
    for _, group in pairs:
        a, b = group.customer_id
        shared_device = set(devices.id_value[devices.customer_id == a]) & set(
            devices.id_value[devices.customer_id == b]
        )
        same_phone = pd.notna(phone[a]) and phone[a] == phone[b]
        linked += bool(email[a] == email[b] or same_phone or shared_device)
        assert c.loc[a, "first_name"] == c.loc[b, "first_name"]
    assert linked == pairs.ngroups
    # Email variants really are messy spellings of the same address.
    variant = truth.customer_id[truth.duplicate_kind == "email_variant"]
    assert (customers.set_index("customer_id").email[variant] != email[variant]).all()
    # Distinct people never share a normalised email.
    firsts = truth.duplicate_kind.isna().to_numpy()
    assert email[firsts].is_unique


def test_dirty_rows_as_documented(frames: dict[str, pd.DataFrame]) -> None:
    dirty = dirty_counts(N)
    customers, orders = frames["customers"], frames["orders"]
    email = customers.email.str.strip().str.lower()
    assert (~email.str.match(EMAIL)).sum() == dirty["invalid_emails"]
    assert customers.country.isna().sum() == dirty["missing_country"]
    assert (orders.amount < 0).sum() == dirty["negative_amounts"]
    assert (~orders.customer_id.isin(customers.customer_id)).sum() == dirty["orphan_orders"]
    assert (orders.ordered_at > AS_OF).sum() == dirty["future_orders"]
    assert orders.order_id.is_unique and customers.customer_id.is_unique


def test_dirty_counts_grow_with_size() -> None:
    assert dirty_counts(1_000_000)["invalid_emails"] > dirty_counts(5000)["invalid_emails"] > 0


def test_phones_come_in_several_formats(frames: dict[str, pd.DataFrame]) -> None:
    phones = frames["customers"].phone.dropna()
    shapes = phones.str.replace(r"\d", "9", regex=True).str.replace("9+", "9", regex=True)
    assert shapes.nunique() >= 4
    assert phones.str.startswith("+49 ").any() and phones.str.startswith("(0").any()


def test_countries_are_weighted(frames: dict[str, pd.DataFrame]) -> None:
    share = frames["customers"].country.value_counts(normalize=True)
    assert share.index[0] == "DE" and 0.35 < share["DE"] < 0.55
    assert {"AT", "CH", "FR", "NL", "GB", "US"} <= set(share.index)


def test_orders_per_customer_are_heterogeneous(frames: dict[str, pd.DataFrame]) -> None:
    counts = (
        frames["orders"]
        .customer_id.value_counts()
        .reindex(frames["customers"].customer_id, fill_value=0)
    )
    assert 7 < counts.mean() < 14
    assert counts.var() > 3 * counts.mean()
    assert 0.1 < (counts == 0).mean() < 0.4  # leads who never bought


def test_q4_is_the_busy_season(frames: dict[str, pd.DataFrame]) -> None:
    # Adjacent periods, so the growing customer base barely matters.
    t = frames["orders"].ordered_at
    per_day = {
        name: t.between(pd.Timestamp(a), pd.Timestamp(b), inclusive="left").sum()
        / (pd.Timestamp(b) - pd.Timestamp(a)).days
        for name, (a, b) in {
            "oct": ("2025-10-01", "2025-11-01"),
            "nov": ("2025-11-01", "2025-12-01"),
            "before_bf": ("2025-11-14", "2025-11-28"),
            "bf_weekend": ("2025-11-28", "2025-12-02"),  # Black Friday to Cyber Monday
        }.items()
    }
    assert per_day["nov"] > 1.2 * per_day["oct"]
    assert per_day["bf_weekend"] > 1.5 * per_day["before_bf"]


def test_skincare_replenishment_cycles(frames: dict[str, pd.DataFrame]) -> None:
    o = frames["orders"].query("category == 'skincare' and amount > 0").sort_values("ordered_at")
    gaps = o.groupby("customer_id").ordered_at.diff().dt.total_seconds() / 86_400
    by_customer = gaps.groupby(o.customer_id).agg(["median", "mean", "std", "count"])
    # Regular rebuyers: at least 3 gaps that hardly vary. Most of them rebuy every 45-60 days.
    regular = by_customer.query("count >= 3 and std < 0.25 * mean")
    assert len(regular) >= 20
    assert regular["median"].between(45, 60).mean() > 0.7


def test_order_money_columns(frames: dict[str, pd.DataFrame]) -> None:
    o = frames["orders"].query("amount > 0")
    assert (o.discount >= 0).all() and (o.discount < o.amount).all()
    assert (o.returned_amount <= o.amount).all()
    assert 0.03 < (o.returned_amount > 0).mean() < 0.2
    assert 0.1 < (o.discount > 0).mean() < 0.4
    assert 30 < o.amount.mean() < 90
    assert (o.currency == "EUR").mean() > 0.7
    assert set(o.channel) == {"web", "app", "store"}
    # Discount reliance is a customer trait: some customers take discounts most of the time.
    by_customer = (o.discount > 0).groupby(o.customer_id).agg(["mean", "size"])
    assert (by_customer.query("size >= 5")["mean"] > 0.6).sum() > 10


def test_order_items_add_up(frames: dict[str, pd.DataFrame]) -> None:
    items, orders = frames["order_items"], frames["orders"]
    assert items.ordered_at.min() >= AS_OF - timedelta(days=180)
    total = (items.price * items.quantity).groupby(items.order_id).sum()
    amount = orders.set_index("order_id").amount[total.index]
    assert np.allclose(total, amount, atol=0.1)
    recent = orders[(orders.ordered_at >= AS_OF - timedelta(days=180))]
    recent = recent[(recent.ordered_at <= AS_OF) & recent.customer_id.isin(items.customer_id)]
    assert set(recent.order_id) == set(items.order_id)


def test_events_funnel_and_abandoned_carts(frames: dict[str, pd.DataFrame]) -> None:
    e = frames["events"].dropna(subset=["customer_id"])
    per_customer = len(frames["events"]) / N
    assert 4 < per_customer < 9
    done = e[e.name == "order_completed"]
    order_ids = done.properties.map(lambda p: json.loads(p)["order_id"])
    assert order_ids.isin(frames["orders"].order_id).all()
    # An added_to_cart without any order_completed of that customer within an hour.
    carts = e[e.name == "added_to_cart"][["customer_id", "occurred_at"]].sort_values("occurred_at")
    after = pd.merge_asof(
        carts,
        done[["customer_id", "occurred_at"]].rename(columns={"occurred_at": "done_at"}),
        left_on="occurred_at",
        right_on="done_at",
        by="customer_id",
        direction="forward",
        tolerance=pd.Timedelta(hours=1),
    )
    assert after.done_at.isna().sum() > 100  # abandoned
    assert after.done_at.notna().sum() > 100  # bought
    for p in e.properties.sample(200, random_state=0):
        assert isinstance(json.loads(p), dict)


def test_product_usage_for_plan_customers(frames: dict[str, pd.DataFrame]) -> None:
    e = frames["events"]
    subs = set(frames["subscriptions"].customer_id)
    saas = e[e.name.isin(["trial_started", "project_created", "teammate_invited", "login"])]
    assert set(saas.customer_id) <= subs
    created = set(e.customer_id[e.name == "project_created"])
    invited = set(e.customer_id[e.name == "teammate_invited"])
    assert created - invited  # "created a project but never invited a teammate" exists
    assert (e.name == "login").sum() > 0 and (e.name == "integration_connected").sum() > 0


def test_subscriptions(frames: dict[str, pd.DataFrame]) -> None:
    s = frames["subscriptions"]
    assert 0.1 < len(s) / N < 0.2
    assert set(s.status) == {"trialing", "active", "past_due", "paused", "canceled"}
    assert (s[s.status == "past_due"].failed_payments > 0).all()
    assert ((s.status == "active") & (s.failed_payments > 0)).any()
    assert s.canceled_at.notna().equals(s.status == "canceled")
    assert s.next_billing_at[s.status.isin(["canceled", "paused"])].isna().all()
    assert (s.canceled_at.dropna() >= s.started_at[s.canceled_at.notna()]).all()
    c = frames["customers"].set_index("customer_id").plan
    running = s[s.status != "canceled"]
    assert (c[running.customer_id].to_numpy() == running.plan.to_numpy()).all()
    assert c.notna().sum() == len(running)


def test_tickets(frames: dict[str, pd.DataFrame]) -> None:
    t = frames["tickets"]
    assert 0.07 < t.customer_id.nunique() / N < 0.13
    assert t.csat.dropna().between(1, 5).all() and t.csat.notna().any()
    assert (t.closed_at.dropna() >= t.opened_at[t.closed_at.notna()]).all()
    assert t.refund_amount.notna().any() and t.closed_at.isna().any()


def test_consent_and_messages(frames: dict[str, pd.DataFrame]) -> None:
    consent, messages = frames["consent"], frames["messages"]
    assert set(consent.status) == {"opted_in", "opted_out"}
    assert set(consent.channel) | set(messages.channel) <= set(CHANNELS)
    assert set(consent.basis) == {"consent", "contract"}
    assert (consent.status == "opted_out").sum() > 0.2 * N
    assert set(messages.kind) == set(MESSAGE_KINDS)
    assert messages.campaign_id.str.match(
        r"^(newsletter|sms_flash_sale|push_new_in)_\d{4}_\d{2}$"
    ).all()
    sent = messages[messages.kind == "sent"]
    assert sent.message_id.is_unique
    opens = (messages.kind == "open").sum() / (messages.kind == "delivered").sum()
    assert 0.1 < opens < 0.4

    # Every send went to someone whose latest consent on that channel said opted_in.
    c = consent.sort_values("updated_at")
    s = sent.sort_values("occurred_at")
    latest = pd.merge_asof(
        s, c, left_on="occurred_at", right_on="updated_at", by=["customer_id", "channel"]
    )
    assert (latest.status == "opted_in").all()
    # Every unsubscribe led to an opted_out row at that moment.
    unsub = messages[messages.kind.isin(["unsubscribe", "complaint"])]
    assert len(unsub) > 0
    outs = consent[consent.status == "opted_out"]
    joined = unsub.merge(
        outs,
        left_on=["customer_id", "channel", "occurred_at"],
        right_on=["customer_id", "channel", "updated_at"],
    )
    assert len(joined) >= len(unsub.drop_duplicates(["customer_id", "channel"]))


def test_identifiers(frames: dict[str, pd.DataFrame]) -> None:
    ids = frames["identifiers"]
    assert set(ids.id_type) == {"device_id", "loyalty_card"}
    assert ids.customer_id.isin(frames["customers"].customer_id).all()
    truth = frames["truth_people"].set_index("customer_id").person_id
    people_per_value = (
        ids.assign(person=truth[ids.customer_id].to_numpy()).groupby("id_value").person.nunique()
    )
    assert (people_per_value == 1).all()  # shared values only ever join one real person


def test_write_data(tmp_path: Path) -> None:
    steps: list[tuple[str, float]] = []
    counts = write_data(tmp_path, 300, progress=lambda s, f: steps.append((s, f)))
    assert set(counts) == set(TABLES)
    for name in TABLES:
        assert pq.read_metadata(tmp_path / "data" / f"{name}.parquet").num_rows == counts[name]
    truth = pq.read_table(tmp_path / "truth" / "people.parquet")
    assert truth.num_rows == counts["customers"] == 300
    fractions = [f for _, f in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(steps) > 5
    signup = pq.read_table(tmp_path / "data" / "customers.parquet").column("signup_at")
    assert max(signup.to_pylist()) <= DEFAULT_AS_OF
    assert datetime(2026, 11, 1) == DEFAULT_AS_OF


@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_tiny_shops_work(n: int) -> None:
    data = generate(n, seed=11, as_of=AS_OF)
    assert data["customers"].num_rows == n
    assert data["customers"].column("customer_id").null_count == 0


def test_no_customers_is_an_error() -> None:
    with pytest.raises(ValueError, match="between 1 and"):
        generate(0, seed=1, as_of=AS_OF)


def test_aware_as_of_is_read_as_utc() -> None:
    from datetime import timezone

    berlin = timezone(timedelta(hours=1))
    aware = generate(200, seed=2, as_of=datetime(2026, 11, 1, 1, 0, tzinfo=berlin))
    naive = generate(200, seed=2, as_of=AS_OF)
    assert aware["orders"].equals(naive["orders"])


def test_demo_phones_are_valid_mobile_numbers() -> None:
    import phonenumbers

    from crmseg.demo.generator import generate

    tables = generate(2000, seed=3, as_of=datetime(2026, 11, 1))
    customers = tables["customers"].to_pydict()
    checked = 0
    for phone, country in zip(customers["phone"], customers["country"], strict=True):
        if phone is None or country in (None, "US"):  # US exchange codes: 1 in 9 start with 1
            continue
        parsed = phonenumbers.parse(phone, country)
        assert phonenumbers.is_valid_number(parsed), (phone, country)
        checked += 1
    assert checked > 500
