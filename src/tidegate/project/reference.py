"""JSON Schema and the Markdown reference for every project file kind, from the models.

One source of truth: the Pydantic models in `models.py` decide what a file may hold, so
the editor schemas (`tidegate schema`, the `# yaml-language-server: $schema=` line at the
top of each scaffolded file) and `docs/reference.md` are generated from them, never
written by hand. The package ships the schemas (`project/schemas/*.schema.json`); a test
fails when they or the reference page are stale, and `make reference` (this module run
as a script) regenerates both.

The models accept a few shorthands before validation (`email: mask` for a treatment,
`name: first_name` for a sync field); the schemas allow them too, so a valid project
validates against its schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, cast

from pydantic import TypeAdapter

from tidegate.project.models import (
    PolicyFile,
    ProductConfig,
    ProjectConfig,
    SourceConfig,
    SyncConfig,
)

#: kind -> (model, where such files live, what they are)
KINDS: dict[str, tuple[object, str, str]] = {
    "project": (ProjectConfig, "tidegate.yml", "the project file: name, backends, defaults"),
    "source": (SourceConfig, "sources/*.yml", "where operational data comes from"),
    "product": (ProductConfig, "products/*.yml", "a data product: SQL plus its contract"),
    "policy": (PolicyFile, "policies/*.yml", "purposes, roles and treatments"),
    "sync": (SyncConfig, "syncs/*.yml", "product -> destination, through one purpose"),
}
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_file_name(kind: str) -> str:
    return f"{kind}.schema.json"


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one file kind."""
    model, where, what = KINDS[kind]
    adapter: TypeAdapter[Any] = TypeAdapter(cast(Any, model))  # a model or an Annotated union
    schema: dict[str, Any] = adapter.json_schema(mode="validation")
    _allow_shorthands(kind, schema)
    return {
        "$schema": SCHEMA_DIALECT,
        "title": f"tidegate {kind} file ({where})",
        "description": schema.get("description") or what,
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def _allow_shorthands(kind: str, schema: dict[str, Any]) -> None:
    defs = schema.get("$defs", {})
    if kind == "policy":
        treatment = defs["TreatmentSpec"]["properties"]["treatment"]
        _widen_values(schema["properties"]["treatments"]["additionalProperties"], treatment)
    if kind == "sync":
        column = {"type": "string", "description": "a product column, or a {template}"}
        _widen_values(schema["properties"]["fields"], column)


def _widen_values(mapping: dict[str, Any], alternative: dict[str, Any]) -> None:
    """Let each value of `mapping` also be `alternative` (the shorthand form)."""
    slots = [("additionalProperties", mapping)]
    slots += [(key, mapping["patternProperties"]) for key in mapping.get("patternProperties", {})]
    for key, holder in slots:
        if isinstance(holder.get(key), dict):
            holder[key] = {"anyOf": [holder[key], alternative]}


def all_schemas() -> dict[str, dict[str, Any]]:
    return {kind: json_schema(kind) for kind in KINDS}


def schema_text(kind: str) -> str:
    return json.dumps(json_schema(kind), indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    """Write `<kind>.schema.json` for every kind into `folder`; return the files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        target = folder / schema_file_name(kind)
        target.write_text(schema_text(kind), encoding="utf-8")
        written.append(target)
    return written


# ---------------------------------------------------------------- Markdown


def _type_of(node: dict[str, Any]) -> str:
    if "$ref" in node:
        return f"[{node['$ref'].rsplit('/', 1)[-1]}](#{_anchor(node['$ref'])})"
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    for combo in ("anyOf", "oneOf"):
        if combo in node:
            return " or ".join(_type_of(n) for n in node[combo])
    kind = node.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"mapping of name to {_type_of(node['additionalProperties'])}"
    return str(kind)


def _anchor(ref: str) -> str:
    return ref.rsplit("/", 1)[-1].lower()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _properties_table(node: dict[str, Any]) -> list[str]:
    required = set(node.get("required", []))
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for name, prop in node.get("properties", {}).items():
        default = ""
        if name in required:
            default = "*required*"
        elif "default" in prop:
            shown = json.dumps(prop["default"])
            default = f"`{shown}`" if len(shown) <= 40 else "*(the defaults of each key)*"
        rows.append(
            f"| `{name}` | {_cell(_type_of(prop))} | {_cell(default)} "
            f"| {_cell(prop.get('description', ''))} |"
        )
    return rows


def reference_markdown() -> str:
    """docs/reference.md: every key of every file kind, from the same schemas."""
    lines = [
        "# Project file reference",
        "",
        "<!-- Generated from the models by `make reference` "
        "(python -m tidegate.project.reference); do not edit. -->",
        "",
        "Every file of a project is checked against these models: an unknown key is an "
        "error naming the file, line and the valid keys. Editors that speak the YAML "
        "language server complete and check keys from the JSON Schemas that "
        "`tidegate schema --out schemas` writes (`tidegate init` does it for you).",
        "",
    ]
    seen: set[str] = set()
    for kind, (_, where, what) in KINDS.items():
        schema = json_schema(kind)
        lines += [f'<a id="{kind}"></a>', "", f"## {kind}: `{where}`", ""]
        lines += [f"{what[0].upper()}{what[1:]}.", ""]
        if "properties" in schema:
            lines += [*_properties_table(schema), ""]
        elif "oneOf" in schema:
            lines += [
                "One of (by `type`): "
                + ", ".join(_type_of(member) for member in schema["oneOf"])
                + ".",
                "",
            ]
        for name, node in sorted(schema.get("$defs", {}).items()):
            if name in seen or "properties" not in node:
                continue
            seen.add(name)
            lines += [f"### {name}", ""]
            if node.get("description"):
                lines += [_cell(node["description"]), ""]
            lines += [*_properties_table(node), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Regenerate the shipped schemas and docs/reference.md (run from a checkout)."""
    args = argv if argv is not None else sys.argv[1:]
    root = Path(__file__).resolve().parents[3]
    docs = Path(args[0]) if args else root / "docs" / "reference.md"
    for path in write_schemas(Path(__file__).resolve().parent / "schemas"):
        print(f"wrote {path}")
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(reference_markdown(), encoding="utf-8")
    print(f"wrote {docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
