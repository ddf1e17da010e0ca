"""k-anonymity, l-diversity and t-closeness by generalisation (the engine of `export.py`).

Given a table and its quasi-identifiers (QIs), release a table in which every
combination of QI values (an equivalence class) is shared by at least k rows, and,
for declared sensitive columns, holds at least l distinct (or entropy-l) values and
a distribution within t of the whole table's. Rows of classes that cannot be made so
are suppressed (left out), within a budget.

How, in four small modules:

* `anonymize_hierarchies`: a tree of labels per QI, from an ARX hierarchy file or a
  default ladder (numeric intervals, dates by month/year, string prefixes, `*`).
* `anonymize_models`: classes as group-bys over integer codes, and the models.
* `anonymize_lattice` (default, `algorithm="lattice"`): the optimal full-domain
  generalisation (one level per QI for the whole table) for a loss metric, by branch
  and bound over the generalisation lattice.
* `anonymize_mondrian` (`algorithm="mondrian"`): local recoding, a level per region.

Everything is set-based: the table is dictionary-encoded once (Arrow), reduced to a
histogram of distinct QI/sensitive combinations, and every candidate is evaluated on
that histogram with numpy group-bys; the released table is built with Arrow `take`
and `filter`. No Python runs per row.

**Loss report**: the level and label of each QI, rows suppressed, classes, average
class size (and normalised by k, as ARX's C_avg), discernibility (`Σ|E|²` over
released classes `+ suppressed x N`, lower is better), generalisation intensity per
QI (mean level/top over released rows) and precision (1 - their mean, Sweeney).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tidegate.errors import BadRequestError
from tidegate.privacy.anonymize_hierarchies import (
    SUPPRESSED,
    Hierarchy,
    build_hierarchy,
    encode,
    load_hierarchies,
    natural_rank,
)
from tidegate.privacy.anonymize_lattice import METRICS, Lattice, search
from tidegate.privacy.anonymize_models import (
    L_KINDS,
    Models,
    Sensitive,
    evaluate,
    first_rows,
    group,
)
from tidegate.privacy.anonymize_mondrian import mondrian

if TYPE_CHECKING:
    import pyarrow as pa

    from tidegate.privacy.anonymize_hierarchies import Codes
    from tidegate.privacy.anonymize_models import ClassStats, Floats, Mask

__all__ = ["ALGORITHMS", "SUPPRESSED", "Anonymized", "Privacy", "anonymize"]

ALGORITHMS = ("lattice", "mondrian")


@dataclass(frozen=True)
class Privacy:
    """The models beyond k, and how to search for them."""

    algorithm: str = "lattice"
    metric: str = "loss"
    sensitive: tuple[str, ...] = ()
    l: int = 1  # noqa: E741 (the model's name)
    l_kind: str = "distinct"
    t: float | None = None
    hierarchies: dict[str, Path] = field(default_factory=dict)

    def check(self, qis: Sequence[str]) -> None:
        if self.algorithm not in ALGORITHMS:
            raise BadRequestError(f"algorithm {self.algorithm!r} is not one of {ALGORITHMS}")
        if self.metric not in METRICS:
            raise BadRequestError(f"metric {self.metric!r} is not one of {METRICS}")
        if self.l_kind not in L_KINDS:
            raise BadRequestError(f"l-diversity {self.l_kind!r} is not one of {L_KINDS}")
        if self.l < 1:
            raise BadRequestError("l must be at least 1")
        if self.t is not None and not 0 <= self.t <= 1:
            raise BadRequestError("t is a distance between 0 and 1")
        if (self.l > 1 or self.t is not None) and not self.sensitive:
            raise BadRequestError("l-diversity and t-closeness need sensitive columns")
        both = set(self.sensitive) & set(qis)
        if both:
            raise BadRequestError(f"{', '.join(sorted(both))}: sensitive and quasi-identifier")
        unused = set(self.hierarchies) - set(qis)
        if unused:
            raise BadRequestError(
                f"hierarchies given for {', '.join(sorted(unused))}, not quasi-identifiers"
            )


@dataclass
class Anonymized:
    table: pa.Table
    k: int
    levels: dict[str, int]
    labels: dict[str, str]
    total: int
    suppressed: int
    classes: int
    steps: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.table.to_pylist()
        return rows

    @property
    def suppression_rate(self) -> float:
        return self.suppressed / self.total if self.total else 0.0

    @property
    def average_class_size(self) -> float:
        return self.table.num_rows / self.classes if self.classes else 0.0

    def loss_report(self, qis: Sequence[str] | None = None) -> dict[str, Any]:
        names = list(qis) if qis is not None else list(self.levels)
        return {
            "k": self.k,
            "rows_in": self.total,
            "rows_out": self.table.num_rows,
            "suppressed": self.suppressed,
            "suppression_rate": round(self.suppression_rate, 6),
            "classes": self.classes,
            "average_class_size": round(self.average_class_size, 3),
            "normalized_average_class_size": round(self.average_class_size / self.k, 3),
            **self.metrics,
            "levels": {q: {"level": self.levels[q], "as": self.labels[q]} for q in names},
            "steps": self.steps,
        }


@dataclass
class _Encoded:
    """The input as codes: per QI its hierarchy and a code per row; the histogram."""

    hierarchies: list[Hierarchy]
    row_hist: Codes  # histogram row of each input row
    base: list[Codes]  # per QI: domain code of each histogram row
    weights: Floats
    models: Models


def _as_table(data: pa.Table | Sequence[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    return pa.Table.from_pylist(list(data))


def _encode(table: pa.Table, qis: Sequence[str], k: int, privacy: Privacy) -> _Encoded:
    import numpy as np
    import pyarrow as pa

    files = load_hierarchies(privacy.hierarchies)
    hierarchies, codes, cards = [], [], []
    for q in qis:
        row_codes, domain = encode(q, table.column(q))
        path, arx = files.get(q, (None, None))
        counts = np.bincount(row_codes, minlength=len(domain))
        hierarchies.append(build_hierarchy(q, domain, arx, path, counts))
        codes.append(row_codes)
        cards.append(len(domain))
    sensitive_codes = []
    for s in privacy.sensitive:
        row_codes, domain = encode(s, table.column(s))
        column_type = table.schema.field(s).type
        ordered = pa.types.is_integer(column_type) or pa.types.is_floating(column_type)
        ordered = ordered or pa.types.is_temporal(column_type) or pa.types.is_decimal(column_type)
        if ordered:  # codes in value order, so the EMD can walk them
            row_codes = natural_rank(domain)[row_codes]
        sensitive_codes.append((s, row_codes, len(domain), ordered))
        codes.append(row_codes)
        cards.append(len(domain))
    row_hist, count = group(codes, cards)
    first = first_rows(row_hist, count)
    weights = np.bincount(row_hist, minlength=count).astype(np.float64)
    total = float(weights.sum())
    sensitive = tuple(
        Sensitive(
            name,
            row_codes[first],
            card,
            ordered,
            np.bincount(row_codes, minlength=card).astype(np.float64) / max(total, 1.0),
        )
        for name, row_codes, card, ordered in sensitive_codes
    )
    models = Models(k, privacy.l, privacy.l_kind, privacy.t, sensitive)
    base = [c[first] for c in codes[: len(qis)]]
    return _Encoded(hierarchies, row_hist, base, weights, models)


def anonymize(
    data: pa.Table | Sequence[dict[str, Any]],
    qis: Sequence[str],
    k: int,
    max_suppression: float = 0.05,
    privacy: Privacy | None = None,
) -> Anonymized:
    """Generalise `qis` (and suppress within `max_suppression` of the rows) until every
    released class has at least k rows and meets `privacy`'s models."""

    privacy = privacy or Privacy()
    if k < 1:
        raise BadRequestError("k must be at least 1")
    privacy.check(qis)
    table = _as_table(data)
    total = table.num_rows
    if total == 0:  # nothing to generalise: every metric at its empty value
        nothing = dict.fromkeys(qis, 0.0)
        metrics = {
            "algorithm": privacy.algorithm,
            "metric": privacy.metric,
            "precision": 1.0,
            "generalisation_intensity": nothing,
            "loss": 0.0,
            "loss_per_column": dict(nothing),
            "discernibility": 0,
        }
        levels, labels = dict.fromkeys(qis, 0), dict.fromkeys(qis, "exact")
        return Anonymized(table, k, levels, labels, 0, 0, 0, metrics=metrics)
    missing = [c for c in [*qis, *privacy.sensitive] if c not in table.column_names]
    if missing:
        raise BadRequestError(f"no column(s) {', '.join(missing)} in the data")
    encoded = _encode(table, qis, k, privacy)
    if privacy.algorithm == "mondrian":
        recoding = _local(qis, encoded)
    else:
        recoding = _full_domain(qis, encoded, max_suppression * total, privacy.metric)
    return _release(table, qis, encoded, recoding, privacy, k)


