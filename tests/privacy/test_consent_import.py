"""Bulk consent (issue 14, item 3): `tidegate consent import FILE` and
`POST /v1/consent/batch` load a CMP export: bad lines reported by number, the rest
loaded, idempotent on re-run, revocations propagated, 100k choices in seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidegate.egress.sync import run_sync
from tidegate.platform import Platform
from tidegate.privacy.consent import consent_ledger_of, consent_view_of
from tidegate.requests.consent_batch import load_choices

from .test_consent_api import ADA, Api, crm_ids, serve

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))
PAST = time.time() - 86400
CSV = (
    "id,subject,purpose,action,occurred_at,source\n"
    f"a1,301,analytics,grant,{PAST},cmp\n"
    f"a2,302,nope,grant,{PAST},cmp\n"  # line 3: unknown purpose
    f"a3,303,analytics,maybe,{PAST},cmp\n"  # line 4: bad action
    "a4,304,analytics,grant,2100-01-01T00:00:00Z,cmp\n"  # line 5: future
    f"a5,305,analytics,grant,{PAST},cmp\n"
)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TIDEGATE, *args], capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip


def test_cli_import_reports_bad_lines_loads_the_rest_and_is_idempotent(
    shop: Path, tmp_path: Path
) -> None:
    export = tmp_path / "cmp.csv"
    export.write_text(CSV)
    first = cli("consent", "import", str(export), "--project", str(shop), "--json")
    assert first.returncode == 1, first.stderr  # some lines were refused
    report = json.loads(first.stdout)
    assert (report["lines"], report["recorded"], report["invalid"]) == (5, 2, 3)
    assert [e["line"] for e in report["errors"]] == [3, 4, 5]
    assert "unknown purpose" in report["errors"][0]["reason"]
    assert "future" in report["errors"][2]["reason"]
    again = json.loads(
        cli("consent", "import", str(export), "--project", str(shop), "--json").stdout
    )
    assert (again["recorded"], again["duplicates"]) == (0, 2)
    with Platform.open(shop) as platform:
        assert len(consent_ledger_of(platform).history("301")) == 1
        view = consent_view_of(platform)
        view.refresh()
        assert view.allowed("305", "analytics", "consent")
        imports = [r for _, r in platform.audit.records() if r.action == "consent_import"]
        assert [r.subjects for r in imports] == [("301", "305")]


def test_jsonl_without_ids_is_idempotent_on_the_natural_key(shop: Path) -> None:
    lines = [json.dumps({"subject": "310", "purpose": "analytics", "action": "grant",
                         "occurred_at": PAST}), "not json", ""]  # fmt: skip
    with Platform.open(shop) as platform:
        first = load_choices(platform, iter(lines), "jsonl", principal="t")
        second = load_choices(platform, iter(lines), "jsonl", principal="t")
    assert (first.recorded, first.invalid, first.errors[0].line) == (1, 1, 2)
    assert (second.recorded, second.duplicates) == (0, 1)


def test_a_revocation_in_an_import_propagates_to_sync_destinations(
    shop: Path, tmp_path: Path
) -> None:
    with Platform.open(shop) as platform:
        assert run_sync(platform, "crm_audience").added > 0
    assert int(ADA) in crm_ids(shop)
    export = tmp_path / "revoke.jsonl"
    line = {"subject": ADA, "purpose": "marketing.email", "action": "revoke",
            "occurred_at": time.time()}  # fmt: skip
    export.write_text(json.dumps(line) + "\n")
    done = cli("consent", "import", str(export), "--project", str(shop), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed_from_syncs"] == 1
    assert int(ADA) not in crm_ids(shop)


def test_a_hundred_thousand_choices_load_in_seconds(shop: Path) -> None:
    purposes = ("analytics", "marketing.email", "support", "ads.partners")
    actions = ("grant", "grant", "object", "grant")
    lines = ["subject,purpose,action,occurred_at"] + [
        f"u{i // 4},{purposes[i % 4]},{actions[i % 4]},{PAST - 200_000 + i}" for i in range(100_000)
    ]
    with Platform.open(shop) as platform:
        started = time.perf_counter()
        report = load_choices(platform, iter(lines), "csv", principal="bench")
        seconds = time.perf_counter() - started
    print(f"100k choices: {seconds:.1f} s")
    assert report.recorded == 100_000
    assert seconds < 30


@pytest.fixture
def api(shop: Path) -> Iterator[Api]:
    yield from serve(shop)


def test_batch_endpoint_same_auth_audited_with_line_errors(api: Api) -> None:
    def post(token: str, body: str, kind: str = "text/csv") -> object:
        return api.client.post(
            "/v1/consent/batch",
            content=body.encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": kind},
        )

    response = post(api.cmp, CSV)
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert (body["recorded"], body["invalid"]) == (2, 3)
    assert [e["line"] for e in body["errors"]] == [3, 4, 5]
    audit = [r for _, r in api.platform.audit.records() if r.action == "consent_import"]
    assert audit[-1].principal == "cmp-backend"
    assert post(api.agent, CSV).status_code == 403  # type: ignore[attr-defined]
    wrong = post(api.cmp, CSV, "text/plain")
    assert wrong.status_code == 400  # type: ignore[attr-defined]
    assert wrong.json()["error"]["details"]["field"] == "content-type"  # type: ignore[attr-defined]
