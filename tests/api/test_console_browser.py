"""The console in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Installed by `scripts/browser.sh` (which `make test` runs); never `playwright install`.
Each step asserts on the DOM and SVG the person sees and leaves a screenshot in
tests/artifacts/console/ (gitignored).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidegate.api import create_app
from tidegate.demo.generator import EMAIL_DOMAINS
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.privacy.guard import guard_of

from .conftest import FAILING_CHECK, add_failing_checks

pytestmark = pytest.mark.services

CHROMIUM = Path(os.environ.get("TIDEGATE_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
#: a clear address in any of the demo's email domains (tidegate.demo.generator.EMAIL_DOMAINS)
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@(?:" + "|".join(re.escape(d) for d in EMAIL_DOMAINS) + ")")


class Live:
    def __init__(self, platform: Platform, base: str, browser: Any) -> None:
        self.platform = platform
        self.base = base
        self.browser = browser
        self.keys = {
            role: create_key(platform.meta, f"browser-{role}", [role])[0]
            for role in ("dpo", "analyst", "marketer")
        }

    def page_as(self, role: str) -> Any:
        context = self.browser.new_context(
            accept_downloads=True, viewport={"width": 1400, "height": 900}
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{self.base}/console/")
        assert "/console/signin" in page.url
        page.fill("input[name=key]", self.keys[role])
        page.click("#signin button[type=submit]")
        page.wait_for_url(f"{self.base}/console/")
        return page


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def live(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/browser.sh` (make test does)")
    from playwright.sync_api import sync_playwright

    directory = tmp_path_factory.mktemp("browser") / "shop"
    shutil.copytree(demo_dir, directory)
    platform = Platform.open(directory)
    server = BackgroundServer(create_app(platform), _free_port(0))
    server.start()
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    try:
        yield Live(platform, f"http://127.0.0.1:{server.port}", browser)
    finally:
        browser.close()
        playwright.stop()
        server.stop()
        platform.close()


def test_sign_in_search_the_catalog_and_open_a_product(live: Live) -> None:
    page = live.page_as("dpo")
    assert page.locator("#catalog tr.product").count() == 3
    shot(page, "01-catalog")
    page.fill("#catalog-search input[type=search]", "risk_band")  # filters while typing
    visible = page.locator("#catalog tr.product:visible")
    assert sorted(visible.evaluate_all("rows => rows.map(r => r.dataset.product)")) == [
        "churn_risk",
        "marketing_audience",
    ]
    page.press("#catalog-search input[type=search]", "Enter")  # and the server search
    page.wait_for_url(re.compile(r".*q=risk_band"))
    assert page.locator("#catalog tr.product[data-product=customer_360]").count() == 0
    assert page.locator("#catalog tr.product").count() == 2
    shot(page, "02-catalog-search")

    page.goto(f"{live.base}/console/")
    page.click("a[href='/console/products/customer_360']")
    page.wait_for_selector("#matrix")
    assert page.inner_text("#product-name") == "customer_360"
    charts = page.locator("#pillars svg.chart")
    assert charts.count() >= 4
    rows_chart = page.locator("svg.chart[data-metric='volume.rows']")
    assert rows_chart.locator("circle.dot").count() >= 1
    assert page.locator("#matrix td.t-hash").count() >= 1
    page.select_option("#sample-form select[name=purpose]", "analytics")
    key = guard_of(live.platform).hash_key("analytics").key  # analytics hashes the key
    ids = [hmac.new(key, str(k).encode(), hashlib.sha256).hexdigest() for k in range(1, 6)]
    page.fill("#sample-form input[name=keys]", ",".join(ids))
    page.click("#sample-form button")
    page.wait_for_selector("#sample")
    emails = page.locator("#sample td[data-column=email]").all_inner_texts()
    assert emails
    assert all(re.fullmatch(r"[0-9a-f]{64}", e) for e in emails)
    shot(page, "03-product")


def test_quality_history_and_failing_rows_through_the_viewers_purpose(live: Live) -> None:
    version = add_failing_checks(live.platform)
    live.platform.audit.flush()
    before = live.platform.audit.last_seq()
    page = live.page_as("analyst")
    page.goto(f"{live.base}/console/products/customer_360")
    history = page.locator(f"#quality-history tr[data-version='{version}']")
    assert history.get_attribute("data-failed") == "1"
    assert "fail" in history.inner_text()
    page.click(f"#checks tr[data-check={FAILING_CHECK}] a.failing-link")
    page.wait_for_selector("#failing-rows")
    assert page.get_attribute("#failing", "data-purpose") == "analytics"
    hashed = page.locator("#failing-rows td[data-column=email]").all_inner_texts()
    assert hashed
    assert all(re.fullmatch(r"[0-9a-f]{64}", e) for e in hashed)
    assert "@" not in page.inner_text("#failing")
    assert not EMAIL.search(page.content())
    shot(page, "03b-failing-rows-analyst")
    live.platform.audit.flush()
    reads = [
        r
        for _, r in live.platform.audit.records(after_seq=before)
        if r.action == "serve" and r.detail.get("page") == "failing_rows"
    ]
    assert [(r.principal, r.purpose, r.columns.get("email")) for r in reads] == [
        ("browser-analyst", "analytics", "hash")
    ]
    assert reads[0].subjects

    dpo = live.page_as("dpo")  # support reads emails in clear: the same rows, untreated
    dpo.goto(f"{live.base}/console/products/customer_360")
    dpo.click(f"#checks tr[data-check={FAILING_CHECK}] a.failing-link")
    dpo.wait_for_selector("#failing-rows")
    assert dpo.get_attribute("#failing", "data-purpose") == "support"
    clear = dpo.locator("#failing-rows td[data-column=email]").all_inner_texts()
    assert clear
    assert all(re.fullmatch(r"[^a-m@\s][^@\s]*@[^@\s]+\.[a-z]+", e) for e in clear), clear
    shot(dpo, "03c-failing-rows-support")


def test_the_lineage_graph_renders_and_shows_columns_on_click(live: Live) -> None:
    page = live.page_as("analyst")
    page.click("a[data-nav=lineage]")
    page.wait_for_selector("svg#lineage")
    assert page.locator("svg#lineage g.node").count() >= 6
    assert page.locator("svg#lineage path.edge").count() >= 5
    page.click("svg#lineage g.node[data-relation='customer_360']")
    assert page.locator("svg#lineage path.edge.hot").count() >= 2
    rows = page.locator("#column-lineage tr[data-column]")
    assert rows.count() == 16
    assert "customers" in page.inner_text("#column-lineage tr[data-column=email]")
    shot(page, "04-lineage")
    text = page.content()
    assert not EMAIL.search(text)


def test_trigger_a_sync_and_see_its_run(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    page = live.page_as("marketer")
    page.click("a[data-nav=syncs]")
    section = page.locator("#sync-crm_audience")
    assert section.locator(".next-run").inner_text() == "after the next build of marketing_audience"
    before = section.locator("tr.run").count()
    section.locator("button[data-action=run-sync]").click()
    page.wait_for_selector("#ran")
    after = page.locator("#sync-crm_audience tr.run")
    assert after.count() == before + 1
    assert after.first.get_attribute("data-status") in (
        "succeeded",
        "success",
        "ok",
        "done",
        "completed",
    )
    shot(page, "05-syncs")

    sync = live.platform.project.syncs["crm_audience"]  # as if it ran on a schedule
    scheduled = sync.config.model_copy(update={"trigger": "schedule", "schedule": "30 4 * * *"})
    monkeypatch.setattr(sync, "config", scheduled)
    page.reload()
    nxt = page.locator("#sync-crm_audience .next-run")
    assert re.search(r"T04:30:00", nxt.get_attribute("data-next-run") or "")
    assert "due" not in nxt.inner_text()


def test_consent_lookup_erasure_and_report_download(live: Live, tmp_path: Path) -> None:
    page = live.page_as("dpo")
    page.click("a[data-nav=privacy]")
    page.fill("#consent-lookup input[name=subject]", "2")
    page.click("#consent-lookup button")
    page.wait_for_selector("#consent-state")
    row = page.locator("#consent-state tr[data-purpose='marketing.email']")
    assert "no" in row.inner_text()
    assert page.locator("#consent-history tbody tr").count() >= 1
    shot(page, "06-consent")

    page.fill("#access-form input[name=subject]", "1")
    with page.expect_download() as access:
        page.click("#access-form button")
    package = tmp_path / "access.json"
    access.value.save_as(package)
    assert access.value.suggested_filename == "access-1.json"
    assert "ada.lovelace1@example.com" in package.read_text()  # the subject's own data
    assert json.loads(package.read_text())

    page.on("dialog", lambda dialog: dialog.accept())
    page.fill("#erase-form input[name=subject]", "9")
    page.fill("#erase-form input[name=confirm]", "9")
    page.fill("#erase-form input[name=reason]", "browser test")
    page.click("#erase-form button")
    page.wait_for_selector("#report-link")
    with page.expect_download() as download:
        page.click("#report-link")
    target = tmp_path / "report.json"
    download.value.save_as(target)
    report = json.loads(target.read_text())
    assert report["complete"] in (True, False)
    assert {s["system"] for s in report["systems"]} >= {"tombstone", "online_store"}
    assert live.platform.online.read("customer_360", "9") is None
    shot(page, "07-erasure")


def test_search_and_verify_the_audit_log(live: Live) -> None:
    page = live.page_as("dpo")
    page.click("a[data-nav=audit]")
    page.fill("#audit-search input[name=principal]", "browser-dpo")
    page.click("#audit-search button")
    page.wait_for_selector("#audit-results")
    cells = page.locator("#audit-results tbody tr td:nth-child(3)").all_inner_texts()
    assert cells
    assert set(cells) == {"browser-dpo"}
    shot(page, "08-audit")
    page.click("#verify-form button")
    page.wait_for_selector("#verify-result")
    assert "intact" in page.inner_text("#verify-result")


def test_health_docs_and_roles_in_the_browser(live: Live) -> None:
    page = live.page_as("marketer")
    page.click("a[data-nav=health]")
    page.wait_for_selector("#backends")
    assert page.locator("#backends .badge.ok").count() >= 3
    shot(page, "09-health")
    page.goto(f"{live.base}/console/audit")
    assert "may not read the audit log" in page.inner_text("#problem")
    shot(page, "10-audit-refused")
    page.goto(f"{live.base}/docs")
    page.wait_for_selector(".swagger-ui .info")
    assert "tidegate" in page.inner_text(".swagger-ui .info").lower()
    shot(page, "11-docs")