@dataclass
class _Recoding:
    """What an algorithm decided, per histogram row: level and label code of each QI,
    and whether the row is released; plus what to tell the user."""

    levels: Codes  # (histogram rows, QIs)
    labels: Codes  # (histogram rows, QIs)
    released: Mask
    level_of: dict[str, int]
    label_of: dict[str, str]
    steps: list[str]


def _local(qis: Sequence[str], encoded: _Encoded) -> _Recoding:
    part = mondrian(encoded.hierarchies, encoded.base, encoded.weights, encoded.models)
    levels = part.levels[part.leaf]
    return _Recoding(
        levels,
        part.label_codes[part.leaf],
        part.released,
        {q: int(levels[:, i].max(initial=0)) for i, q in enumerate(qis)},  # the highest used
        dict.fromkeys(qis, "local recoding (mondrian)"),
        [f"mondrian: {part.leaves} partitions"],
    )


def _full_domain(qis: Sequence[str], encoded: _Encoded, budget: float, metric: str) -> _Recoding:
    import numpy as np

    hierarchies, base, weights = encoded.hierarchies, encoded.base, encoded.weights
    total = float(weights.sum())
    lattice = Lattice(hierarchies, base, weights, encoded.models, budget, total, metric)
    found = search(lattice)
    node = found.best
    labels = np.zeros((len(weights), len(qis)), dtype=np.int64)
    for i, (h, lv, b) in enumerate(zip(hierarchies, node, base, strict=True)):
        labels[:, i] = h.codes[lv][b]
    inverse, n = lattice.classes(node)
    released = evaluate(inverse, n, weights, encoded.models).ok[inverse]
    steps = [
        f"{found.method}: {found.nodes} nodes, {found.evaluated} evaluated, "
        f"{found.nodes - found.evaluated} pruned",
        *found.notes,
        *(f"{q} -> {h.names[lv]}" for q, h, lv in zip(qis, hierarchies, node, strict=True)),
    ]
    return _Recoding(
        np.tile(np.array(node, dtype=np.int64), (len(weights), 1)),
        labels,
        released,
        dict(zip(qis, node, strict=True)),
        {q: h.names[lv] for q, h, lv in zip(qis, hierarchies, node, strict=True)},
        steps,
    )


