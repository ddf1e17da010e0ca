"""The anonymisation engine: models hold on any data, metrics are right on a hand-checked
example, the lattice search is optimal, and ARX hierarchy files are read strictly."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.errors import BadRequestError
from tidegate.privacy.anonymize import Privacy, anonymize
from tidegate.privacy.anonymize_hierarchies import read_arx_hierarchy

AGE_FILE = "\n".join(
    f"{a};{a // 10 * 10}-{a // 10 * 10 + 9};{'young' if a < 40 else 'old'};*" for a in range(80)
)
CITY_FILE = """London;England;UK;*
Leeds;England;UK;*
York;England;UK;*
Cardiff;Wales;UK;*
Swansea;Wales;UK;*
Paris;France;EU;*
Lyon;France;EU;*
Berlin;Germany;EU;*
"""


CITIES = [line.split(";")[0] for line in CITY_FILE.splitlines()]


@pytest.fixture(scope="module")
def arx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("arx")
    (folder / "age.csv").write_text(AGE_FILE + "\n")
    (folder / "city.csv").write_text(CITY_FILE)
    return {"age": folder / "age.csv", "city": folder / "city.csv"}


def arx_map(path: Path) -> dict[str, list[str]]:
    """Independent reading of an ARX file for the oracles: value -> [level 0, 1, ...]."""
    rows = [line.split(";") for line in path.read_text().splitlines() if line]
    return {row[0]: row for row in rows}


rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "age": st.integers(0, 79),
            "city": st.sampled_from(CITIES),
            "tier": st.sampled_from(["free", "pro", "gold"]),
            "income": st.sampled_from([10, 20, 30, 40, 50]),
            "diagnosis": st.sampled_from(["flu", "asthma", "none", "fracture"]),
        }
    ),
    min_size=1,
    max_size=80,
)


def emd(values: list[Any], overall: list[Any], ordered: bool) -> float:
    """The t-closeness distance by its textbook definition (the oracle)."""
    domain = sorted(set(overall))
    p = Counter(values)
    q = Counter(overall)
    share_p = [p[v] / len(values) for v in domain]
    share_q = [q[v] / len(overall) for v in domain]
    if not ordered:
        return 0.5 * sum(abs(a - b) for a, b in zip(share_p, share_q, strict=True))
    if len(domain) == 1:
        return 0.0
    running, total = 0.0, 0.0
    for a, b in zip(share_p, share_q, strict=True):
        running += a - b
        total += abs(running)
    return total / (len(domain) - 1)


@settings(max_examples=80, deadline=None)
@given(
    rows=rows_strategy,
    k=st.integers(2, 6),
    algorithm=st.sampled_from(["lattice", "mondrian"]),
    metric=st.sampled_from(["loss", "discernibility", "intensity"]),
    use_files=st.booleans(),
    l_value=st.sampled_from([1, 2, 3]),
    l_kind=st.sampled_from(["distinct", "entropy"]),
    t_value=st.sampled_from([None, 0.3, 0.6]),
    sensitive=st.sampled_from(["income", "diagnosis"]),
    budget=st.sampled_from([0.0, 0.1, 0.5]),
)
def test_every_released_class_meets_k_l_and_t(
    arx_files: dict[str, Path],
    rows: list[dict[str, Any]],
    k: int,
    algorithm: str,
    metric: str,
    use_files: bool,
    l_value: int,
    l_kind: str,
    t_value: float | None,
    sensitive: str,
    budget: float,
) -> None:
    qis = ["age", "city", "tier"]
    asked = l_value > 1 or t_value is not None
    privacy = Privacy(
        algorithm=algorithm,
        metric=metric,
        sensitive=(sensitive,) if asked else (),
        l=l_value,
        l_kind=l_kind,
        t=t_value,
        hierarchies=arx_files if use_files else {},
    )
    result = anonymize(rows, qis, k, budget, privacy)
    classes: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for row in result.rows:
        classes[tuple(row[q] for q in qis)].append(row[sensitive])
    assert result.suppressed + len(result.rows) == len(rows)
    assert result.classes == len(classes)
    overall = [r[sensitive] for r in rows]
    for values in classes.values():
        assert len(values) >= k
        if l_value > 1 and l_kind == "distinct":
            assert len(set(values)) >= l_value
        if l_value > 1 and l_kind == "entropy":
            counts = Counter(values).values()
            entropy = -sum(c / len(values) * math.log(c / len(values)) for c in counts)
            assert entropy >= math.log(l_value) - 1e-9
        if t_value is not None:
            assert emd(values, overall, ordered=sensitive == "income") <= t_value + 1e-9
    if use_files:  # every released label is one the hierarchy file has
        for q in ("age", "city"):
            allowed = {label for row in arx_map(arx_files[q]).values() for label in row}
            assert {str(r[q]) for r in result.rows} <= allowed


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, k=st.integers(2, 5), budget=st.sampled_from([0.0, 0.1, 0.3]))
def test_lattice_search_finds_the_least_discernibility(
    arx_files: dict[str, Path], rows: list[dict[str, Any]], k: int, budget: float
) -> None:
    """Brute force over every node of the age x city lattice agrees with the search."""
    maps = {q: arx_map(arx_files[q]) for q in ("age", "city")}
    best = math.inf
    for levels in itertools.product(range(4), range(4)):
        keys = [tuple(maps[q][str(r[q])][lv] for q, lv in zip(maps, levels, strict=True))
                for r in rows]  # fmt: skip
        sizes = Counter(keys)
        small = sum(n for n in sizes.values() if n < k)
        if small <= budget * len(rows):
            best = min(best, sum(n * n for n in sizes.values() if n >= k) + small * len(rows))
    privacy = Privacy(metric="discernibility", hierarchies=arx_files)
    result = anonymize(rows, ["age", "city"], k, budget, privacy)
    if best < math.inf:
        assert result.loss_report()["discernibility"] == best
    else:  # nothing fits the budget: the top node, failing classes suppressed
        assert result.levels == {"age": 3, "city": 3}


# ------------------------------------------------------------------ a hand-checked example

TINY = [
    {"age": 21, "income": 10, "diagnosis": "flu"},
    {"age": 22, "income": 20, "diagnosis": "none"},
    {"age": 23, "income": 30, "diagnosis": "asthma"},
    {"age": 31, "income": 10, "diagnosis": "flu"},
    {"age": 32, "income": 30, "diagnosis": "asthma"},
    {"age": 45, "income": 20, "diagnosis": "none"},
]


def test_loss_metrics_on_a_hand_checked_example(arx_files: dict[str, Path]) -> None:
    """Level 1 (decades): classes 20-29 (3 rows), 30-39 (2), 40-49 (1 row, suppressed).

    discernibility 3² + 2² + 1 suppressed x 6 rows = 19; 2 classes of 5 rows: average
    2.5, normalised by k 1.25; intensity 1/3 (level 1 of 3), precision 2/3; loss: the 20s
    cover 3 of the 6 values present ((3-1)/5 = 0.4 each), the 30s 2 ((2-1)/5 = 0.2), the
    suppressed row 1: (3 x 0.4 + 2 x 0.2 + 1) / 6 = 0.433333.
    """
    privacy = Privacy(hierarchies={"age": arx_files["age"]})
    result = anonymize(TINY, ["age"], 2, 1 / 6, privacy)
    loss = result.loss_report()
    assert result.levels == {"age": 1}
    assert [r["age"] for r in result.rows] == ["20-29", "20-29", "20-29", "30-39", "30-39"]
    assert (loss["suppressed"], loss["classes"], loss["discernibility"]) == (1, 2, 19)
    assert loss["suppression_rate"] == round(1 / 6, 6)
    assert (loss["average_class_size"], loss["normalized_average_class_size"]) == (2.5, 1.25)
    assert loss["generalisation_intensity"] == {"age": round(1 / 3, 6)}
    assert loss["precision"] == round(2 / 3, 6)
    assert loss["loss"] == round(2.6 / 6, 6)


def test_l_and_t_achieved_on_the_hand_checked_example(arx_files: dict[str, Path]) -> None:
    """Overall income is 1/3 each of 10, 20, 30. The 20s hold all three (distance 0); the
    30s hold 10 and 30: ordered EMD (|1/2 - 1/3| + |1/2 - 2/3|) / 2 = 1/6, and as a
    category (equal distance) ½ (1/6 + 1/3 + 1/6) = 1/3."""
    files = {"age": arx_files["age"]}

    def run(rows: list[dict[str, Any]], **models: Any) -> Any:
        return anonymize(rows, ["age"], 2, 1 / 6, Privacy(hierarchies=files, **models))

    report = run(TINY, sensitive=("income",), l=2, t=0.2).loss_report()
    assert report["t"] == {"asked": 0.2, "achieved": round(1 / 6, 6)}
    assert report["l"] == {"kind": "distinct", "asked": 2, "achieved": 2.0}
    as_text = [{**r, "income": str(r["income"])} for r in TINY]
    categorical = run(as_text, sensitive=("income",), t=0.5)
    assert categorical.loss_report()["t"]["achieved"] == round(1 / 3, 6)
    strict = run(as_text, sensitive=("income",), t=0.3)
    assert strict.levels["age"] >= 2  # the 30s are too far from the whole at level 1
    entropy = run(TINY, sensitive=("diagnosis",), l=2, l_kind="entropy")
    assert entropy.loss_report()["l"]["achieved"] == 2.0  # exp(ln 2): two equally likely


def test_mondrian_keeps_more_than_full_domain_recoding(arx_files: dict[str, Path]) -> None:
    rows = [{"age": a % 80, "city": ["London", "Paris", "Leeds"][a % 3]} for a in range(300)]
    full = anonymize(rows, ["age", "city"], 5, 0.0, Privacy(hierarchies=arx_files))
    local = anonymize(rows, ["age", "city"], 5, 0.0,
                      Privacy(algorithm="mondrian", hierarchies=arx_files))  # fmt: skip
    assert local.suppressed == 0
    assert local.loss_report()["discernibility"] <= full.loss_report()["discernibility"]
    assert local.classes >= full.classes


# ------------------------------------------------------------------ ARX files


def test_arx_file_is_read_level_by_level(arx_files: dict[str, Path]) -> None:
    table = read_arx_hierarchy(arx_files["city"])
    assert table["Leeds"] == ["England", "UK", "*"]
    assert len(table) == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("London;England;*\nParis;France\n", r"line 2: 2 columns, but the rows above have 3"),
        ("London;England;*\nLondon;England;*\n", r"line 2: value 'London' appears twice"),
        ("London\n", r"line 1: 1 column"),
        ("London;England;UK\nLeeds;England;EU\n", r"not a tree: 'England'"),
        ("\n\n", r"no rows"),
    ],
)
def test_bad_arx_files_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "city.csv"
    path.write_text(text)
    with pytest.raises(BadRequestError, match=message) as caught:
        read_arx_hierarchy(path)
    assert str(path) in caught.value.message


def test_values_missing_from_the_file_are_named(tmp_path: Path) -> None:
    path = tmp_path / "city.csv"
    path.write_text("London;UK;*\n")
    rows = [{"city": "London"}, {"city": "Madrid"}]
    with pytest.raises(BadRequestError, match=r"no row for 1 value\(s\) in the data: 'Madrid'"):
        anonymize(rows, ["city"], 2, 0.0, Privacy(hierarchies={"city": path}))
    with pytest.raises(BadRequestError, match="cannot be read"):
        anonymize(rows, ["city"], 2, 0.0, Privacy(hierarchies={"city": tmp_path / "none.csv"}))


def test_an_empty_input_reports_the_same_metrics_as_any_other() -> None:
    """An export whose guard left no row (nobody consented yet) reports every metric the
    CLI prints, at its empty value; it crashed with KeyError 'discernibility' before."""
    import pyarrow as pa

    empty = pa.table({"country": pa.array([], pa.string()), "age": pa.array([], pa.int64())})
    full = anonymize(pa.table({"country": ["DE", "DE"], "age": [30, 31]}), ["country"], k=2)
    result = anonymize(empty, ["country"], k=2)
    report = result.loss_report()
    assert set(full.loss_report()) <= set(report)
    assert report["rows_out"] == 0
    assert report["discernibility"] == 0
    assert report["suppressed"] == 0
