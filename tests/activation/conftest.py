"""A small shop with consent and messages, on disk, for activation tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import MakeProject

AS_OF = datetime(2024, 8, 1)

CONFIG = """\
name: act-shop
timezone: UTC
sources:
  customers: {path: data/customers.csv}
  orders: {path: data/orders.csv}
  consent: {path: data/consent.csv}
  messages: {path: data/messages.csv}
"""


def customers_csv(n: int) -> str:
    rows = ["customer_id,email,phone,first_name,country,signup_at"]
    for i in range(1, n + 1):
        rows.append(f"{i},User{i}@Example.com ,0151 {i:07d},U{i},DE,2024-01-01 00:00:00")
    return "\n".join(rows) + "\n"


def consent_csv(n: int) -> str:
    """Odd customers opted in to email; every 10th opted out again later; 7: a tie -> out."""
    rows = ["customer_id,channel,status,updated_at"]
    for i in range(1, n + 1):
        if i % 2:
            rows.append(f"{i},email,opted_in,2024-01-02 00:00:00")
        if i % 10 == 9:
            rows.append(f"{i},email,opted_out,2024-03-01 00:00:00")
    rows.append("7,email,opted_out,2024-01-02 00:00:00")
    return "\n".join(rows) + "\n"


ORDERS = """\
order_id,customer_id,ordered_at,amount
1,1,2024-07-28 10:00:00,50
2,3,2024-05-01 10:00:00,70
"""

MESSAGES = """\
customer_id,channel,campaign_id,message_id,occurred_at,kind
5,email,news,m1,2024-07-31 09:00:00,sent
11,email,news,m2,2024-06-01 09:00:00,sent
11,email,news,m3,2024-06-01 10:00:00,unsubscribe
"""

SEGMENTS = """\
segments:
  - name: custom.everyone
    description: Everyone.
    owner: crm-team
    rule: customer_id is not null
  - name: custom.low_ids
    description: Ids below 20.
    owner: crm-team
    rule: >-
      customer_id in ('1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12', '13',
      '14', '15', '16', '17', '18', '19')
"""


def campaign_yml(destination: str = "", extra: str = "") -> str:
    return f"""\
campaigns:
  - name: welcome
    description: A test campaign.
    owner: crm-team
    segment: custom.everyone
    channel: email
    suppress: {{purchased_within: 7d, messaged_within: 2d}}
    holdout: 0.2
{extra}{destination}"""


ShopFactory = Callable[..., Path]


@pytest.fixture
def shop(make_project: MakeProject) -> ShopFactory:
    def make(n: int = 40, campaigns: str | None = None, **files: str | None) -> Path:
        return make_project(
            "actshop",
            **{
                "crmseg.yml": CONFIG,
                "data/customers.csv": customers_csv(n),
                "data/orders.csv": ORDERS,
                "data/consent.csv": consent_csv(n),
                "data/messages.csv": MESSAGES,
                "segments/core.yml": SEGMENTS,
                "campaigns/main.yml": campaigns if campaigns is not None else campaign_yml(),
                **files,
            },
        )

    return make
