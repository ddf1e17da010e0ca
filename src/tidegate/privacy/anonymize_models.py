"""Equivalence classes as group-bys, and the privacy models checked on each class.

Every check works on a *histogram*: the distinct combinations of quasi-identifier codes
(and sensitive codes) with their row counts, never on rows one by one. A class id per
histogram row comes from `group` (a mixed-radix key, counted by `bincount` when the key
space is small, by `numpy.unique` otherwise); class sizes are one weighted `bincount`.

Models (Machanavajjhala et al. 2007; Li, Li and Venkatasubramanian 2007):

* **k-anonymity**: a class has at least k rows.
* **distinct l-diversity**: at least l distinct values of each sensitive column.
* **entropy l-diversity**: the entropy of each sensitive column's values is at least
  log(l) (so `exp(entropy)` is the class's "effective" number of values).
* **t-closeness** with the earth mover's distance: for a numeric or date (ordered)
  column, `1/(m-1) Σ_i |Σ_{j≤i} (p_j - q_j)|` over its m values in order; for any
  other column, the equal-distance EMD `½ Σ |p_j - q_j|` (half the total variation).
  q is the column's distribution over the whole input.

A class that fails a model is suppressed; a solution is acceptable when the suppressed
rows fit the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Codes = npt.NDArray[np.int64]
    Floats = npt.NDArray[np.float64]
    Mask = npt.NDArray[np.bool_]

L_KINDS = ("distinct", "entropy")
EPSILON = 1e-9


@dataclass(frozen=True)
class Sensitive:
    """A sensitive column over the histogram rows: a code per row (codes in value order
    when `ordered`), and its distribution over the whole input."""

    column: str
    codes: Codes
    cardinality: int
    ordered: bool
    overall: Floats


@dataclass(frozen=True)
class Models:
    """What every released class must satisfy."""

    k: int
    l: int = 1  # noqa: E741 (the model's name)
    l_kind: str = "distinct"
    t: float | None = None
    sensitive: tuple[Sensitive, ...] = field(default_factory=tuple)


@dataclass
class ClassStats:
    """Per class: rows, whether it may be released, and its l and t (when asked)."""

    sizes: Floats
    ok: Mask
    l_values: Floats | None = None  # lowest over the sensitive columns
    t_values: Floats | None = None  # highest over the sensitive columns


def group(columns: list[Codes], cards: list[int]) -> tuple[Codes, int]:
    """A dense class id (0..n-1) per position of the code columns, and n."""
    import numpy as np

    length = len(columns[0]) if columns else 0
    key = np.zeros(length, dtype=np.int64)
    radix = 1
    for column, card in zip(columns, cards, strict=True):
        card = max(card, 1)
        if radix * card >= 2**62:
            key, radix = _compress(key)
        key = key * card + column
        radix *= card
    if radix <= max(4 * length, 1 << 16):
        used = np.bincount(key, minlength=radix) > 0
        dense = np.cumsum(used) - 1
        return dense[key], int(used.sum())
    key, n = _compress(key)
    return key, n


def _compress(key: Codes) -> tuple[Codes, int]:
    """Dense ids for sparse keys: Arrow's hash-based dictionary encoding (no sort)."""
    import numpy as np
    import pyarrow as pa

    encoded = pa.array(key).dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), len(encoded.dictionary)


def first_rows(inverse: Codes, n: int) -> Codes:
    """The first position of each class id."""
    import numpy as np

    first = np.empty(n, dtype=np.int64)
    positions = np.arange(len(inverse), dtype=np.int64)
    first[inverse[::-1]] = positions[::-1]
    return first


def evaluate(inverse: Codes, n: int, weights: Floats, models: Models) -> ClassStats:
    """Sizes and verdicts of n classes, given each histogram row's class and weight."""
    import numpy as np

    sizes = np.bincount(inverse, weights=weights, minlength=n).astype(np.float64)
    ok = sizes >= models.k
    stats = ClassStats(sizes, ok)
    if not models.sensitive or (models.l <= 1 and models.t is None):
        return stats
    for sensitive in models.sensitive:
        pair_key = inverse * sensitive.cardinality + sensitive.codes
        unique, pair_inverse = np.unique(pair_key, return_inverse=True)
        pair_count = np.bincount(pair_inverse.reshape(-1), weights=weights)
        pair_class = unique // sensitive.cardinality
        pair_code = unique % sensitive.cardinality
        share = pair_count / sizes[pair_class]
        if models.l > 1:
            if models.l_kind == "entropy":
                entropy = np.bincount(pair_class, weights=-share * np.log(share), minlength=n)
                l_values = np.exp(entropy)
            else:
                l_values = np.bincount(pair_class, minlength=n).astype(np.float64)
            ok &= l_values >= models.l - EPSILON
            stats.l_values = (
                l_values if stats.l_values is None else np.minimum(stats.l_values, l_values)
            )
        if models.t is not None:
            distance: Floats
            if sensitive.ordered:
                distance = _ordered_emd(pair_class, pair_code, share, n, sensitive)
            else:
                overall = sensitive.overall[pair_code]
                gaps = np.abs(share - overall) - overall
                spread = np.bincount(pair_class, weights=gaps, minlength=n)
                distance = (0.5 * (spread + 1.0)).astype(np.float64)
            ok &= distance <= models.t + EPSILON
            stats.t_values = (
                distance if stats.t_values is None else np.maximum(stats.t_values, distance)
            )
    return stats


def _ordered_emd(
    pair_class: Codes, pair_code: Codes, share: Floats, n: int, sensitive: Sensitive
) -> Floats:
    """EMD over ordered values, per class, from the sparse (class, value) shares.

    Pairs come sorted by class then value. Between two values present in a class the
    class's cumulative share P is constant, and the overall cumulative Q rises; the sum
    of |P - Q_i| over such a stretch splits where Q crosses P (one searchsorted), using
    prefix sums of Q. The stretch before a class's first value has P = 0.
    """
    import numpy as np

    m = sensitive.cardinality
    if m <= 1:
        return np.zeros(n, dtype=np.float64)
    cumulative = np.cumsum(sensitive.overall)  # Q_i
    prefix = np.concatenate([[0.0], np.cumsum(cumulative)])  # Σ_{i<j} Q_i
    count = len(pair_class)
    index = np.arange(count)
    starts = np.ones(count, dtype=bool)
    starts[1:] = pair_class[1:] != pair_class[:-1]
    start_index = np.maximum.accumulate(np.where(starts, index, 0))
    running = np.cumsum(share)
    level = running - running[start_index] + share[start_index]  # P after each pair
    ends = np.full(count, m, dtype=np.int64)
    same_next = np.zeros(count, dtype=bool)
    same_next[:-1] = ~starts[1:]
    ends[same_next] = pair_code[1:][same_next[:-1]]
    a, b = pair_code, ends
    cross = np.clip(np.searchsorted(cumulative, level, side="left"), a, b)
    below = level * (cross - a) - (prefix[cross] - prefix[a])
    above = (prefix[b] - prefix[cross]) - level * (b - cross)
    total = np.bincount(pair_class, weights=below + above, minlength=n).astype(np.float64)
    first_code = pair_code[starts]
    total[pair_class[starts]] += prefix[first_code]  # P = 0 before the first value
    result: Floats = total / (m - 1)
    return result
