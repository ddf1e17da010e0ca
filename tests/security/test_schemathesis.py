"""schemathesis against the published OpenAPI of a running API on the demo data: no 5xx,
every response (status, content type, headers, body) as the document declares, invalid
input refused, credentials not ignored. Bounded: a fixed seed and example count."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tidegate.platform.keys import create_key

from .conftest import Served

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "ignored_auth",
    ]
)


def test_schemathesis_finds_no_failure(served: Served, tmp_path: Path) -> None:
    token, _ = create_key(served.platform.meta, "fuzzer", ["privacy_officer"])
    before = served.last_seq()
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{served.base}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--max-examples",
        "25",
        "--seed",
        "20261123",
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--suppress-health-check",
        "all",
        "--no-color",
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "No issues found" in output or "passed" in output, output[-3000:]
    assert token not in str(served.audit_since(before))
    assert served.platform.audit.verify() == []
