"""The console in process: sign-in, CSRF, pages, roles, audit, actions, no outside host."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from tidegate.api.console.session import SESSION_COOKIE

from .conftest import FAILING_CHECK, SAMPLE_KEYS, Shop, add_failing_checks, sign_in

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[a-z]{2,}")
KEYS = ",".join(SAMPLE_KEYS)


@pytest.fixture(scope="module")
def checked(shop: Shop) -> int:
    """customer_360's live version, with a failing check recorded on it."""
    return add_failing_checks(shop.platform)


def pseudonyms(shop: Shop) -> str:
    """Analytics hashes the key column: its rows are addressed by their pseudonyms."""
    return ",".join(shop.hmac("analytics", k) for k in SAMPLE_KEYS)


# ---------------------------------------------------------------- sign-in and sessions


def test_pages_ask_for_sign_in_and_a_key_opens_a_cookie_session(shop: Shop) -> None:
    client = shop.client
    client.cookies.clear()
    first = client.get("/console/syncs", follow_redirects=False)
    assert first.status_code == 303
    assert first.headers["location"] == "/console/signin?next=%2Fconsole%2Fsyncs"

    answer = sign_in(client, shop.keys["analyst"], "/console/syncs")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/syncs"
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
    assert "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower()
    assert "path=/console" in cookie.lower()
    assert shop.keys["analyst"] not in cookie  # sealed, not the key in clear
    page = client.get("/console/")
    assert page.status_code == 200
    assert "console-analyst" in page.text
    client.post("/console/signout")
    client.cookies.clear()


