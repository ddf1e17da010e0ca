"""Column lineage through a sync shows what really flows (issue 19 item 5).

A column the sync's purpose drops stops at the sync; a hashed one is marked hashed; every
destination shows its real location, in `tidegate lineage` and in OpenLineage events.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tidegate.cli import app
from tidegate.observe.lineage import build_graph
from tidegate.observe.openlineage import LineageEmitter
from tidegate.project import load_project

from .olschema import problems

DEMO = Path(__file__).resolve().parents[2] / "src" / "tidegate" / "demo" / "project"

# every column of customer_360 (phone, last_name, birth_date ...) under marketing.email
CRM_ALL = """\
name: crm_all
product: customer_360
purpose: marketing.email
destination: {type: sqlite, path: crm.db, table: contacts}
"""
# analytics hashes ids and emails and drops names; explicitly mapped
TO_FILE = """\
name: to_file
product: customer_360
purpose: analytics
destination: {type: file, path: exports/c360.parquet}
key: id
fields:
  id: customer_id
  email_token: email
  first_name: first_name
  city: city
"""


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    shutil.copytree(DEMO, root)
    (root / "syncs" / "crm_all.yml").write_text(CRM_ALL)
    (root / "syncs" / "to_file.yml").write_text(TO_FILE)
    return root


def test_a_dropped_column_stops_at_the_sync(tmp_path: Path) -> None:
    graph = build_graph(load_project(_project(tmp_path)))
    # marketing.email drops phone (user.contact.phone_number), last name and birth date
    down = graph.walk("customer_360.phone", "down")
    assert not [n for n in down if n.startswith("sync:")], down
    for column in ("phone", "last_name", "birth_date"):
        assert f"sync:crm_all.{column}" not in graph.upstream
    assert graph.upstream["sync:crm_all.email"] == {"customer_360.email": {"sync"}}
    # analytics drops names: the explicitly mapped first_name is not sent either
    assert "sync:to_file.first_name" not in graph.upstream
    assert not [n for n in graph.walk("customers.first_name", "down") if "to_file" in n]
    # ... while the source column still reaches the sync that may see it
    assert "sync:crm_audience.first_name" in graph.walk("customers.first_name", "down")


def test_a_hashed_column_is_marked_and_locations_are_real(tmp_path: Path) -> None:
    root = _project(tmp_path)
    graph = build_graph(load_project(root))
    assert graph.upstream["sync:to_file.email_token"] == {"customer_360.email": {"sync", "hash"}}
    assert graph.upstream["sync:to_file.city"] == {"customer_360.city": {"sync"}}
    # paths as the project's YAML gives them (relative to the project)
    assert (
        graph.labels["sync:to_file.email_token"] == "file:exports/c360.parquet.email_token (hashed)"
    )
    assert graph.labels["sync:to_file.city"] == "file:exports/c360.parquet.city"
    assert graph.labels["sync:crm_all.email"] == "sqlite:crm.db/contacts.email"


def test_cli_shows_treatments_and_paths(tmp_path: Path) -> None:
    root = _project(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["lineage", "customer_360.email", "-p", str(root), "--json"])
    assert result.exit_code == 0, result.output
    down = json.loads(result.output)["downstream"]
    edge = next(e for e in down if e["to"] == "sync:to_file.email_token")
    assert edge["kinds"] == ["hash", "sync"]
    labels = json.loads(result.output)["labels"]
    assert labels["sync:to_file.email_token"] == "file:exports/c360.parquet.email_token (hashed)"
    text = runner.invoke(app, ["lineage", "customer_360.phone", "-p", str(root)])
    assert text.exit_code == 0, text.output
    assert "crm.db" not in text.output
    assert "c360.parquet" not in text.output
    text = runner.invoke(app, ["lineage", "customer_360.email", "-p", str(root)])
    assert "c360.parquet.email_token (hashed)" in text.output
    assert "file:." not in text.output


class _Collect:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: Any) -> None:
        from openlineage.client.serde import Serde

        self.events.append(json.loads(Serde.to_json(event)))


def test_openlineage_sync_events_apply_the_purpose(tmp_path: Path) -> None:
    root = _project(tmp_path)
    transport = _Collect()
    emitter = LineageEmitter(load_project(root), transport=transport)
    emitter.sync_event("COMPLETE", "to_file", "01930000-0000-7000-8000-000000000001", rows=3)
    emitter.sync_event("COMPLETE", "crm_all", "01930000-0000-7000-8000-000000000002", rows=3)
    to_file, crm_all = transport.events
    for event in transport.events:
        assert problems(event) == []
    output = to_file["outputs"][0]
    assert (output["namespace"], output["name"]) == (
        "file",
        str((root / "exports" / "c360.parquet").resolve()),
    )
    fields = output["facets"]["columnLineage"]["fields"]
    assert sorted(fields) == ["city", "email_token", "id"]
    (email,) = fields["email_token"]["inputFields"]
    assert email["field"] == "email"
    assert email["transformations"] == [
        {"type": "DIRECT", "subtype": "TRANSFORMATION", "description": "hash", "masking": True}
    ]
    (city,) = fields["city"]["inputFields"]
    assert city["transformations"][0]["masking"] is False
    crm = crm_all["outputs"][0]
    crm_file = (root / "crm.db").resolve()
    assert (crm["namespace"], crm["name"]) == (f"sqlite://{crm_file}", "contacts")
    assert "phone" not in crm["facets"]["columnLineage"]["fields"]
    assert "email" in crm["facets"]["columnLineage"]["fields"]
