"""The dashboard over a real server: sign-in by key, the catalog with freshness and trends, a
segment's page with its chart and pending changes, a customer's timeline, masking per role."""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request

from .conftest import Api


class Browser:
    """Cookies kept between requests, redirects followed, like a browser."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, str, str]:
        """(status, final path, body)."""
        try:
            with self.opener.open(self.base + path, timeout=60) as resp:
                return resp.status, resp.url.removeprefix(self.base), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, path, exc.read().decode()

    def post(self, path: str, fields: dict[str, str] | None = None) -> tuple[int, str, str]:
        data = urllib.parse.urlencode(fields or {}).encode()
        try:
            with self.opener.open(self.base + path, data, timeout=60) as resp:
                return resp.status, resp.url.removeprefix(self.base), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, path, exc.read().decode()


def _signed_in(api: Api, role: str) -> Browser:
    browser = Browser(api.base)
    status, where, _ = browser.post("/ui/login", {"key": api.keys[role]})
    assert (status, where) == (200, "/ui")
    return browser


PROPOSAL = """\
segments:
  - name: custom.low_ids
    description: Ids below 5.
    owner: crm-team
    rule: customer_id in ('1', '2', '3', '4')
"""


def test_sign_in_is_required_and_checked(api: Api) -> None:
    browser = Browser(api.base)
    status, where, body = browser.get("/ui")
    assert (status, where) == (200, "/ui/login") and "API key" in body
    status, where, body = browser.post(
        "/ui/login", {"key": "crmseg_000000000000_wrongwrongwrongwrong"}
    )
    assert where == "/ui/login?failed=1" and "unknown or revoked" in body
    assert browser.get("/")[1] == "/ui/login"
    signed = _signed_in(api, "viewer")
    assert signed.get("/ui/logout")[1] == "/ui/login"
    assert signed.get("/ui")[1] == "/ui/login"  # the cookie is gone


def test_pages_for_a_viewer(api: Api) -> None:
    browser = _signed_in(api, "viewer")
    _, _, catalog = browser.get("/ui")
    assert "custom.everyone" in catalog and "custom.low_ids" in catalog
    assert "stale" in catalog  # the fixture's runs are from 2024: overdue, and it says so
    _, _, filtered = browser.get("/ui?q=below")
    assert "custom.low_ids" in filtered and "custom.everyone" not in filtered
    status, _, page = browser.get("/ui/segments/custom.low_ids?explain=2")
    assert status == 200
    assert '<script src="/ui/plotly.js"></script>' in page and "plotly-graph-div" in page
    assert "Definition history" in page and "/ui/customers/1" in page
    assert "2 is IN custom.low_ids" in page
    assert "stale: due since" in page  # the segment page says so too, with why
    status, _, person = browser.get("/ui/customers/2")
    assert status == 200 and "custom.low_ids" in person
    assert "U****@*******.***" in person and "User2@Example.com" not in person
    status, _, js = browser.get("/ui/plotly.js")
    assert status == 200 and "plotly" in js[:2000].lower()
    status, _, missing = browser.get("/ui/segments/custom.nope")
    assert status == 404 and "no segment named" in missing


def test_a_pending_change_is_approved_from_its_page(api: Api) -> None:
    _, change, _ = api.call("POST", "/changes", "admin", body=PROPOSAL)
    viewer = _signed_in(api, "viewer")
    _, _, page = viewer.get("/ui/segments/custom.low_ids")
    assert f"Pending change {change['change_id']}" in page and "Approve" not in page
    assert viewer.post(f"/ui/changes/{change['change_id']}/approve")[0] == 403
    editor = _signed_in(api, "editor")
    _, _, page = editor.get("/ui/segments/custom.low_ids")
    assert "Approve" in page and "+0 / -" in page
    status, where, page = editor.post(f"/ui/changes/{change['change_id']}/approve")
    assert (status, where) == (200, "/ui/segments/custom.low_ids")
    assert "Pending change" not in page and "customer_id in (&#x27;1&#x27;" in page
    _, found, _ = api.call("GET", f"/changes/{change['change_id']}", "viewer")
    assert found["status"] == "approved"
