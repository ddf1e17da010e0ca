"""The `scale` benchmark's own tables: the per-core and marginal arithmetic the README's
scaling model is built on, from a synthetic result (no engine runs here)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `benchmarks`

from benchmarks.scale import build_table, stream_name, stream_table


def _stats(value: float) -> dict[str, float]:
    return {"n": 1, "median": value, "min": value, "max": value}


def _build(total: float, load: float, build: float, publish: float, outputs: int) -> dict[str, Any]:
    return {
        "primary": _stats(total),
        "metrics": {
            "load_sources_s": _stats(load),
            "build_s": _stats(build),
            "publish_s": _stats(publish),
            "output_rows": _stats(outputs),
            "rows_per_core_per_s": _stats(1.0),
        },
        "errors": [],
    }


def _result() -> dict[str, Any]:
    rows = {"1x": {"a": 100_000}, "10x": {"a": 1_000_000}}
    return {
        "contenders": [
            {"name": n, "group": n.split()[-1] if " " in n else "stream"}
            for n in ("duckdb 1x", "spark 1x", "duckdb 10x", "spark 10x")
        ]
        + [
            {"name": stream_name(1), "group": "stream"},
            {"name": stream_name(2), "group": "stream"},
        ],
        "environment": {"rows": rows},
        "summary": {
            "duckdb 1x": _build(1.0, 0.4, 0.3, 0.1, 10_000),
            "duckdb 10x": _build(2.8, 1.3, 0.6, 0.7, 100_000),
            "spark 1x": _build(10.0, 3.0, 6.0, 1.0, 10_000),
            "spark 10x": _build(19.0, 6.0, 9.0, 4.0, 100_000),
            stream_name(1): {
                "primary": _stats(2.0),
                "metrics": {
                    "events_per_s": _stats(10_000),
                    "events_per_worker_per_s": _stats(10_000),
                },
            },
            stream_name(2): {"primary": {"n": 0}, "metrics": {}, "errors": ["boom"]},
        },
        "samples": [
            {
                "contender": stream_name(1),
                "warmup": False,
                "info": {"events": 20_000, "standbys": 0},
            }
        ],
    }


def _text(table: Any) -> str:
    console = Console(record=True, width=250)
    console.print(table)
    return " ".join(console.export_text().split())  # captions wrap: compare words


def test_marginal_cost_takes_the_fixed_overhead_out() -> None:
    text = _text(build_table(_result(), cores=2))
    # duckdb: 900,000 more rows in 1.8 s on 2 cores = 250,000 rows/s/core;
    # fixed = 1.0 - 100,000 * 1.8 / 900,000 = 0.8 s; load 900k/0.9/2 = 500,000;
    # build 900k/0.3/2 = 1,500,000; publish 90,000 rows / 0.6 s = 150,000 rows/s
    assert "duckdb marginal (largest - smallest size): 250,000 rows/s/core" in text
    assert "fixed overhead ~0.80 s" in text
    assert "load 500,000, build 1,500,000 rows/s/core; publish 150,000 rows/s" in text
    # spark: 900k / 9 s / 2 = 50,000; fixed = 10 - 100k * 9 / 900k = 9.0 s
    assert "spark marginal (largest - smallest size): 50,000 rows/s/core" in text
    assert "fixed overhead ~9.00 s" in text
    assert "1,000,000" in text  # the input rows per size


def test_stream_table_shows_rates_and_a_failed_run() -> None:
    text = _text(stream_table(_result()))
    assert "10,000" in text
    assert "20,000" in text
    assert "FAILED" in text  # the 2-worker run that failed is not silently dropped
