"""YAML that remembers where each value came from.

PyYAML's plain loader forgets line numbers, and a config error that cannot say
which line is wrong wastes the user's time. We compose the node tree ourselves
and keep a map from each value's path (``("columns", "email", "type")``) to its
line, so a Pydantic error location can be turned back into ``file:line``.

Anchors and aliases (`&x`, `*x`) are resolved by PyYAML's composer; merge keys
(`<<: *x`, `<<: [*x, *y]`) are applied here as YAML 1.1 defines them: keys written in
the mapping win over merged ones, and earlier merged mappings win over later ones.
A merged key reports the line where the anchor defines it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tidegate.errors import Problem

PathKey = tuple[str | int, ...]


@dataclass
class LocatedDocument:
    """A parsed YAML file plus the line of every key and item in it."""

    path: Path
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)
    display: str = ""
    #: line where each scalar's text starts (the line after `|` or `>` for block scalars)
    text_lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, loc: PathKey) -> int:
        """The line of the deepest part of `loc` we know; 1 when nothing matches."""
        for end in range(len(loc), -1, -1):
            found = self.lines.get(tuple(loc[:end]))
            if found is not None:
                return found
        return 1

    def problem(self, loc: PathKey, message: str) -> Problem:
        dotted = ".".join(str(part) for part in loc)
        return Problem(self.display or str(self.path), self.line_of(loc), dotted, message)


class YamlSyntaxError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def load_yaml(path: Path, display: str = "") -> LocatedDocument:
    """Parse `path`, raising YamlSyntaxError (with a line) on malformed YAML or duplicate keys."""
    shown = display or str(path)
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(
            Problem(shown, line, "", f"YAML syntax error: {err.problem or err}")
        ) from None
    doc = LocatedDocument(path=path, data=None, display=shown)
    doc.data = {} if node is None else _convert(node, (), doc)
    return doc


def _convert(node: yaml.Node, loc: PathKey, doc: LocatedDocument) -> Any:
    doc.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = _scalar(key_node)
            if not isinstance(key, str | int | float | bool):
                raise YamlSyntaxError(
                    Problem(doc.display, key_node.start_mark.line + 1, "", "keys must be scalars")
                )
            name = str(key)
            if name in result:
                raise YamlSyntaxError(
                    Problem(
                        doc.display,
                        key_node.start_mark.line + 1,
                        ".".join(str(p) for p in (*loc, name)),
                        f"duplicate key {name!r}",
                    )
                )
            doc.lines[(*loc, name)] = key_node.start_mark.line + 1
            result[name] = _convert(value_node, (*loc, name), doc)
        for merge in merges:
            _merge(merge, loc, doc, result)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            doc.lines[(*loc, index)] = item.start_mark.line + 1
            items.append(_convert(item, (*loc, index), doc))
        return items
    block = isinstance(node, yaml.ScalarNode) and node.style in ("|", ">")
    doc.text_lines[loc] = node.start_mark.line + (2 if block else 1)
    return _scalar(node)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _merge(value: yaml.Node, loc: PathKey, doc: LocatedDocument, result: dict[str, Any]) -> None:
    """Apply one `<<:` entry to `result`, keeping keys already there."""
    sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
    for source in sources:
        if not isinstance(source, yaml.MappingNode):
            raise YamlSyntaxError(
                Problem(
                    doc.display,
                    value.start_mark.line + 1,
                    ".".join(str(p) for p in (*loc, "<<")),
                    "a merge key (<<) takes a mapping or a list of mappings, e.g. <<: *defaults",
                )
            )
        scratch = LocatedDocument(path=doc.path, data=None, display=doc.display)
        merged = _convert(source, loc, scratch)
        for name, item in merged.items():
            if name in result:
                continue
            result[name] = item
            for key, line in scratch.lines.items():
                if key[: len(loc) + 1] == (*loc, name):
                    doc.lines.setdefault(key, line)
            for key, line in scratch.text_lines.items():
                if key[: len(loc) + 1] == (*loc, name):
                    doc.text_lines.setdefault(key, line)


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return None
    constructor = yaml.SafeLoader(b"")
    try:
        return constructor.construct_object(node, deep=True)
    finally:
        constructor.dispose()
