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

The bound of an unevaluated node is the largest of its predecessors' bounds. A node is
evaluated from the smallest roll-up among its evaluated predecessors (see `Rollup`). The result
is optimal for the metric whatever the privacy models (monotone or not): every node is
either evaluated or provably no better. Lattices above `MAX_NODES` nodes fall back to
a greedy climb (the cheapest successor by rows left in small classes, then Σ|E|²),
and the report says so.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from tidegate.privacy.anonymize_models import Models, evaluate, first_rows, group

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
class Rollup:
    """A node's histogram: distinct (QI labels at the node's levels, sensitive values)
    with their rows. Going up the lattice it only shrinks, so a node is evaluated from a
    predecessor's roll-up (one QI's labels mapped one level up, regrouped), not from
    the full histogram."""

    labels: list[Codes]  # per QI: label code at the node's level
    sensitive: list[Codes]  # per sensitive column: value code
    weights: Floats


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
    #: per QI and level: the generalisation loss of each label
    label_loss: list[list[Floats]] = field(default_factory=list)
    #: per QI and level: Σ over rows of the generalisation loss of each row's label
    row_loss: list[list[float]] = field(default_factory=list)
    #: per QI and level a: label code at level a -> label code at level a + 1
    steps: list[list[Codes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        import numpy as np

        self.label_loss, self.row_loss, self.steps = [], [], []
        for h, b in zip(self.hierarchies, self.base, strict=True):
            spread = max(len(h.codes[0]) - 1, 1)
            per_label = [
                (np.bincount(h.codes[lv], minlength=h.cardinality(lv)) - 1) / spread
                for lv in range(h.top + 1)
            ]
            self.label_loss.append(per_label)
            self.row_loss.append(
                [
                    float((per_label[lv][h.codes[lv][b]] * self.weights).sum())
                    for lv in range(h.top + 1)
                ]
            )
            steps = []
            for lv in range(h.top):
                step = np.zeros(h.cardinality(lv), dtype=np.int64)
                step[h.codes[lv]] = h.codes[lv + 1]
                steps.append(step)
            self.steps.append(steps)

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
        levels = zip(node, self.hierarchies, strict=True)
        return sum(lv / max(h.top, 1) for lv, h in levels) / len(node)

    def classes(self, node: Node) -> tuple[Codes, int]:
        """The class of each row of the full histogram at `node`."""
        columns = [
            h.codes[lv][b] for h, lv, b in zip(self.hierarchies, node, self.base, strict=True)
        ]
        cards = [h.cardinality(lv) for h, lv in zip(self.hierarchies, node, strict=True)]
        return group(columns, cards)

    def evaluate(
        self, node: Node, parent: tuple[Node, Rollup] | None = None
    ) -> tuple[NodeResult, Rollup]:
        """`node`'s verdict and roll-up, from a predecessor's roll-up when given (else
        from the full histogram): one group-by for the classes, and one more for the
        roll-up only when there are sensitive columns."""
        import numpy as np

        if parent is None:
            labels = [
                h.codes[lv][b] for h, lv, b in zip(self.hierarchies, node, self.base, strict=True)
            ]
            sensitive = [s.codes for s in self.models.sensitive]
            weights = self.weights
        else:
            above, rows = parent
            labels = [
                self.steps[i][above[i]][codes] if lv != above[i] else codes
                for i, (lv, codes) in enumerate(zip(node, rows.labels, strict=True))
            ]
            sensitive, weights = rows.sensitive, rows.weights
        cards = [h.cardinality(lv) for h, lv in zip(self.hierarchies, node, strict=True)]
        inverse, n = group(labels, cards)
        models = self.models
        if models.sensitive:
            pairs = zip(models.sensitive, sensitive, strict=True)
            models = replace(models, sensitive=tuple(replace(s, codes=c) for s, c in pairs))
            keys, count = group(
                [inverse, *sensitive], [n, *(s.cardinality for s in models.sensitive)]
            )
            first = first_rows(keys, count)
            rollup_weights = np.bincount(keys, weights=weights, minlength=count)
        else:
            first = first_rows(inverse, n)
            rollup_weights = np.bincount(inverse, weights=weights, minlength=n)
        rollup = Rollup(
            [c[first] for c in labels],
            [c[first] for c in sensitive],
            rollup_weights.astype(np.float64),
        )
        stats = evaluate(inverse, n, weights, models)
        suppressed = float(stats.sizes[~stats.ok].sum())
        released = stats.sizes[stats.ok]
        dm = float((released * released).sum()) + suppressed * self.total
        squares = float((stats.sizes * stats.sizes).sum())
        if suppressed > self.budget:
            cost: tuple[float, ...] = (math.inf, math.inf)
        elif self.metric == "intensity":
            cost = (self.intensity(node), dm)
        elif self.metric == "loss":
            cost = (self._released_loss(node, labels, weights, stats.ok[inverse]), dm)
        else:
            cost = (dm,)
        return NodeResult(node, suppressed, squares, cost), rollup

    def _released_loss(
        self, node: Node, labels: list[Codes], weights: Floats, released: Mask
    ) -> float:
        """Loss with each suppressed row at 1 per QI instead of its label's loss."""
        if not node or not self.total:
            return 0.0
        lost = weights[~released]
        spent = 0.0
        for i, lv in enumerate(node):
            spent += self.row_loss[i][lv]
            if lost.size:
                label_loss = self.label_loss[i][lv][labels[i][~released]]
                spent += float(((1.0 - label_loss) * lost).sum())
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
    rollups: dict[Node, Rollup] = {}  # of evaluated nodes, this height and the one below
    best: NodeResult | None = None
    evaluated = 0
    height = 0
    for node in nodes:
        if sum(node) > height:
            height = sum(node)
            rollups = {n: r for n, r in rollups.items() if sum(n) >= height - 1}
        squares = inherited.get(node, 0.0)
        if best is not None and lattice.bound(node, squares) >= best.cost:
            _pass_up(node, squares, tops, inherited)
            continue
        parents = [(p, rollups[p]) for p in _predecessors(node) if p in rollups]
        parent = min(parents, key=lambda pr: len(pr[1].weights)) if parents else None
        result, rollups[node] = lattice.evaluate(node, parent)
        evaluated += 1
        if result.cost[0] < math.inf and (best is None or result.cost < best.cost):
            best = result
        _pass_up(node, max(squares, result.squares), tops, inherited)
    if best is None:
        top = tuple(tops)
        return SearchResult(top, False, size, evaluated, "lattice", _budget_note(lattice))
    return SearchResult(best.levels, True, size, evaluated, "lattice")


def _predecessors(node: Node) -> list[Node]:
    return [(*node[:i], node[i] - 1, *node[i + 1 :]) for i in range(len(node)) if node[i] > 0]


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
    current, rows = lattice.evaluate(node)
    evaluated = 1
    while current.suppressed > lattice.budget:
        successors = [
            (*node[:i], node[i] + 1, *node[i + 1 :]) for i, t in enumerate(tops) if node[i] < t
        ]
        if not successors:
            break
        results = [lattice.evaluate(s, (node, rows)) for s in successors]
        evaluated += len(results)
        current, rows = min(results, key=lambda rr: (rr[0].suppressed, rr[0].squares))
        node = current.levels
    note = f"lattice of {size} nodes is above {MAX_NODES}: greedy climb, not optimal"
    acceptable = current.suppressed <= lattice.budget
    notes = [note] + ([] if acceptable else _budget_note(lattice))
    return SearchResult(node, acceptable, size, evaluated, "greedy", notes)
