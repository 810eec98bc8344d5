"""The canonical CRM data model (DESIGN.md section 3).

Users map their own tables and columns onto these tables in ``crmseg.yml``. Only
``customers`` is required. Identifiers are strings everywhere (shops use numbers, UUIDs and
prefixed codes alike); timestamps are stored as naive UTC; money is float64.

Columns not listed here are kept as they are and usable as attributes in rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DType = Literal["string", "int", "float", "bool", "timestamp", "date", "json"]

# The Ibis type each canonical dtype is stored as.
IBIS_TYPES: dict[DType, str] = {
    "string": "string",
    "int": "int64",
    "float": "float64",
    "bool": "boolean",
    "timestamp": "timestamp",
    "date": "date",
    "json": "string",
}


@dataclass(frozen=True)
class Column:
    name: str
    dtype: DType
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    description: str
    key: str | None = None  # the table's own row id, when it has one
    time: str | None = None  # the column `within` and as_of filter on
    per_customer: bool = True  # has a customer_id and aggregates per customer

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)


def _c(name: str, dtype: DType, required: bool = False, description: str = "") -> Column:
    return Column(name, dtype, required, description)


CUSTOMERS = Table(
    "customers",
    (
        _c("customer_id", "string", True, "the customer's id in the user's system"),
        _c("email", "string"),
        _c("phone", "string"),
        _c("first_name", "string"),
        _c("last_name", "string"),
        _c("country", "string", description="ISO 3166-1 alpha-2 code"),
        _c("region", "string"),
        _c("city", "string"),
        _c("signup_at", "timestamp", description="when the customer record was created"),
        _c("birth_date", "date"),
        _c("gender", "string"),
        _c("company", "string"),
        _c("industry", "string"),
        _c("company_size", "int"),
        _c("plan", "string"),
    ),
    "one row per customer record (people may have several; identity resolution joins them)",
    key="customer_id",
    time="signup_at",
)

ORDERS = Table(
    "orders",
    (
        _c("order_id", "string", True),
        _c("customer_id", "string", True),
        _c("ordered_at", "timestamp", True),
        _c("amount", "float", True, "gross order value in the order's currency"),
        _c("discount", "float", description="discount granted on the order"),
        _c("margin", "float", description="gross margin of the order"),
        _c("returned_amount", "float", description="value refunded for returns"),
        _c("currency", "string"),
        _c("channel", "string", description="web, app, store, marketplace, ..."),
        _c("category", "string", description="the order's main product category"),
    ),
    "one row per order",
    key="order_id",
    time="ordered_at",
)

ORDER_ITEMS = Table(
    "order_items",
    (
        _c("order_id", "string", True),
        _c("customer_id", "string", description="filled from orders when not mapped"),
        _c("ordered_at", "timestamp", description="filled from orders when not mapped"),
        _c("product", "string", True),
        _c("category", "string"),
        _c("quantity", "int"),
        _c("price", "float", description="unit price"),
    ),
    "one row per order line",
    time="ordered_at",
)

EVENTS = Table(
    "events",
    (
        _c("customer_id", "string", True, "may be null for anonymous events"),
        _c("anonymous_id", "string"),
        _c("name", "string", True, "event name, e.g. 'added_to_cart'"),
        _c("occurred_at", "timestamp", True),
        _c("properties", "json", description="JSON object of event properties"),
    ),
    "web, app and product usage events",
    time="occurred_at",
)

MESSAGES = Table(
    "messages",
    (
        _c("customer_id", "string", True),
        _c("channel", "string", True, "email, sms, push, in_app, direct_mail, ads"),
        _c("campaign_id", "string"),
        _c("message_id", "string"),
        _c("occurred_at", "timestamp", True),
        _c(
            "kind",
            "string",
            True,
            "sent, delivered, open, click, reply, unsubscribe, complaint, bounce",
        ),
    ),
    "message engagement and the send log",
    time="occurred_at",
)

CONSENT = Table(
    "consent",
    (
        _c("customer_id", "string", True),
        _c(
            "channel",
            "string",
            True,
            "email, sms, push, in_app, direct_mail, ads (may be empty on a purpose row)",
        ),
        _c("status", "string", True, "opted_in or opted_out"),
        _c("purpose", "string", description="what the consent is for, e.g. marketing_email"),
        _c("basis", "string", description="legal basis, e.g. consent, legitimate_interest"),
        _c("updated_at", "timestamp", True),
    ),
    "consent changes; a row without a purpose is channel consent (the latest row per customer "
    "and channel at as_of wins), a row with one is consent for that purpose (the latest row "
    "per customer and purpose wins)",
    time="updated_at",
)

SUBSCRIPTIONS = Table(
    "subscriptions",
    (
        _c("subscription_id", "string"),
        _c("customer_id", "string", True),
        _c("status", "string", True, "trialing, active, paused, past_due, canceled"),
        _c("plan", "string"),
        _c("mrr", "float", description="monthly recurring revenue"),
        _c("started_at", "timestamp", True),
        _c("canceled_at", "timestamp"),
        _c("next_billing_at", "timestamp"),
        _c("failed_payments", "int"),
    ),
    "subscriptions (subscription businesses)",
    key="subscription_id",
    time="started_at",
)

TICKETS = Table(
    "tickets",
    (
        _c("ticket_id", "string"),
        _c("customer_id", "string", True),
        _c("opened_at", "timestamp", True),
        _c("closed_at", "timestamp"),
        _c("kind", "string"),
        _c("csat", "float", description="satisfaction score, 1-5"),
        _c("refund_amount", "float"),
    ),
    "support tickets",
    key="ticket_id",
    time="opened_at",
)

REVIEWS = Table(
    "reviews",
    (
        _c("review_id", "string"),
        _c("customer_id", "string", True),
        _c("order_id", "string", description="the order reviewed, if any"),
        _c("score", "float", True, "the rating, e.g. 1-5 stars"),
        _c("created_at", "timestamp", True),
        _c(
            "comment",
            "string",
            description="the review's text; personal data (free text may name its writer)",
        ),
    ),
    "product or order reviews",
    key="review_id",
    time="created_at",
)

IDENTIFIERS = Table(
    "identifiers",
    (
        _c("customer_id", "string", True),
        _c("id_type", "string", True, "device_id, email, phone, loyalty_card, ..."),
        _c("id_value", "string", True),
    ),
    "extra identity edges (device ids, alternate emails)",
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        CUSTOMERS,
        ORDERS,
        ORDER_ITEMS,
        EVENTS,
        MESSAGES,
        CONSENT,
        SUBSCRIPTIONS,
        TICKETS,
        REVIEWS,
        IDENTIFIERS,
    )
}

CHANNELS = ("email", "sms", "push", "in_app", "direct_mail", "ads")
CONSENT_STATUSES = ("opted_in", "opted_out")
# Purposes every project knows, in the spirit of the IAB TCF purposes; a project adds its own
# under privacy.purposes.
PURPOSES = (
    "marketing_email",
    "marketing_sms",
    "marketing_push",
    "personalization",
    "ads_retargeting",
    "ads_measurement",
    "analytics",
)
MESSAGE_KINDS = (
    "sent",
    "delivered",
    "open",
    "click",
    "reply",
    "unsubscribe",
    "complaint",
    "bounce",
)

# Tables a retention window may apply to: those with a time column, except customers (a person
# is not an old row; `crmseg forget` erases people).
RETAINABLE = tuple(n for n, t in TABLES.items() if t.time is not None and n != "customers")
