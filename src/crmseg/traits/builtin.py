"""Built-in traits, written in the rule language itself.

Each needs only some of the orders/messages/tickets/subscriptions/reviews tables; the plan drops
those whose tables or columns a project lacks (``ltv`` falls back to the order value when
orders have no ``returned_amount``). A user trait of the same name wins.

Three kinds live here:

- per-customer aggregates (``orders_count``, ``ltv``, ``email_opens_90d``, ...);
- population-relative layers (``lifecycle.*``, ``rfm.*``, ``value.*_tier``): built with the
  window functions ``ntile``/``percent_rank``/``median_all`` over every customer at as_of, with
  thresholds and grids from ``crmseg.yml`` (:func:`builtin_traits`);
- parameterised built-ins (``last_order_at_in('skincare')``, :data:`FUNCTIONS`), expanded by
  the checker into ordinary aggregates, so they share the one-pass plan.

Model outputs (``clv.*``, ``churn.*``, ``cluster.*``, ``propensity.*``, ``nba.*``) are not
expressions: :data:`MODEL_TRAITS` names them for the checker (with :func:`model_traits` adding
the project's propensity categories) and ``crmseg.models.traits`` fits them when a rule needs
them.

:func:`library` bundles all of it, with the English :data:`PHRASES`, for ``build_plan``.
"""

from __future__ import annotations

from crmseg.config import Config, LifecycleConfig, ModelsConfig, RfmConfig, ValueTiersConfig
from crmseg.rules.defs import Definition, Function, Library, ModelTrait

__all__ = [
    "BUILTIN_TRAITS",
    "FUNCTIONS",
    "MODEL_HINTS",
    "MODEL_TRAITS",
    "PHRASES",
    "THRESHOLDS",
    "Function",
    "builtin_traits",
    "library",
    "model_traits",
]

_CORE: tuple[tuple[str, str, str], ...] = (
    ("orders_count", "count(orders)", "number of orders"),
    ("first_order_at", "min(orders.ordered_at)", "when the first order was placed"),
    ("last_order_at", "max(orders.ordered_at)", "when the latest order was placed"),
    ("days_since_last_order", "days_since(last_order_at)", "whole days since the latest order"),
    ("tenure_days", "days_since(first_order_at)", "whole days since the first order"),
    ("orders_90d", "count(orders within 90d)", "orders in the last 90 days"),
    ("orders_365d", "count(orders within 365d)", "orders in the last 365 days"),
    ("revenue_total", "sum(orders.amount)", "gross order value, all time"),
    ("revenue_365d", "sum(orders.amount within 365d)", "gross order value, last 365 days"),
    (
        "ltv",
        "sum(orders.amount) - sum(orders.returned_amount)",
        "lifetime value: order value minus returns",
    ),
    # the fallback when orders have no returned_amount (the plan takes the first that fits)
    ("ltv", "sum(orders.amount)", "lifetime value: order value (the data has no returns)"),
    ("aov", "avg(orders.amount)", "average order value"),
    ("margin_total", "sum(orders.margin)", "gross margin, all time"),
    (
        "discount_share",
        "sum(orders.amount where discount > 0) / sum(orders.amount)",
        "share of order value placed with a discount",
    ),
    (
        "return_rate",
        "sum(orders.returned_amount) / sum(orders.amount)",
        "share of order value returned",
    ),
    (
        "median_order_gap_days",
        "median_gap(orders.ordered_at)",
        "median days between consecutive orders (null below 2 orders)",
    ),
    (
        "last_order_gap_days",
        "last_gap(orders.ordered_at)",
        "days between the latest order and the one before it",
    ),
    (
        "top_category",
        "mode(orders.category)",
        "category with the most orders (ties: alphabetically first)",
    ),
    ("categories_count", "count_distinct(orders.category)", "distinct categories bought"),
    ("tickets_90d", "count(tickets within 90d)", "support tickets in the last 90 days"),
    ("avg_csat", "avg(tickets.csat)", "average satisfaction score of support tickets"),
    ("refund_total", "sum(tickets.refund_amount)", "refunds granted through support"),
    ("reviews_count", "count(reviews)", "number of reviews written"),
    ("avg_review_score", "avg(reviews.score)", "average score of the reviews written"),
    ("last_review_score", "last(reviews.score)", "score of the latest review"),
    ("last_review_at", "max(reviews.created_at)", "when the latest review was written"),
    (
        "low_reviews_90d",
        "count(reviews where score <= 2 within 90d)",
        "reviews scoring 2 or less in the last 90 days",
    ),
    (
        "unsubscribed",
        "count(messages where kind = 'unsubscribe') > 0",
        "ever unsubscribed from a message",
    ),
    (
        "complained",
        "count(messages where kind = 'complaint') > 0",
        "ever marked a message as spam",
    ),
    (
        "subscription_status",
        "last(subscriptions.status)",
        "status of the latest subscription (trialing, active, paused, past_due, canceled)",
    ),
    (
        "mrr",
        "sum(subscriptions.mrr where status = 'active')",
        "monthly recurring revenue of active subscriptions",
    ),
    (
        "failed_payments",
        "sum(subscriptions.failed_payments)",
        "failed subscription payments, all subscriptions",
    ),
)

