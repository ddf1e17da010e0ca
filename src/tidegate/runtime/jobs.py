"""Jobs that span stages: build products (with progress for people), then run the syncs
their builds trigger."""

from __future__ import annotations

from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from tidegate.console import console, current_console, table
from tidegate.egress.sync import SyncReport
from tidegate.platform import Platform
from tidegate.products.builder import BuildResult
from tidegate.runtime.triggers import after_builds


def syncs_after_build(platform: Platform, results: list[BuildResult]) -> list[SyncReport]:
    """Run every `on_build` and `on_change` sync whose product just published a new
    version (a rebuild is a change too: `runtime/triggers.py`)."""
    return after_builds(platform, {r.product for r in results if r.status == "live"})


def run_build(
    platform: Platform,
    only: list[str] | None = None,
    skip_sources: bool = False,
    accept_anomalies: bool = False,
) -> list[BuildResult]:
    """Load sources and build, with progress bars and a result table."""
    from tidegate.products.builder import build_products, load_sources

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=current_console(),
    ) as progress:
        if not skip_sources:
            task = progress.add_task("loading sources", total=None)
            loaded = load_sources(platform)
            progress.update(
                task,
                description=f"loaded {len(loaded)} sources ({sum(loaded.values()):,} rows)",
                completed=1,
                total=1,
            )
        tasks: dict[str, TaskID] = {}

        def on_progress(name: str, status: str) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"building {name}", total=1)
            if status != "building":
                progress.update(tasks[name], description=f"{name}: {status}", completed=1)

        results = build_products(platform, only, on_progress, accept_anomalies=accept_anomalies)
    console.print(
        table(
            "Products",
            ["product", "status", "version", "rows", "seconds", "error"],
            [
                [r.product, r.status, r.version, f"{r.rows:,}", f"{r.seconds:.2f}", r.error]
                for r in results
            ],
        )
    )
    return results
