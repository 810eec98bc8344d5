"""Ad lists are ads activations: only treatment customers with ads consent are uploaded,
whatever the campaign's channel, and the funnel shows the step."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

from crmseg.activation.destinations.adlists import hash_email
from crmseg.workspace import Workspace
from tests.activation.conftest import AS_OF, ShopFactory, campaign_yml, consent_csv

N = 60
DEST = (
    "    destination:\n"
    "      - {type: file, path: 'out/{campaign}.csv', fields: [customer_key]}\n"
    "      - {type: ad_list, platform: google, path: 'out/{campaign}_google.csv', "
    "identifiers: [email], sync: incremental}\n"
)


def _with_ads(extra: str = "") -> str:
    """Email consent as in the shared shop; ads consent for every 3rd customer, customer 9
    opted out of ads again."""
    rows = [f"{i},ads,opted_in,2024-01-03 00:00:00" for i in range(3, N + 1, 3)]
    rows.append("9,ads,opted_out,2024-02-01 00:00:00")
    return consent_csv(N) + "\n".join(rows) + "\n" + extra


def _hashed(path: Path) -> set[str]:
    with path.open(newline="") as f:
        return {row["Email"] for row in csv.DictReader(f)}


def _email_hash(key: str) -> str:
    value = hash_email(f"User{key}@Example.com ")
    assert value is not None
    return value


def test_ad_list_receives_only_customers_with_ads_consent(shop: ShopFactory) -> None:
    root = shop(n=N, campaigns=campaign_yml(destination=DEST), data__consent_csv=_with_ads())
    with Workspace.open(root) as ws:
        ws.run(as_of=AS_OF)
        result = ws.activate("welcome")
    treated = {k for k, _ in result.audience.treatment}
    ads = {str(i) for i in range(3, N + 1, 3)} - {"9"}
    allowed = treated & ads
    assert treated - ads, "the test needs treatment customers without ads consent"
    assert allowed, "and some with"
    # the file destination gets the whole treatment; the ad list only those with ads consent
    with (root / "out/welcome.csv").open(newline="") as f:
        assert {r["customer_key"] for r in csv.DictReader(f)} == treated
    uploaded = _hashed(root / "out/welcome_google.add.csv")
    assert uploaded == {_email_hash(k) for k in allowed}
    assert result.audience.ads_consent == allowed
    assert "with ads consent (ad lists)" in result.audience.funnel()
    assert result.audience.recorded[-1].count == len(allowed)
    reports = {d.kind: d for d in result.destinations}
    assert reports["ad_list"].adds == len(allowed)

    # a customer who withdraws ads consent is removed from the list on the next activation
    leaver = sorted(allowed, key=int)[0]
    later = f"{leaver},ads,opted_out,2024-08-02 00:00:00\n"
    shop(n=N, campaigns=campaign_yml(destination=DEST), data__consent_csv=_with_ads(later))
    with Workspace.open(root) as ws:
        ws.run(as_of=AS_OF + timedelta(days=3))
        again = ws.activate("welcome", as_of=AS_OF + timedelta(days=3))
    assert leaver not in (again.audience.ads_consent or set())
    assert _email_hash(leaver) in _hashed(root / "out/welcome_google.remove.csv")
    assert _email_hash(leaver) not in _hashed(root / "out/welcome_google.add.csv")
