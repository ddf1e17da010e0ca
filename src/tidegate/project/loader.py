"""Read a project folder into typed models, collecting every problem instead of the first.

A person fixing a project wants the whole list at once, each with `file:line`, so the
loader never stops at the first error: it parses every file, validates each against
its model, and then runs the cross-file checks in `checks.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from tidegate.errors import ConfigError, Problem
from tidegate.project.models import (
    FieldError,
    PolicyFile,
    ProductConfig,
    ProjectConfig,
    SourceConfig,
    SyncConfig,
)
from tidegate.project.policies import policy_digest
from tidegate.project.project import Policy, Product, Project, Source, Sync
from tidegate.project.subjects import resolve_subject_types
from tidegate.project.suggest import unknown_key_message
from tidegate.project.yamlfile import LocatedDocument, YamlSyntaxError, load_yaml

PROJECT_FILE = "tidegate.yml"
FOLDERS = ("sources", "products", "policies", "syncs")
ENV_PREFIX = "TIDEGATE__"

M = TypeVar("M", bound=BaseModel)
_SOURCE_ADAPTER: TypeAdapter[Any] = TypeAdapter(SourceConfig)


def load_project(
    root: str | Path, *, check: bool = True, require_classified: bool = True
) -> Project:
    """Load and validate the project at `root`; raise ConfigError listing every problem.

    `require_classified=False` skips only the check that every product column is
    classified (for `tidegate classify`, which exists to fill them in)."""
    root = Path(root).resolve()
    problems: list[Problem] = []
    if not (root / PROJECT_FILE).is_file():
        raise ConfigError(
            [Problem(str(root / PROJECT_FILE), 0, "", "no tidegate.yml here: not a project")],
            root,
        )
    reader = _Reader(root, problems)
    config_doc = reader.read(root / PROJECT_FILE)
    config = None
    if config_doc is not None:
        _apply_env_overrides(config_doc)
        config = reader.validate(config_doc, ProjectConfig)

    project = Project(root=root, config=config or ProjectConfig(name="invalid"))
    for path in _yaml_files(root / "sources"):
        doc = reader.read(path)
        if doc is None:
            continue
        model = reader.validate_adapter(doc, _SOURCE_ADAPTER, SourceConfig)
        if model is not None:
            reader.add_unique(project.sources, model.name, Source(model, doc), doc, "source")
    for path in _yaml_files(root / "products"):
        doc = reader.read(path)
        if doc is None:
            continue
        product = reader.validate(doc, ProductConfig)
        if product is None:
            continue
        sql, sql_path, sql_line = _product_sql(product, doc, problems)
        if sql is None:
            continue
        entry = Product(product, doc, sql=sql, sql_path=sql_path, sql_first_line=sql_line)
        reader.add_unique(project.products, product.name, entry, doc, "product")
    policy_files: list[tuple[PolicyFile, LocatedDocument]] = []
    for path in _yaml_files(root / "policies"):
        doc = reader.read(path)
        if doc is None:
            continue
        policy_file = reader.validate(doc, PolicyFile)
        if policy_file is not None:
            policy_files.append((policy_file, doc))
    project.policy = Policy.merge(policy_files, problems)
    project.policy.digest = policy_digest(root)
    problems.extend(resolve_subject_types(project))
    for path in _yaml_files(root / "syncs"):
        doc = reader.read(path)
        if doc is None:
            continue
        sync = reader.validate(doc, SyncConfig)
        if sync is not None:
            reader.add_unique(project.syncs, sync.name, Sync(sync, doc), doc, "sync")

    if check and not problems:
        from tidegate.project.checks import check_project

        problems.extend(check_project(project, require_classified=require_classified))
    if problems or config is None:
        raise ConfigError(problems, root)
    return project


def _yaml_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])


def _product_sql(
    product: ProductConfig, doc: LocatedDocument, problems: list[Problem]
) -> tuple[str | None, str, int]:
    if product.sql:
        # Inline SQL under `sql: |` starts on the line after the key; `sql: SELECT ...` on it.
        first_line = doc.text_lines.get(("sql",), doc.line_of(("sql",)) + 1)
        return product.sql, doc.display, first_line
    assert product.sql_file is not None
    sql_path = (doc.path.parent / product.sql_file).resolve()
    display = _display(sql_path, doc)
    if not sql_path.is_file():
        problems.append(doc.problem(("sql_file",), f"SQL file {product.sql_file!r} not found"))
        return None, display, 1
    return sql_path.read_text(encoding="utf-8"), display, 1


def _display(path: Path, doc: LocatedDocument) -> str:
    root = doc.path.parent.parent
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _apply_env_overrides(doc: LocatedDocument) -> None:
    """`TIDEGATE__BACKENDS__STORE__PATH=/x` overrides `backends.store.path` in tidegate.yml.

    A `...__TYPE` override that changes a section's type (e.g. metadata from sqlite to
    postgres) starts that section afresh, since the old type's keys do not apply; type
    overrides are applied first, so the section's other overrides fill the new one."""
    if not isinstance(doc.data, dict):
        return
    overrides = sorted(
        (name, value) for name, value in os.environ.items() if name.startswith(ENV_PREFIX)
    )
    overrides.sort(key=lambda item: not item[0].upper().endswith("__TYPE"))
    for name, value in overrides:
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts or parts[0] == "secrets":
            continue
        node = doc.data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        if parts[-1] == "type" and node.get("type") not in (None, value):
            node.clear()
        node[parts[-1]] = value


