"""A small benchmark framework: contenders side by side, alternated, medians and ratios.

Shape of one benchmark run:

1. `prepare()` once (data, projects, servers), untimed.
2. `rounds` rounds (plus `warmup_rounds` whose samples are kept but not counted). Each
   round runs every contender once; the order rotates by one each round, so no
   contender always goes first (or always right after the same neighbour). Contenders
   alternate, they never run back to back in blocks: a noisy minute hits all of them.
3. `run(contender)` returns one `Sample`: the primary metric (what the benchmark's
   `Metric` names), optional secondary metrics (breakdowns), optional per-operation
   latencies. `run` times what it measures itself, so untimed setup can live in it.
4. `teardown()` once, always, even after an error or Ctrl-C.

Statistics: the median of the primary metric over counted rounds, its spread (min and
max), and p50/p95/p99 over every latency sample of every counted round. Ratios are
taken within a group against its reference: the best median among the group's
contenders flagged `reference` (usually the physical limit, e.g. raw DuckDB or COPY).

Results are printed as Rich tables and written as JSON, with the machine's description
and every raw sample, to `benchmarks/results/<benchmark>-<UTC timestamp>.json` and
`benchmarks/results/latest-<benchmark>.json`.
"""

from __future__ import annotations

import cProfile
import datetime as dt
import hashlib
import io
import json
import math
import os
import platform
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent
RESULTS_DIR = ROOT / "results"
VENVS_DIR = ROOT / ".venvs"
PERCENTILES = (50.0, 95.0, 99.0)
KINDS = ("tidegate", "peer", "limit", "baseline")


# ---------------------------------------------------------------- data model


@dataclass(frozen=True)
class Metric:
    """The primary number of a benchmark, and which way is better."""

    name: str  # e.g. "seconds", "requests/s"
    higher_is_better: bool = False

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b


@dataclass(frozen=True)
class Contender:
    """One way of doing the benchmark's job.

    `kind` is `tidegate`, `peer` (what a user would pick instead), `limit` (the physical
    limit: raw engine, no framework) or `baseline` (an informative floor, never a
    reference). Ratios compare contenders of the same `group` with its reference.
    """

    name: str
    kind: str
    group: str = "main"
    reference: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"contender {self.name!r}: kind must be one of {KINDS}")


@dataclass
class Sample:
    """What one run of one contender measured."""

    value: float
    metrics: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds per operation
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Settings:
    quick: bool = False
    repeats: int | None = None  # overrides the benchmark's own number of rounds
    warmup: int | None = None  # overrides the benchmark's own number of warm-up rounds
    results_dir: Path = RESULTS_DIR
    workdir: Path | None = None  # a temporary folder when None
    keep_workdir: bool = False
    write_json: bool = True
    #: run tidegate's contenders under cProfile (timings inflate; for finding hot spots)
    profile: bool = False


class Benchmark(ABC):
    """Subclass, set the class variables, implement `contenders` and `run`; `@register` it."""

    name: ClassVar[str]
    title: ClassVar[str]
    metric: ClassVar[Metric] = Metric("seconds")
    rotate: ClassVar[bool] = True
    #: (full, quick) rounds counted in the statistics, and warm-up rounds before them
    rounds_full: ClassVar[int] = 5
    rounds_quick: ClassVar[int] = 3
    warmup_full: ClassVar[int] = 1
    warmup_quick: ClassVar[int] = 1
    #: whether `--profile` wraps `run` in cProfile here (False: tidegate runs elsewhere,
    #: e.g. in a server process, and the benchmark profiles that itself)
    profile_in_process: ClassVar[bool] = True

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir

    @property
    def quick(self) -> bool:
        return self.settings.quick

    @abstractmethod
    def contenders(self) -> list[Contender]: ...

    def todo(self) -> list[str]:
        """Contenders planned but not written yet (shown in the table and the JSON)."""
        return []

    def sizes(self) -> dict[str, Any]:
        return {}

    def environment(self) -> dict[str, Any]:
        """Versions of the services and peers involved (called after `prepare`)."""
        return {}

    def prepare(self) -> None:  # noqa: B027  (optional hook)
        pass

    @abstractmethod
    def run(self, contender: Contender) -> Sample: ...

    def teardown(self) -> None:  # noqa: B027  (optional hook)
        pass

    def tables(self, result: dict[str, Any]) -> list[Table]:
        """Tables of the benchmark's own, printed after the standard ones (e.g. `scale`'s
        per-stage and per-core table); `result` is what goes into the JSON."""
        return []

    def rounds(self) -> int:
        if self.settings.repeats is not None:
            return self.settings.repeats
        return self.rounds_quick if self.quick else self.rounds_full

    def warmup_rounds(self) -> int:
        if self.settings.warmup is not None:
            return self.settings.warmup
        return self.warmup_quick if self.quick else self.warmup_full


