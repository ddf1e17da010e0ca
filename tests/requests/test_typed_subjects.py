"""Subjects have types (issue 12 item 1): customer 3 and employee 3 are two people.

Before types, `request access 3` answered with customer 3 *and* employee 3, and
`request erase 12` erased employee 12 along with customer 12 (and its tombstone kept
employee 12 out of every later load). Each test here fails on that code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tidegate.errors import BadRequestError, NotFoundError
from tidegate.platform import Platform
from tidegate.products.builder import build_products, load_sources
from tidegate.requests.subject_access import access
from tidegate.requests.subject_requests import erase

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))


def _count(platform: Platform, relation: str, column: str, subject: str) -> int:
    with platform.warehouse.cursor() as cur:
        row = cur.execute(
            f"SELECT count(*) FROM {relation} WHERE CAST({column} AS VARCHAR) = ?", [subject]
        ).fetchone()
    assert row is not None
    return int(row[0])


def _tables(package: dict[str, object]) -> dict[str, list[dict[str, object]]]:
    warehouse = package["warehouse"]
    assert isinstance(warehouse, dict)
    return {k: v for k, v in warehouse["tables"].items() if v}


def test_access_answers_for_one_type_only(typed_shop: Path) -> None:
    with Platform.open(typed_shop) as platform:
        package = access(platform, "3", "dpo", subject_type="customer")
    tables = _tables(package)
    assert tables, package
    assert all("customer" in name for name in tables), tables
    emails = {row["email"] for rows in tables.values() for row in rows}
    assert emails == {"ada@example.com"}
    assert package["subject_type"] == "customer"
    assert package["online_store"] == {
        "customer_profile": [{"customer_id": 3, "email": "ada@example.com", "name": "Ada"}]
    }


def test_erasing_a_customer_leaves_the_employee_with_the_same_id(typed_shop: Path) -> None:
    with Platform.open(typed_shop) as platform:
        report = erase(platform, "12", "dpo", subject_type="customer")
        assert report.complete, report.as_json()
        assert _count(platform, 'raw."customers"', "customer_id", "12") == 0
        assert _count(platform, 'products."customer_profile"', "customer_id", "12") == 0
        assert _count(platform, 'raw."employees"', "employee_id", "12") == 1
        assert _count(platform, 'products."employee_directory"', "employee_id", "12") == 1
        assert platform.online.read("employee_directory", "12") is not None
        # the tombstone is the customer's: reloads and rebuilds keep employee 12
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
        assert _count(platform, 'raw."customers"', "customer_id", "12") == 0
        assert _count(platform, 'products."employee_directory"', "employee_id", "12") == 1
        assert platform.online.read("employee_directory", "12") is not None
        assert platform.online.read("customer_profile", "12") is None
        # the audit trail says which kind of person was erased
        record = next(r for _, r in platform.audit.records() if r.action == "erasure")
        assert record.detail["subject_type"] == "customer"


def test_a_subject_is_found_by_a_declared_lookup_column(typed_shop: Path) -> None:
    with Platform.open(typed_shop) as platform:
        package = access(platform, "ada@example.com", "dpo", subject_type="customer", by="email")
        assert package["subject"] == "3"
        with pytest.raises(NotFoundError):
            access(platform, "eve@shop.example", "dpo", subject_type="customer", by="email")
        with pytest.raises(BadRequestError, match="lookup"):
            access(platform, "Ada", "dpo", subject_type="customer", by="name")
        report = erase(platform, "max@shop.example", "dpo", subject_type="employee", by="email")
        assert report.complete
        assert _count(platform, 'raw."employees"', "employee_id", "12") == 0
        assert _count(platform, 'raw."customers"', "customer_id", "12") == 1


def test_a_type_is_required_when_the_project_has_several(typed_shop: Path) -> None:
    with Platform.open(typed_shop) as platform:
        with pytest.raises(BadRequestError, match="customer, employee"):
            access(platform, "3", "dpo")
        with pytest.raises(BadRequestError, match="unknown subject type"):
            erase(platform, "3", "dpo", subject_type="agent")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIDEGATE, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_requests_name_the_type(typed_shop: Path) -> None:
    missing = _cli("request", "access", "3", "-p", str(typed_shop))
    assert missing.returncode == 2, missing.stderr
    assert "--type" in missing.stderr
    assert "customer, employee" in missing.stderr
    assert "Traceback" not in missing.stderr
    found = _cli(
        "request",
        "access",
        "--type",
        "employee",
        "--by",
        "email",
        "eve@shop.example",
        "-p",
        str(typed_shop),
    )
    assert found.returncode == 0, found.stderr
    assert '"Eve"' in found.stdout
    assert '"Ada"' not in found.stdout
    erased = _cli(
        "request", "erase", "3", "--type", "customer", "--yes", "--json", "-p", str(typed_shop)
    )
    assert erased.returncode == 0, erased.stderr
    with Platform.open(typed_shop) as platform:
        assert _count(platform, 'raw."employees"', "employee_id", "3") == 1
        assert _count(platform, 'raw."customers"', "customer_id", "3") == 0


def test_the_http_subject_api_takes_the_type_and_a_lookup(typed_shop: Path) -> None:
    from starlette.testclient import TestClient

    from tidegate.api import create_app
    from tidegate.platform.keys import create_key

    with Platform.open(typed_shop) as platform:
        token = create_key(platform.meta, "dpo-tool", ["dpo"])[0]
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(create_app(platform), base_url="http://127.0.0.1") as client:
            untyped = client.get("/v1/subjects/3", headers=headers)
            assert untyped.status_code == 400, untyped.text
            assert "customer, employee" in untyped.json()["error"]["message"]
            found = client.get(
                "/v1/subjects/eve@shop.example?type=employee&by=email", headers=headers
            )
            assert found.status_code == 200, found.text
            assert found.json()["subject"] == "3"
            assert found.json()["subject_type"] == "employee"
            nobody = client.get(
                "/v1/subjects/eve@shop.example?type=customer&by=email", headers=headers
            )
            assert nobody.status_code == 404, nobody.text
            gone = client.delete("/v1/subjects/12?type=employee", headers=headers)
            assert gone.status_code == 200, gone.text
            assert gone.json()["subject_type"] == "employee"
        assert _count(platform, 'raw."customers"', "customer_id", "12") == 1
        assert _count(platform, 'raw."employees"', "employee_id", "12") == 0


def test_a_bare_subject_column_is_ambiguous_with_several_types(tmp_path: Path) -> None:
    from tidegate.errors import ConfigError
    from tidegate.project.loader import load_project

    from .conftest import typedshop

    root = typedshop.write_typed_project(tmp_path / "typed")
    source = root / "sources" / "employees.yml"
    source.write_text(
        source.read_text().replace(
            "subject: {column: employee_id, type: employee}", "subject: employee_id"
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_project(root)
    message = str(caught.value)
    assert "sources/employees.yml:6" in message
    assert "customer, employee" in message
    # one type marked default makes the short form mean it again
    policy = root / "policies" / "policy.yml"
    policy.write_text(
        policy.read_text().replace(
            "    lookup: [email]\npurposes", "    lookup: [email]\n    default: true\npurposes"
        )
    )
    assert load_project(root).sources["employees"].subject_type == "employee"


def test_an_unknown_type_or_lookup_column_is_a_config_error(tmp_path: Path) -> None:
    from tidegate.errors import ConfigError
    from tidegate.project.loader import load_project

    from .conftest import typedshop

    root = typedshop.write_typed_project(tmp_path / "typed")
    product = root / "products" / "customer_profile.yml"
    product.write_text(product.read_text().replace("type: customer}", "type: client}"))
    policy = root / "policies" / "policy.yml"
    policy.write_text(
        policy.read_text().replace("lookup: [email]\n  employee", "lookup: [phone]\n  employee")
    )
    with pytest.raises(ConfigError) as caught:
        load_project(root)
    message = str(caught.value)
    assert "unknown subject type 'client'" in message
    assert "products/customer_profile.yml" in message


def test_projects_without_types_keep_their_tombstones(tmp_path: Path) -> None:
    """The default type hashes as before types existed: erasures made then still hold."""
    from tidegate.privacy.tombstones import subject_hash, tombstones_of

    with Platform.open(Path(typed_shop_untyped(tmp_path))) as platform:
        tombstones = tombstones_of(platform)
        assert tombstones.default_type == "subject"
        assert tombstones.hash("12") == subject_hash(tombstones.key, "12")
        assert tombstones.hash("12", "subject") == subject_hash(tombstones.key, "12")


def typed_shop_untyped(tmp_path: Path) -> Path:
    from .conftest import typedshop

    root: Path = typedshop.write_typed_project(tmp_path / "untyped")
    policy = root / "policies" / "policy.yml"
    text = policy.read_text()
    policy.write_text(text[text.index("purposes:") :])
    for path in [*(root / "sources").glob("*.yml"), *(root / "products").glob("*.yml")]:
        body = path.read_text()
        for kind in ("customer", "employee"):
            body = body.replace(f", type: {kind}}}", "}")
        path.write_text(body)
    return root


def test_consent_of_a_customer_does_not_let_the_employee_with_that_id_out(
    typed_shop: Path,
) -> None:
    """The consent ledger is keyed by id and holds the default type's choices: customer
    3's newsletter grant must not admit employee 3's rows to a consent purpose."""
    import time

    from tidegate.privacy.consent import ConsentEvent, consent_ledger_of
    from tidegate.privacy.guard import AccessContext, guard_of

    policy = typed_shop / "policies" / "policy.yml"
    policy.write_text(
        policy.read_text()
        .replace(
            "    lookup: [email]\n  employee", "    lookup: [email]\n    default: true\n  employee"
        )
        .replace(
            "purposes:\n  support:",
            "purposes:\n  newsletter:\n    legal_basis: consent\n  support:",
        )
    )
    for product in ("customer_profile", "employee_directory"):
        path = typed_shop / "products" / f"{product}.yml"
        path.write_text(
            path.read_text().replace("purposes: [support]", "purposes: [support, newsletter]")
        )
    with Platform.open(typed_shop) as platform:
        consent_ledger_of(platform).record(
            [ConsentEvent("3", "newsletter", "grant", time.time(), "form")]
        )
        guard = guard_of(platform)
        context = AccessContext(principal="t", roles=(), purpose="newsletter")
        customers = guard.plan(context, "customer_profile", check_roles=False)
        employees = guard.plan(context, "employee_directory", check_roles=False)
        assert customers.admits({"customer_id": 3})
        assert not employees.admits({"employee_id": 3})
        support = AccessContext(principal="t", roles=(), purpose="support")
        assert guard.plan(support, "employee_directory", check_roles=False).admits(
            {"employee_id": 3}
        )
        package = access(platform, "3", "dpo", subject_type="employee")
        assert package["consent"]["history"] == []
        assert access(platform, "3", "dpo", subject_type="customer")["consent"]["history"]


STREAM = """
name: {name}
type: stream
event_id: event_id
subject: {{column: person_id, type: {kind}}}
columns:
  event_id: {{type: VARCHAR, nullable: false, classification: system.operations}}
  person_id: {{type: BIGINT, nullable: false, classification: user.unique_id}}
  note: {{type: VARCHAR, classification: user.name}}
