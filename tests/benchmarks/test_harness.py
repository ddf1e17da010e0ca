"""The benchmark harness's bookkeeping: statistics, alternation, ratios, JSON, venvs.

No timing is asserted here: the numbers a benchmark measures belong in its report, not
in a test that a noisy machine would make flaky.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `benchmarks`

from benchmarks.harness import (
    Benchmark,
    Console,
    Contender,
    Metric,
    Sample,
    Settings,
    Stopwatch,
    describe_slowdown,
    latency_summary,
    median,
    peer_venv,
    percentile,
    ratios,
    references,
    requirements_stamp,
    run_benchmark,
    schedule,
    summarize,
    timed_attribute,
    write_results,
)

# ---------------------------------------------------------------- statistics


def test_median_of_odd_and_even_counts() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert median([7.0]) == 7.0


def test_percentile_interpolates_like_numpy_linear() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 95) == pytest.approx(95.05)


def test_percentile_ignores_input_order_and_rejects_nonsense() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_summarize_reports_median_spread_and_count() -> None:
    summary = summarize([1.0, 2.0, 3.0, 10.0])
    assert summary["n"] == 4
    assert summary["median"] == 2.5
    assert summary["min"] == 1.0
    assert summary["max"] == 10.0
    assert summary["mean"] == 4.0
    assert summary["stdev"] == pytest.approx(math.sqrt((9 + 4 + 1 + 36) / 3))
    assert summarize([]) == {"n": 0}
    assert summarize([2.0])["stdev"] == 0.0


def test_latency_summary_has_p50_p95_p99() -> None:
    latencies = [i / 1000 for i in range(1, 1001)]
    summary = latency_summary(latencies)
    assert set(summary) == {"p50", "p95", "p99", "count", "max"}
    assert summary["count"] == 1000
    assert summary["p50"] < summary["p95"] < summary["p99"] <= summary["max"]
    assert latency_summary([]) == {}


# ---------------------------------------------------------------- alternation


def test_schedule_runs_every_contender_once_per_round_and_rotates() -> None:
    plan = schedule(["a", "b", "c"], 4)
    assert plan == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    for order in plan:
        assert sorted(order) == ["a", "b", "c"]


def test_schedule_without_rotation_keeps_the_order() -> None:
    assert schedule(["a", "b"], 3, rotate=False) == [["a", "b"]] * 3


def test_schedule_puts_each_contender_in_each_position_equally_often() -> None:
    names = ["x", "y", "z", "w"]
    plan = schedule(names, 2 * len(names))
    for position in range(len(names)):
        firsts = [order[position] for order in plan]
        assert sorted(firsts) == sorted(names * 2)


def test_schedule_of_nothing_is_empty_rounds() -> None:
    assert schedule([], 2) == [[], []]


# ---------------------------------------------------------------- references and ratios

SECONDS = Metric("seconds")
RATE = Metric("requests/s", higher_is_better=True)


def test_reference_is_the_best_flagged_contender_of_each_group() -> None:
    contenders = [
        Contender("tg", "tidegate", "initial"),
        Contender("copy-csv", "limit", "initial", reference=True),
        Contender("copy-bin", "limit", "initial", reference=True),
        Contender("tg-inc", "tidegate", "incremental"),
        Contender("raw-inc", "limit", "incremental", reference=True),
    ]
    medians = {"tg": 10.0, "copy-csv": 2.0, "copy-bin": 1.5, "tg-inc": 4.0, "raw-inc": 0.5}
    assert references(contenders, medians, SECONDS) == {
        "initial": "copy-bin",
        "incremental": "raw-inc",
    }
    result = ratios(contenders, medians, SECONDS)
    assert result["tg"] == {"reference": "copy-bin", "ratio": pytest.approx(10 / 1.5),
                            "slowdown": pytest.approx(10 / 1.5)}  # fmt: skip
    assert result["copy-bin"]["ratio"] == 1.0
    assert result["tg-inc"]["ratio"] == pytest.approx(8.0)


def test_ratio_for_a_rate_turns_into_a_slowdown() -> None:
    contenders = [Contender("api", "tidegate"), Contender("raw", "limit", reference=True)]
    result = ratios(contenders, {"api": 1_000.0, "raw": 100_000.0}, RATE)
    assert result["api"]["ratio"] == pytest.approx(0.01)  # tidegate / limit
    assert result["api"]["slowdown"] == pytest.approx(100.0)  # times slower
    assert describe_slowdown(100.0) == "100.00x slower"
    assert describe_slowdown(0.5) == "2.00x faster"


def test_a_group_without_a_measured_reference_gets_no_ratio() -> None:
    contenders = [Contender("tg", "tidegate"), Contender("raw", "limit", reference=True)]
    assert ratios(contenders, {"tg": 1.0}, SECONDS) == {}


def test_contender_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="kind"):
        Contender("x", "fastest")


# ---------------------------------------------------------------- a whole run, with fakes


class FakeBenchmark(Benchmark):
    """Deterministic 'measurements' from a script, and a log of what ran when."""

    name = "fake"
    title = "a fake benchmark"
    rounds_full = 3
    rounds_quick = 2
    warmup_full = 1
    warmup_quick = 1
    log: ClassVar[list[str]] = []
    values: ClassVar[dict[str, list[float]]] = {}

    def contenders(self) -> list[Contender]:
        return [
            Contender("tidegate", "tidegate"),
            Contender("limit", "limit", reference=True),
        ]

    def sizes(self) -> dict[str, Any]:
        return {"rows": 10}

    def prepare(self) -> None:
        self.log.append("prepare")

    def run(self, contender: Contender) -> Sample:
        self.log.append(contender.name)
        value = self.values[contender.name].pop(0)
        latencies = [value / 10] * 3 if contender.name == "tidegate" else []
        return Sample(value, {"part_s": value / 2}, latencies=latencies)

    def teardown(self) -> None:
        self.log.append("teardown")


@pytest.fixture
def fake() -> type[FakeBenchmark]:
    FakeBenchmark.log = []
    FakeBenchmark.values = {
        "tidegate": [100.0, 4.0, 6.0, 5.0],  # first one is the warm-up
        "limit": [100.0, 1.0, 3.0, 2.0],
    }
    return FakeBenchmark


def test_a_run_alternates_counts_only_after_warmup_and_tears_down(
    fake: type[FakeBenchmark], tmp_path: Path
) -> None:
    settings = Settings(results_dir=tmp_path / "results", workdir=tmp_path / "work")
    result = run_benchmark(fake, settings, Console(quiet=True))
    assert fake.log == [
        "prepare",
        "tidegate", "limit",  # warm-up
        "limit", "tidegate",
        "tidegate", "limit",
        "limit", "tidegate",
        "teardown",
    ]  # fmt: skip
    assert result["summary"]["tidegate"]["primary"]["median"] == 5.0  # warm-up 100 left out
    assert result["summary"]["limit"]["primary"]["median"] == 2.0
    assert result["ratios"]["tidegate"]["ratio"] == pytest.approx(2.5)
    assert result["summary"]["tidegate"]["metrics"]["part_s"]["median"] == 2.5
    assert result["summary"]["tidegate"]["latency"]["count"] == 9
    assert result["summary"]["limit"]["latency"] == {}
    assert len(result["samples"]) == 8
    assert sum(s["warmup"] for s in result["samples"]) == 2
    assert not (tmp_path / "work" / "fake").exists()  # scratch removed


def test_a_benchmark_prints_its_own_tables_from_the_result(
    fake: type[FakeBenchmark], tmp_path: Path
) -> None:
    from rich.table import Table

    seen: list[float] = []

    class WithTable(fake):  # type: ignore[valid-type,misc]
        def tables(self, result: dict[str, Any]) -> list[Table]:
            median = result["summary"]["tidegate"]["primary"]["median"]
            seen.append(median)
            table = Table(title="own table")
            table.add_column("tidegate median")
            table.add_row(f"{median:.1f}")
            return [table]

    console = Console(record=True, width=120)
    settings = Settings(results_dir=tmp_path, workdir=tmp_path / "work", write_json=False)
    run_benchmark(WithTable, settings, console)
    assert seen == [5.0]  # called once, with the assembled result
    text = console.export_text()
    assert "own table" in text
    assert text.index("own table") > text.index("a fake benchmark")  # after the standard one


def test_a_failing_own_table_does_not_lose_the_result(
    fake: type[FakeBenchmark], tmp_path: Path
) -> None:
    class Broken(fake):  # type: ignore[valid-type,misc]
        def tables(self, result: dict[str, Any]) -> list[Any]:
            raise KeyError("missing")

    console = Console(record=True, width=120)
    result = run_benchmark(Broken, Settings(results_dir=tmp_path, workdir=tmp_path / "w"), console)
    assert (tmp_path / "latest-fake.json").exists()
    assert result["summary"]["tidegate"]["primary"]["median"] == 5.0
    assert "its own tables failed" in console.export_text()


def test_a_failing_contender_is_recorded_dropped_and_the_rest_goes_on(
    fake: type[FakeBenchmark], tmp_path: Path
) -> None:
    fake.values["limit"] = []  # pop from an empty list: IndexError on its first run
    settings = Settings(results_dir=tmp_path, workdir=tmp_path / "work", repeats=2, warmup=0)
    result = run_benchmark(fake, settings, Console(quiet=True))
    assert result["summary"]["limit"]["errors"]
    assert result["summary"]["limit"]["primary"] == {"n": 0}
    assert result["summary"]["tidegate"]["primary"]["n"] == 2
    assert fake.log.count("limit") == 1
    assert fake.log[-1] == "teardown"
    assert result["ratios"] == {}


def test_a_run_writes_stamped_and_latest_json_with_everything(
    fake: type[FakeBenchmark], tmp_path: Path
) -> None:
    results = tmp_path / "results"
    settings = Settings(results_dir=results, workdir=tmp_path / "work", quick=True)
    run_benchmark(fake, settings, Console(quiet=True))
    files = sorted(p.name for p in results.iterdir())
    assert len(files) == 2
    assert "latest-fake.json" in files
    stamped = next(f for f in files if f != "latest-fake.json")
    assert stamped.startswith("fake-")
    assert stamped.endswith("Z.json")
    data = json.loads((results / "latest-fake.json").read_text())
    assert data == json.loads((results / stamped).read_text())
    assert data["quick"] is True
    assert data["rounds"] == 2
    assert data["sizes"] == {"rows": 10}
    for key in ("nproc", "memory_bytes", "python", "versions", "git_commit"):
        assert key in data["machine"]
    assert "duckdb" in data["machine"]["versions"]
    sample = data["samples"][1]
    assert set(sample) >= {"contender", "round", "warmup", "value", "metrics", "latencies_us"}
    tidegate = [s for s in data["samples"] if s["contender"] == "tidegate"]
    assert tidegate[1]["latencies_us"] == [400_000.0] * 3  # 4.0 / 10 s, in µs
    assert data["summary"]["limit"]["primary"]["median"] == 2.0


def test_write_results_names_files_by_utc_time(tmp_path: Path) -> None:
    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    stamped, latest = write_results({"benchmark": "x", "v": math.inf}, tmp_path, when)
    assert stamped.name == "x-20250102T030405Z.json"
    assert latest.name == "latest-x.json"
    assert stamped.read_text() == latest.read_text()
    assert not list(tmp_path.glob("*.partial"))


# ---------------------------------------------------------------- helpers


def test_stopwatch_and_timed_attribute_accumulate_and_restore() -> None:
    class Thing:
        def work(self, x: int) -> int:
            return x * 2

    thing = Thing()
    watch = Stopwatch()
    with timed_attribute(thing, "work", watch, "work"):
        assert thing.work(2) == 4
        assert thing.work(3) == 6
    assert "work" in watch.spans
    assert "work" not in vars(thing)  # the method is the class's again
    assert thing.work(1) == 2


def test_timed_attribute_restores_a_module_function() -> None:
    import types

    module = types.ModuleType("m")
    module.f = lambda: 1  # type: ignore[attr-defined]
    original = module.f  # type: ignore[attr-defined]
    watch = Stopwatch()
    with timed_attribute(module, "f", watch, "f"):
        assert module.f() == 1  # type: ignore[attr-defined]
        assert module.f is not original  # type: ignore[attr-defined]
    assert module.f is original  # type: ignore[attr-defined]


def test_peer_venv_refuses_unpinned_requirements(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pin"):
        peer_venv("x", ["feast>=0.40"], venvs_dir=tmp_path)
    with pytest.raises(ValueError, match="pin"):
        peer_venv("x", ["dlt"], venvs_dir=tmp_path)
    with pytest.raises(ValueError, match="no requirements"):
        peer_venv("x", [], venvs_dir=tmp_path)


def test_peer_venv_reuses_a_venv_built_from_the_same_pins(tmp_path: Path) -> None:
    python = tmp_path / "peer" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    pins = ["dlt==1.0.0", "psycopg2-binary==2.9.9"]
    (tmp_path / "peer" / ".tidegate-bench-requirements").write_text(
        requirements_stamp(list(reversed(pins)))  # order does not matter
    )
    assert peer_venv("peer", pins, venvs_dir=tmp_path) == python  # no install attempted


def test_requirements_stamp_changes_with_the_pins() -> None:
    assert requirements_stamp(["a==1"]) != requirements_stamp(["a==2"])
    assert requirements_stamp(["a==1", "b==1"]) == requirements_stamp(["b==1", "a==1"])