REGISTRY: dict[str, type[Benchmark]] = {}


def register(cls: type[Benchmark]) -> type[Benchmark]:
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"two benchmarks are named {cls.name!r}")
    REGISTRY[cls.name] = cls
    return cls


# ---------------------------------------------------------------- scheduling and statistics


def schedule(names: Sequence[str], rounds: int, *, rotate: bool = True) -> list[list[str]]:
    """The order of runs: every contender once per round, the start rotating each round."""
    order = list(names)
    plan = []
    for index in range(rounds):
        shift = index % len(order) if (rotate and order) else 0
        plan.append(order[shift:] + order[:shift])
    return plan


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile {pct} is outside 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * pct / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, spread and count of one contender's counted samples."""
    if not values:
        return {"n": 0}
    mean = sum(values) / len(values)
    spread = (
        math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        if len(values) > 1
        else 0.0
    )
    return {
        "n": len(values),
        "median": median(values),
        "min": min(values),
        "max": max(values),
        "mean": mean,
        "stdev": spread,
    }


def latency_summary(latencies: Sequence[float]) -> dict[str, float]:
    if not latencies:
        return {}
    summary = {f"p{pct:g}": percentile(latencies, pct) for pct in PERCENTILES}
    summary["count"] = len(latencies)
    summary["max"] = max(latencies)
    return summary


def references(
    contenders: Sequence[Contender], medians: dict[str, float], metric: Metric
) -> dict[str, str]:
    """group -> name of its reference: the best median among its `reference` contenders."""
    chosen: dict[str, str] = {}
    for contender in contenders:
        if not contender.reference or contender.name not in medians:
            continue
        current = chosen.get(contender.group)
        if current is None or metric.better(medians[contender.name], medians[current]):
            chosen[contender.group] = contender.name
    return chosen


def ratios(
    contenders: Sequence[Contender], medians: dict[str, float], metric: Metric
) -> dict[str, dict[str, Any]]:
    """Each contender against its group's reference.

    `ratio` is value / reference value of the primary metric; `slowdown` turns it into
    "times slower than the reference" whatever the metric's direction (> 1: slower).
    """
    refs = references(contenders, medians, metric)
    result: dict[str, dict[str, Any]] = {}
    for contender in contenders:
        reference = refs.get(contender.group)
        value = medians.get(contender.name)
        if reference is None or value is None:
            continue
        base = medians[reference]
        ratio = value / base if base else math.inf
        inverse = base / value if value else math.inf
        slowdown = inverse if metric.higher_is_better else ratio
        result[contender.name] = {"reference": reference, "ratio": ratio, "slowdown": slowdown}
    return result


def describe_slowdown(slowdown: float) -> str:
    if math.isinf(slowdown):
        return "∞"
    if abs(slowdown - 1) < 0.005:
        return "1.00x" if slowdown == 1 else "~1.00x"
    if slowdown >= 1:
        return f"{slowdown:,.2f}x slower"
    return f"{1 / slowdown:,.2f}x faster"


# ---------------------------------------------------------------- environment


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT.parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _meminfo_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    commit = _git("rev-parse", "HEAD")
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": _meminfo_bytes(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "versions": {
            name: _version(name)
            for name in ("tidegate", "duckdb", "pyarrow", "psycopg", "starlette", "uvicorn")
        },
        "git_commit": commit or None,
        "git_dirty": (
            bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None
        ),
    }