class _Reader:
    def __init__(self, root: Path, problems: list[Problem]) -> None:
        self.root = root
        self.problems = problems

    def read(self, path: Path) -> LocatedDocument | None:
        display = str(path.relative_to(self.root))
        try:
            return load_yaml(path, display)
        except YamlSyntaxError as err:
            self.problems.append(err.problem)
        except (OSError, UnicodeDecodeError) as err:
            self.problems.append(Problem(display, 0, "", f"cannot read file: {err}"))
        return None

    def validate(self, doc: LocatedDocument, model: type[M]) -> M | None:
        try:
            return model.model_validate(doc.data)
        except ValidationError as err:
            self._record(doc, err, model)
            return None

    def validate_adapter(
        self, doc: LocatedDocument, adapter: TypeAdapter[Any], root: object
    ) -> Any:
        try:
            return adapter.validate_python(doc.data)
        except ValidationError as err:
            self._record(doc, err, root)
            return None

    def _record(self, doc: LocatedDocument, err: ValidationError, root: object) -> None:
        for item in err.errors():
            raw = tuple(item["loc"])
            loc = _strip_union_tags(raw, doc.data)
            # A model-level check about one field (key, subject) points at that field.
            error = item.get("ctx", {}).get("error")
            if isinstance(error, FieldError):
                loc = (*loc, error.field)
            if item["type"] == "extra_forbidden":
                message = unknown_key_message(root, raw)
            else:
                message = _friendly(item)
            self.problems.append(doc.problem(loc, message))

    def add_unique(
        self, registry: dict[str, Any], name: str, entry: Any, doc: LocatedDocument, kind: str
    ) -> None:
        if name in registry:
            first = registry[name].doc.display
            self.problems.append(
                doc.problem(("name",), f"duplicate {kind} name {name!r} (also defined in {first})")
            )
            return
        registry[name] = entry


_UNION_TAGS = {"file", "sqlite", "postgres", "redis", "duckdb", "stream", "kafka"}


def _strip_union_tags(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Discriminated unions put the tag (e.g. 'file') in the location; drop it, but keep a
    real key of the same name (a column called `file`)."""
    kept: list[Any] = []
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif isinstance(part, str) and part in _UNION_TAGS:
            continue
        else:
            node = None
        kept.append(part)
    return tuple(kept)


def _friendly(item: Any) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        return "unknown key (not part of this file's schema; check the spelling)"
    if kind == "missing":
        return "required field is missing"
    message = str(item["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind in {"string_pattern_mismatch"}:
        return f"{item.get('input')!r} is not a valid name ({message})"
    return message
