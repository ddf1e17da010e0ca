"""The planner keeps batch every SQL shape a key-scoped recompute would get wrong, and
`tidegate explain` names the shape; the shapes it can keep incremental say how."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidegate.cli.app import app
from tidegate.products.planner import plan_project
from tidegate.project import load_project

_spec = importlib.util.spec_from_file_location(
    "tidegate_tests_deskproject", Path(__file__).with_name("deskproject.py")
)
assert _spec is not None
assert _spec.loader is not None
desk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(desk)

#: product SQL (keyed by agent_id) -> what `explain` must say forces batch
BATCH_SHAPES = {
    "whole_window": (
        "SELECT agent_id, rank() OVER (ORDER BY open_tickets) AS n FROM open_per_agent",
        "is a window over the whole result",
    ),
    "top_n": (
        "SELECT agent_id, open_tickets AS n FROM open_per_agent ORDER BY n DESC LIMIT 3",
        "LIMIT 3 picks rows by comparing all entities",
    ),
    "top_n_inside": (
        "WITH t AS (SELECT * FROM tickets ORDER BY ticket_id LIMIT 10)"
        " SELECT agent_id, count(*) AS n FROM t GROUP BY agent_id",
        "LIMIT 10 picks rows by comparing all entities",
    ),
    "random": (
        "SELECT agent_id, CAST(random() * 10 AS BIGINT) AS n FROM agents",
        "non-deterministic RANDOM()",
    ),
    "uuid": ("SELECT agent_id, length(CAST(uuid() AS VARCHAR)) AS n FROM agents", "UUID()"),
    "clock": (
        "SELECT agent_id, count(*) FILTER (WHERE at > epoch(now()) - 3600) AS n"
        " FROM ticket_events GROUP BY agent_id",
        "reads the clock (NOW())",
    ),
    "join_off_key": (
        "SELECT t.agent_id, count(*) AS n FROM tickets AS t"
        " JOIN ticket_events AS e ON e.ticket_id = t.ticket_id GROUP BY t.agent_id",
        "JOIN ticket_events AS e ON e.ticket_id = t.ticket_id does not match 'agent_id'",
    ),
    "computed_key": (
        "SELECT agent_id + 1 AS agent_id, 1 AS n FROM agents",
        "agent_id + 1 AS agent_id computes the key",
    ),
    "global_aggregate": (
        "SELECT agent_id, (SELECT count(*) FROM tickets) AS n FROM agents",
        "COUNT(*) aggregates over all rows",
    ),
    "grouped_over_a_join": (
        "WITH x AS (SELECT t.ticket_id, max(t.agent_id) AS agent_id FROM tickets AS t"
        " JOIN agents AS a ON a.agent_id = t.agent_id GROUP BY t.ticket_id)"
        " SELECT agent_id, count(*) AS n FROM x GROUP BY agent_id",
        "GROUP BY groups rows of different 'agent_id' values by t.ticket_id (in 'x')",
    ),
    "grouped_by_position_off_key": (
        "WITH s AS (SELECT status, count(*) AS k FROM tickets AS t, agents AS a GROUP BY 1)"
        " SELECT a.agent_id, count(*) AS n FROM agents AS a JOIN s ON s.k = a.agent_id"
        " GROUP BY a.agent_id",
        "GROUP BY groups rows of different 'agent_id' values by status (in 's')",
    ),
    "distinct_without_key": (
        "WITH s AS (SELECT DISTINCT status FROM tickets)"
        " SELECT a.agent_id, count(*) AS n FROM agents AS a, s GROUP BY a.agent_id",
        "SELECT DISTINCT without 'agent_id' (in 's') merges rows of different keys",
    ),
}


def _add(root: Path, name: str, sql: str) -> None:
    (root / "products" / f"{name}.yml").write_text(
        f"name: {name}\nowner: t\nkey: agent_id\nfreshness: 1s\npurposes: [support]\n"
        f'sql: "{sql}"\n'
        "columns: {agent_id: {type: BIGINT, nullable: false, classification: none},"
        " n: {type: BIGINT, classification: none}}\n"
    )


@pytest.fixture
def desk_root(tmp_path: Path) -> Path:
    root: Path = desk.write_desk_project(tmp_path / "desk")
    for name, (sql, _) in BATCH_SHAPES.items():
        _add(root, name, sql)
    # grouped by the key, spelled by position and by ALL: incremental
    _add(root, "by_position", "SELECT agent_id, count(*) AS n FROM calls GROUP BY 1")
    _add(root, "by_all", "SELECT agent_id, count(*) AS n FROM calls GROUP BY ALL")
    return root


def test_each_shape_that_breaks_key_scoped_recompute_stays_batch(desk_root: Path) -> None:
    plans = plan_project(load_project(desk_root))
    for name, (_, reason) in BATCH_SHAPES.items():
        assert plans[name].mode == "batch", name
        assert reason in plans[name].explain(), (name, plans[name].explain())
    assert plans["top_agents"].mode == "batch"
    for name in ("open_per_agent", "agent_desk", "busy_agents"):
        assert plans[name].mode == "incremental", plans[name].explain()
        assert plans[name].closures == {}
    for name in ("by_position", "by_all"):
        assert plans[name].mode == "incremental", plans[name].explain()
    events = plans["open_from_events"]
    assert events.mode == "incremental"
    assert events.closures == {"ticket_events": (("ticket_id",),)}
    assert "sharing its ticket_id" in events.explain()


def test_explain_names_the_shape_that_forces_batch(desk_root: Path) -> None:
    result = CliRunner().invoke(app, ["explain", "--project", str(desk_root)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert "top_agents: batch (freshness 1s)" in text
    assert "LIMIT 2 picks rows by comparing all entities" in text
    for _, reason in BATCH_SHAPES.values():
        assert " ".join(reason.split()) in text, reason
    assert "open_from_events: incremental (freshness 1s)" in text
    assert "also recomputes the 'agent_id' of every ticket_events row sharing its ticket_id" in text
