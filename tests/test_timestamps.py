"""One timestamp format wherever a person or a file sees one (issue 19 item 6).

Every time-looking string in a file destination's CSV and JSON lines, the serving API's
JSON, the access package, an erasure report and CLI tables must be ISO 8601 in UTC with
`+00:00` (`tidegate.timestamps.TIMESTAMP_PATTERN`), never `2026-01-01 10:00:00`,
`…Z` or a bare epoch number for a recorded time.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from starlette.testclient import TestClient
from typer.testing import CliRunner

from tidegate.api import create_app
from tidegate.cli import app
from tidegate.egress.sync import run_sync
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.requests.subject_access import access
from tidegate.timestamps import TIMESTAMP_PATTERN, format_timestamp

#: anything that looks like a date with a time of day, in any of the usual spellings
LOOSE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")


def _agree(text: str, where: str) -> int:
    found = LOOSE.findall(text)
    wrong = [t for t in found if not TIMESTAMP_PATTERN.fullmatch(t)]
    assert not wrong, f"{where}: {wrong[:5]}"
    return len(found)


def test_the_helper() -> None:
    helsinki = dt.datetime(2026, 3, 1, 12, 30, 5, tzinfo=ZoneInfo("Europe/Helsinki"))
    assert format_timestamp(helsinki) == "2026-03-01T10:30:05+00:00"
    assert format_timestamp(dt.datetime(2026, 3, 1, 10, 30, 5, 250000)) == (
        "2026-03-01T10:30:05.250000+00:00"
    )
    assert format_timestamp(1_767_225_600.75) == "2026-01-01T00:00:00+00:00"
    assert format_timestamp(None) is None
    for value in (helsinki, 0, 1e9):
        assert TIMESTAMP_PATTERN.fullmatch(str(format_timestamp(value)))


FILE_SYNC = """\
name: {name}
product: customer_360
purpose: support
destination: {{type: file, path: out/{name}.{fmt}}}
mode: mirror
trigger: manual
fields:
  customer_id: customer_id
  signed_up_at: signed_up_at
  last_activity_at: last_activity_at
"""


def test_every_output_agrees(demo_copy: Path) -> None:
    for fmt in ("csv", "jsonl"):
        name = f"times_{fmt}"
        (demo_copy / "syncs" / f"{name}.yml").write_text(FILE_SYNC.format(name=name, fmt=fmt))
    with Platform.open(demo_copy) as platform:
        for fmt in ("csv", "jsonl"):
            run_sync(platform, f"times_{fmt}", full=True)
        package = access(platform, "42", "test")
        token = create_key(platform.meta, "desk", ["support_agent"])[0]
        with TestClient(create_app(platform), base_url="http://127.0.0.1") as client:
            served = client.get(
                "/v1/products/customer_360/entities/42",
                headers={"Authorization": f"Bearer {token}", "X-Purpose": "support"},
            )
    assert served.status_code == 200, served.text
    counts = {
        "csv": _agree((demo_copy / "out" / "times_csv.csv").read_text(), "csv"),
        "jsonl": _agree((demo_copy / "out" / "times_jsonl.jsonl").read_text(), "jsonl"),
        "api": _agree(served.text, "API JSON"),
        "access package": _agree(json.dumps(package), "access package"),
    }
    assert all(counts.values()), counts
    assert isinstance(package["generated_at"], str)
    assert all(isinstance(h["occurred_at"], str) for h in package["consent"]["history"])
    runner = CliRunner()
    history = runner.invoke(app, ["sync", "history", "times_csv", "-p", str(demo_copy)])
    assert history.exit_code == 0, history.output
    assert _agree(history.output, "sync history") >= 1  # a time column never wraps
    status = runner.invoke(app, ["status", "-p", str(demo_copy)])
    assert status.exit_code == 0, status.output
    _agree(status.output, "status")


def test_log_lines_use_it_too() -> None:
    import logging

    from tidegate.cli.app import _LogFormatter

    record = logging.LogRecord("tidegate.x", logging.INFO, __file__, 1, "built %s", ("p",), None)
    record.created = 1_767_225_600.5
    line = _LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(record)
    assert line == "2026-01-01T00:00:00+00:00 INFO tidegate.x: built p"