def test_a_wrong_key_is_refused_on_the_form_and_a_tampered_cookie_signs_out(shop: Shop) -> None:
    client = shop.client
    client.cookies.clear()
    bad = sign_in(client, "tg_nothere_secret")
    assert bad.status_code == 401
    assert 'id="signin-error"' in bad.text
    assert SESSION_COOKIE not in bad.headers.get("set-cookie", "")
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, "gAAAAAtampered", path="/console")
    page = client.get("/console/", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/console/signin")
    client.cookies.clear()


def test_sign_in_needs_the_forms_nonce_and_never_redirects_off_site(shop: Shop) -> None:
    client = shop.client
    client.cookies.clear()
    forged = client.post(
        "/console/signin", data={"nonce": "x", "key": shop.keys["dpo"]}, follow_redirects=False
    )
    assert forged.status_code == 403
    answer = sign_in(client, shop.keys["dpo"], "https://evil.example/steal")
    assert answer.headers["location"] == "/console/"
    client.cookies.clear()


def test_posts_from_a_cookie_session_need_the_csrf_token(shop: Shop) -> None:
    client = shop.client
    client.cookies.clear()
    sign_in(client, shop.keys["dpo"])
    refused = client.post("/console/audit/verify", data={}, follow_redirects=False)
    assert refused.status_code == 403
    assert "stale or came from another site" in refused.text
    page = client.get("/console/audit")
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert token
    ok = client.post("/console/audit/verify", data={"csrf": token.group(1)})
    assert ok.status_code == 200
    assert "Audit chain intact" in ok.text
    client.post("/console/signout", data={})
    client.cookies.clear()


# ---------------------------------------------------------------- pages


def test_catalog_lists_products_and_searches_columns_and_classifications(shop: Shop) -> None:
    page = shop.get("/console/", "dpo")
    assert page.status_code == 200
    products = set(re.findall(r'data-product="([a-z_0-9]+)"', page.text))
    assert products == {"customer_360", "churn_risk", "marketing_audience"}
    assert "shop-platform" in page.text  # owner
    assert "within" in page.text or "late" in page.text  # freshness compliance
    by_class = shop.get("/console/?q=user.contact.email", "dpo")
    assert set(re.findall(r'data-product="([a-z_0-9]+)"', by_class.text)) >= {"customer_360"}
    by_column = shop.get("/console/?q=risk_band", "dpo")
    found = set(re.findall(r'data-product="([a-z_0-9]+)"', by_column.text))
    assert "churn_risk" in found
    assert "customer_360" not in found
    nothing = shop.get("/console/?q=zzzz-no-such-thing", "dpo")
    assert 'id="no-match"' in nothing.text


def test_product_page_shows_the_treatment_matrix_and_pillar_charts(shop: Shop) -> None:
    page = shop.get("/console/products/customer_360", "dpo")
    assert page.status_code == 200
    text = page.text
    head = re.search(r'<table class="grid matrix" id="matrix">.*?</thead>', text, re.S)
    assert head
    purposes = re.findall(r'<th class="purpose">([^<]+)</th>', head.group(0))
    assert purposes == ["support", "marketing.email", "analytics"]
    email_row = re.search(r"<tr><td[^>]*>email</td>.*?</tr>", text, re.S)
    assert email_row
    assert re.findall(r'class="t t-(\w+)"', email_row.group(0)) == ["clear", "clear", "hash"]
    charts = dict(re.findall(r'data-metric="([^"]+)" data-points="(\d+)"', text))
    assert int(charts["volume.rows"]) >= 1
    assert '<path class="line"' in text or '<circle class="dot"' in text
    assert re.search(r'data-pillar="lineage".*?customers', text, re.S)


def test_product_page_404_and_role_without_the_product(shop: Shop) -> None:
    missing = shop.get("/console/products/no_such_product", "dpo")
    assert missing.status_code == 404
    assert "no product named" in missing.text
    assert "Traceback" not in missing.text


def test_lineage_graph_has_sources_products_syncs_and_column_data(shop: Shop) -> None:
    page = shop.get("/console/lineage", "analyst")
    assert page.status_code == 200
    nodes = dict(re.findall(r'<g class="node (\w+)[^"]*" data-relation="([^"]+)"', page.text))
    kinds = set(nodes)
    assert {"source", "product", "sync", "api"} <= kinds
    assert 'data-from="customer_360" data-to="churn_risk"' in page.text or (
        'data-to="customer_360"' in page.text
    )
    data = re.search(
        r'<script type="application/json" id="lineage-columns">(.*?)</script>', page.text, re.S
    )
    assert data
    columns = json.loads(data.group(1))
    assert "sync:crm_audience" in columns
    assert columns["sync:crm_audience"]["email_address"][0][0] == "marketing_audience.email"


# ---------------------------------------------------------------- roles and audit


def _emails(shop: Shop) -> list[str]:
    page = shop.get(f"/console/products/customer_360?purpose=support&keys={KEYS}", "dpo")
    found = sorted(set(EMAIL.findall(page.text)))
    assert len(found) >= 10, "the support sample shows emails in clear"
    return found


ANALYST_PAGES = [
    "/console/",
    "/console/?q=email",
    *[f"/console/products/{p}?purpose=analytics&keys=" for p in ("customer_360", "churn_risk")],
    f"/console/products/customer_360?purpose=analytics&check={FAILING_CHECK}",
    "/console/lineage",
    "/console/syncs",
    "/console/privacy?subject=1",
    "/console/audit?action=serve",
    "/console/health",
]


def test_an_analyst_never_sees_a_clear_email_only_its_hash(shop: Shop, checked: int) -> None:
    emails = _emails(shop)
    for path in ANALYST_PAGES:
        page = shop.get(path + (pseudonyms(shop) if path.endswith("keys=") else ""), "analyst")
        assert page.status_code in (200, 403), (path, page.status_code)
        leaked = [e for e in emails if e in page.text]
        assert not leaked, (path, leaked[:3])
        assert not EMAIL.search(page.text.replace("example.com", "")), path
    sample = shop.get(
        f"/console/products/customer_360?purpose=analytics&keys={pseudonyms(shop)}", "analyst"
    )
    hashed = set(re.findall(r'data-column="email">([0-9a-f]{64})<', sample.text))
    assert hashed
    assert hashed <= {shop.hmac("analytics", e) for e in emails}


def test_a_marketer_cannot_open_the_audit_page_and_the_refusal_is_audited(shop: Shop) -> None:
    before = shop.last_seq()
    page = shop.get("/console/audit?action=serve", "marketer")
    assert page.status_code == 403
    assert 'id="audit-results"' not in page.text
    assert shop.post("/console/audit/verify", "marketer", {}).status_code == 403
    denied = [r for r in shop.audit_since(before) if r.action == "deny"]
    assert len(denied) == 2
    assert all(r.principal == "console-marketer" and r.outcome == "denied" for r in denied)


@pytest.mark.parametrize(
    ("path", "role", "action", "check"),
    [
        (
            "/console/products/customer_360?purpose=analytics&keys=PSEUDONYMS",
            "analyst",
            "serve",
            "subjects",
        ),
        (
            f"/console/products/customer_360?purpose=analytics&check={FAILING_CHECK}",
            "analyst",
            "serve",
            "subjects",
        ),
        ("/console/privacy?subject=1", "dpo", "console", "subjects"),
        ("/console/audit?subject=1", "dpo", "console", "subjects"),
        ("/console/health", "dpo", "console", "page"),
        ("/console/syncs", "marketer", "console", "page"),
    ],
)
def test_every_page_showing_personal_data_writes_an_audit_record(
    shop: Shop, checked: int, path: str, role: str, action: str, check: str
) -> None:
    before = shop.last_seq()
    path = path.replace("PSEUDONYMS", pseudonyms(shop))
    assert shop.get(path, role).status_code == 200
    records = [r for r in shop.audit_since(before) if r.action == action]
    mine = [r for r in records if r.principal == f"console-{role}"]
    assert mine, records
    if check == "subjects":
        assert any(r.subjects for r in mine)
    if action == "serve":
        record = mine[-1]
        assert record.purpose == "analytics"
        assert record.columns["email"] == "hash"
        assert record.product == "customer_360"


# ---------------------------------------------------------------- quality: history, failing rows


def _failing_emails(html: str) -> list[str]:
    section = re.search(r'<table class="grid" id="failing-rows">.*?</table>', html, re.S)
    assert section, "no failing rows table"
    return re.findall(r'<td data-column="email">([^<]*)</td>', section.group(0))


def test_product_page_shows_quality_history_and_links_failing_rows(
    shop: Shop, checked: int
) -> None:
    page = shop.get("/console/products/customer_360", "dpo")
    assert page.status_code == 200
    row = re.search(
        rf'<tr data-version="{checked}" data-failed="(\d+)">(.*?)</tr>', page.text, re.S
    )
    assert row, "no history row for the checked version"
    assert row.group(1) == "1"
    assert 'badge bad">fail</span>' in row.group(2)
    assert f"check={FAILING_CHECK}&amp;check_version={checked}#failing" in page.text
    assert 'id="failing-rows"' not in page.text  # rows only when asked for


def test_failing_rows_go_through_the_guard_for_the_viewers_purpose(
    shop: Shop, checked: int
) -> None:
    path = f"/console/products/customer_360?check={FAILING_CHECK}&check_version={checked}"
    clear = _failing_emails(shop.get(path + "&purpose=support", "dpo").text)
    assert len(clear) >= 5
    assert all(EMAIL.fullmatch(e) and not re.match("[a-m]", e) for e in clear)  # broke ^[a-m]
    before = shop.last_seq()
    page = shop.get(path + "&purpose=analytics", "analyst")
    assert page.status_code == 200
    hashed = _failing_emails(page.text)
    assert hashed
    assert all(re.fullmatch(r"[0-9a-f]{64}", e) for e in hashed)
    assert {shop.hmac("analytics", e) for e in clear} >= set(hashed)
    assert not EMAIL.search(page.text.replace("example.com", ""))
    assert not [e for e in clear if e in page.text]
    reads = [
        r
        for r in shop.audit_since(before)
        if r.action == "serve" and r.detail.get("page") == "failing_rows"
    ]
    assert len(reads) == 1
    read = reads[0]
    assert (read.principal, read.purpose, read.product) == (
        "console-analyst",
        "analytics",
        "customer_360",
    )
    assert read.columns["email"] == "hash"
    assert read.rows == len(hashed)
    assert len(read.subjects) == len(hashed)


def test_failing_rows_under_a_purpose_the_roles_lack_are_refused_and_audited(
    shop: Shop, checked: int
) -> None:
    before = shop.last_seq()
    page = shop.get(
        f"/console/products/customer_360?purpose=support&check={FAILING_CHECK}", "analyst"
    )
    assert page.status_code == 403
    assert 'id="failing-rows"' not in page.text
    denied = [r for r in shop.audit_since(before) if r.outcome == "denied"]
    assert [(r.action, r.principal, r.purpose) for r in denied] == [
        ("serve", "console-analyst", "support")
    ]
    missing = shop.get("/console/products/customer_360?purpose=support&check=nope", "dpo")
    assert missing.status_code == 404
    assert "Traceback" not in missing.text


# ---------------------------------------------------------------- actions


def test_trigger_a_sync_is_role_gated_audited_and_its_run_appears(shop: Shop) -> None:
    denied = shop.post("/console/syncs/crm_audience/run", "analyst", {})
    assert denied.status_code == 403
    before = shop.last_seq()
    runs_before = len(shop.platform.meta.runs("sync", "crm_audience", limit=100))
    done = shop.post("/console/syncs/crm_audience/run", "marketer", {})
    assert done.status_code == 303, done.text[:500]
    assert len(shop.platform.meta.runs("sync", "crm_audience", limit=100)) == runs_before + 1
    page = shop.get(done.headers["location"], "marketer")
    assert 'id="ran"' in page.text
    assert page.text.count('class="run"') == runs_before + 1
    triggers = [r for r in shop.audit_since(before) if r.detail.get("op") == "sync.trigger"]
    assert [r.principal for r in triggers] == ["console-marketer"]
    assert "sync:crm_audience" not in shop.get("/console/syncs", "analyst").text
    assert 'data-sync="crm_audience"' not in shop.get("/console/syncs", "analyst").text


def test_syncs_page_shows_the_next_scheduled_run(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt

    from tidegate.project.cron import next_fire

    page = shop.get("/console/syncs", "marketer")
    assert "after the next build of marketing_audience" in page.text  # trigger: on_build
    sync = shop.platform.project.syncs["crm_audience"]
    scheduled = sync.config.model_copy(update={"trigger": "schedule", "schedule": "15 3 * * *"})
    monkeypatch.setattr(sync, "config", scheduled)
    shop.post("/console/syncs/crm_audience/run", "marketer", {})
    last = shop.platform.meta.runs("sync", "crm_audience", limit=1)[0]
    page = shop.get("/console/syncs", "marketer")
    shown = re.search(r'class="next-run" data-next-run="([^"]+)">([^<]+)<', page.text)
    assert shown, page.text[:2000]
    at = dt.datetime.fromisoformat(shown.group(1))
    assert at == next_fire("15 3 * * *", dt.datetime.fromtimestamp(last["started_at"], dt.UTC))
    assert (at.hour, at.minute) == (3, 15)
    assert at > dt.datetime.now(dt.UTC)
    assert "due" not in shown.group(2)


def test_erasure_from_the_console_and_its_report_download(shop: Shop) -> None:
    subject = "7"
    assert (
        shop.post(
            "/console/privacy/erase", "analyst", {"subject": subject, "confirm": subject}
        ).status_code
        == 403
    )
    unconfirmed = shop.post("/console/privacy/erase", "dpo", {"subject": subject})
    assert unconfirmed.status_code == 400
    done = shop.post(
        "/console/privacy/erase",
        "dpo",
        {"subject": subject, "confirm": subject, "reason": "ticket 1"},
    )
    assert done.status_code == 303
    request_id = done.headers["location"].split("done=")[1]
    page = shop.get(done.headers["location"], "dpo")
    assert 'id="report-link"' in page.text
    report = shop.get(f"/console/privacy/reports/{request_id}.json", "dpo")
    assert report.status_code == 200
    assert "attachment" in report.headers["content-disposition"]
    body = report.json()
    assert body["request_id"] == request_id
    assert {s["system"] for s in body["systems"]} >= {"tombstone", "warehouse", "online_store"}
    assert shop.platform.online.read("customer_360", subject) is None
    assert shop.get(f"/console/privacy/reports/{request_id}.json", "marketer").status_code == 403
    assert shop.get("/console/privacy/reports/../../etc.json", "dpo").status_code in (403, 404)


def test_consent_lookup_and_access_package(shop: Shop) -> None:
    page = shop.get("/console/privacy?subject=2", "dpo")
    assert page.status_code == 200
    state = dict(
        re.findall(r'<tr data-purpose="([^"]+)">.*?class="badge \w+">(yes|no)<', page.text, re.S)
    )
    assert state["marketing.email"] == "no"  # Grace revoked marketing email
    assert state["support"] == "yes"
    package = shop.post("/console/privacy/access", "dpo", {"subject": "1"})
    assert package.status_code == 200
    assert "attachment" in package.headers["content-disposition"]
    assert "ada.lovelace1@example.com" in package.text


def test_audit_search_filters_by_principal(shop: Shop) -> None:
    shop.get("/console/", "analyst")
    page = shop.get("/console/audit?principal=console-analyst", "dpo")
    assert page.status_code == 200
    principals = set(re.findall(r"<td>(console-[a-z_]+)</td>", page.text))
    assert principals == {"console-analyst"}
    bad = shop.get("/console/audit?since=not-a-time", "dpo")
    assert bad.status_code == 400
    assert "Traceback" not in bad.text


def test_audit_search_by_purpose_product_subject_and_time(shop: Shop, checked: int) -> None:
    page = shop.get(
        f"/console/products/customer_360?purpose=analytics&check={FAILING_CHECK}", "analyst"
    )
    assert page.status_code == 200
    shop.platform.audit.flush()
    read = [r for _, r in shop.platform.audit.records() if r.detail.get("page") == "failing_rows"]
    subject = read[-1].subjects[0]
    found = shop.get(
        "/console/audit?action=serve&purpose=analytics&product=customer_360"
        f"&principal=console-analyst&subject={subject}&since=1h",
        "dpo",
    )
    assert found.status_code == 200
    rows = re.findall(
        r'<tr data-seq="\d+"><td>[^<]*</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>'
        r"<td>([^<]*)</td>",
        found.text,
    )
    assert rows
    assert set(rows) == {("serve", "console-analyst", "analytics", "customer_360")}
    assert '"page": "failing_rows"' in found.text
    before = shop.get(f"/console/audit?action=serve&subject={subject}&until=2000-01-01", "dpo")
    assert "no record matches" in before.text


# ---------------------------------------------------------------- offline


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action") and value:
                self.links.append(value)


PAGES = [
    "/console/",
    "/console/products/customer_360?purpose=support&keys=1,2",
    "/console/products/churn_risk",
    "/console/products/marketing_audience",
    "/console/lineage",
    "/console/syncs",
    "/console/privacy?subject=1",
    "/console/audit?action=serve",
    "/console/health",
    "/docs",
]


def test_no_page_references_an_outside_host_and_every_asset_is_served(
    shop: Shop, checked: int
) -> None:
    shop.client.cookies.clear()
    failing = f"/console/products/customer_360?purpose=support&check={FAILING_CHECK}"
    pages = {path: shop.get(path, "dpo").text for path in [*PAGES, failing]}
    assert 'id="failing-rows"' in pages[failing]
    pages["/console/signin"] = shop.client.get("/console/signin").text
    assets: set[str] = set()
    for path, html in pages.items():
        parser = _Links()
        parser.feed(html)
        assert parser.links, path
        for link in parser.links:
            parts = urlsplit(link)
            assert (parts.scheme, parts.netloc) == ("", ""), f"{path} links outside: {link}"
            if link.startswith(("/console/static/", "/docs/")):
                assets.add(link)
    assert "/console/static/vendor/swagger-ui/swagger-ui-bundle.js" in assets
    for asset in sorted(assets):
        answer = shop.client.get(asset)
        assert answer.status_code == 200, asset
        assert len(answer.content) > 30, asset
    docs_init = shop.client.get("/docs/init.js").text
    assert "validatorUrl: null" in docs_init


def test_privacy_page_charts_choices_per_purpose_and_times_revocation_propagation(
    shop: Shop,
) -> None:
    """A revocation recorded now shows on the purpose's revocations-per-day chart, and
    its removal from the CRM audience is timed from the ledger's record to the chained
    removal record; the page carries counts and durations, never the subject's id."""
    from tidegate.egress.sync import run_sync
    from tidegate.privacy.consent import ConsentEvent, consent_ledger_of
    from tidegate.requests.propagation import propagate

    run_sync(shop.platform, "crm_audience")
    subject = next(
        str(s)
        for s in range(3, 200)
        if str(s) not in ("7",)
        and any(loc.sync == "crm_audience" for loc in shop.platform.meta.subject_locations(str(s)))
    )

    def overview() -> tuple[dict[str, int], int]:
        page = shop.get("/console/privacy", "dpo")
        assert page.status_code == 200
        revocations = {
            p: int(n)
            for p, n in re.findall(
                r'class="trend" data-purpose="([^"]+)" data-grants="\d+" '
                r'data-revocations="(\d+)"',
                page.text,
            )
        }
        count = re.search(r'id="propagation" data-count="(\d+)"', page.text)
        assert count is not None
        assert f">{subject}<" not in page.text
        return revocations, int(count.group(1))

    revoked_before, timed_before = overview()
    consent_ledger_of(shop.platform).record(
        [ConsentEvent(subject, "marketing.email", "revoke", time.time(), source="console-test")]
    )
    report = propagate(shop.platform, subject)
    assert [r.sync for r in report.removals] == ["crm_audience"]
    shop.platform.audit.flush()
    revoked_after, timed_after = overview()
    assert revoked_after["marketing.email"] == revoked_before.get("marketing.email", 0) + 1
    assert timed_after == timed_before + 1
