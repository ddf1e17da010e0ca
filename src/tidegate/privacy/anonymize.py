"""k-anonymity by generalisation and suppression (the engine behind `export.py`).

Given rows and a set of quasi-identifiers (QIs), produce rows in which every combination
of QI values (an equivalence class) is shared by at least `k` rows.

**Hierarchies.** Each QI gets a ladder of levels, level 0 being the value itself and the
last level `*` (fully suppressed):

| kind        | ladder                                                               |
| ----------- | -------------------------------------------------------------------- |
| numeric     | exact, ranges `[lo, hi)` of widths w, 2w, 4w ... (w ~ range / 64), `*` |
| date / time | exact (day), month `2026-03`, year `2026`, decade `2020s`, `*`        |
| string      | exact, then prefixes of 5, 4, 3, 2, 1 characters (`EC1A*`), `*`     |
| categorical | exact, `*` (a string column with at most 12 distinct values)         |

**Algorithm (greedy global recoding, then suppression).** All QIs start at level 0. While
more than `max_suppression` of the rows sit in classes smaller than `k`, raise by one
level the QI whose next level leaves the fewest rows in small classes (ties: the QI with
the lowest relative level, then the first named). When the budget holds, or every QI is
at `*`, the rows still in classes smaller than `k` are suppressed (removed). Global
recoding keeps one level per column, so the output is easy to read and to join; it loses
more than a local (Mondrian) partition on skewed data, which the information-loss report
shows.

**Information loss** is reported as: each QI's level and its label, the suppression
rate, the number of classes, the average class size, and the discernibility metric
(Σ|E|² over classes + suppressed * total rows; lower is better).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

SUPPRESSED = "*"
CATEGORICAL_MAX = 12
PREFIXES = (5, 4, 3, 2, 1)


@dataclass
class Ladder:
    """One QI's generalisation levels: `levels[i](value)` is the value at level i."""

    column: str
    kind: str
    labels: list[str]
    levels: list[Callable[[Any], Any]]

    @property
    def top(self) -> int:
        return len(self.levels) - 1


@dataclass
class Anonymized:
    rows: list[dict[str, Any]]
    k: int
    levels: dict[str, int]
    labels: dict[str, str]
    total: int
    suppressed: int
    classes: int
    steps: list[str] = field(default_factory=list)

    @property
    def suppression_rate(self) -> float:
        return self.suppressed / self.total if self.total else 0.0

    @property
    def average_class_size(self) -> float:
        return len(self.rows) / self.classes if self.classes else 0.0

    def discernibility(self, qis: Sequence[str]) -> int:
        sizes = Counter(tuple(r[q] for q in qis) for r in self.rows)
        return sum(n * n for n in sizes.values()) + self.suppressed * self.total

    def loss_report(self, qis: Sequence[str]) -> dict[str, Any]:
        return {
            "k": self.k,
            "rows_in": self.total,
            "rows_out": len(self.rows),
            "suppressed": self.suppressed,
            "suppression_rate": round(self.suppression_rate, 6),
            "classes": self.classes,
            "average_class_size": round(self.average_class_size, 3),
            "discernibility": self.discernibility(qis),
            "levels": {q: {"level": self.levels[q], "as": self.labels[q]} for q in qis},
            "steps": self.steps,
        }


def _nice(width: float) -> float:
    if width <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(width))
    for factor in (1, 2, 5, 10):
        if width <= factor * power:
            return float(factor * power)
    return float(10 * power)


