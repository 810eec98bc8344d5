"""The dashboard in a real headless browser: Debian's Chromium driven by Selenium through
Debian's chromedriver (nothing downloaded). Every page renders with no console errors and its
charts draw; a viewer sees emails masked; a change is approved by clicking its button.

Without Chromium the module is skipped, unless CRMSEG_REQUIRE_BROWSER=1 (``.ci/run`` sets it),
where a missing browser fails instead."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from .conftest import Api, served, write_shop

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    if os.environ.get("CRMSEG_REQUIRE_BROWSER") == "1":
        pytest.fail("CRMSEG_REQUIRE_BROWSER=1 but chromium or chromedriver is not installed")
    pytest.skip("needs chromium and chromium-driver (apt)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")

# Every page of the dashboard (as a signed-in user reaches it) and whether it draws charts.
PAGES = {
    "/ui": False,
    "/ui/segments/custom.low_ids": True,
    "/ui/segments/custom.everyone?explain=2": True,
    "/ui/customers/2": False,
    "/ui/campaigns": False,
    "/ui/campaigns/welcome": True,
    "/ui/campaigns/second": True,
    "/ui/rfm": True,
    "/ui/lifecycle": True,
    "/ui/quality": False,
    "/ui/runs": False,
}


def _chrome() -> Any:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="crmseg-chromium-")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-quic", "--window-size=1280,1600",
        f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(DRIVER)))
    driver.set_page_load_timeout(60)
    driver.profile_dir = profile
    return driver


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """120 customers; ``welcome`` (20% holdout) activated on 2024-08-01, a third of the people
    ordering days later, and a second run on 2024-08-20, after the lift window closed; the
    campaign ``second`` is never activated (its page previews the funnel)."""
    orders = "order_id,customer_id,ordered_at,amount\n" + "".join(
        f"{i},{i},2024-08-0{3 + i % 5} 10:00:00,{20 + i}\n" for i in range(3, 121, 3)
    )
    root = write_shop(tmp_path_factory.mktemp("browser") / "shop", 120, orders)
    first = (root / "campaigns" / "main.yml").read_text()
    (root / "campaigns" / "second.yml").write_text(first.replace("name: welcome", "name: second"))
    for api in served(root, datetime(2024, 8, 1)):
        assert api.call("POST", "/campaigns/welcome/activate", "editor")[0] == 200
        assert api.call("POST", "/runs?as_of=2024-08-20T00:00:00", "editor")[0] == 200
        yield api


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = _chrome()
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(driver.profile_dir, ignore_errors=True)


def _sign_in(driver: Any, api: Api, role: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(api.base + "/ui")
    assert driver.current_url.endswith("/ui/login")
    driver.find_element(By.NAME, "key").send_keys(api.keys[role])
    driver.find_element(By.TAG_NAME, "button").click()
    WebDriverWait(driver, 30).until(lambda d: d.current_url == api.base + "/ui")
    _console(driver)  # what sign-in logged is not a page's


def _console(driver: Any) -> list[str]:
    """Console errors since the last call (warnings and Chromium's advice left out)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _charts_drawn(driver: Any) -> int:
    """Wait until every plotly chart on the page has drawn its SVG; how many there are."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = (
        "const g = [...document.querySelectorAll('.plotly-graph-div')];"
        "return [g.length, g.filter(d => d.querySelector('svg.main-svg')).length];"
    )
    WebDriverWait(driver, 30).until(lambda d: (n := d.execute_script(script))[0] == n[1])
    return int(driver.execute_script(script)[0])


def test_every_page_renders_without_console_errors(shop: Api, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    _sign_in(browser, shop, "admin")
    for path, charts in PAGES.items():
        browser.get(shop.base + path)
        title = browser.find_element(By.TAG_NAME, "h1").text
        assert title and "Not possible" not in title, (path, browser.page_source[-2000:])
        drawn = _charts_drawn(browser)
        assert (drawn > 0) == charts, (path, drawn)
        assert _console(browser) == [], path
    browser.get(shop.base + "/ui/campaigns/welcome")
    assert "Conversion lift" in browser.page_source  # lift with intervals, once activated
    browser.get(shop.base + "/ui/segments/custom.everyone")
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "Reach per channel" in text and "Overlap" in text and "custom.low_ids" in text


def test_a_viewer_sees_emails_masked(shop: Api, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    _sign_in(browser, shop, "viewer")
    browser.get(shop.base + "/ui/customers/2")
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "U****@*******.***" in text and "User2@Example.com" not in browser.page_source
    browser.get(shop.base + "/ui/segments/custom.everyone?explain=2")
    assert "User2@Example.com" not in browser.page_source
    assert _console(browser) == []


def test_an_approval_end_to_end(shop: Api, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    proposal = (
        "segments:\n  - name: custom.low_ids\n    description: Ids below 4.\n"
        "    owner: crm-team\n    rule: customer_id in ('1', '2', '3')\n"
    )
    status, change, _ = shop.call("POST", "/changes", "admin", body=proposal)
    assert status == 200
    _sign_in(browser, shop, "editor")
    browser.get(shop.base + "/ui/segments/custom.low_ids")
    card = browser.find_element(By.XPATH, f"//h2[text()='Pending change {change['change_id']}']/..")
    assert "+0 / -" in card.text  # the impact: nobody enters, people leave
    card.find_element(By.TAG_NAME, "button").click()
    WebDriverWait(browser, 30).until(lambda d: "Pending change" not in d.page_source)
    assert browser.current_url == shop.base + "/ui/segments/custom.low_ids"
    assert "customer_id in ('1', '2', '3')" in browser.find_element(By.TAG_NAME, "pre").text
    written = (shop.root / "segments" / "core.yml").read_text()
    assert "customer_id in ('1', '2', '3')" in written and "Ids below 4." in written
    _, found, _ = shop.call("GET", f"/changes/{change['change_id']}", "viewer")
    assert (
        found["status"] == "approved" and found["decided_by"] == shop.keys["editor"].split("_")[1]
    )
    assert _console(browser) == []
