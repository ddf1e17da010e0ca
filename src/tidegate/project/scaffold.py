"""`tidegate init`: a landing zone a domain team can start from and that validates as is.

Besides the template it writes `schemas/*.schema.json` (generated from the models, see
`reference.py`): each YAML file starts with a `# yaml-language-server: $schema=` line
pointing there, so editors complete and check keys offline, matching this version.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from tidegate.errors import TidegateError

TEMPLATE = "landing_zone"
_RENAMES = {"gitignore": ".gitignore"}
SCHEMAS = "schemas"  # refresh with `tidegate schema --out schemas` after upgrading tidegate


def scaffold(target: Path, domain: str | None = None) -> list[Path]:
    """Write the template into `target` (which must be empty or absent); return written files."""
    target = target.resolve()
    if target.exists() and any(target.iterdir()):
        raise TidegateError(f"{target} is not empty; init writes only into a new or empty folder")
    project = _slug(target.name)
    domain = _slug(domain) if domain else project
    template = resources.files("tidegate.project").joinpath("templates", TEMPLATE)
    written: list[Path] = []
    _copy(template, target, {"project": project, "domain": domain}, written)
    from tidegate.project.reference import write_schemas

    written += write_schemas(target / SCHEMAS)
    return written


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")
    if not slug or not slug[0].isalpha():
        slug = f"p_{slug}" if slug else "project"
    return slug[:63]


def _copy(node: Traversable, target: Path, values: dict[str, str], written: list[Path]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name == "__pycache__":
            continue
        destination = target / _RENAMES.get(child.name, child.name)
        if child.is_dir():
            _copy(child, destination, values, written)
            continue
        text = child.read_text(encoding="utf-8")
        for name, value in values.items():
            text = text.replace("{{" + name + "}}", value)
        destination.write_text(text, encoding="utf-8")
        written.append(destination)
