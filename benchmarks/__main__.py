"""`python -m benchmarks [--quick] [--only NAME] [--list]`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from benchmarks import load_all
from benchmarks.harness import REGISTRY, RESULTS_DIR, Settings, render_summary, run_benchmark


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="tidegate side by side with its peers and the physical limit.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer rounds")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--repeats", type=int, help="counted rounds (default: per benchmark)")
    parser.add_argument("--warmup", type=int, help="warm-up rounds (default: per benchmark)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where JSON goes")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--no-json", action="store_true", help="print only, write no JSON")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile tidegate's runs into RESULTS/profiles/*.pstats (timings inflate)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_all()
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)  # a log file or CI: no wrapping at 80 columns
    if args.list:
        for name, cls in REGISTRY.items():
            console.print(f"[bold]{name:<16}[/bold] {cls.title}")
        return 0
    selected = args.only or list(REGISTRY)
    unknown = [name for name in selected if name not in REGISTRY]
    if unknown:
        console.print(f"[red]unknown benchmark(s): {', '.join(unknown)}[/red]; see --list")
        return 2
    if args.repeats is not None and args.repeats < 1:
        console.print("[red]--repeats must be at least 1[/red]")
        return 2
    settings = Settings(
        quick=args.quick,
        repeats=args.repeats,
        warmup=args.warmup,
        results_dir=args.results,
        workdir=args.workdir,
        keep_workdir=args.keep,
        write_json=not args.no_json,
        profile=args.profile,
    )
    started = time.perf_counter()
    results = [run_benchmark(REGISTRY[name], settings, console) for name in selected]
    console.rule("Summary")
    console.print(render_summary(results))
    failed = [r["benchmark"] for r in results if r["failure"]] + [
        f"{r['benchmark']}:{name}"
        for r in results
        for name, summary in r["summary"].items()
        if summary["errors"]
    ]
    console.print(f"all done in {time.perf_counter() - started:.1f}s")
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