ENGAGEMENT_CHANNELS = ("email", "sms", "push")


def _engagement() -> list[tuple[str, str, str]]:
    out = []
    for ch in ENGAGEMENT_CHANNELS:
        for kind, verb in (("open", "opened"), ("click", "clicked")):
            cond = f"channel = '{ch}' and kind = '{kind}'"
            out.append(
                (
                    f"{ch}_last_{kind}_at",
                    f"max(messages.occurred_at where {cond})",
                    f"when a {ch} message was last {verb}",
                )
            )
            for days in (30, 90):
                out.append(
                    (
                        f"{ch}_{kind}s_{days}d",
                        f"count(messages where {cond} within {days}d)",
                        f"{ch} {kind}s in the last {days} days",
                    )
                )
    return out


def _num(v: float) -> str:
    return repr(round(float(v), 6))


def _lifecycle(c: LifecycleConfig) -> list[tuple[str, str, str]]:
    cycle = (
        _num(c.cycle_days)
        if c.cycle_days is not None
        else f"round(coalesce(median_all(median_order_gap_days), {_num(c.default_cycle_days)}), 1)"
    )

    def days(fixed: float | None, factor: float) -> str:
        return _num(fixed) if fixed is not None else f"round(lifecycle.cycle_days * {_num(factor)})"

    stage = f"""case
  when orders_count = 0 then 'lead'
  when days_since(last_order_at) > lifecycle.churned_days then 'churned'
  when days_since(last_order_at) > lifecycle.at_risk_days then 'at_risk'
  when orders_count >= 2 and last_order_gap_days > lifecycle.churned_days then 'reactivated'
  when orders_count = 1 and days_since(first_order_at) <= lifecycle.new_days then 'new'
  when orders_count >= {c.loyal_orders} then 'loyal'
  when orders_count >= 2 then 'repeat'
  else 'active'
end"""
    return [
        ("lifecycle.cycle_days", cycle, "the purchase cycle in days"),
        ("lifecycle.new_days", days(c.new_days, c.new_factor), "new: first order within (days)"),
        (
            "lifecycle.at_risk_days",
            days(c.at_risk_days, c.at_risk_factor),
            "at_risk: last order older than (days)",
        ),
        (
            "lifecycle.churned_days",
            days(c.churned_days, c.churned_factor),
            "churned: last order older than (days)",
        ),
        ("lifecycle.stage", stage, "lifecycle stage"),
    ]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _rfm(c: RfmConfig) -> list[tuple[str, str, str]]:
    whens = "\n".join(
        f"  when rfm.recency_score between {g.recency[0]} and {g.recency[1]} and rfm.fm_score "
        f"between {g.frequency_monetary[0]} and {g.frequency_monetary[1]} then {_quote(g.name)}"
        for g in c.grid
    )
    return [
        ("rfm.recency_score", "ntile(last_order_at, 5)", "recency score 1-5 (5 = most recent)"),
        (
            "rfm.frequency_score",
            "ntile(case when orders_count > 0 then orders_count end, 5)",
            "frequency score 1-5 (5 = most orders)",
        ),
        (
            "rfm.monetary_score",
            f"ntile(case when orders_count > 0 then {c.monetary} end, 5)",
            f"monetary score 1-5 (5 = highest {c.monetary})",
        ),
        (
            "rfm.fm_score",
            "round((rfm.frequency_score + rfm.monetary_score) / 2)",
            "frequency-monetary score: the mean of F and M, halves rounded up",
        ),
        (
            "rfm.score",
            "rfm.recency_score * 100 + rfm.frequency_score * 10 + rfm.monetary_score",
            "R, F and M as one three-digit number (e.g. 545)",
        ),
        ("rfm.segment", f"case\n{whens}\nend" if c.grid else "null", "RFM segment"),
    ]