# ---------------------------------------------------------------- running


@dataclass
class RawSample:
    contender: str
    round: int  # 0-based; warm-up rounds come first
    warmup: bool
    position: int  # place in the round's order
    wall_seconds: float  # the whole run() call, setup included
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@contextmanager
def workdir_for(settings: Settings, name: str) -> Iterator[Path]:
    if settings.workdir is not None:
        path = settings.workdir / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    else:
        path = Path(tempfile.mkdtemp(prefix=f"tidegate-bench-{name}-"))
    try:
        yield path
    finally:
        if not settings.keep_workdir:
            shutil.rmtree(path, ignore_errors=True)


def profile_path(results_dir: Path, benchmark: str, label: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    return results_dir / "profiles" / f"{benchmark}-{slug}.pstats"


@contextmanager
def profiled(
    results_dir: Path, benchmark: str, contender: str, index: int, console: Console
) -> Iterator[None]:
    """cProfile the block; write `results/profiles/<benchmark>-<contender>-r<N>.pstats`."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        path = profile_path(results_dir, benchmark, f"{contender}-r{index}")
        path.parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(path)
        console.print(f"  [dim]profile: {path}[/dim]")


def top_functions(path: Path, limit: int = 25, sort: str = "cumulative") -> str:
    """The heaviest functions of a .pstats file, as text (for a report or a terminal)."""
    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats(sort).print_stats(limit)
    return out.getvalue()


def timestamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")


def run_benchmark(
    cls: type[Benchmark], settings: Settings, console: Console | None = None
) -> dict[str, Any]:
    """Run one benchmark end to end; print its table; write its JSON; return the result."""
    console = console or Console()
    started_at = dt.datetime.now(dt.UTC)
    wall_started = time.perf_counter()
    machine = machine_info()
    raw: list[RawSample] = []
    failure: str | None = None
    with workdir_for(settings, cls.name) as workdir:
        bench = cls(settings, workdir)
        contenders = bench.contenders()
        names = [c.name for c in contenders]
        if len(set(names)) != len(names):
            raise ValueError(f"{cls.name}: contender names must be unique")
        by_name = {c.name: c for c in contenders}
        warmups, rounds = bench.warmup_rounds(), bench.rounds()
        console.rule(f"[bold]{cls.name}[/bold]: {cls.title}")
        console.print(f"sizes: {bench.sizes()}  ·  rounds: {rounds} (+{warmups} warm-up)")
        environment: dict[str, Any] = {}
        broken: set[str] = set()
        try:
            step = time.perf_counter()
            bench.prepare()
            console.print(f"[dim]prepared in {time.perf_counter() - step:.1f}s[/dim]")
            environment = bench.environment()
            plan = schedule(names, warmups + rounds, rotate=cls.rotate)
            for index, order in enumerate(plan):
                warm = index < warmups
                for position, name in enumerate(order):
                    if name in broken:
                        continue
                    raw.append(_run_one(bench, by_name[name], index, warm, position, console))
                    if raw[-1].error is not None:
                        broken.add(name)
        except KeyboardInterrupt:
            failure = "interrupted"
            raise
        except Exception as err:
            failure = f"{type(err).__name__}: {err}"
            console.print(f"[red]{cls.name} failed:[/red] {failure}")
            console.print(traceback.format_exc(), markup=False, highlight=False)
        finally:
            try:
                bench.teardown()
            except Exception as err:
                console.print(f"[red]{cls.name}: teardown failed:[/red] {err}")
        result = assemble(
            cls,
            bench,
            contenders,
            raw,
            machine=machine,
            environment=environment,
            started_at=started_at,
            wall_seconds=time.perf_counter() - wall_started,
            failure=failure,
        )
    console.print(render_table(result))
    details = render_details(result)
    if details is not None:
        console.print(details)
    try:
        for table in bench.tables(result):
            console.print(table)
    except Exception as err:  # a broken extra table must not lose the JSON
        console.print(f"[red]{cls.name}: its own tables failed:[/red] {err}")
    if settings.write_json:
        paths = write_results(result, settings.results_dir, started_at)
        console.print(f"[dim]wrote {paths[0]} and {paths[1].name}[/dim]")
    return result


def _run_one(
    bench: Benchmark,
    contender: Contender,
    index: int,
    warm: bool,
    position: int,
    console: Console,
) -> RawSample:
    started = time.perf_counter()
    record = RawSample(contender.name, index, warm, position, 0.0)
    profiling = bench.settings.profile and bench.profile_in_process and contender.kind == "tidegate"
    try:
        if profiling:
            with profiled(bench.settings.results_dir, bench.name, contender.name, index, console):
                sample = bench.run(contender)
        else:
            sample = bench.run(contender)
    except KeyboardInterrupt:
        raise
    except Exception as err:
        record.error = f"{type(err).__name__}: {err}"
        record.wall_seconds = time.perf_counter() - started
        console.print(f"  [red]{contender.name} failed (dropped from later rounds):[/red] {err}")
        console.print(traceback.format_exc(), markup=False, highlight=False)
        return record
    record.wall_seconds = time.perf_counter() - started
    record.value = float(sample.value)
    record.metrics = {k: float(v) for k, v in sample.metrics.items()}
    record.latencies = list(sample.latencies)
    record.info = dict(sample.info)
    tag = "warm-up" if warm else f"round {index + 1 - bench.warmup_rounds()}"
    console.print(
        f"  [dim]{tag:>9}[/dim]  {contender.name:<38} "
        f"{format_value(record.value, bench.metric)} {bench.metric.name}"
    )
    return record


def assemble(
    cls: type[Benchmark],
    bench: Benchmark,
    contenders: Sequence[Contender],
    raw: Sequence[RawSample],
    *,
    machine: dict[str, Any],
    environment: dict[str, Any],
    started_at: dt.datetime,
    wall_seconds: float,
    failure: str | None,
) -> dict[str, Any]:
    """Statistics over the counted samples, and everything needed to redo them by hand."""
    summaries: dict[str, dict[str, Any]] = {}
    medians: dict[str, float] = {}
    for contender in contenders:
        counted = [
            s for s in raw if s.contender == contender.name and not s.warmup and s.error is None
        ]
        errors = [s.error for s in raw if s.contender == contender.name and s.error]
        values = [s.value for s in counted if s.value is not None]
        summary: dict[str, Any] = {"primary": summarize(values), "errors": errors}
        metric_names = list(dict.fromkeys(k for s in counted for k in s.metrics))
        summary["metrics"] = {
            name: summarize([s.metrics[name] for s in counted if name in s.metrics])
            for name in metric_names
        }
        summary["latency"] = latency_summary([x for s in counted for x in s.latencies])
        summaries[contender.name] = summary
        if values:
            medians[contender.name] = summary["primary"]["median"]
    return {
        "benchmark": cls.name,
        "title": cls.title,
        "quick": bench.quick,
        "started_at": started_at.isoformat(),
        "wall_seconds": wall_seconds,
        "profiled": bench.settings.profile,
        "metric": asdict(cls.metric),
        "rounds": bench.rounds(),
        "warmup_rounds": bench.warmup_rounds(),
        "rotate": cls.rotate,
        "sizes": bench.sizes(),
        "machine": machine,
        "environment": environment,
        "contenders": [asdict(c) for c in contenders],
        "todo": bench.todo(),
        "summary": summaries,
        "ratios": ratios(contenders, medians, cls.metric),
        "samples": [sample_json(s) for s in raw],
        "failure": failure,
    }


def sample_json(sample: RawSample) -> dict[str, Any]:
    """A raw sample for JSON: latencies in microseconds, to 0.01 µs, to keep files small."""
    data = asdict(sample)
    data["latencies_us"] = [round(x * 1e6, 2) for x in data.pop("latencies")]
    return data


def write_results(
    result: dict[str, Any], results_dir: Path, started_at: dt.datetime
) -> tuple[Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1, default=str, allow_nan=True) + "\n"
    stamped = results_dir / f"{result['benchmark']}-{timestamp(started_at)}.json"
    latest = results_dir / f"latest-{result['benchmark']}.json"
    for path in (stamped, latest):
        partial = path.with_suffix(".json.partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    return stamped, latest


# ---------------------------------------------------------------- presentation


def format_value(value: float | None, metric: Metric | str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    name = metric.name if isinstance(metric, Metric) else metric
    if name.endswith(("/s", "per_s")):
        return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    if name.endswith(("seconds", "_s")):
        return f"{value:.3f}" if value < 10 else f"{value:.2f}"
    if name.endswith("_ms"):
        return f"{value:.3f}"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{value:,.0f}"
    return f"{value:,.4g}"


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.3f}"


def render_table(result: dict[str, Any]) -> Table:
    metric = Metric(**result["metric"])
    has_latency = any(s["latency"] for s in result["summary"].values())
    grouped = len({c["group"] for c in result["contenders"]}) > 1
    caption = f"sizes {result['sizes']} · {result['rounds']} rounds, medians"
    caption += " · QUICK" if result["quick"] else ""
    caption += " · PROFILED (tidegate's timings inflated)" if result.get("profiled") else ""
    for todo in result["todo"]:
        caption += f"\nTODO {todo}"
    table = Table(title=f"{result['benchmark']}: {result['title']}", caption=caption)
    headings = ["group"] if grouped else []
    headings += ["contender", "kind", "n", f"median {metric.name}", "min … max"]
    for heading in headings:
        table.add_column(heading, justify="right" if heading[0] in "nm" else "left")
    if has_latency:
        for pct in PERCENTILES:
            table.add_column(f"p{pct:g} ms", justify="right")
    table.add_column("vs reference", justify="right")
    for contender in result["contenders"]:
        name = contender["name"]
        summary = result["summary"][name]
        primary = summary["primary"]
        ratio = result["ratios"].get(name)
        if ratio is None:
            versus = "—"
        elif ratio["reference"] == name:
            versus = "reference"
        else:
            versus = describe_slowdown(ratio["slowdown"])
        cells = [contender["group"]] if grouped else []
        cells += [
            name,
            contender["kind"],
            str(primary.get("n", 0)),
            format_value(primary.get("median"), metric) if primary.get("n") else "—",
            (
                f"{format_value(primary['min'], metric)} … {format_value(primary['max'], metric)}"
                if primary.get("n")
                else ("FAILED" if summary["errors"] else "—")
            ),
        ]
        if has_latency:
            latency = summary["latency"]
            cells += [_ms(latency.get(f"p{pct:g}")) for pct in PERCENTILES]
        cells.append(versus)
        table.add_row(*cells)
    return table


def render_details(result: dict[str, Any]) -> Table | None:
    rows = []
    for contender in result["contenders"]:
        for metric_name, stats in result["summary"][contender["name"]]["metrics"].items():
            if stats.get("n"):
                rows.append((contender["name"], metric_name, stats))
    if not rows:
        return None
    table = Table(title=f"{result['benchmark']}: breakdown (medians)")
    for heading in ("contender", "metric", "median", "min … max"):
        table.add_column(heading, justify="right" if heading[0] == "m" else "left")
    for name, metric_name, stats in rows:
        low, high = format_value(stats["min"], metric_name), format_value(stats["max"], metric_name)
        table.add_row(
            name, metric_name, format_value(stats["median"], metric_name), f"{low} … {high}"
        )
    return table


def render_summary(results: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="Summary: medians, and each contender against its group's reference")
    for heading in ("benchmark", "group", "contender", "median", "metric", "vs reference"):
        table.add_column(heading, justify="right" if heading == "median" else "left")
    for result in results:
        metric = Metric(**result["metric"])
        for contender in result["contenders"]:
            name = contender["name"]
            primary = result["summary"][name]["primary"]
            ratio = result["ratios"].get(name)
            versus = "—"
            if ratio is not None:
                versus = (
                    f"reference ({contender['kind']})"
                    if ratio["reference"] == name
                    else describe_slowdown(ratio["slowdown"])
                )
            table.add_row(
                result["benchmark"],
                contender["group"],
                name,
                format_value(primary.get("median"), metric) if primary.get("n") else "FAILED",
                metric.name,
                versus,
            )
        if result["failure"]:
            table.add_row(result["benchmark"], "", f"[red]{result['failure']}[/red]", "", "", "")
    return table


# ---------------------------------------------------------------- small helpers for benchmarks


class Stopwatch:
    """Accumulates named spans: `with watch("load"): ...`; `watch.spans` in seconds."""

    def __init__(self) -> None:
        self.spans: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.spans[name] = self.spans.get(name, 0.0) + time.perf_counter() - started


@contextmanager
def timed_attribute(
    owner: Any, attribute: str, watch: Stopwatch, span: str, *, missing_ok: bool = False
) -> Iterator[None]:
    """Time every call of `owner.attribute` (a module function or method) into `span`.

    For breakdowns of tidegate's own time without editing its code; restored on exit.
    With `missing_ok`, an attribute that is gone (code moved on) is simply not timed.
    """
    if missing_ok and not hasattr(owner, attribute):
        yield
        return
    original: Callable[..., Any] = getattr(owner, attribute)
    own = attribute in getattr(owner, "__dict__", {})  # else a method found on its class

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with watch(span):
            return original(*args, **kwargs)

    setattr(owner, attribute, wrapper)
    try:
        yield
    finally:
        if own:
            setattr(owner, attribute, original)
        else:
            delattr(owner, attribute)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


# ---------------------------------------------------------------- peer virtual environments


def _requirement_is_pinned(requirement: str) -> bool:
    text = requirement.split(";", 1)[0].strip()
    return "==" in text and not any(op in text for op in (">", "<", "~=", "!=", "*"))


def requirements_stamp(requirements: Sequence[str], python: str = sys.executable) -> str:
    """What a peer venv was built from; a venv is reused only when this matches."""
    ordered = "\n".join(sorted(r.strip() for r in requirements))
    digest = hashlib.sha256(f"{python}\n{sys.version}\n{ordered}".encode()).hexdigest()
    return f"{digest}\n{ordered}\n"


def peer_venv(
    name: str,
    requirements: Sequence[str],
    *,
    venvs_dir: Path = VENVS_DIR,
    python: str = sys.executable,
    timeout: float = 900,
    console: Console | None = None,
) -> Path:
    """The Python of `benchmarks/.venvs/<name>`, created with pinned pip installs.

    A peer (Feast, Quix Streams, dlt, ...) lives in its own venv so its dependencies
    never touch tidegate's. Every requirement must be pinned (`pkg==1.2.3`), so a
    benchmark compares against a known version; the venv is reused while the pins and
    the interpreter are unchanged, and rebuilt otherwise.
    """
    if not requirements:
        raise ValueError(f"peer venv {name!r}: no requirements")
    loose = [r for r in requirements if not _requirement_is_pinned(r)]
    if loose:
        raise ValueError(f"peer venv {name!r}: pin every requirement with ==: {loose}")
    root = venvs_dir / name
    venv_python = root / "bin" / "python"
    stamp_file = root / ".tidegate-bench-requirements"
    wanted = requirements_stamp(requirements, python)
    if venv_python.exists() and stamp_file.exists() and stamp_file.read_text() == wanted:
        return venv_python
    if root.exists():
        shutil.rmtree(root)
    if console:
        console.print(f"[dim]creating peer venv {root} ({', '.join(requirements)})[/dim]")
    subprocess.run([python, "-m", "venv", str(root)], check=True, timeout=timeout)
    subprocess.run(
        [
            str(venv_python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements,
        ],
        check=True,
        timeout=timeout,
    )
    stamp_file.write_text(wanted)
    return venv_python


def run_json(
    command: Sequence[str],
    *,
    stdin: dict[str, Any] | None = None,
    timeout: float,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Run a helper process (a peer in its venv, a load generator) that prints one JSON
    object as its last stdout line; return it. Bounded by `timeout`."""
    completed = subprocess.run(
        list(command),
        input=json.dumps(stdin) if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{command[0]} exited with {completed.returncode}: {completed.stderr.strip()[-2000:]}"
        )
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"{command[0]} printed nothing; stderr: {completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
