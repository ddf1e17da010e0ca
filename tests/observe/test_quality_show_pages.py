"""`quality show PRODUCT CHECK` pages through the kept failing rows and always says which
rows of how many it shows, and when rows were not kept at all (issue 19 item 6)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tidegate.cli import app
from tidegate.platform import Platform
from tidegate.products.builder import build_products, load_sources

from .conftest import add_observe

# one failing row per customer: all five have an id above 0
CHECK = "checks:\n  - {type: range, name: never, column: customer_id, max: 0, severity: warn}\n"


def _built(project: Path, kept: int | None = None) -> None:
    path = project / "products" / "customer_profile.yml"
    path.write_text(path.read_text() + CHECK)
    if kept is not None:
        add_observe(project, f"  failing_rows_kept: {kept}\n")
    with Platform.open(project) as platform:
        load_sources(platform)
        build_products(platform)


def _show(project: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["quality", "show", "customer_profile", "never", "-p", str(project), *args]
    )
    return result.exit_code, result.output


def test_pages_say_where_they_are(small_project: Path) -> None:
    _built(small_project)
    code, first = _show(small_project, "--limit", "2")
    assert code == 0, first
    assert "5 failing rows" in first
    assert "showing rows 1-2 of 5 kept" in first
    assert "next page: --offset 2 --limit 2" in first
    code, last = _show(small_project, "--limit", "2", "--offset", "4")
    assert "showing rows 5-5 of 5 kept" in last
    assert "next page" not in last
    code, past = _show(small_project, "--offset", "9")
    assert code == 0
    assert "showing 0 of 5 kept (--offset 9 is past the end)" in past
    code, raw = _show(small_project, "--limit", "2", "--offset", "2", "--json")
    page = json.loads(raw)
    assert (page["failing_rows"], page["kept"], page["offset"], page["next_offset"]) == (5, 5, 2, 4)
    # every page together: each failing row once, in the same order
    ids = []
    for offset in (0, 2, 4):
        _, text = _show(small_project, "--limit", "2", "--offset", str(offset), "--json")
        ids += [row["customer_id"] for row in json.loads(text)["rows"]]
    assert sorted(ids) == [1, 2, 3, 4, 5]
    assert len(ids) == 5


def test_rows_beyond_the_kept_ones_are_announced(small_project: Path) -> None:
    _built(small_project, kept=3)
    code, text = _show(small_project, "--limit", "10")
    assert code == 0, text
    assert "showing rows 1-3 of 3 kept" in text
    assert "only the first 3 of 5 failing rows were kept" in text
    assert "observe.failing_rows_kept" in text


def test_a_bad_page_is_a_usage_error(small_project: Path) -> None:
    _built(small_project)
    assert _show(small_project, "--limit", "0")[0] == 2
    assert _show(small_project, "--offset", "-1")[0] == 2