def _tiers(c: ValueTiersConfig) -> list[tuple[str, str, str]]:
    out = []
    for what, base in (
        ("ltv", "ltv"),
        ("margin", "margin_total"),
        ("clv", "clv.value_12m"),
    ):
        pct = f"value.{what}_percentile"
        whens = " ".join(f"when {pct} >= {_num(1 - t.top)} then {_quote(t.name)}" for t in c.tiers)
        out.append((pct, f"percent_rank({base})", f"share of customers with a lower {base}"))
        out.append(
            (f"value.{what}_tier", f"case {whens} else {_quote(c.rest)} end", f"{base} tier")
        )
    return out


def builtin_traits(
    lifecycle: LifecycleConfig | None = None,
    rfm: RfmConfig | None = None,
    value_tiers: ValueTiersConfig | None = None,
) -> list[Definition]:
    """Every built-in trait, with the project's lifecycle thresholds, RFM grid and tiers."""
    specs = [
        *_CORE,
        *_engagement(),
        *_lifecycle(lifecycle or LifecycleConfig()),
        *_rfm(rfm or RfmConfig()),
        *_tiers(value_tiers or ValueTiersConfig()),
    ]
    return [
        Definition(name, "trait", text=expr, file=f"<builtin:{name}>", description=desc)
        for name, expr, desc in specs
    ]


BUILTIN_TRAITS: list[Definition] = builtin_traits()

# Traits whose value is the same for every customer: thresholds shown by preview and traits.
THRESHOLDS = (
    "lifecycle.cycle_days",
    "lifecycle.new_days",
    "lifecycle.at_risk_days",
    "lifecycle.churned_days",
)


FUNCTIONS: dict[str, Function] = {
    "orders_count_in": Function(
        ("category",),
        "count(orders where category = {category})",
        "orders in a category",
        "orders_count_in('skincare')",
    ),
    "revenue_in": Function(
        ("category",),
        "sum(orders.amount where category = {category})",
        "order value in a category",
        "revenue_in('skincare')",
    ),
    "category_share": Function(
        ("category",),
        "sum(orders.amount where category = {category}) / sum(orders.amount)",
        "category affinity: the category's share of the customer's order value",
        "category_share('skincare')",
    ),
    "last_order_at_in": Function(
        ("category",),
        "max(orders.ordered_at where category = {category})",
        "when the customer last ordered in a category",
        "last_order_at_in('skincare')",
    ),
    "days_since_last_order_in": Function(
        ("category",),
        "days_since(max(orders.ordered_at where category = {category}))",
        "whole days since the latest order in a category",
        "days_since_last_order_in('skincare')",
    ),
}

MODEL_TRAITS: dict[str, ModelTrait] = {
    m.name: m
    for m in (
        ModelTrait(
            "clv.expected_purchases_90d", "number", description="expected orders in 90 days"
        ),
        ModelTrait("clv.p_alive", "number", description="probability the customer is still active"),
        ModelTrait(
            "clv.value_12m", "number", description="predicted value over the next 12 months"
        ),
        ModelTrait("clv.expected_spend", "number", description="expected spend per order"),
        # the CLV models' inputs, the daily RFM summary at as_of
        ModelTrait("clv.repeat_days", "number", description="days with a repeat purchase"),
        ModelTrait(
            "clv.recency_days", "number", description="days from the first to the latest purchase"
        ),
        ModelTrait("clv.age_days", "number", description="days since the first purchase"),
        ModelTrait(
            "clv.repeat_spend", "number", description="average spend of the repeat purchase days"
        ),
        ModelTrait("churn.risk", "number", description="churn risk"),
        ModelTrait("churn.top_features", "string", description="top churn risk drivers"),
        ModelTrait("cluster.id", "number", description="behavioural cluster number"),
        ModelTrait("cluster.label", "string", description="behavioural cluster description"),
        ModelTrait(
            "propensity.any",
            "number",
            description="probability of an order within 30 days (models.propensity_horizon_days)",
        ),
        ModelTrait(
            "propensity.top_features",
            "string",
            description="top drivers of the next best action's propensity",
        ),
    )
}