def _numeric(column: str, values: list[Any]) -> Ladder:
    present = [float(v) for v in values if v is not None]
    span = (max(present) - min(present)) if present else 1.0
    width = _nice(span / 64)
    levels: list[Callable[[Any], Any]] = [lambda v: v]
    labels = ["exact"]
    while True:

        def bucket(v: Any, w: float = width) -> Any:
            if v is None:
                return None
            lo = math.floor(float(v) / w) * w
            return f"[{_num(lo)}, {_num(lo + w)})"

        levels.append(bucket)
        labels.append(f"ranges of {_num(width)}")
        if width >= span:
            break
        width *= 2
    levels.append(lambda v: SUPPRESSED)
    labels.append(SUPPRESSED)
    return Ladder(column, "numeric", labels, levels)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _date(column: str) -> Ladder:
    def part(v: Any) -> Any:
        if isinstance(v, str):
            v = dt.date.fromisoformat(v[:10])
        return v

    def month(v: Any) -> Any:
        return None if v is None else f"{part(v).year:04d}-{part(v).month:02d}"

    def year(v: Any) -> Any:
        return None if v is None else f"{part(v).year:04d}"

    def decade(v: Any) -> Any:
        return None if v is None else f"{part(v).year // 10 * 10}s"

    return Ladder(
        column,
        "date",
        ["exact", "month", "year", "decade", SUPPRESSED],
        [lambda v: v, month, year, decade, lambda v: SUPPRESSED],
    )


def _string(column: str, values: list[Any]) -> Ladder:
    distinct = {v for v in values if v is not None}
    if len(distinct) <= CATEGORICAL_MAX:
        return Ladder(column, "categorical", ["exact", SUPPRESSED], [lambda v: v, lambda v: "*"])
    levels: list[Callable[[Any], Any]] = [lambda v: v]
    labels = ["exact"]
    for n in PREFIXES:

        def prefix(v: Any, n: int = n) -> Any:
            return None if v is None else str(v)[:n] + "*"

        levels.append(prefix)
        labels.append(f"first {n} characters")
    levels.append(lambda v: SUPPRESSED)
    labels.append(SUPPRESSED)
    return Ladder(column, "string", labels, levels)


def ladder_for(column: str, values: list[Any]) -> Ladder:
    sample = next((v for v in values if v is not None), None)
    if isinstance(sample, bool):
        return Ladder(column, "categorical", ["exact", SUPPRESSED], [lambda v: v, lambda v: "*"])
    if isinstance(sample, int | float):
        return _numeric(column, values)
    if isinstance(sample, dt.date | dt.datetime):
        return _date(column)
    return _string(column, values)


def _small_rows(keys: list[tuple[Any, ...]], k: int) -> int:
    sizes = Counter(keys)
    return sum(n for n in sizes.values() if n < k)


def anonymize(
    rows: list[dict[str, Any]],
    qis: Sequence[str],
    k: int,
    max_suppression: float = 0.05,
) -> Anonymized:
    """Generalise `qis` until all but `max_suppression` of the rows are in classes of at
    least `k`, then suppress the rest; every class in the result has at least k rows."""
    if k < 1:
        raise ValueError("k must be at least 1")
    total = len(rows)
    ladders = {q: ladder_for(q, [r.get(q) for r in rows]) for q in qis}
    level = dict.fromkeys(qis, 0)
    budget = max_suppression * total
    steps: list[str] = []

    def keys_at(levels: dict[str, int]) -> list[tuple[Any, ...]]:
        funcs = [ladders[q].levels[levels[q]] for q in qis]
        return [tuple(f(r.get(q)) for f, q in zip(funcs, qis, strict=True)) for r in rows]

    small = _small_rows(keys_at(level), k)
    while small > budget:
        best: tuple[int, float, int, str] | None = None
        for position, q in enumerate(qis):
            if level[q] >= ladders[q].top:
                continue
            trial = {**level, q: level[q] + 1}
            left = _small_rows(keys_at(trial), k)
            candidate = (left, (level[q] + 1) / ladders[q].top, position, q)
            if best is None or candidate < best:
                best = candidate
        if best is None:
            break
        level[best[3]] += 1
        small = best[0]
        steps.append(f"{best[3]} -> {ladders[best[3]].labels[level[best[3]]]}")
    keys = keys_at(level)
    sizes = Counter(keys)
    out: list[dict[str, Any]] = []
    for row, key in zip(rows, keys, strict=True):
        if sizes[key] >= k:
            generalised = dict(row)
            generalised.update(zip(qis, key, strict=True))
            out.append(generalised)
    classes = sum(1 for n in sizes.values() if n >= k)
    return Anonymized(
        rows=out,
        k=k,
        levels=level,
        labels={q: ladders[q].labels[level[q]] for q in qis},
        total=total,
        suppressed=total - len(out),
        classes=classes,
        steps=steps,
    )
