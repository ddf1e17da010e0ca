"""The admin socket and the CLI's side of it, in-process: who may reach the socket, a
stale socket left by a killed runtime, frames relayed with the exit code, and which
command lines are forwarded (with their paths made absolute)."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest
import typer

from tidegate.cli.app import app
from tidegate.cli.forward import _relay, _resolve
from tidegate.errors import TidegateError
from tidegate.runtime.control import AdminServer, Invocation, answers, socket_path


@pytest.fixture
def state() -> Iterator[Path]:
    """Unix socket paths are limited to ~100 bytes: a short directory of our own."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="tg", dir="/tmp"))
    yield folder / ".tidegate"
    shutil.rmtree(folder)


def _ask(path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(path))
    with conn:
        conn.sendall((Invocation(argv, "/").to_json() + "\n").encode())
        code = _relay(conn)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_socket_is_private_and_relays_output_and_exit_code(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[list[str]] = []
    lock = threading.RLock()

    def execute(invocation: Invocation, out: TextIO, err: TextIO) -> int:
        assert lock._is_owned()  # type: ignore[attr-defined]  # run under the writer lock
        seen.append(invocation.argv)
        out.write("hello\n")
        err.write("careful\n")
        return 3

    with AdminServer(state, execute, lock) as server:
        path = socket_path(state)
        assert server.path == path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert answers(path)
        assert _ask(path, ["build", "-p", "/x"], capsys) == (3, "hello\n", "careful\n")
    assert seen == [["build", "-p", "/x"]]
    assert not path.exists()  # removed on stop
    assert not answers(path)


def test_a_stale_socket_is_replaced_and_a_live_one_is_not(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = socket_path(state)
    path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening: what a killed runtime leaves
    stale.close()
    assert path.exists()
    assert not answers(path)

    def execute(invocation: Invocation, out: TextIO, err: TextIO) -> int:
        return 0

    with AdminServer(state, execute, threading.RLock()):
        assert answers(path)
        with pytest.raises(TidegateError, match="already answers"):
            AdminServer(state, execute, threading.RLock()).start()
        assert _ask(path, ["keys", "list"], capsys)[0] == 0


def test_a_runtime_that_dies_mid_command_is_an_error_not_a_success(
    capsys: pytest.CaptureFixture[str],
) -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b'{"out": "half of it\\n"}\n')
        right.close()
        assert _relay(left) == 1
    out, err = capsys.readouterr()
    assert out == "half of it\n"
    assert "stopped before the command finished" in err


def _line(argv: list[str], cwd: Path) -> Any:
    return _resolve(typer.main.get_command(app), argv, cwd)


def test_forwarded_lines_name_paths_absolutely(tmp_path: Path) -> None:
    target = _line(["request", "access", "42", "--out", "a.json", "-p", "shop"], tmp_path)
    assert target.project == tmp_path / "shop"
    assert target.argv == [
        "request",
        "access",
        "42",
        "--out",
        str(tmp_path / "a.json"),
        "-p",
        str(tmp_path / "shop"),
        "--project",
        str(tmp_path / "shop"),
    ]
    target = _line(["build"], tmp_path)  # the default project: the working directory
    assert target.project == tmp_path
    assert target.argv == ["build", "--project", str(tmp_path)]
    target = _line(["export", "c", "--out=x.csv", "--purpose", "analytics"], tmp_path)
    assert f"--out={tmp_path / 'x.csv'}" in target.argv


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "-p", "shop"],
        ["worker"],
        ["serve"],
        ["demo"],
        ["init", "x"],
        ["validate", "shop"],
        ["build", "--help"],
        ["request"],
        ["no-such-command"],
    ],
)
def test_runtimes_help_and_project_makers_run_locally(argv: list[str], tmp_path: Path) -> None:
    assert _line(argv, tmp_path) is None


def test_no_forwarding_without_a_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tidegate.cli.forward import forward_to_runtime

    monkeypatch.chdir(tmp_path)
    assert forward_to_runtime(typer.main.get_command(app), ["build"]) is None
    (tmp_path / ".tidegate" / "control").mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    short = Path(os.path.relpath(tmp_path / ".tidegate" / "control" / "admin.sock"))
    stale.bind(str(short))
    stale.close()
    assert forward_to_runtime(typer.main.get_command(app), ["build"]) is None
