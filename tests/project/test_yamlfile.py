"""YAML that remembers the line of every key and list item."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.project.yamlfile import LocatedDocument, YamlSyntaxError, load_yaml

DOC = """\
# a comment
name: demo
serve:
  host: 127.0.0.1

  port: 8787
columns:
  email:
    type: VARCHAR
    tags: [a, b]
  id: {type: BIGINT, nullable: false}
items:
  - first
  - name: second
    size: 2
  -
    - nested
sql: |
  SELECT 1
  FROM t
query: SELECT 2
folded: >
  one
  two
"""


def _line(text: str, fragment: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(hits) == 1, (fragment, hits)
    return hits[0]


@pytest.fixture
def doc(tmp_path: Path) -> LocatedDocument:
    path = tmp_path / "doc.yml"
    path.write_text(DOC, encoding="utf-8")
    return load_yaml(path, "conf/doc.yml")


def test_values_are_plain_python(doc: LocatedDocument) -> None:
    assert doc.data["serve"] == {"host": "127.0.0.1", "port": 8787}
    assert doc.data["columns"]["id"] == {"type": "BIGINT", "nullable": False}
    assert doc.data["items"] == ["first", {"name": "second", "size": 2}, ["nested"]]
    assert doc.data["sql"] == "SELECT 1\nFROM t\n"
    assert doc.display == "conf/doc.yml"


@pytest.mark.parametrize(
    ("loc", "fragment"),
    [
        (("name",), "name: demo"),
        (("serve",), "serve:"),
        (("serve", "host"), "host:"),
        (("serve", "port"), "port:"),
        (("columns", "email"), "email:"),
        (("columns", "email", "type"), "type: VARCHAR"),
        (("columns", "email", "tags"), "tags:"),
        (("columns", "email", "tags", 1), "tags:"),
        (("columns", "id"), "id: {"),
        (("columns", "id", "nullable"), "id: {"),
        (("items",), "items:"),
        (("items", 0), "- first"),
        (("items", 1), "- name: second"),
        (("items", 1, "name"), "- name: second"),
        (("items", 1, "size"), "size: 2"),
        (("items", 2, 0), "- nested"),
        (("sql",), "sql: |"),
    ],
)
def test_line_of_nested_keys_and_list_items(
    doc: LocatedDocument, loc: tuple[str | int, ...], fragment: str
) -> None:
    assert doc.lines[loc] == _line(DOC, fragment)
    assert doc.line_of(loc) == _line(DOC, fragment)


def test_a_key_maps_to_its_own_line_not_its_values(doc: LocatedDocument) -> None:
    # `items:` is followed by the list on later lines; the key keeps the key's line
    assert doc.line_of(("items",)) == _line(DOC, "items:")
    assert doc.line_of(("items",)) != _line(DOC, "- first")
    # a mapping item's own line is its first key's; its later keys keep their own lines
    assert doc.line_of(("items", 1)) == _line(DOC, "- name: second")
    assert doc.line_of(("items", 1, "size")) == _line(DOC, "- name: second") + 1


def test_line_of_falls_back_to_the_deepest_known_prefix(doc: LocatedDocument) -> None:
    assert doc.line_of(("columns", "email", "nope")) == _line(DOC, "email:")
    assert doc.line_of(("columns", "email", "nope", 3, "x")) == _line(DOC, "email:")
    assert doc.line_of(("serve", "workers")) == _line(DOC, "serve:")
    assert doc.line_of(("items", 9)) == _line(DOC, "items:")
    # nothing matches: the document's own start (its first key, after the comment)
    assert doc.line_of(("nothing", "here")) == _line(DOC, "name: demo")
    assert doc.line_of(()) == _line(DOC, "name: demo")


def test_line_of_an_empty_document_is_one(tmp_path: Path) -> None:
    path = tmp_path / "empty.yml"
    path.write_text("# only a comment\n", encoding="utf-8")
    doc = load_yaml(path)
    assert doc.data == {}
    assert doc.line_of(("anything",)) == 1


def test_text_lines_give_where_a_scalars_text_starts(doc: LocatedDocument) -> None:
    assert doc.text_lines[("sql",)] == _line(DOC, "SELECT 1")
    assert doc.text_lines[("folded",)] == _line(DOC, "one")
    assert doc.text_lines[("query",)] == _line(DOC, "query: SELECT 2")
    assert doc.text_lines[("serve", "port")] == _line(DOC, "port: 8787")


def test_problem_names_display_file_line_and_dotted_field(doc: LocatedDocument) -> None:
    problem = doc.problem(("items", 1, "size"), "too big")
    assert (problem.file, problem.line, problem.field) == (
        "conf/doc.yml",
        _line(DOC, "size: 2"),
        "items.1.size",
    )
    assert str(problem) == f"conf/doc.yml:{_line(DOC, 'size: 2')}: [items.1.size] too big"


def test_problem_without_display_uses_the_path(tmp_path: Path) -> None:
    path = tmp_path / "a.yml"
    path.write_text("a: 1\n", encoding="utf-8")
    assert load_yaml(path).problem(("a",), "x").file == str(path)


def _error(tmp_path: Path, text: str) -> YamlSyntaxError:
    path = tmp_path / "bad.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(YamlSyntaxError) as info:
        load_yaml(path, "bad.yml")
    return info.value


@pytest.mark.parametrize(
    ("text", "fragment", "field"),
    [
        ("a: 1\nb: 2\na: 3\n", "a: 3", "a"),
        ("top:\n  x: 1\n  y: 2\n  x: 3\n", "x: 3", "top.x"),
        ("list:\n  - k: 1\n  - k: 2\n    k: 3\n", "k: 3", "list.1.k"),
        ("flow: {k: 1, j: 2}\nother: {k: 1, k: 2}\n", "other:", "other.k"),
        ("1: a\n'1': b\n", "'1': b", "1"),
    ],
    ids=["top", "nested", "in-list", "flow", "int-and-str"],
)
def test_duplicate_keys_are_rejected_with_their_line(
    tmp_path: Path, text: str, fragment: str, field: str
) -> None:
    problem = _error(tmp_path, text).problem
    assert problem.file == "bad.yml"
    assert problem.line == _line(text, fragment)
    assert problem.field == field
    assert "duplicate key" in problem.message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: 1\nb: c: d\n", "b: c: d"),
        ("a:\n  b: 1\n c: 2\n", " c: 2"),
        ("a: [1, 2\nb: 3\n", "b: 3"),
    ],
    ids=["mapping-in-value", "bad-indent", "unclosed-flow"],
)
def test_syntax_errors_carry_the_line_where_they_are_found(
    tmp_path: Path, text: str, fragment: str
) -> None:
    err = _error(tmp_path, text)
    assert err.problem.line == _line(text, fragment)
    assert err.problem.message.startswith("YAML syntax error")
    assert str(err) == str(err.problem)


def test_non_scalar_keys_are_rejected(tmp_path: Path) -> None:
    text = "a: 1\n? [x, y]\n: 2\n"
    problem = _error(tmp_path, text).problem
    assert problem.line == _line(text, "? [x, y]")
    assert "keys must be scalars" in problem.message


def test_merge_keys_and_anchors(tmp_path: Path) -> None:
    path = tmp_path / "m.yml"
    path.write_text(
        "base: &b\n  type: VARCHAR\n  nullable: false\n"
        "cols:\n  a:\n    nullable: true\n    <<: *b\n  c:\n    <<: [*b, {size: 2}]\n"
    )
    doc = load_yaml(path)
    # Keys written in the mapping win over merged ones, wherever the `<<` stands.
    assert doc.data["cols"]["a"] == {"nullable": True, "type": "VARCHAR"}
    assert doc.data["cols"]["c"] == {"type": "VARCHAR", "nullable": False, "size": 2}
    assert doc.line_of(("cols", "a", "nullable")) == 6
    assert doc.line_of(("cols", "a", "type")) == 2  # where the anchor defines it


def test_a_merge_key_needs_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "m.yml"
    path.write_text("a:\n  <<: 3\n")
    with pytest.raises(YamlSyntaxError, match="merge key"):
        load_yaml(path)
