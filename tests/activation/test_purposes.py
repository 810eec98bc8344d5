"""Consent by purpose on a small real project: the funnel's purpose step, legitimate interest,
destinations with their own purpose, and the errors a user can make."""

from __future__ import annotations

from pathlib import Path

import pytest

from crmseg.errors import ActivationError, ConfigError
from crmseg.workspace import Workspace
from tests.activation.conftest import AS_OF, CONFIG, ShopFactory, campaign_yml, consent_csv

N = 40


def purpose_csv() -> str:
    """Channel rows as in the plain shop (no purpose), plus purpose rows:
    - every customer divisible by 3 opted in to marketing_email on 02-01; 15 opted out again
      on 05-01; 21 opted out at the same instant as the opt-in (a tie: out);
    - 25 and 27 objected to analytics (legitimate interest in the LI tests);
    - every customer divisible by 5 opted in to personalization;
    - 33 has a marketing_email opt-in dated after as_of (invisible)."""
    rows = consent_csv(N).splitlines()
    head, body = rows[0], rows[1:]
    assert head == "customer_id,channel,status,updated_at"
    out = ["customer_id,channel,status,purpose,updated_at"]
    for r in body:
        c, ch, st, at = r.split(",")
        out.append(f"{c},{ch},{st},,{at}")
    for i in range(1, N + 1):
        if i % 3 == 0 and i != 33:
            out.append(f"{i},email,opted_in,marketing_email,2024-02-01 00:00:00")
        if i % 5 == 0:
            out.append(f"{i},,opted_in,personalization,2024-02-01 00:00:00")
    out.append("15,email,opted_out,marketing_email,2024-05-01 00:00:00")
    out.append("21,email,opted_out,marketing_email,2024-02-01 00:00:00")
    out.append("33,email,opted_in,marketing_email,2024-09-01 00:00:00")
    out.append("25,,opted_out,analytics,2024-03-01 00:00:00")
    out.append("27,,opted_out,analytics,2024-03-01 00:00:00")
    return "\n".join(out) + "\n"


# Channel consent (odd ids, minus 7, 9, 19, 29, 39): the plain shop's 15 people.
EMAIL = {str(i) for i in range(1, N + 1, 2)} - {"7", "9", "19", "29", "39"}
MARKETING = {str(i) for i in range(3, N + 1, 3)} - {"15", "21", "33"}


def _run(root: Path) -> Workspace:
    ws = Workspace.open(root)
    ws.run(as_of=AS_OF)
    return ws


def _plain(purpose: str, destination: str = "") -> str:
    """The welcome campaign without suppression or holdout: everyone who passes consent and
    the purpose is treated."""
    off = "    suppress: {unsubscribed: false, complained: false, bounced: false}\n"
    return (
        campaign_yml(destination=destination, extra=f"    purpose: {purpose}\n")
        .replace("    suppress: {purchased_within: 7d, messaged_within: 2d}\n", off)
        .replace("    holdout: 0.2\n", "")
    )


def test_purpose_step_needs_channel_and_purpose_consent(shop: ShopFactory) -> None:
    root = shop(campaigns=_plain("marketing_email"), **{"data/consent.csv": purpose_csv()})
    with _run(root) as ws:
        a = ws.activate("welcome", dry_run=True).audience
        steps = [(s.label, s.count) for s in a.steps]
        assert steps == [
            ("in segment", N),
            ("with email consent", len(EMAIL)),
            ("with consent for marketing_email", len(EMAIL & MARKETING)),
        ]
        assert {k for k, _ in a.treatment} == EMAIL & MARKETING == {"3", "27"}
        assert "6" in MARKETING and "6" not in EMAIL  # purpose consent, no channel consent
        sent = ws.activate("welcome").audience
        assert {k for k, _ in sent.treatment} == {"3", "27"}


def test_purpose_rows_do_not_count_as_channel_consent(shop: ShopFactory) -> None:
    segment = """\
  - name: custom.emailable
    description: Email consent.
    owner: crm-team
    rule: consent.email
"""
    from tests.activation.conftest import SEGMENTS

    root = shop(
        **{"data/consent.csv": purpose_csv(), "segments/core.yml": SEGMENTS + segment},
    )
    with _run(root) as ws:
        # 6, 12, 18 ... opted in to marketing_email on channel email, never to the channel
        assert set(ws.members("custom.emailable", AS_OF)) == EMAIL


