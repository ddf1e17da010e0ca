"""An export's anonymisation declared in a YAML file (`tidegate export --config FILE`).

::

    k: 5
    max_suppression: 0.05
    algorithm: lattice            # or mondrian
    metric: loss                  # or discernibility, intensity
    quasi_identifiers:
      age: {hierarchy: hierarchies/age.csv}   # ARX CSV, relative to this file
      sex: {}                                  # the default ladder
      occupation: {hierarchy: hierarchies/occupation.csv}
    sensitive: [income]
    l: 2
    l_diversity: distinct         # or entropy
    t: 0.2

Unknown keys and bad values are errors that name the file, line and field. Options
given on the command line win over the file; `--hierarchy` adds to its hierarchies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tidegate.errors import BadRequestError, Problem
from tidegate.privacy.anonymize import Privacy
from tidegate.privacy.anonymize_hierarchies import load_hierarchies
from tidegate.project.yamlfile import YamlSyntaxError, load_yaml


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hierarchy: Path | None = None


class ExportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(5, ge=2)
    max_suppression: float = Field(0.05, ge=0, le=1)
    algorithm: Literal["lattice", "mondrian"] = "lattice"
    metric: Literal["loss", "discernibility", "intensity"] = "loss"
    quasi_identifiers: dict[str, ColumnSpec | None] = Field(min_length=1)
    sensitive: list[str] = Field(default_factory=list)
    l: int = Field(1, ge=1)  # noqa: E741 (the model's name)
    l_diversity: Literal["distinct", "entropy"] = "distinct"
    t: float | None = Field(None, ge=0, le=1)


@dataclass
class ExportConfig:
    spec: ExportSpec
    hierarchies: dict[str, Path]  # resolved against the file's folder


def load_export_config(path: Path) -> ExportConfig:
    """Read and check an export config; BadRequestError naming file:line when it is wrong."""
    try:
        doc = load_yaml(path, str(path))
    except YamlSyntaxError as err:
        raise _invalid([err.problem]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise _invalid([Problem(str(path), 0, "", f"cannot read file: {err}")]) from None
    try:
        spec = ExportSpec.model_validate(doc.data)
    except ValidationError as err:
        problems = [
            doc.problem(tuple(item["loc"]), _message(item["type"], str(item["msg"])))
            for item in err.errors()
        ]
        raise _invalid(problems) from None
    hierarchies = {
        column: (path.parent / column_spec.hierarchy)
        for column, column_spec in spec.quasi_identifiers.items()
        if column_spec is not None and column_spec.hierarchy is not None
    }
    return ExportConfig(spec, hierarchies)


def _message(kind: str, message: str) -> str:
    if kind == "extra_forbidden":
        return "unknown key (check the spelling)"
    return message.removeprefix("Value error, ")


def _invalid(problems: list[Problem]) -> BadRequestError:
    return BadRequestError("invalid export config:\n" + "\n".join(str(p) for p in problems))


@dataclass
class Overrides:
    """What the command line says; None: not given (the config file or the default)."""

    quasi_identifiers: list[str] | None = None
    k: int | None = None
    max_suppression: float | None = None
    algorithm: str | None = None
    metric: str | None = None
    sensitive: list[str] | None = None
    l: int | None = None  # noqa: E741 (the model's name)
    l_diversity: str | None = None
    t: float | None = None
    hierarchies: dict[str, Path] = field(default_factory=dict)


@dataclass
class Resolved:
    quasi_identifiers: list[str]
    k: int
    max_suppression: float
    privacy: Privacy


def resolve(config: Path | None, given: Overrides) -> Resolved:
    """The export's settings: the command line over the config file over the defaults;
    checked, and every hierarchy file read, before any data moves."""
    loaded = load_export_config(config) if config is not None else None
    spec = loaded.spec if loaded else None
    defaults = ExportSpec.model_construct(quasi_identifiers={})  # the model's defaults

    def pick(name: str) -> Any:
        value = getattr(given, name)
        if value is not None:
            return value
        return getattr(spec if spec is not None else defaults, name)

    qis = given.quasi_identifiers or (list(spec.quasi_identifiers) if spec else [])
    if not qis:
        raise BadRequestError(
            "name the quasi-identifiers (--quasi-identifiers a,b,c, or quasi_identifiers: "
            "in the --config file)"
        )
    privacy = Privacy(
        algorithm=pick("algorithm"),
        metric=pick("metric"),
        sensitive=tuple(pick("sensitive")),
        l=pick("l"),
        l_kind=pick("l_diversity"),
        t=pick("t"),
        hierarchies={**(loaded.hierarchies if loaded else {}), **given.hierarchies},
    )
    privacy.check(qis)
    load_hierarchies(privacy.hierarchies)
    return Resolved(qis, pick("k"), pick("max_suppression"), privacy)
