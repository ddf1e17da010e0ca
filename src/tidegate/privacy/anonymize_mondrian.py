"""Local recoding by Mondrian (LeFevre, DeWitt and Ramakrishnan 2006), on the histogram.

Strict multidimensional Mondrian: start with every row in one partition; cut a
partition in two at the weighted median of the quasi-identifier with the widest
normalised spread, as long as both halves still satisfy the models (k rows, and l/t
when asked); a partition that no QI can cut is a leaf. QI values are placed along
their hierarchy's order (numbers and dates in order, siblings of a category next to
each other), so a cut on a categorical column keeps subtrees together.

Each leaf is then labelled, per QI, with the lowest hierarchy level at which all its
values share one label (the lowest common ancestor), so the output speaks the same
vocabulary as full-domain recoding and precision is measured the same way. Two leaves
with the same labels merge into one class, which only makes classes bigger.

Unlike full-domain recoding, different parts of the data get different levels: dense
regions stay precise. The cost is a less regular output (two rows may carry `30-39`
and `35-39` in the same column).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tidegate.privacy.anonymize_models import Models, evaluate

if TYPE_CHECKING:
    from tidegate.privacy.anonymize_hierarchies import Codes, Hierarchy
    from tidegate.privacy.anonymize_models import Floats, Mask


@dataclass
class Partitioning:
    """Per histogram row: its leaf; per leaf and QI: level and label code; and which
    histogram rows are released (all of them unless the whole input fails a model)."""

    leaf: Codes
    levels: Codes  # (leaves, QIs)
    label_codes: Codes  # (leaves, QIs)
    released: Mask
    leaves: int


def _allowed(rows: Codes, weights: Floats, models: Models) -> bool:
    import numpy as np

    if weights[rows].sum() < models.k:
        return False
    if not models.sensitive:
        return True
    subset = Models(
        models.k,
        models.l,
        models.l_kind,
        models.t,
        tuple(
            type(s)(s.column, s.codes[rows], s.cardinality, s.ordered, s.overall)
            for s in models.sensitive
        ),
    )
    stats = evaluate(np.zeros(len(rows), dtype=np.int64), 1, weights[rows], subset)
    return bool(stats.ok[0])


def mondrian(
    hierarchies: list[Hierarchy], base: list[Codes], weights: Floats, models: Models
) -> Partitioning:
    import numpy as np

    count = len(weights)
    positions = [h.order[b] for h, b in zip(hierarchies, base, strict=True)]
    widths = [max(len(h.order) - 1, 1) for h in hierarchies]
    leaf = np.zeros(count, dtype=np.int64)
    everything = np.arange(count, dtype=np.int64)
    if count == 0 or not _allowed(everything, weights, models):
        empty = np.zeros((1, len(hierarchies)), dtype=np.int64)
        return Partitioning(leaf, empty, empty, np.zeros(count, dtype=bool), 1 if count else 0)
    leaves: list[Codes] = []
    stack = [everything]
    while stack:
        rows = stack.pop()
        spreads = []
        for q, pos in enumerate(positions):
            values = pos[rows]
            spread = (values.max() - values.min()) / widths[q]
            if spread > 0:
                spreads.append((spread, q))
        for _, q in sorted(spreads, reverse=True):
            cut = _cut(rows, positions[q], weights, models)
            if cut is not None:
                stack.extend(cut)
                break
        else:
            leaves.append(rows)
    levels = np.zeros((len(leaves), len(hierarchies)), dtype=np.int64)
    labels = np.zeros((len(leaves), len(hierarchies)), dtype=np.int64)
    walks = [np.argsort(h.order) for h in hierarchies]  # position -> domain code
    for number, rows in enumerate(leaves):
        leaf[rows] = number
        for q, h in enumerate(hierarchies):
            values = positions[q][rows]
            low, high = walks[q][values.min()], walks[q][values.max()]
            level = next(lv for lv in range(h.top + 1) if h.codes[lv][low] == h.codes[lv][high])
            levels[number, q] = level
            labels[number, q] = h.codes[level][low]
    return Partitioning(leaf, levels, labels, np.ones(count, dtype=bool), len(leaves))


def _cut(
    rows: Codes, positions: Codes, weights: Floats, models: Models
) -> tuple[Codes, Codes] | None:
    """Halves at the weighted median of one QI, if both satisfy the models."""
    import numpy as np

    values = positions[rows]
    ordered = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[rows][ordered])
    median = values[ordered][int(np.searchsorted(cumulative, cumulative[-1] / 2))]
    left = values <= median
    if left.all():
        left = values < median
    if not left.any():
        return None
    halves = (rows[left], rows[~left])
    if all(_allowed(half, weights, models) for half in halves):
        return halves
    return None
