"""Entry point: the Typer app, and the one place errors become messages and exit codes.

A user never sees a traceback: a `TidegateError` prints its message (exit 1; a broken
project exits 2), anything unexpected prints one line asking for a bug report, and
`TIDEGATE_DEBUG=1` shows the traceback for those who want it.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from tidegate.cli import (
    commands_demo,
    commands_egress,
    commands_governance,
    commands_observe,
    commands_privacy,
    commands_project,
    commands_requests,
    commands_stream,
)
from tidegate.console import errors
from tidegate.errors import ConfigError, TidegateError

app = typer.Typer(
    name="tidegate",
    help=(
        "tidegate keeps governed data products fresh and serves them back to operational "
        "systems, within what each person consented to.\n\n"
        "Start with `tidegate demo`, or `tidegate init DIR` for a project of your own."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
commands_demo.register(app)
commands_project.register(app)
commands_egress.register(app)
commands_observe.register(app)
commands_privacy.register(app)
commands_governance.register(app)
commands_requests.register(app)
commands_stream.register(app)


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("TIDEGATE_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except ConfigError as err:
        errors.print(f"[red]error:[/red] {err.message}", markup=True, soft_wrap=True)
        sys.exit(2)
    except TidegateError as err:
        errors.print(f"[red]error:[/red] {err.message}", markup=True, soft_wrap=True)
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
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if os.environ.get("TIDEGATE_DEBUG"):
            raise
        errors.print(
            f"[red]internal error:[/red] {type(err).__name__}: {err}\n"
            "This is a bug in tidegate; rerun with TIDEGATE_DEBUG=1 for details.",
            markup=True,
        )
        sys.exit(70)
