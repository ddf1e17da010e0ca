"""Real sync runs emit OpenLineage START then COMPLETE (or FAIL), valid against the schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tidegate.egress.sync import run_sync
from tidegate.errors import TidegateError
from tidegate.platform import Platform

from .conftest import add_observe
from .olschema import problems


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_sync_run_emits_start_and_complete(demo_copy: Path) -> None:
    add_observe(demo_copy, "  openlineage: {transport: file, path: lineage.jsonl}\n")
    with Platform.open(demo_copy) as platform:
        report = run_sync(platform, "crm_audience", full=True)
    events = [
        e for e in _events(demo_copy / "lineage.jsonl") if e["job"]["name"].startswith("sync.")
    ]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"]
    assert events[1]["job"]["name"] == "sync.crm_audience"
    assert report.added + report.changed > 0
    for event in events:
        assert problems(event) == []


def test_a_failing_sync_run_emits_fail(demo_copy: Path) -> None:
    add_observe(demo_copy, "  openlineage: {transport: file, path: lineage.jsonl}\n")
    sync = demo_copy / "syncs" / "crm_audience.yml"
    # a destination folder that cannot be created: the run fails
    (demo_copy / "blocked").write_text("a file, not a folder")
    sync.write_text(sync.read_text().replace("path: crm.db", "path: blocked/crm.db"))
    with Platform.open(demo_copy) as platform, pytest.raises((TidegateError, OSError)):
        run_sync(platform, "crm_audience")
    events = [
        e for e in _events(demo_copy / "lineage.jsonl") if e["job"]["name"].startswith("sync.")
    ]
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    for event in events:
        assert problems(event) == []


def test_no_transport_no_events(demo_copy: Path) -> None:
    with Platform.open(demo_copy) as platform:
        run_sync(platform, "crm_audience")
    assert not (demo_copy / ".tidegate" / "openlineage.jsonl").exists()