def model_traits(config: ModelsConfig | None = None) -> dict[str, ModelTrait]:
    """:data:`MODEL_TRAITS` with the project's propensity horizon and categories: one
    ``propensity.<category>`` each and, when there is any, ``nba.category`` and
    ``nba.expected_value``."""
    c = config or ModelsConfig()
    days = c.propensity_horizon_days
    out = dict(MODEL_TRAITS)
    out["propensity.any"] = ModelTrait(
        "propensity.any", "number", description=f"probability of an order within {days} days"
    )
    for cat in c.propensity_categories:
        out[f"propensity.{cat}"] = ModelTrait(
            f"propensity.{cat}",
            "number",
            description=f"probability of an order in {cat} within {days} days",
        )
    if c.propensity_categories:
        out["propensity.top_features"] = ModelTrait(
            "propensity.top_features",
            "string",
            description="top drivers of the propensity of the next best action's category",
        )
        out["nba.category"] = ModelTrait(
            "nba.category",
            "string",
            description="next best action category (highest propensity x expected spend)",
        )
        out["nba.expected_value"] = ModelTrait(
            "nba.expected_value",
            "number",
            description=f"expected value of the next best action (propensity x expected "
            f"spend, {days} days)",
        )
    else:
        out["propensity.top_features"] = ModelTrait(
            "propensity.top_features", "string", description="top drivers of propensity.any"
        )
    return out


# Why a model trait name is unknown, by its prefix (the checker adds it to the error).
MODEL_HINTS = {
    "propensity": "the categories are listed in models.propensity_categories (crmseg.yml)",
    "nba": "nba.* needs categories in models.propensity_categories (crmseg.yml)",
}

# How the English renderer names a built-in trait: (noun, counted?) — counted traits read
# "at least 3 orders", the others "a lifetime value of at least 500".
PHRASES: dict[str, tuple[str, bool]] = {
    "orders_count": ("orders", True),
    "orders_90d": ("orders in the last 90 days", True),
    "orders_365d": ("orders in the last 365 days", True),
    "tickets_90d": ("support tickets in the last 90 days", True),
    "categories_count": ("distinct categories", True),
    "failed_payments": ("failed payments", True),
    "first_order_at": ("a first order", False),
    "last_order_at": ("a latest order", False),
    "days_since_last_order": ("days since the latest order", False),
    "revenue_total": ("a total order value", False),
    "revenue_365d": ("an order value over the last 365 days", False),
    "ltv": ("a lifetime value", False),
    "aov": ("an average order value", False),
    "margin_total": ("a total margin", False),
    "discount_share": ("a discounted share of order value", False),
    "return_rate": ("a return rate", False),
    "median_order_gap_days": ("a median gap between orders (days)", False),
    "last_order_gap_days": ("a gap before the latest order (days)", False),
    "avg_csat": ("an average satisfaction score", False),
    "refund_total": ("total refunds", False),
    "reviews_count": ("reviews", True),
    "low_reviews_90d": ("reviews scoring 2 or less in the last 90 days", True),
    "avg_review_score": ("an average review score", False),
    "last_review_score": ("a latest review score", False),
    "last_review_at": ("a latest review", False),
    "mrr": ("a monthly recurring revenue", False),
    "lifecycle.stage": ("a lifecycle stage", False),
    "rfm.segment": ("an RFM segment", False),
    "rfm.recency_score": ("an RFM recency score", False),
    "rfm.frequency_score": ("an RFM frequency score", False),
    "rfm.monetary_score": ("an RFM monetary score", False),
    "value.ltv_tier": ("a lifetime value tier", False),
    "value.clv_tier": ("a predicted value tier", False),
    "value.margin_tier": ("a margin tier", False),
}
for _ch in ENGAGEMENT_CHANNELS:
    for _kind in ("open", "click"):
        for _days in (30, 90):
            PHRASES[f"{_ch}_{_kind}s_{_days}d"] = (f"{_ch} {_kind}s in the last {_days} days", True)


def library(config: Config | None = None) -> Library:
    """The standard built-ins for ``build_plan(..., builtins=library(config))``: every
    built-in trait (with the project's lifecycle thresholds, RFM grid and value tiers, or the
    defaults), the per-category functions, the model traits (with the project's propensity
    categories) and their English phrases."""
    traits = (
        BUILTIN_TRAITS
        if config is None
        else builtin_traits(config.lifecycle, config.rfm, config.value_tiers)
    )
    models = model_traits(config.models if config is not None else None)
    return Library(tuple(traits), FUNCTIONS, models, PHRASES, MODEL_HINTS)
