"""Generalisation hierarchies for k-anonymity: user-supplied (ARX CSV) or default ladders.

A hierarchy is a tree over a column's values. Level 0 is the value itself; each higher
level maps every value of the level below to exactly one label; the top is usually `*`.
Everything here works on a column's *domain* (its distinct values), never on its rows:
the rows carry one integer code per value (Arrow dictionary encoding), and a level is an
integer array `codes[level][value code] -> label code`, so generalising a million rows
is one `numpy.take`.

**ARX's CSV format** (what ARX's hierarchy editor writes, and what anjana and pycanon
read): one row per value, one column per level, `;` separated, no header::

    39;35-39;30-39;20-39;*
    Married-civ-spouse;spouse present;*

Every row has the same number of columns; a value appears once; the file must be a
tree (two values with the same label at level i share their label at level i+1).
Errors name the file and line.

**Defaults** when no file is given:

| kind        | ladder                                                               |
| ----------- | -------------------------------------------------------------------- |
| numeric     | exact, intervals `[lo, hi)` of width w, 2w, 4w ... up to the range, `*` |
| date / time | exact, month `2026-03`, year `2026`, decade `2020s`, `*`             |
| string      | exact, then prefixes of 5, 4, 3, 2, 1 characters (`EC1A*`), `*`     |
| categorical | exact, values under 5% of rows merged into `(other)`, `*`            |

w is the 1-2-5 number (…, 1, 2, 5, 10, 20, …) nearest above range/32. A string column
with at most 24 distinct values is categorical; booleans go straight to `*`.

Missing values stay missing at every level (a class of their own).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tidegate.errors import BadRequestError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pyarrow as pa

    Codes = npt.NDArray[np.int64]
    Mask = npt.NDArray[np.bool_]
    #: level names and, per level, an Arrow array of labels aligned with the domain
    Levels = tuple[list[str], list[pa.Array]]

SUPPRESSED = "*"
CATEGORICAL_MAX = 24
RARE_SHARE = 0.05
OTHER = "(other)"
PREFIXES = (5, 4, 3, 2, 1)


@dataclass
class Hierarchy:
    """One quasi-identifier's tree, over its domain (distinct values, `None` included).

    `codes[level]` maps a domain index to a label code at that level; `labels[level]`
    (an Arrow array) maps a label code to its label (level 0: the values themselves). `order` is the
    position of each domain value when values are sorted along the tree (siblings next
    to each other, numbers and dates in their natural order): Mondrian cuts along it.
    """

    column: str
    kind: str
    names: list[str]
    codes: list[Codes]
    labels: list[pa.Array]
    order: Codes

    @property
    def top(self) -> int:
        return len(self.codes) - 1

    def cardinality(self, level: int) -> int:
        return len(self.labels[level])


# ---------------------------------------------------------------- ARX files


def read_arx_hierarchy(path: Path) -> dict[str, list[str]]:
    """value -> [label at level 1, level 2, ...] from an ARX hierarchy CSV."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise BadRequestError(f"hierarchy file {path}: cannot be read ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise BadRequestError(f"hierarchy file {path}: not UTF-8 text") from err
    table: dict[str, list[str]] = {}
    width = 0
    for number, row in enumerate(csv.reader(text.splitlines(), delimiter=";"), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        if len(cells) < 2:
            raise BadRequestError(
                f"hierarchy file {path}, line {number}: {len(cells)} column; a hierarchy "
                "row is value;level 1;...;level n separated by ';'"
            )
        if width and len(cells) != width:
            raise BadRequestError(
                f"hierarchy file {path}, line {number}: {len(cells)} columns, but the rows "
                f"above have {width}"
            )
        width = len(cells)
        if cells[0] in table:
            raise BadRequestError(
                f"hierarchy file {path}, line {number}: value {cells[0]!r} appears twice"
            )
        table[cells[0]] = cells[1:]
    if not table:
        raise BadRequestError(f"hierarchy file {path}: no rows")
    _check_tree(table, path)
    return table


def _check_tree(table: dict[str, list[str]], path: Path) -> None:
    """Two values that share a label at level i share it at every level above i."""
    for level in range(len(next(iter(table.values()))) - 1):
        parent: dict[str, tuple[str, str]] = {}
        for value, labels in table.items():
            seen = parent.setdefault(labels[level], (labels[level + 1], value))
            if seen[0] != labels[level + 1]:
                raise BadRequestError(
                    f"hierarchy file {path}: not a tree: {labels[level]!r} (level "
                    f"{level + 1}) generalises to {seen[0]!r} for {seen[1]!r} but to "
                    f"{labels[level + 1]!r} for {value!r}"
                )


def value_text(value: Any) -> str:
    """How a value is spelled in a hierarchy file (39, not 39.0; ISO dates)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def _arx_levels(column: str, domain: pa.Array, table: dict[str, list[str]], path: Path) -> Levels:
    import pyarrow as pa

    values = domain.to_pylist()
    missing = [v for v in values if v is not None and value_text(v) not in table]
    if missing:
        shown = ", ".join(repr(value_text(v)) for v in missing[:5])
        raise BadRequestError(
            f"hierarchy file {path} for column {column!r} has no row for "
            f"{len(missing)} value(s) in the data: {shown}"
        )
    depth = len(next(iter(table.values())))
    names = [f"level {i}" for i in range(1, depth + 1)]
    return names, [
        pa.array([None if v is None else table[value_text(v)][lv] for v in values], pa.string())
        for lv in range(depth)
    ]


# ---------------------------------------------------------------- defaults
# Each builder returns (level names, one Arrow array of labels per level, aligned with
# the domain). They work on the domain with numpy and Arrow compute, never value by value.


def nice(width: float) -> float:
    """The smallest 1-2-5 number (…, 1, 2, 5, 10, 20, …) at least `width`."""
    if width <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(width))
    for factor in (1, 2, 5, 10):
        if width <= factor * power:
            return float(factor * power)
    return float(10 * power)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _by_key(keys: Any, valid: Mask, label: Callable[[Any], str]) -> pa.Array:
    """Labels for the domain: `label(key)` per distinct key (few), spread by Arrow take."""
    import numpy as np
    import pyarrow as pa

    unique, inverse = np.unique(keys[valid], return_inverse=True)
    index = np.zeros(len(keys), dtype=np.int64)
    index[valid] = inverse.reshape(-1)
    labels = pa.array([label(u) for u in unique], pa.string())
    return labels.take(pa.array(index, mask=~valid))


def _top(domain: pa.Array) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.if_else(pc.is_valid(domain), pa.scalar(SUPPRESSED), pa.scalar(None, pa.string()))


def _interval(width: float) -> Callable[[float], str]:
    def label(low: float) -> str:
        return f"[{_num(low)}, {_num(low + width)})"

    return label


def _numeric_levels(domain: pa.Array) -> Levels:
    import numpy as np
    import pyarrow as pa

    values = domain.cast(pa.float64()).to_numpy(zero_copy_only=False)
    valid = ~np.isnan(values)
    present = values[valid]
    low, high = (float(present.min()), float(present.max())) if present.size else (0.0, 1.0)
    span = max(high - low, 1.0)
    width = nice(span / 32)
    names, levels = [], []
    while True:
        bins = np.floor(values / width) * width
        levels.append(_by_key(bins, valid, _interval(width)))
        names.append(f"ranges of {_num(width)}")
        if len(np.unique(bins[valid])) <= 1 or width >= span or len(levels) >= 40:
            break
        width *= 2
    return [*names, SUPPRESSED], [*levels, _top(domain)]


def _date_levels(domain: pa.Array) -> Levels:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    days = domain.cast(pa.date32()).to_numpy(zero_copy_only=False).astype("datetime64[D]")
    valid = pc.is_valid(domain).to_numpy(zero_copy_only=False)
    month, year = days.astype("datetime64[M]"), days.astype("datetime64[Y]")
    decade = year.astype(np.int64) + 1970
    decade = decade // 10 * 10
    levels = [
        _by_key(month, valid, lambda m: str(m)),
        _by_key(year, valid, lambda y: str(y)),
        _by_key(decade, valid, lambda d: f"{d}s"),
        _top(domain),
    ]
    return ["month", "year", "decade", SUPPRESSED], levels


def _string_levels(domain: pa.Array, counts: Codes | None) -> tuple[str, Levels]:
    import pyarrow as pa
    import pyarrow.compute as pc

    text = domain.cast(pa.string())
    valid = pc.is_valid(domain).to_numpy(zero_copy_only=False)
    distinct = int(valid.sum())
    if pa.types.is_boolean(domain.type):
        return "categorical", ([SUPPRESSED], [_top(domain)])
    if distinct <= CATEGORICAL_MAX:
        if counts is not None:
            rare = valid & (counts / max(int(counts.sum()), 1) < RARE_SHARE)
            if rare.sum() >= 2 and distinct - rare.sum() >= 2:
                grouped = pc.if_else(pa.array(rare), pa.scalar(OTHER), text)
                names = [f"values under {RARE_SHARE:.0%} as {OTHER}", SUPPRESSED]
                return "categorical", (names, [grouped, _top(domain)])
        return "categorical", ([SUPPRESSED], [_top(domain)])
    levels = [
        pc.binary_join_element_wise(pc.utf8_slice_codeunits(text, 0, n), SUPPRESSED, "")
        for n in PREFIXES
    ]
    names = [f"first {n} characters" for n in PREFIXES]
    return "string", ([*names, SUPPRESSED], [*levels, _top(domain)])


def _default_levels(domain: pa.Array, counts: Codes | None) -> tuple[str, Levels]:
    import pyarrow as pa

    kind = domain.type
    if pa.types.is_boolean(kind):
        return _string_levels(domain, counts)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "numeric", _numeric_levels(domain)
    if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
        return "date", _date_levels(domain)
    return _string_levels(domain, counts)


# ---------------------------------------------------------------- encoding


def natural_rank(domain: pa.Array) -> Codes:
    """Each domain value's position in sorted order (missing last)."""
    import numpy as np
    import pyarrow.compute as pc

    walk = pc.sort_indices(domain).to_numpy().astype(np.int64)  # missing sort last
    rank = np.empty(len(domain), dtype=np.int64)
    rank[walk] = np.arange(len(domain), dtype=np.int64)
    return rank


def _codes(level: pa.Array, walk: Codes) -> tuple[Codes, pa.Array]:
    """Integer codes of a level's labels, numbered in the order `walk` meets them."""
    import numpy as np
    import pyarrow as pa

    encoded = level.take(pa.array(walk)).dictionary_encode(null_encoding="encode")
    codes = np.empty(len(walk), dtype=np.int64)
    codes[walk] = encoded.indices.to_numpy(zero_copy_only=False)
    return codes, encoded.dictionary


def build_hierarchy(
    column: str,
    domain: pa.Array,
    table: dict[str, list[str]] | None = None,
    path: Path | None = None,
    counts: Codes | None = None,
) -> Hierarchy:
    """The hierarchy of `column` over `domain`: from an ARX table, or the default ladder
    (`counts`, rows per domain value, lets a categorical ladder merge rare values)."""
    import numpy as np

    if table is not None:
        kind, (names, upper) = "arx", _arx_levels(column, domain, table, path or Path("?"))
    else:
        kind, (names, upper) = _default_levels(domain, counts)
    rank = natural_rank(domain)
    walk = np.argsort(rank)  # domain indices in natural order: label codes follow it
    codes: list[Codes] = [np.arange(len(domain), dtype=np.int64)]
    labels: list[pa.Array] = [domain]
    for level in upper:
        level_codes, level_labels = _codes(level, walk)
        codes.append(level_codes)
        labels.append(level_labels)
    order_keys = [rank, *codes[1:]]  # np.lexsort: the last key is the primary one
    order = np.empty(len(domain), dtype=np.int64)
    order[np.lexsort(order_keys)] = np.arange(len(domain), dtype=np.int64)
    return Hierarchy(column, kind, ["exact", *names], codes, labels, order)


def encode(column: str, values: pa.ChunkedArray | pa.Array) -> tuple[Codes, pa.Array]:
    """(a code per row, the domain): Arrow's dictionary encoding, nulls as a value."""
    import numpy as np
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_null(values.type):
        values = values.cast(pa.string())
    encoded = values.dictionary_encode(null_encoding="encode")
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary


def load_hierarchies(files: dict[str, Path]) -> dict[str, tuple[Path, dict[str, list[str]]]]:
    """Read every declared ARX file up front, so a bad one fails before any data moves."""
    return {column: (path, read_arx_hierarchy(path)) for column, path in files.items()}


def parse_declarations(declarations: Sequence[str]) -> dict[str, Path]:
    """`column=path` pairs (the CLI's `--hierarchy`) as a dict."""
    files: dict[str, Path] = {}
    for item in declarations:
        column, sep, path = item.partition("=")
        if not sep or not column.strip() or not path.strip():
            raise BadRequestError(f"hierarchy {item!r}: write COLUMN=FILE (e.g. age=age.csv)")
        files[column.strip()] = Path(path.strip())
    return files
