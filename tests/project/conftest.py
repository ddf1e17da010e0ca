"""Fixtures for project-loading tests: a freshly scaffolded project that each test breaks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tidegate.errors import ConfigError, Problem
from tidegate.project import Project, load_project
from tidegate.project.scaffold import scaffold


@pytest.fixture(autouse=True)
def _no_tidegate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`TIDEGATE__*` variables override tidegate.yml; none from the outside may leak in."""
    for name in list(os.environ):
        if name.startswith("TIDEGATE__"):
            monkeypatch.delenv(name)


class ProjectDir:
    """A scaffolded project folder plus helpers to break it and read the problems."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, rel: str) -> Path:
        return self.root / rel

    def read(self, rel: str) -> str:
        return self.path(rel).read_text(encoding="utf-8")

    def write(self, rel: str, text: str) -> None:
        target = self.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def edit(self, rel: str, old: str, new: str) -> None:
        """Replace the one occurrence of `old` in `rel` (fails if it is absent or repeated)."""
        text = self.read(rel)
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {rel}"
        self.write(rel, text.replace(old, new))

    def line(self, rel: str, fragment: str) -> int:
        """1-based number of the only line of `rel` containing `fragment`."""
        hits = [i for i, text in enumerate(self.read(rel).splitlines(), 1) if fragment in text]
        assert len(hits) == 1, f"{fragment!r} is on lines {hits} of {rel}"
        return hits[0]

    def load(self) -> Project:
        return load_project(self.root)

    def problems(self) -> list[Problem]:
        with pytest.raises(ConfigError) as info:
            load_project(self.root)
        assert info.value.problems, "ConfigError without problems"
        return info.value.problems

    def expect(
        self, file: str, line: int, fragment: str, field: str | None = None
    ) -> list[Problem]:
        """Load, and assert one problem sits exactly at `file:line` (and `field`) with
        `fragment` in its message. Returns all problems for further checks."""
        problems = self.problems()
        matches = [
            p
            for p in problems
            if p.file == file
            and p.line == line
            and fragment in p.message
            and (field is None or p.field == field)
        ]
        assert matches, (
            f"no problem at {file}:{line} [{field}] containing {fragment!r}; got:\n"
            + "\n".join(repr(p) for p in problems)
        )
        return problems


@pytest.fixture
def project(tmp_path: Path) -> ProjectDir:
    """A fresh, valid `sales` project (checked to load cleanly before the test breaks it)."""
    root = tmp_path / "sales"
    scaffold(root, "sales")
    load_project(root)
    return ProjectDir(root)
