"""Read `policies/` again while a project is live, and tell whether it changed.

A running `serve`/`run` applies policy edits without a restart (`privacy/policy_reload.py`).
This module is the part that needs no running platform: the policy files, a content
digest of them (what the audit record of a switch names), a cheap stat signature for
polling, and `read_policy`, which validates the new files exactly as `load_project`
would, checked against the project already in memory (a purpose a product or sync
still names cannot vanish), and raises `ConfigError` with every problem otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from tidegate.errors import ConfigError, Problem
from tidegate.project.models import PolicyFile
from tidegate.project.project import Policy, Project
from tidegate.project.yamlfile import LocatedDocument

FOLDER = "policies"


def policy_files(root: Path) -> list[Path]:
    folder = root / FOLDER
    if not folder.is_dir():
        return []
    return sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])


def policy_digest(root: Path) -> str:
    """`sha256:` of every policy file's name and bytes, in name order."""
    digest = hashlib.sha256()
    for path in policy_files(root):
        try:
            content = path.read_bytes()
        except OSError:
            content = b"\0unreadable"
        digest.update(path.name.encode() + b"\0" + content + b"\0")
    return "sha256:" + digest.hexdigest()


def policy_signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, mtime_ns, size) of each policy file: what a poll compares, without reading."""
    found = []
    for path in policy_files(root):
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(found)


def read_policy(project: Project) -> Policy:
    """The policy in `project.root/policies/` now, validated; ConfigError lists every problem."""
    from tidegate.project.checks import check_project
    from tidegate.project.loader import _Reader

    root = project.root
    problems: list[Problem] = []
    reader = _Reader(root, problems)
    digest = policy_digest(root)
    files: list[tuple[PolicyFile, LocatedDocument]] = []
    for path in policy_files(root):
        doc = reader.read(path)
        if doc is None:
            continue
        parsed = reader.validate(doc, PolicyFile)
        if parsed is not None:
            files.append((parsed, doc))
    policy = Policy.merge(files, problems)
    policy.digest = digest
    if not problems:
        problems.extend(check_project(dataclasses.replace(project, policy=policy)))
    if problems:
        raise ConfigError(problems, root)
    return policy