def test_legitimate_interest_passes_all_but_objectors(shop: ShopFactory) -> None:
    config = CONFIG + "privacy:\n  purposes:\n    analytics: {basis: legitimate_interest}\n"
    root = shop(
        campaigns=_plain("analytics"),
        **{"data/consent.csv": purpose_csv(), "crmseg.yml": config},
    )
    with _run(root) as ws:
        a = ws.activate("welcome", dry_run=True).audience
        assert a.steps[-1].label == "no objection to analytics (legitimate interest)"
        assert {k for k, _ in a.treatment} == EMAIL - {"25", "27"}


def test_a_project_purpose_with_legitimate_interest_needs_no_purpose_column(
    shop: ShopFactory,
) -> None:
    config = CONFIG + "privacy:\n  purposes:\n    service_news: {basis: legitimate_interest}\n"
    root = shop(campaigns=_plain("service_news"), **{"crmseg.yml": config})
    with _run(root) as ws:
        a = ws.activate("welcome", dry_run=True).audience
        assert {k for k, _ in a.treatment} == EMAIL  # nobody objected: nobody could


def test_destination_purpose_narrows_only_that_destination(shop: ShopFactory) -> None:
    dest = """\
    destination:
      - {type: file, name: all, path: out/all.csv}
      - {type: file, name: personal, path: out/personal.csv, purpose: personalization}
"""
    campaigns = _plain("marketing_email", dest)
    csv = purpose_csv() + "27,,opted_in,personalization,2024-02-01 00:00:00\n"
    root = shop(campaigns=campaigns, **{"data/consent.csv": csv})
    with _run(root) as ws:
        result = ws.activate("welcome")
        assert result.audience.after[-1].label == "with consent for personalization (personal)"
        assert result.audience.after[-1].count == 1
        everyone = (root / "out/all.csv").read_text().splitlines()[1:]
        personal = (root / "out/personal.csv").read_text().splitlines()[1:]
        assert sorted(r.split(",")[0].strip('"') for r in everyone) == ["27", "3"]
        assert [r.split(",")[0].strip('"') for r in personal] == ["27"]


def test_unknown_purpose_is_a_located_error(shop: ShopFactory) -> None:
    root = shop(campaigns=_plain("marketing_emial"))
    with pytest.raises(ConfigError) as err:
        _ = Workspace.open(root).campaigns
    text = str(err.value)
    assert "campaigns/main.yml:8:14 [campaigns.0.purpose]" in text
    assert "unknown purpose 'marketing_emial' (did you mean 'marketing_email'?)" in text


def test_unknown_destination_purpose_is_a_located_error(shop: ShopFactory) -> None:
    dest = "    destination:\n      - {type: file, path: out/a.csv, purpose: ads}\n"
    with pytest.raises(ConfigError, match=r"main.yml:\d+:\d+.*unknown purpose 'ads'"):
        _ = Workspace.open(shop(campaigns=campaign_yml(destination=dest))).campaigns


def test_consent_purpose_without_a_purpose_column_is_refused(shop: ShopFactory) -> None:
    root = shop(campaigns=_plain("marketing_email"))
    with _run(root) as ws:
        report = ws.validate()
        assert any("no purpose column in consent" in p for p in report.problems)
        with pytest.raises(ActivationError, match=r"main.yml:\d+.*purpose 'marketing_email'"):
            ws.activate("welcome", dry_run=True)


def test_quality_flags_unknown_purposes_and_allows_purpose_rows_without_channel(
    shop: ShopFactory,
) -> None:
    csv = purpose_csv() + "2,,opted_in,newsletter_x,2024-02-01 00:00:00\n"
    root = shop(**{"data/consent.csv": csv})
    with Workspace.open(root) as ws:
        findings = {(f.check, f.column): f for f in ws.quality(AS_OF).findings}
        assert findings[("unknown_consent_values", "purpose")].affected == 1
        assert findings[("missing_values", "channel")].affected == 0
