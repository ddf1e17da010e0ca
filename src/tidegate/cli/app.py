"""Entry point: the Typer app, and the one place errors become messages and exit codes.

A user never sees a traceback: a `TidegateError` prints its message (exit 1; a broken
project exits 2), a usage mistake (unknown command or option, missing argument) prints
click's message and exits 2, anything unexpected prints one line asking for a bug report,
and `TIDEGATE_DEBUG=1` shows the traceback for those who want it.

Typer 0.29 ships its own copy of click (`typer._click`) while older versions use the
standalone package, so usage errors are recognised under both (`_click_errors`).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from tidegate.cli import (
    commands_demo,
    commands_egress,
    commands_governance,
    commands_observe,
    commands_privacy,
    commands_project,
    commands_requests,
    commands_status,
    commands_stream,
    commands_sync_safe,
)
from tidegate.console import errors
from tidegate.errors import ConfigError, TidegateError
from tidegate.extras import MissingExtraError
from tidegate.private import restrict_umask
from tidegate.timestamps import format_timestamp

app = typer.Typer(
    name="tidegate",
    help=(
        "tidegate keeps governed data products fresh and serves them back to operational "
        "systems, within what each person consented to.\n\n"
        "Start with `tidegate demo`, or `tidegate init DIR` for a project of your own."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def _show_version(value: bool) -> None:
    if value:
        from tidegate import __version__

        typer.echo(f"tidegate {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """tidegate keeps governed data products fresh and serves them back to operational
    systems, within what each person consented to.

    Start with `tidegate demo`, or `tidegate init DIR` for a project of your own.
    """


commands_demo.register(app)
commands_project.register(app)
commands_egress.register(app)
commands_observe.register(app)
commands_privacy.register(app)
commands_governance.register(app)
commands_requests.register(app)
commands_stream.register(app)
commands_status.register(app)
commands_sync_safe.register(app)


class _LogFormatter(logging.Formatter):
    """Log lines carry the one timestamp format people see everywhere (`timestamps.py`)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return str(format_timestamp(record.created))


def main(argv: list[str] | None = None) -> None:
    """Run a command line; `argv` None is this process's own (`sys.argv`), which a live
    runtime of the project may run instead (`cli/forward.py`); a runtime running a command
    for the CLI passes the line it was handed."""
    restrict_umask()  # project state at rest is the owner's only (private.py)
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=os.environ.get("TIDEGATE_LOG_LEVEL", "WARNING").upper(), handlers=[handler]
    )
    if argv is None:
        from tidegate.cli.forward import forward_to_runtime

        argv = sys.argv[1:]
        forwarded = forward_to_runtime(typer.main.get_command(app), argv)
        if forwarded is not None:
            sys.exit(forwarded)
    try:
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except (ConfigError, MissingExtraError) as err:
        errors.print(f"[red]error:[/red] {escape(err.message)}", markup=True, soft_wrap=True)
        sys.exit(2)
    except TidegateError as err:
        errors.print(f"[red]error:[/red] {escape(err.message)}", markup=True, soft_wrap=True)
        sys.exit(1)
    except OSError as err:  # a path that cannot be read or written: the environment, not a bug
        where = f": {err.filename}" if err.filename else ""
        errors.print(
            f"[red]error:[/red] {escape(err.strerror or str(err))}{escape(where)}",
            markup=True,
            soft_wrap=True,
        )
        sys.exit(1)
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        errors.print("aborted")
        sys.exit(1)
    except Exception as err:
        click_error, click_exit, click_abort = _click_errors()
        if isinstance(err, click_error):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click_exit):
            sys.exit(err.exit_code)
        if isinstance(err, click_abort):
            errors.print("aborted")
            sys.exit(1)
        if os.environ.get("TIDEGATE_DEBUG"):
            raise
        errors.print(
            f"[red]internal error:[/red] {escape(type(err).__name__)}: {escape(str(err))}\n"
            "This is a bug in tidegate; rerun with TIDEGATE_DEBUG=1 for details.",
            markup=True,
        )
        sys.exit(70)


def _click_errors() -> tuple[tuple[type[Any], ...], tuple[type[Any], ...], tuple[type[Any], ...]]:
    """(ClickException, Exit, Abort) classes of every click copy in use: the standalone
    package and, when typer vendors one, `typer._click`."""
    import importlib

    found: list[Any] = []
    for name in ("click.exceptions", "typer._click.exceptions"):
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            continue

    def classes(name: str) -> tuple[type[Any], ...]:
        return tuple(cls for m in found if isinstance(cls := getattr(m, name, None), type))

    return classes("ClickException"), classes("Exit"), classes("Abort")
