"""Security headers, CORS, and injection attempts in path, query, headers and JSON body:
none of them has any effect (data unchanged, no 5xx, audit chain intact)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import sqlite3
from pathlib import Path

import httpx
import pytest

from tidegate.api import create_app
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.platform import Platform
from tidegate.platform.keys import create_key

from .conftest import Served

ATTACKS = [
    "1' OR '1'='1",
    "1; DROP TABLE entities; --",
    "1 UNION SELECT value FROM entities",
    "../../../../etc/passwd",
    "..%2f..%2f.tidegate%2fmetadata.db",
    "%00",
    "1%0d%0aSet-Cookie:%20pwned=1",
    "\u0661",  # an Arabic-Indic digit one
    "\U0001d7d9",  # a double-struck digit one
    "ﬁ",
    "<script>alert(1)</script>",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "9" * 10_000,
]


def _state(platform: Platform) -> tuple[object, ...]:
    root = platform.project.root / ".tidegate"
    with sqlite3.connect(root / "online.db") as online:
        entities = online.execute("SELECT count(*), sum(length(value)) FROM entities").fetchone()
    with sqlite3.connect(root / "metadata.db") as meta:
        consent = meta.execute("SELECT count(*) FROM consent_ledger").fetchone()
        keys = meta.execute("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL").fetchone()
    return entities, consent, keys


def test_injection_attempts_have_no_effect(served: Served) -> None:
    platform = served.platform
    token, _ = create_key(platform.meta, "probe", ["support_agent"])
    auth = {"Authorization": f"Bearer {token}", "X-Purpose": "support"}
    platform.audit.flush()
    before = _state(platform)
    ada = served.client.get("/v1/products/customer_360/entities/1", headers=auth).json()
    statuses: list[int] = []
    for attack in ATTACKS:
        for path in (
            f"/v1/products/customer_360/entities/{attack}",
            f"/v1/products/{attack}/entities/1",
            f"/v1/products/{attack}",
            f"/v1/products/customer_360/entities/1?key={attack}&purpose={attack}",
        ):
            response = served.client.get(path, headers=auth)
            statuses.append(response.status_code)
            assert "set-cookie" not in response.headers
            assert "pwned" not in str(response.headers)
        for purpose in (attack[:500], "support' OR '1'='1", "support,analytics"):
            headers = {"Authorization": f"Bearer {token}", "X-Purpose": purpose}
            try:
                response = served.client.get(
                    "/v1/products/customer_360/entities/1", headers=headers
                )
            except (httpx.LocalProtocolError, UnicodeEncodeError):
                continue  # the client itself refuses to send it
            statuses.append(response.status_code)
            assert response.status_code in (403, 400) or purpose == "support"
        bad_token = {"Authorization": f"Bearer tg_{attack[:200]}_x", "X-Purpose": "support"}
        with contextlib.suppress(httpx.LocalProtocolError, UnicodeEncodeError):
            statuses.append(
                served.client.get(
                    "/v1/products/customer_360/entities/1", headers=bad_token
                ).status_code
            )
        response = served.client.post(
            "/v1/products/customer_360/lookup", json={"keys": [attack[:256]]}, headers=auth
        )
        statuses.append(response.status_code)
        if response.status_code == 200:
            assert response.json()["results"] == [{"key": attack[:256], "found": False}]
    assert all(s < 500 for s in statuses), statuses
    assert served.client.get("/v1/products/customer_360/entities/1", headers=auth).json() == ada
    platform.audit.flush()
    assert _state(platform) == before
    assert platform.audit.verify() == []


def _raw_request(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_header_splitting_is_not_possible(served: Served) -> None:
    token, _ = create_key(served.platform.meta, "raw", ["support_agent"])
    answer = _raw_request(
        served.base,
        b"GET /v1/products/customer_360/entities/1 HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"X-Purpose: support\r\nX-Injected: yes\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200")
    bare_cr = _raw_request(
        served.base,
        b"GET /v1/products/customer_360/entities/1 HTTP/1.1\r\nHost: x\r\n"
        b"X-Purpose: support\rSet-Cookie: pwned=1\r\nConnection: close\r\n\r\n",
    )
    assert b"pwned" not in bare_cr.split(b"\r\n\r\n")[0]
    assert not bare_cr.startswith(b"HTTP/1.1 5")


@pytest.mark.parametrize(
    "path",
    ["/v1/products", "/v1/products/customer_360/entities/1", "/v1/nowhere", "/openapi.json"],
)
def test_security_headers_on_every_answer(served: Served, path: str) -> None:
    token, _ = create_key(served.platform.meta, "hdr", ["support_agent"])
    for headers in ({}, {"Authorization": f"Bearer {token}", "X-Purpose": "support"}):
        response = served.client.get(path, headers=headers)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["content-type"].startswith("application/json")


def test_cors_is_off_by_default(served: Served) -> None:
    response = served.client.options(
        "/v1/products",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers
    plain = served.client.get("/v1/products", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_cors_allows_only_the_configured_origins(demo_dir: Path, tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    shutil.copytree(demo_dir, shop)
    config = shop / "tidegate.yml"
    config.write_text(
        config.read_text().replace(
            "  port: 8787\n", "  port: 8787\n  cors_origins: [https://app.example]\n"
        )
    )
    with Platform.open(shop) as platform:
        server = BackgroundServer(create_app(platform), _free_port(0))
        server.start()
        try:
            base = f"http://127.0.0.1:{server.port}"
            good = httpx.options(
                base + "/v1/products",
                headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
            )
            assert good.headers["access-control-allow-origin"] == "https://app.example"
            bad = httpx.get(base + "/v1/products", headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in bad.headers
        finally:
            server.stop()


def test_methods_and_unknown_paths_answer_json(served: Served) -> None:
    wrong = served.client.delete("/v1/products/customer_360/entities/1")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    missing = served.client.get("/v1/../../etc/passwd")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
