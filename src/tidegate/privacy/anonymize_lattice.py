"""Optimal full-domain generalisation: a search of the generalisation lattice.

A node of the lattice is one level per quasi-identifier; its successors raise one level
by one. Each node is evaluated on the histogram (see `anonymize_models`): classes,
which of them fail a model, how many rows that suppresses. A node is *acceptable* when
the suppressed rows fit the budget; the answer is the acceptable node of least loss.

**Search (OLA-style branch and bound, bottom-up by height).** The loss of a node is
never below a bound that can only grow going up the lattice, so once a node's bound
reaches the best loss found, the node and everything above it are skipped unevaluated:

* *discernibility* `Σ|E|² over released classes + suppressed x N`: a class of size s
  costs s² when released and s·N ≥ s² when suppressed, so the loss is at least
  `Σ|E|²` over all classes, which merging classes (generalising) only raises.
* *loss* (the default; Iyengar's generalisation loss, ARX's "Loss"): each released
  value costs `(leaves under its label - 1) / (values in the domain - 1)`, a suppressed
  row costs 1 per QI; averaged over rows and QIs, ties broken by discernibility.
  Counting every row as released gives a bound computed without evaluating the node,
  which only grows going up (an ancestor covers more leaves).
* *intensity* (mean over QIs of level/top, the complement of Sweeney's precision; ties
  broken by discernibility): it grows with every step up by construction.

The bound of an unevaluated node is the largest of its predecessors' bounds. The result
is optimal for the metric whatever the privacy models (monotone or not): every node is
either evaluated or provably no better. Lattices above `MAX_NODES` nodes fall back to
a greedy climb (the cheapest successor by rows left in small classes, then Σ|E|²),
and the report says so.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tidegate.privacy.anonymize_models import Models, evaluate, group

if TYPE_CHECKING:
    from tidegate.privacy.anonymize_hierarchies import Codes, Hierarchy
    from tidegate.privacy.anonymize_models import Floats, Mask

MAX_NODES = 50_000
METRICS = ("loss", "discernibility", "intensity")

Node = tuple[int, ...]


@dataclass
class NodeResult:
    levels: Node
    suppressed: float
    squares: float  # Σ|E|² over all classes, released or not
    cost: tuple[float, ...]


@dataclass
class SearchResult:
    best: Node
    acceptable: bool
    nodes: int
    evaluated: int
    method: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Lattice:
    """The histogram and what to search it for."""

    hierarchies: list[Hierarchy]
    base: list[Codes]  # per QI: domain code of each histogram row
    weights: Floats
    models: Models
    budget: float
    total: float
    metric: str = "loss"
    #: per QI and level: Σ over rows of the generalisation loss of each row's label
    row_loss: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        import numpy as np

        self.row_loss = []
        for h, b in zip(self.hierarchies, self.base, strict=True):
            spread = max(len(h.codes[0]) - 1, 1)
            sums = []
            for level in range(h.top + 1):
                leaves = np.bincount(h.codes[level], minlength=h.cardinality(level))
                per_value = (leaves[h.codes[level]] - 1) / spread
                sums.append(float((per_value[b] * self.weights).sum()))
            self.row_loss.append(sums)

    def loss(self, node: Node) -> float:
        """Generalisation loss of the node if no row were suppressed (0 exact, 1 all `*`)."""
        if not node or not self.total:
            return 0.0
        spent = sum(sums[lv] for sums, lv in zip(self.row_loss, node, strict=True))
        return spent / (self.total * len(node))

    def size(self) -> int:
        return math.prod(h.top + 1 for h in self.hierarchies)

    def intensity(self, node: Node) -> float:
        if not node:
            return 0.0
        return sum(lv / max(h.top, 1) for lv, h in zip(node, self.hierarchies, strict=True)) / len(
            node
        )

    def classes(self, node: Node) -> tuple[Codes, int]:
        columns = [
            h.codes[lv][b] for h, lv, b in zip(self.hierarchies, node, self.base, strict=True)
        ]
        cards = [h.cardinality(lv) for h, lv in zip(self.hierarchies, node, strict=True)]
        return group(columns, cards)

    def evaluate(self, node: Node) -> NodeResult:
        inverse, n = self.classes(node)
        stats = evaluate(inverse, n, self.weights, self.models)
        suppressed = float(stats.sizes[~stats.ok].sum())
        released = stats.sizes[stats.ok]
        dm = float((released * released).sum()) + suppressed * self.total
        squares = float((stats.sizes * stats.sizes).sum())
        if suppressed > self.budget:
            cost: tuple[float, ...] = (math.inf, math.inf)
        elif self.metric == "intensity":
            cost = (self.intensity(node), dm)
        elif self.metric == "loss":
            cost = (self._released_loss(node, stats.ok[inverse]), dm)
        else:
            cost = (dm,)
        return NodeResult(node, suppressed, squares, cost)

    def _released_loss(self, node: Node, released: Mask) -> float:
        """Loss with suppressed rows at 1 per QI (their label's loss replaced by 1)."""
        import numpy as np

        if not node or not self.total:
            return 0.0
        lost = self.weights[~released]
        spent = 0.0
        for h, lv, b, sums in zip(self.hierarchies, node, self.base, self.row_loss, strict=True):
            if not lost.size:
                spent += sums[lv]
                continue
            spread = max(len(h.codes[0]) - 1, 1)
            leaves = np.bincount(h.codes[lv], minlength=h.cardinality(lv))
            per_value = (leaves[h.codes[lv]] - 1) / spread
            spent += sums[lv] - float((per_value[b[~released]] * lost).sum()) + float(lost.sum())
        return spent / (self.total * len(node))

    def bound(self, node: Node, squares: float) -> tuple[float, ...]:
        if self.metric == "loss":
            return (self.loss(node), squares)
        if self.metric == "intensity":
            return (self.intensity(node), squares)
        return (squares,)


def search(lattice: Lattice) -> SearchResult:
    """The acceptable node of least loss (or the top node when none is acceptable)."""
    size = lattice.size()
    if size > MAX_NODES:
        return _greedy(lattice, size)
    tops = [h.top for h in lattice.hierarchies]
    nodes = sorted(itertools.product(*(range(t + 1) for t in tops)), key=sum)
    inherited: dict[Node, float] = {}  # the largest Σ|E|² of any predecessor
    best: NodeResult | None = None
    evaluated = 0
    for node in nodes:
        squares = inherited.get(node, 0.0)
        if best is not None and lattice.bound(node, squares) >= best.cost:
            _pass_up(node, squares, tops, inherited)
            continue
        result = lattice.evaluate(node)
        evaluated += 1
        if result.cost[0] < math.inf and (best is None or result.cost < best.cost):
            best = result
        _pass_up(node, max(squares, result.squares), tops, inherited)
    if best is None:
        top = tuple(tops)
        return SearchResult(top, False, size, evaluated, "lattice", _budget_note(lattice))
    return SearchResult(best.levels, True, size, evaluated, "lattice")


def _pass_up(node: Node, squares: float, tops: list[int], inherited: dict[Node, float]) -> None:
    for i, top in enumerate(tops):
        if node[i] < top:
            successor = (*node[:i], node[i] + 1, *node[i + 1 :])
            if inherited.get(successor, -1.0) < squares:
                inherited[successor] = squares


def _budget_note(lattice: Lattice) -> list[str]:
    return [
        f"no generalisation keeps suppression within {lattice.budget:g} rows; "
        "the most general one is used and every failing class suppressed"
    ]


def _greedy(lattice: Lattice, size: int) -> SearchResult:
    tops = [h.top for h in lattice.hierarchies]
    node: Node = tuple(0 for _ in tops)
    current = lattice.evaluate(node)
    evaluated = 1
    while current.suppressed > lattice.budget:
        successors = [
            (*node[:i], node[i] + 1, *node[i + 1 :]) for i, t in enumerate(tops) if node[i] < t
        ]
        if not successors:
            break
        results = [lattice.evaluate(s) for s in successors]
        evaluated += len(results)
        current = min(results, key=lambda r: (r.suppressed, r.squares))
        node = current.levels
    note = f"lattice of {size} nodes is above {MAX_NODES}: greedy climb, not optimal"
    acceptable = current.suppressed <= lattice.budget
    notes = [note] + ([] if acceptable else _budget_note(lattice))
    return SearchResult(node, acceptable, size, evaluated, "greedy", notes)
