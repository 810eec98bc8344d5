"""Reach per channel: a segment's members that each channel may contact, with consent read
exactly as rules read it (latest row at the instant, opted_out on a tie, purpose rows apart)."""

from __future__ import annotations

from datetime import datetime

from crmseg.workspace import Workspace

from ..activation.conftest import CONFIG, MESSAGES, ORDERS, customers_csv
from ..conftest import MakeProject

CONSENT = """\
customer_id,channel,status,updated_at,purpose
1,email,opted_in,2024-01-02 00:00:00,
2,email,opted_in,2024-01-02 00:00:00,
2,email,opted_out,2024-03-01 00:00:00,
3,email,opted_in,2024-01-02 00:00:00,
3,email,opted_out,2024-01-02 00:00:00,
4,email,opted_in,2024-09-01 00:00:00,
5,,opted_in,2024-01-02 00:00:00,analytics
1,sms,opted_in,2024-01-02 00:00:00,
6,sms,opted_in,2024-01-02 00:00:00,
"""

SEGMENTS = """\
segments:
  - name: custom.low_ids
    description: Ids below 6.
    owner: crm-team
    rule: customer_id in ('1', '2', '3', '4', '5')
  - name: custom.reached
    description: The same, with email consent, as a rule says it.
    owner: crm-team
    rule: in_segment('custom.low_ids') and consent.email
"""


def test_reach_counts_consent_as_rules_do(make_project: MakeProject) -> None:
    root = make_project(
        **{
            "crmseg.yml": CONFIG,
            "data/customers.csv": customers_csv(8),
            "data/orders.csv": ORDERS,
            "data/consent.csv": CONSENT,
            "data/messages.csv": MESSAGES,
            "segments/core.yml": SEGMENTS,
        }
    )
    with Workspace.open(root) as ws:
        ws.run(as_of=datetime(2024, 8, 1))
        found = ws.reach("custom.low_ids")
        # 1 in; 2 opted out later; 3 a tie (out); 4 not yet; 5 only a purpose row
        assert found["members"] == 5
        assert found["channels"] == {"email": 1, "sms": 1}
        assert found["channels"]["email"] == len(ws.members("custom.reached"))
        later = ws.reach("custom.low_ids", datetime(2024, 10, 1))
        assert later["channels"] == {"email": 2, "sms": 1}
