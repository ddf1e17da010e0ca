"""A console over a private copy of the demo shop, with one key per role."""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from tidegate.api import create_app
from tidegate.audit.log import AuditRecord
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.privacy.guard import guard_of

ROLES = ("support_agent", "analyst", "marketer", "dpo")
SAMPLE_KEYS = [str(k) for k in range(1, 31)]


@dataclass
class Shop:
    platform: Platform
    client: TestClient
    keys: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, role: str, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        return self.client.get(path, headers=headers, follow_redirects=False, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, role: str, data: dict[str, str]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        return self.client.post(path, headers=headers, data=data, follow_redirects=False)

    def last_seq(self) -> int:
        self.platform.audit.flush()
        return self.platform.audit.last_seq()

    def audit_since(self, seq: int) -> list[AuditRecord]:
        self.platform.audit.flush()
        return [r for _, r in self.platform.audit.records(after_seq=seq)]

    def hmac(self, purpose: str, text: str) -> str:
        key = guard_of(self.platform).hash_key(purpose).key
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def sign_in(client: TestClient, key: str, next_path: str = "/console/") -> httpx.Response:
    """The sign-in form as a browser fills it: GET (nonce cookie + field), then POST."""
    form = client.get("/console/signin", params={"next": next_path})
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce, form.text
    return client.post(
        "/console/signin",
        data={"nonce": nonce.group(1), "key": key, "next": next_path},
        follow_redirects=False,
    )


@pytest.fixture(scope="module")
def shop(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    directory = tmp_path_factory.mktemp("console") / "shop"
    shutil.copytree(demo_dir, directory)
    platform = Platform.open(directory)
    keys = {role: create_key(platform.meta, f"console-{role}", [role])[0] for role in ROLES}
    try:
        with TestClient(create_app(platform), base_url="http://127.0.0.1") as client:
            yield Shop(platform, client, keys)
    finally:
        platform.close()


FAILING_CHECK = "email_a_to_m"


def add_failing_checks(platform: Platform) -> int:
    """Run two checks on customer_360's live version as a build would (one passing, one
    failing on about half the customers, keeping its failing rows) and record the
    results: the demo shop declares no checks. Returns the version checked."""
    from dataclasses import replace

    from tidegate.observe.quality import run_checks, store_rows
    from tidegate.project.observe_config import CHECK_ADAPTER

    product = platform.project.products["customer_360"]
    checks = [
        CHECK_ADAPTER.validate_python(
            {
                "type": "regex",
                "column": "email",
                "pattern": "^[a-m]",
                "severity": "warn",
                "name": FAILING_CHECK,
            }
        ),
        CHECK_ADAPTER.validate_python({"type": "not_null", "column": "customer_id"}),
    ]
    checked = replace(product, config=product.config.model_copy(update={"checks": checks}))
    live = platform.meta.live_version("customer_360")
    assert live is not None
    with platform.warehouse.cursor() as cursor:
        report = run_checks(cursor, checked, platform.project, live.version)
    platform.meta.observations.add_quality(store_rows(report))
    assert [r.passed for r in report.results] == [False, True]
    return live.version
