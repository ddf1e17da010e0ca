"""Every shell command in README.md, the scaffold's README and the how-tos in docs/ runs.

The fenced ```bash / ```sh / ```console blocks of each file are run in order, each with
`bash -euo pipefail`, with the venv's `tidegate` first on PATH: README.md in an empty
temporary folder, the scaffold's README and each how-to inside a project freshly made by
`tidegate init`. A ```yaml or ```sql block right after a `<!-- file: PATH -->` line is
written to PATH (relative to that folder) before the commands after it run, so a how-to
that says "put this in sources/signups.yml" is tested with exactly that text.

Excluded, on purpose and visibly: a block whose first line is `# not-run: REASON`
(long-running commands such as `make test`, `tidegate run` or `tidegate serve`, and
synopses with placeholders). Console blocks drop the `$ ` prompt and output lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOWTOS = sorted((ROOT / "docs").glob("howto-*.md"))
SHELLS = {"bash", "sh", "console", "shell"}
NOT_RUN = "# not-run:"
FENCE = re.compile(r"^```([A-Za-z]*)\s*$")
FILE_MARK = re.compile(r"^<!--\s*file:\s*(\S+)\s*-->\s*$")


@dataclass
class Block:
    language: str
    text: str
    line: int
    file: str | None  # for a file block: where to write it


def blocks(markdown: str) -> list[Block]:
    found: list[Block] = []
    lines = markdown.splitlines()
    index = 0
    pending_file: str | None = None
    while index < len(lines):
        mark = FILE_MARK.match(lines[index])
        if mark:
            pending_file = mark.group(1)
            index += 1
            continue
        fence = FENCE.match(lines[index])
        if not fence:
            if lines[index].strip():
                pending_file = None
            index += 1
            continue
        start = index + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = "\n".join(lines[start:end]) + "\n"
        found.append(Block(fence.group(1).lower(), body, start, pending_file))
        pending_file = None
        index = end + 1
    return found


def commands(block: Block) -> str | None:
    """The script a shell block runs, or None when it is marked not-run."""
    if block.text.lstrip().startswith(NOT_RUN):
        return None
    if block.language != "console":
        return block.text
    return "\n".join(line[2:] for line in block.text.splitlines() if line.startswith("$ "))


def run_markdown(path: Path, cwd: Path) -> int:
    """Run the file's blocks in order in `cwd`; return how many scripts ran."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env = {k: v for k, v in env.items() if not k.startswith("TIDEGATE__")}
    ran = 0
    for block in blocks(path.read_text()):
        if block.file is not None:
            target = cwd / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text)
            continue
        if block.language not in SHELLS:
            continue
        script = commands(block)
        if script is None:
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"{path.name}:{block.line}: exit {done.returncode}\n{script}\n"
            f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
        )
        ran += 1
    return ran


def test_blocks_parser_honours_markers() -> None:
    text = (
        "<!-- file: a.yml -->\n```yaml\nx: 1\n```\n\n```bash\n# not-run: forever\nsleep 1d\n```\n"
        "```console\n$ echo hi\nhi\n```\n"
    )
    found = blocks(text)
    assert [b.file for b in found] == ["a.yml", None, None]
    assert commands(found[1]) is None
    assert commands(found[2]) == "echo hi"


@pytest.mark.slow
def test_readme_commands_run(tmp_path: Path) -> None:
    assert run_markdown(ROOT / "README.md", tmp_path) >= 2


def _project(tmp_path: Path) -> Path:
    target = tmp_path / "shop"
    subprocess.run([str(BIN / "tidegate"), "init", str(target)], check=True, capture_output=True)
    return target


def test_scaffold_readme_commands_run(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert (project / "README.md").read_text().count("```bash") >= 2
    assert run_markdown(project / "README.md", project) >= 1


@pytest.mark.parametrize("howto", HOWTOS, ids=lambda p: p.stem)
def test_howto_commands_run(howto: Path, tmp_path: Path) -> None:
    assert run_markdown(howto, _project(tmp_path)) >= 1


def test_there_is_a_howto_per_everyday_task() -> None:
    names = {p.stem for p in HOWTOS}
    wanted = {"stream-source", "cdc-source", "sync", "purpose", "check"}
    assert {n.removeprefix("howto-add-") for n in names} >= wanted
