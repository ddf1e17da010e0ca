"""`tidegate demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to create the demo project (recreated each run).")
    ] = Path("demo-shop"),
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep serving the API after the tour.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the data generator.")] = 7,
    small: Annotated[
        bool, typer.Option("--small", help="A few hundred customers instead of 10,000.")
    ] = False,
    port: Annotated[int, typer.Option(help="Port for the API (a free one if taken).")] = 8787,
) -> None:
    """Run a small online shop end to end: generate, build, sync, serve, and a guided tour.

    10k customers, 100k orders, 1M web events and their consent choices; products
    customer_360, churn_risk and marketing_audience; an API that shows each purpose only
    what it may see; a CRM sync that drops people who revoke. Ctrl-C stops it.
    """
    from tidegate.demo.runner import DemoOptions, run_demo

    run_demo(DemoOptions(directory=directory, seed=seed, small=small, serve=serve, port=port))
