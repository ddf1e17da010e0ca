"""The ground the config models stand on: strict models, field errors, durations, templates.

Split from `models.py` so the model modules (`models.py`, `models_destinations.py`)
share it without importing each other. Nothing of tidegate, nothing heavy.
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import BaseModel, ConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`500ms`, `1s`, `15m`, `2h`, `1d`, `1w` → timedelta."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration like 500ms, 1s, 15m, 2h or 1d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


class FieldError(ValueError):
    """A model-level check about one field; the loader reports it at that field's line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def template_columns(template: str) -> list[str]:
    """The `{column}` placeholders of a field template, in order; `{{`/`}}` are literal braces.

    Only bare names: no attribute access, indexing, conversions or format specs, so a
    template can never run code (it is compiled to SQL string concatenation).
    """
    return [column for _, column in template_parts(template) if column is not None]


def template_parts(template: str) -> list[tuple[str, str | None]]:
    """`"{first} {last}!"` -> `[("", "first"), (" ", "last"), ("!", None)]`."""
    import string

    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"template {template!r}: {err}") from None
    for literal, name, spec, conversion in parsed:
        if name is not None and (not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)):
            raise ValueError(f"template {template!r}: {{{name}}} is not a plain column name")
        if spec or conversion:
            raise ValueError(f"template {template!r}: format specs and conversions are not allowed")
        parts.append((literal, name))
    return parts