"""


def test_erasing_a_customer_leaves_the_employees_events_in_the_log(typed_shop: Path) -> None:
    """The embedded log erases single records: only the named type's topics are
    touched, so employee 12's events outlive customer 12's erasure."""
    import json

    from tidegate.log.base import Message
    from tidegate.runtime.worker import StreamWorker

    for name, kind in (("customer_events", "customer"), ("employee_events", "employee")):
        (typed_shop / "sources" / f"{name}.yml").write_text(STREAM.format(name=name, kind=kind))
    with Platform.open(typed_shop) as platform:
        StreamWorker(platform).close()  # creates the topics and raw tables
        for topic in ("customer_events", "employee_events"):
            body = {"event_id": f"{topic}-1", "person_id": 12, "note": "seen"}
            platform.event_log.append(topic, [Message(b"12", json.dumps(body).encode())])
        report = erase(platform, "12", "dpo", subject_type="customer")
        assert report.complete, report.as_json()

        def held(topic: str) -> int:
            log = platform.event_log
            return sum(len(log.read(topic, p, 0)) for p in log.end_offsets(topic))

        assert held("customer_events") == 0
        assert held("employee_events") == 1
        touched = {s.location for s in report.systems if s.system == "event_log"}
        assert not any("employee_events" in t for t in touched)
