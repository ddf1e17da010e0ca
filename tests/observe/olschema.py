"""Validate OpenLineage events against the official JSON Schemas vendored in
tests/observe/schemas/openlineage (see SOURCE.md there).

Every schema file is loaded into a `referencing` registry under its `$id` (their `$ref`s
are absolute URLs); an event is validated as a RunEvent, and every facet in it (any
object with a `_schemaURL`) against the schema its own URL names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SPECS = Path(__file__).resolve().parent / "schemas" / "openlineage"
RUN_EVENT = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


def _registry() -> Any:
    from referencing import Registry, Resource

    if not (SPECS / "OpenLineage.json").is_file():
        pytest.fail(
            f"the OpenLineage schemas are missing: expected {SPECS.resolve()} "
            "(vendored in the repository)",
            pytrace=False,
        )
    resources = []
    for path in [SPECS / "OpenLineage.json", *sorted((SPECS / "facets").glob("*.json"))]:
        document = json.loads(path.read_text())
        resources.append((document["$id"], Resource.from_contents(document)))
    return Registry().with_resources(resources)


_REGISTRY: Any = None


def _facets(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if "_schemaURL" in node:
            found.append(node)
        for value in node.values():
            found += _facets(value)
    elif isinstance(node, list):
        for value in node:
            found += _facets(value)
    return found


def problems(event: dict[str, Any]) -> list[str]:
    """Every schema violation in `event` (empty when it validates)."""
    from jsonschema import Draft202012Validator

    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _registry()
    out = []
    checks = [(RUN_EVENT, event)] + [(f["_schemaURL"], f) for f in _facets(event)]
    for url, instance in checks:
        try:
            validator = Draft202012Validator({"$ref": url}, registry=_REGISTRY)
            out += [
                f"{url}: {e.message} at {list(e.absolute_path)}"
                for e in validator.iter_errors(instance)
            ]
        except Exception as err:  # an unresolvable _schemaURL is a failure too
            out.append(f"{url}: {type(err).__name__}: {err}")
    return out
