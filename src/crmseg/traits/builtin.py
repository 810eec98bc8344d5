"""Built-in traits, written in the rule language itself.

Each needs only some of the orders/messages/tickets/subscriptions tables; the plan drops
those whose tables or columns a project lacks. A user trait of the same name wins.
"""

from __future__ import annotations

from crmseg.rules.defs import Definition

_SPECS: tuple[tuple[str, str, str], ...] = (
    ("orders_count", "count(orders)", "number of orders"),
    ("first_order_at", "min(orders.ordered_at)", "when the first order was placed"),
    ("last_order_at", "max(orders.ordered_at)", "when the latest order was placed"),
    ("days_since_last_order", "days_since(last_order_at)", "whole days since the latest order"),
    ("orders_365d", "count(orders within 365d)", "orders in the last 365 days"),
    ("revenue_total", "sum(orders.amount)", "gross order value, all time"),
    ("revenue_365d", "sum(orders.amount within 365d)", "gross order value, last 365 days"),
    (
        "ltv",
        "sum(orders.amount) - sum(orders.returned_amount)",
        "lifetime value: order value minus returns",
    ),
    ("aov", "avg(orders.amount)", "average order value"),
    ("margin_total", "sum(orders.margin)", "gross margin, all time"),
    (
        "discount_share",
        "count(orders where discount > 0) / orders_count",
        "share of orders placed with a discount",
    ),
    (
        "return_rate",
        "sum(orders.returned_amount) / sum(orders.amount)",
        "share of order value returned",
    ),
    ("tickets_90d", "count(tickets within 90d)", "support tickets in the last 90 days"),
    ("avg_csat", "avg(tickets.csat)", "average satisfaction score of support tickets"),
    ("refund_total", "sum(tickets.refund_amount)", "refunds granted through support"),
    (
        "email_opens_90d",
        "count(messages where channel = 'email' and kind = 'open' within 90d)",
        "emails opened in the last 90 days",
    ),
    (
        "mrr",
        "sum(subscriptions.mrr where status = 'active')",
        "monthly recurring revenue of active subscriptions",
    ),
)

BUILTIN_TRAITS: list[Definition] = [
    Definition(name, "trait", text=expr, file=f"<builtin:{name}>", description=desc)
    for name, expr, desc in _SPECS
]

# How the English renderer names a built-in trait: (noun, counted?) — counted traits read
# "at least 3 orders", the others "a lifetime value of at least 500".
PHRASES: dict[str, tuple[str, bool]] = {
    "orders_count": ("orders", True),
    "orders_365d": ("orders in the last 365 days", True),
    "tickets_90d": ("support tickets in the last 90 days", True),
    "email_opens_90d": ("email opens in the last 90 days", True),
    "first_order_at": ("a first order", False),
    "last_order_at": ("a latest order", False),
    "days_since_last_order": ("days since the latest order", False),
    "revenue_total": ("a total order value", False),
    "revenue_365d": ("an order value over the last 365 days", False),
    "ltv": ("a lifetime value", False),
    "aov": ("an average order value", False),
    "margin_total": ("a total margin", False),
    "discount_share": ("a discounted-order share", False),
    "return_rate": ("a return rate", False),
    "avg_csat": ("an average satisfaction score", False),
    "refund_total": ("total refunds", False),
    "mrr": ("a monthly recurring revenue", False),
}