def _release(
    table: pa.Table,
    qis: Sequence[str],
    encoded: _Encoded,
    recoding: _Recoding,
    privacy: Privacy,
    k: int,
) -> Anonymized:
    """The released table (Arrow take + filter) and its loss metrics."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    hist_levels, hist_labels, released = recoding.levels, recoding.labels, recoding.released
    levels = recoding.level_of

    hierarchies, weights = encoded.hierarchies, encoded.weights
    total = int(weights.sum())
    # a global id per (level, label) so that classes are counted on what is released
    ids, cards = [], []
    for i, h in enumerate(hierarchies):
        offsets = np.cumsum([0] + [h.cardinality(lv) for lv in range(h.top + 1)])
        ids.append(offsets[hist_levels[:, i]] + hist_labels[:, i])
        cards.append(int(offsets[-1]))
    out_class, _ = group([i[released] for i in ids], cards)  # released histogram rows only
    n = int(out_class.max(initial=-1)) + 1
    models = encoded.models
    sensitive = tuple(
        Sensitive(s.column, s.codes[released], s.cardinality, s.ordered, s.overall)
        for s in models.sensitive
    )
    subset = Models(models.k, models.l, models.l_kind, models.t, sensitive)
    stats = evaluate(out_class, n, weights[released], subset)
    suppressed = round(float(weights[~released].sum()))
    metrics = _metrics(encoded, hist_levels, hist_labels, released, privacy, stats)
    metrics["discernibility"] = round(float((stats.sizes**2).sum())) + suppressed * total
    keep_rows = released[encoded.row_hist]
    columns = {}
    for i, (q, h) in enumerate(zip(qis, hierarchies, strict=True)):
        row_levels = hist_levels[encoded.row_hist, i]
        if privacy.algorithm == "lattice" and levels[q] == 0:
            columns[q] = table.column(q)
            continue
        texts = pa.concat_arrays([pc.cast(labels, pa.string()) for labels in h.labels])
        offsets = np.cumsum([0] + [h.cardinality(lv) for lv in range(h.top + 1)])
        index = offsets[row_levels] + hist_labels[encoded.row_hist, i]
        columns[q] = texts.take(pa.array(index))
    generalised = table
    for q, column in columns.items():
        generalised = generalised.set_column(generalised.schema.get_field_index(q), q, column)
    released_table = generalised.filter(pa.array(keep_rows))
    return Anonymized(
        released_table, k, levels, recoding.label_of, total, suppressed, n, recoding.steps, metrics
    )


def _metrics(
    encoded: _Encoded,
    hist_levels: Codes,
    hist_labels: Codes,
    released: Mask,
    privacy: Privacy,
    stats: ClassStats,
) -> dict[str, Any]:
    """Precision, generalisation intensity and loss per QI; l and t achieved."""
    import numpy as np

    weights = encoded.weights
    total = max(float(weights.sum()), 1.0)
    rows_out = max(float(weights[released].sum()), 1.0)
    intensity, loss = {}, {}
    for i, h in enumerate(encoded.hierarchies):
        share = hist_levels[:, i] / max(h.top, 1)
        intensity[h.column] = round(float((share * weights * released).sum() / rows_out), 6)
        spread = max(len(h.codes[0]) - 1, 1)
        leaves = np.zeros(len(weights), dtype=np.float64)
        for level in range(h.top + 1):
            at = hist_levels[:, i] == level
            per_label = np.bincount(h.codes[level], minlength=h.cardinality(level))
            leaves[at] = per_label[hist_labels[at, i]]
        row_loss = np.where(released, (leaves - 1) / spread, 1.0)
        loss[h.column] = round(float((row_loss * weights).sum() / total), 6)
    metrics: dict[str, Any] = {
        "algorithm": privacy.algorithm,
        "metric": privacy.metric,
        "precision": round(1 - sum(intensity.values()) / max(len(intensity), 1), 6),
        "generalisation_intensity": intensity,
        "loss": round(sum(loss.values()) / max(len(loss), 1), 6),
        "loss_per_column": loss,
    }
    if privacy.sensitive:
        metrics["sensitive"] = list(privacy.sensitive)
    if stats.l_values is not None:
        achieved = float(stats.l_values.min()) if stats.l_values.size else 0.0
        metrics["l"] = {"kind": privacy.l_kind, "asked": privacy.l, "achieved": round(achieved, 6)}
    if stats.t_values is not None:
        achieved = float(stats.t_values.max()) if stats.t_values.size else 0.0
        metrics["t"] = {"asked": privacy.t, "achieved": round(achieved, 6)}
    return metrics
