"""Hand a command to the project's live runtime, and run commands a runtime was handed.

Client side (`forward_to_runtime`): for a command that works on a project's state, when
the project's admin socket answers (`runtime/control.py`), the command line goes to the
runtime instead of running here: paths in it are made absolute (the runtime has its own
working directory), confirmations are asked here first (the runtime has no keyboard),
and what the runtime's run of the command prints is printed here, to stdout and stderr,
with its exit code. When no runtime answers, the command runs here as it always did.

Runtime side (`executor`): runs the command line through the same entry point as a
person's shell (`app.main`), in-process, with the runtime's Platform lent to it and the
consoles pointed at the client.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import typer

from tidegate.platform import STATE_DIR, Platform
from tidegate.runtime.control import Invocation, Terminal, socket_path

#: commands that never go to a runtime: they are runtimes, or make a project
LOCAL_ONLY = {("run",), ("worker",), ("serve",), ("demo",), ("init",), ("validate",)}

#: (command path) -> (the flag that skips the question, the question from the params)
CONFIRM: dict[tuple[str, ...], tuple[str, str, Callable[[dict[str, Any]], str]]] = {}


def confirm_locally(
    path: tuple[str, ...], param: str, flag: str
) -> Callable[[Callable[[dict[str, Any]], str]], Callable[[dict[str, Any]], str]]:
    """Register the question a command asks before it acts (unless `flag` is given), so a
    forwarded run asks it here, before the runtime acts."""

    def register(question: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        CONFIRM[path] = (param, flag, question)
        return question

    return register


class Target:
    """What the client worked out from a command line."""

    def __init__(
        self, path: tuple[str, ...], argv: list[str], params: dict[str, Any], project: Path
    ) -> None:
        self.path = path
        self.argv = argv
        self.params = params
        self.project = project


def _is_path(param: Any) -> bool:
    """Whether a Typer parameter takes a path (`Path`, `Path | None`, `list[Path]`)."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation is Path:
        return True
    return any(_is_path_type(a) for a in typing.get_args(annotation))


def _is_path_type(annotation: Any) -> bool:
    return annotation is Path or any(_is_path_type(a) for a in typing.get_args(annotation))


def _kind(param: Any) -> str:
    return str(getattr(param, "param_type_name", ""))


def _resolve(app: Any, argv: Sequence[str], cwd: Path) -> Target | None:
    """The command a line names, its params, and the line with paths made absolute; None
    when it should run here (a runtime command, help, no project option, bad usage)."""
    if any(a in ("--help", "-h") for a in argv):
        return None
    command = app
    rest = list(argv)
    path: list[str] = []
    while hasattr(command, "commands"):  # a group: the next word names a command in it
        if not rest or rest[0].startswith("-"):
            return None
        found = command.commands.get(rest[0])
        if found is None:
            return None
        path.append(rest.pop(0))
        command = found
    if tuple(path[:1]) in LOCAL_ONLY or tuple(path) in LOCAL_ONLY:
        return None
    params = list(command.params)
    if not any(p.name == "project_dir" and _kind(p) == "option" for p in params):
        return None
    if any(_kind(p) == "argument" and _is_path(p) for p in params):
        return None
    try:
        ctx = command.make_context(" ".join(path), list(rest), resilient_parsing=True)
    except Exception:  # bad usage: running it here prints the usual usage error
        return None
    project = cwd / Path(ctx.params.get("project_dir") or ".")
    # the runtime's working directory is its own: name the project absolutely, always
    line = [*path, *_absolute_paths(params, rest, cwd), "--project", str(project)]
    return Target(tuple(path), line, dict(ctx.params), project)


def _absolute_paths(params: list[Any], args: list[str], cwd: Path) -> list[str]:
    options: set[str] = set()
    for param in params:
        if _kind(param) == "option" and _is_path(param):
            options.update(param.opts)
    result: list[str] = []
    rewrite_next = False
    for arg in args:
        if rewrite_next:
            result.append(str(cwd / arg))
            rewrite_next = False
            continue
        if arg == "--":
            rewrite_next = False
        elif arg in options:
            rewrite_next = True
        elif arg.startswith("--") and arg.split("=", 1)[0] in options and "=" in arg:
            name, value = arg.split("=", 1)
            arg = f"{name}={cwd / value}"
        else:
            short = next((o for o in options if len(o) == 2 and arg.startswith(o)), None)
            if short is not None and len(arg) > 2 and not arg.startswith("--"):
                arg = short + str(cwd / arg[2:])
        result.append(arg)
    return result


def _terminal(stream: Any) -> Terminal:
    from rich.console import Console

    from tidegate.console import default_width

    # the same width the command would print at here (a pipe: PIPE_WIDTH)
    probe = Console(file=stream, width=default_width(stream))
    return Terminal(probe.width, probe.is_terminal, probe.color_system)


def forward_to_runtime(app: Any, argv: Sequence[str]) -> int | None:
    """Run `argv` in the project's live runtime and return its exit code; None when no
    runtime answers for the project (the caller runs the command itself)."""
    if os.environ.get("TIDEGATE_NO_FORWARD"):
        return None
    cwd = Path.cwd()
    target = _resolve(app, argv, cwd)
    if target is None:
        return None
    where = socket_path(target.project / STATE_DIR)
    if not where.exists():
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(where))
    except OSError:  # a socket file a killed runtime left: nobody holds the project
        conn.close()
        return None
    with conn:
        argv_out = target.argv
        asked = CONFIRM.get(target.path)
        if asked is not None:
            param, flag, question = asked
            if not target.params.get(param):
                if not typer.confirm(question(target.params)):
                    from tidegate.console import errors

                    errors.print("aborted")
                    return 1
                argv_out = [*argv_out, flag]
        invocation = Invocation(
            argv_out, str(cwd), out=_terminal(sys.stdout), err=_terminal(sys.stderr)
        )
        conn.sendall((invocation.to_json() + "\n").encode("utf-8"))
        try:
            return _relay(conn)
        except KeyboardInterrupt:
            sys.stderr.write(
                "interrupted: the runtime holding the project finishes the command on its "
                "own (see its log)\n"
            )
            return 130


def _relay(conn: socket.socket) -> int:
    """Print the runtime's frames as they come; its exit code, or 1 if it went away."""
    reader = conn.makefile("r", encoding="utf-8")
    for line in reader:
        frame = json.loads(line)
        if "out" in frame:
            sys.stdout.write(frame["out"])
            sys.stdout.flush()
        elif "err" in frame:
            sys.stderr.write(frame["err"])
            sys.stderr.flush()
        elif "exit" in frame:
            return int(frame["exit"])
    sys.stderr.write(
        "error: the runtime holding this project stopped before the command finished; "
        "its outcome is unknown (see the runtime's log, then run the command again)\n"
    )
    return 1


def executor(platform: Platform, main: Callable[[list[str]], None]) -> Any:
    """What a runtime's AdminServer runs for each invocation: `main(argv)` with the
    runtime's Platform lent and the consoles pointed at the client."""
    from tidegate.console import redirected

    def execute(invocation: Invocation, out: TextIO, err: TextIO) -> int:
        with platform.lend(), redirected(out, err, (invocation.out, invocation.err)):
            try:
                main(invocation.argv)
            except SystemExit as done:
                code = done.code
                if code is None:
                    return 0
                if isinstance(code, int):
                    return code
                err.write(f"{code}\n")
                return 1
            return 0

    return execute
