"""A real HTTP "CRM" for the HTTP destination: a local server that applies what it receives.

It speaks the protocol in `tidegate.egress.destinations.http.protocol`: applies upserts,
inserts, updates and deletes to the rows it holds, answers per-row errors in a 2xx body
(an insert of a key it holds, or a row `reject` refuses), replays the stored answer for
an `Idempotency-Key` it has seen, and records every request with its arrival time.
Tests can script the next answers (e.g. a 429 with `Retry-After`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tidegate.privacy.consent import consent_ledger_of


@dataclass
class Request:
    at: float
    operation: str
    count: int
    idempotency_key: str
    authorization: str


@dataclass
class CrmApi:
    url: str = ""
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    replays: int = 0
    script: deque[tuple[int, dict[str, str], str]] = field(default_factory=deque)
    reject: Callable[[dict[str, Any]], str | None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _answers: dict[str, tuple[int, str]] = field(default_factory=dict)

    def handle(self, headers: Any, raw: bytes) -> tuple[int, dict[str, str], str]:
        payload = json.loads(raw)
        operation = payload["operation"]
        items = payload.get("keys" if operation == "delete" else "rows", [])
        idem = headers.get("Idempotency-Key", "")
        with self.lock:
            self.requests.append(
                Request(
                    time.monotonic(),
                    operation,
                    len(items),
                    idem,
                    headers.get("Authorization", ""),
                )
            )
            if self.script:
                return self.script.popleft()
            if idem and idem in self._answers:
                self.replays += 1
                status, body = self._answers[idem]
                return status, {}, body
            errors, updated, missing = self._apply(payload, operation, items)
            answer = {"errors": errors, "updated": updated, "missing": missing}
            status, body = 200, json.dumps(answer)
            if idem:
                self._answers[idem] = (status, body)
            return status, {}, body

    def _apply(
        self, payload: dict[str, Any], operation: str, items: list[Any]
    ) -> tuple[list[Any], list[int], list[int]]:
        """Apply a request; (row errors, indexes it updated, indexes an update missed)."""
        key = payload["key"]
        errors: list[Any] = []
        updated: list[int] = []
        missing: list[int] = []
        if operation == "delete":
            for k in items:
                self.rows.pop(str(k), None)
            return errors, updated, missing
        for index, row in enumerate(items):
            k = str(row[key])
            refusal = self.reject(row) if self.reject else None
            if refusal:
                errors.append({"index": index, "message": refusal})
            elif operation == "insert" and k in self.rows:
                errors.append({"index": index, "message": f"duplicate key {k}"})
            elif operation == "update" and k not in self.rows:
                missing.append(index)
            else:
                if k in self.rows:
                    updated.append(index)
                self.rows[k] = row
        return errors, updated, missing

    def held(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.rows.values())


@pytest.fixture
def crm_server() -> Iterator[CrmApi]:
    api = CrmApi()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, headers, body = api.handle(self.headers, raw)
            data = body.encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}/v1/sync"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# ---------------------------------------------------------------- a webhook that records


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- a small people project

PROJECT = """\
name: people_project
defaults: {sync_batch_rows: 1000}
"""
SOURCE = """\
name: people_src
type: file
path: data/people.parquet
key: id
subject: id
columns:
  id: {type: BIGINT, classification: user.unique_id}
  first_name: {type: VARCHAR, classification: user.name}
  last_name: {type: VARCHAR, classification: user.name}
  email: {type: VARCHAR, classification: user.contact.email}
  score: {type: DOUBLE, classification: none}
"""
PRODUCT = """\
name: people
owner: crm-team
sql: SELECT id, first_name, last_name, email, score FROM people_src
key: id
subject: id
purposes: [crm, ops]
columns:
  id: {type: BIGINT, classification: user.unique_id}
  first_name: {type: VARCHAR, classification: user.name}
  last_name: {type: VARCHAR, classification: user.name}
  email: {type: VARCHAR, classification: user.contact.email}
  score: {type: DOUBLE, classification: none}
"""
POLICY = """\
purposes:
  crm: {legal_basis: consent}
  ops: {legal_basis: contract}
treatments:
  "*":
    user: clear
default_treatment: clear
"""


class PeopleProject:
    """A project with one source and one product (`people`) whose rows a test sets."""

    def __init__(self, root: Any) -> None:
        self.root = root
        for folder in ("sources", "products", "policies", "syncs", "data"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / "tidegate.yml").write_text(PROJECT)
        (root / "sources" / "people_src.yml").write_text(SOURCE)
        (root / "products" / "people.yml").write_text(PRODUCT)
        (root / "policies" / "policy.yml").write_text(POLICY)

    @staticmethod
    def row(i: int, **changes: Any) -> dict[str, Any]:
        base = {
            "id": i,
            "first_name": f"First{i}",
            "last_name": f"Last{i}",
            "email": f"p{i}@example.com",
            "score": float(i),
        }
        return base | changes

    def set_rows(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema(
            [
                ("id", pa.int64()),
                ("first_name", pa.string()),
                ("last_name", pa.string()),
                ("email", pa.string()),
                ("score", pa.float64()),
            ]
        )
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), self.root / "data/people.parquet")

    def sync(self, name: str, body: str) -> None:
        (self.root / "syncs" / f"{name}.yml").write_text(f"name: {name}\nproduct: people\n{body}")

    def build(self) -> None:
        from tidegate.platform import Platform
        from tidegate.products.builder import build_products, load_sources

        with Platform.open(self.root) as platform:
            load_sources(platform)
            results = build_products(platform)
            assert all(r.status == "live" for r in results), results

    def grant(self, platform: Any, subjects: list[int], purpose: str = "crm") -> None:
        from tidegate.privacy.consent import ConsentEvent

        now = time.time()
        consent_ledger_of(platform).record(
            [ConsentEvent(str(s), purpose, "grant", now) for s in subjects]
        )

    def revoke(self, platform: Any, subjects: list[int], purpose: str = "crm") -> None:
        from tidegate.privacy.consent import ConsentEvent

        now = time.time()
        consent_ledger_of(platform).record(
            [ConsentEvent(str(s), purpose, "revoke", now) for s in subjects]
        )


@pytest.fixture
def people(tmp_path: Any) -> PeopleProject:
    return PeopleProject(tmp_path / "people")
