"""Fixtures for observe/: a webhook receiver on 127.0.0.1, a small project with bad rows."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tidegate.project.scaffold import scaffold

BAD_CUSTOMERS = (
    "customer_id,email,country,signed_up\n"
    "1,ada@example.com,GB,2024-01-15\n"
    "2,grace@example,US,2024-03-02\n"
    "3,,FI,2025-07-30\n"
    "4,dup@example.com,XX,2024-05-01\n"
    "5,dup@example.com,GB,2024-05-01\n"
)


class Webhook:
    """Collects the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.paths: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                hook.received.append(json.loads(self.rfile.read(length)))
                hook.paths.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def small_project(tmp_path: Path) -> Path:
    """The scaffolded landing zone with five customers, several of them breaking rules."""
    directory = tmp_path / "p"
    scaffold(directory, "shop")
    (directory / "data" / "customers.csv").write_text(BAD_CUSTOMERS)
    return directory


def add_observe(project: Path, block: str) -> None:
    """Append an `observe:` section to tidegate.yml."""
    path = project / "tidegate.yml"
    path.write_text(path.read_text() + "observe:\n" + block)
