"""The one console layer every command prints through (Rich), so output stays consistent.

`console` and `errors` stand for the current thread's consoles: normally the process's
stdout and stderr; while a runtime runs a command for the CLI (`cli/forward.py`), that
client's streams, rendered for its terminal (width, colours), so the person sees what
the command would have printed had it run in their own process.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO, cast

from rich.console import Console
from rich.table import Table

from tidegate.timestamps import TIMESTAMP_PATTERN


class _Current(threading.local):
    out: Console | None = None
    err: Console | None = None


_current = _Current()


class _ConsoleProxy:
    """Forwards every attribute to the current thread's console (or the default one)."""

    def __init__(self, which: str, default: Console) -> None:
        self._which = which
        self._default = default

    def _console(self) -> Console:
        found: Console | None = getattr(_current, self._which)
        return found if found is not None else self._default

    def __getattr__(self, name: str) -> Any:
        return getattr(self._console(), name)

    def __enter__(self) -> Console:  # `with console:` (Rich's buffering), which getattr misses
        return self._console().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._console().__exit__(*exc)


#: the width of output that goes to a pipe or a file: wide enough that a table's
#: columns are not cut to "co…" for `grep` (a terminal, or COLUMNS, sets its own)
PIPE_WIDTH = 200


def default_width(stream: TextIO) -> int | None:
    """None for a terminal (or COLUMNS): Rich measures it; PIPE_WIDTH otherwise."""
    if os.environ.get("COLUMNS") or stream.isatty():
        return None  # Rich asks the terminal (or reads COLUMNS)
    return PIPE_WIDTH


console = cast(
    Console, _ConsoleProxy("out", Console(highlight=False, width=default_width(sys.stdout)))
)


def current_console() -> Console:
    """This thread's console itself, for Rich objects that print from threads of their own
    (Progress, Live): handed the proxy, they would print to the process's stdout."""
    return cast(_ConsoleProxy, console)._console()


errors = cast(
    Console,
    _ConsoleProxy("err", Console(stderr=True, highlight=False, width=default_width(sys.stderr))),
)


def _console_for(
    stream: TextIO, width: int, is_terminal: bool, color_system: str | None
) -> Console:
    return Console(
        file=stream,
        width=width,
        force_terminal=is_terminal,
        color_system=cast(Any, color_system) if is_terminal and color_system else None,
        no_color=not (is_terminal and color_system),
        highlight=False,
    )


@contextmanager
def redirected(out: TextIO, err: TextIO, terminals: tuple[Any, Any]) -> Iterator[None]:
    """In this thread, `console` and `errors` print to `out` and `err`, for the terminals
    described (objects with width, is_terminal, color_system)."""
    before = (_current.out, _current.err)
    t_out, t_err = terminals
    _current.out = _console_for(out, t_out.width, t_out.is_terminal, t_out.color_system)
    _current.err = _console_for(err, t_err.width, t_err.is_terminal, t_err.color_system)
    try:
        yield
    finally:
        _current.out, _current.err = before


def describe(which: Console) -> dict[str, Any]:
    """Width, terminal and colour system of a console, for a runtime to render alike."""
    return {
        "width": which.width,
        "is_terminal": which.is_terminal,
        "color_system": which.color_system,
    }


def print_json(data: Any) -> None:
    console.file.write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A Rich table; a column of timestamps never wraps (a time cut in two lines cannot
    be read, copied or grepped), the other columns give way."""
    result = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        times = any(
            isinstance(row[index], str) and TIMESTAMP_PATTERN.fullmatch(row[index])
            for row in rows
            if index < len(row)
        )
        result.add_column(column, no_wrap=times)
    for row in rows:
        result.add_row(*[str(v) for v in row])
    return result
