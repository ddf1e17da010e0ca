"""The JSON Schemas and docs/reference.md are generated from the models and stay fresh;
every example project validates against the schemas, and a typo does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from tidegate.project.reference import KINDS, reference_markdown, schema_file_name, schema_text
from tidegate.project.scaffold import scaffold

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "tidegate"
SHIPPED = PACKAGE / "project" / "schemas"
TIDEGATE = str(Path(sys.executable).with_name("tidegate"))
STALE = "stale: run `make reference` and commit the result"


@pytest.mark.parametrize("kind", list(KINDS))
def test_shipped_schema_is_generated_from_the_models(kind: str) -> None:
    assert (SHIPPED / schema_file_name(kind)).read_text() == schema_text(kind), STALE


def test_reference_page_is_generated_from_the_models() -> None:
    assert (ROOT / "docs" / "reference.md").read_text() == reference_markdown(), STALE


def _kind(relative: Path) -> str | None:
    if relative.name == "tidegate.yml":
        return "project"
    folder = relative.parts[0] if len(relative.parts) > 1 else ""
    return {"sources": "source", "products": "product", "policies": "policy", "syncs": "sync"}.get(
        folder
    )


def _examples(tmp: Path) -> list[Path]:
    scaffolded = tmp / "scaffold"
    scaffold(scaffolded, "sales")
    return [PACKAGE / "demo" / "project", PACKAGE / "demo" / "live", scaffolded]


def _validators(folder: Path) -> dict[str, Draft202012Validator]:
    return {
        kind: Draft202012Validator(json.loads((folder / schema_file_name(kind)).read_text()))
        for kind in KINDS
    }


def test_tidegate_schema_output_validates_every_example_project(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    written = subprocess.run(
        [TIDEGATE, "schema", "--out", str(out)], capture_output=True, text=True, check=False
    )
    assert written.returncode == 0, written.stderr
    validators = _validators(out)
    checked = 0
    for project in _examples(tmp_path):
        for path in sorted(project.rglob("*.y*ml")):
            kind = _kind(path.relative_to(project))
            if kind is None:
                continue
            document: Any = yaml.safe_load(path.read_text())
            errors = [e.message for e in validators[kind].iter_errors(document)]
            assert errors == [], f"{path}: {errors}"
            checked += 1
    assert checked >= 20


def test_a_typo_does_not_validate(tmp_path: Path) -> None:
    validators = _validators(SHIPPED)
    sync = {
        "name": "s",
        "product": "p",
        "purpose": "support",
        "destination": {"type": "postgres", "dsn_env": "X", "tabel": "t"},
    }
    assert list(validators["sync"].iter_errors(sync)) != []
    sync["destination"] = {"type": "postgres", "dsn_env": "X", "table": "t"}
    assert list(validators["sync"].iter_errors(sync)) == []


def test_scaffolded_yaml_points_editors_at_schemas_that_exist(tmp_path: Path) -> None:
    target = tmp_path / "p"
    scaffold(target)
    yamls = sorted(target.rglob("*.yml"))
    assert yamls
    for path in yamls:
        first = path.read_text().splitlines()[0]
        prefix = "# yaml-language-server: $schema="
        assert first.startswith(prefix), path
        schema = (path.parent / first[len(prefix) :]).resolve()
        assert schema.is_file(), f"{path}: {schema}"
        assert schema.name == schema_file_name(_kind(path.relative_to(target)) or "")
