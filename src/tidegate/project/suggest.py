"""The keys a YAML mapping may hold, found by walking the Pydantic models along an error's path.

An unknown key is usually a typo, so the message lists the valid keys at that place and
the closest one ("did you mean `owner`?"), as dbt and sqlmesh do. Pydantic's error
location for a discriminated union includes the tag (`("destination", "postgres",
"tabel")`), which is how the walk picks the right member.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import BaseModel


def _unwrap(annotation: object) -> object:
    """Strip Annotated and Optional: `Annotated[X | None, ...]` -> X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _members(annotation: object) -> list[object]:
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return [_unwrap(a) for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    values = get_args(field.annotation)
    return str(values[0]) if len(values) == 1 else None


def _field_annotation(model: type[BaseModel], key: str) -> object | None:
    hints = typing.get_type_hints(model, include_extras=True)
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return hints.get(name, info.annotation)
    return None


def keys_at(root: object, loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed in the mapping at `loc` (empty when the walk gets lost)."""
    current: object = root
    for part in loc:
        members = _members(current)
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) > 1:  # a discriminated union: `part` is the tag
            current = next((m for m in models if _tag(m) == part), None)
            if current is None:
                return []
            continue
        target = members[0] if len(members) == 1 else None
        if isinstance(target, type) and issubclass(target, BaseModel):
            found = _field_annotation(target, str(part))
            if found is None:
                return []
            current = found
        elif get_origin(target) in (dict, list):
            current = get_args(target)[-1]
        else:
            return []
    members = _members(current)
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(models) != 1:
        return []
    return [info.alias or name for name, info in models[0].model_fields.items()]


def unknown_key_message(root: object, loc: tuple[str | int, ...]) -> str:
    """`unknown key 'ownr'; did you mean 'owner'? (valid here: name, owner, ...)`"""
    key = str(loc[-1]) if loc else ""
    valid = keys_at(root, loc[:-1])
    message = f"unknown key {key!r}"
    close = difflib.get_close_matches(key, valid, n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    if valid:
        message += f" (valid here: {', '.join(valid)})"
    return message
