"""Issue 14 item 5: `tidegate export --k 5` on a census-like table keeps the data useful.

The table is an "adult"-like census extract generated here (deterministic, no download):
age skewed towards 20-50, sex, race (mostly one group), marital status and occupation
with the skew of the UCI adult data, plus education and income. The hierarchies are
the ones ARX ships for adult, written in ARX's CSV format (`;`, one row per value, one
column per level).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.csv as pcsv
import pytest
from typer.testing import CliRunner

from tidegate.cli.app import app

SEX = {"Male": 0.67, "Female": 0.33}
RACE = {
    "White": 0.85,
    "Black": 0.09,
    "Asian-Pac-Islander": 0.03,
    "Amer-Indian-Eskimo": 0.01,
    "Other": 0.02,
}
MARITAL = {  # value -> (share, ARX level 1)
    "Married-civ-spouse": (0.46, "spouse present"),
    "Never-married": (0.33, "spouse not present"),
    "Divorced": (0.14, "spouse not present"),
    "Separated": (0.03, "spouse not present"),
    "Widowed": (0.03, "spouse not present"),
    "Married-spouse-absent": (0.01, "spouse not present"),
}
OCCUPATION = {
    "Prof-specialty": (0.13, "Technical"),
    "Craft-repair": (0.13, "Technical"),
    "Exec-managerial": (0.13, "Nontechnical"),
    "Adm-clerical": (0.12, "Other"),
    "Sales": (0.12, "Nontechnical"),
    "Other-service": (0.10, "Other"),
    "Machine-op-inspct": (0.06, "Technical"),
    "Transport-moving": (0.05, "Other"),
    "Handlers-cleaners": (0.04, "Nontechnical"),
    "Farming-fishing": (0.03, "Other"),
    "Tech-support": (0.03, "Technical"),
    "Protective-serv": (0.02, "Other"),
    "Priv-house-serv": (0.01, "Other"),
}
EDUCATION = ("HS-grad", "Some-college", "Bachelors", "Masters", "Assoc-voc", "11th", "Doctorate")
ROWS = 30162  # the size of the UCI adult data without missing values
QIS = ["age", "sex", "race", "marital_status", "occupation"]


def census_rows(n: int, seed: int = 14) -> list[dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)

    def pick(options: dict[str, Any]) -> list[str]:
        names = list(options)
        shares = np.array([v[0] if isinstance(v, tuple) else v for v in options.values()])
        return [names[i] for i in rng.choice(len(names), n, p=shares / shares.sum())]

    ages = np.clip(rng.gamma(6.0, 6.5, n) + 17, 17, 90).astype(int)
    sex, race, marital, occupation = pick(SEX), pick(RACE), pick(MARITAL), pick(OCCUPATION)
    education = rng.choice(EDUCATION, n)
    income = rng.choice(["<=50K", ">50K"], n, p=[0.76, 0.24])
    return [
        {
            "id": i + 1,
            "age": int(ages[i]),
            "sex": sex[i],
            "race": race[i],
            "marital_status": marital[i],
            "occupation": occupation[i],
            "education": str(education[i]),
            "income": str(income[i]),
        }
        for i in range(n)
    ]


def write_arx_hierarchies(folder: Path) -> dict[str, Path]:
    """The adult hierarchies as ARX writes them: value;level 1;...;*."""
    folder.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {
        "age": [
            f"{a};{a // 5 * 5}-{a // 5 * 5 + 4};{a // 10 * 10}-{a // 10 * 10 + 9};"
            f"{a // 20 * 20}-{a // 20 * 20 + 19};*"
            for a in range(17, 91)
        ],
        "sex": [f"{s};*" for s in SEX],
        "race": [f"{r};*" for r in RACE],
        "marital_status": [f"{m};{lvl};*" for m, (_, lvl) in MARITAL.items()],
        "occupation": [f"{o};{lvl};*" for o, (_, lvl) in OCCUPATION.items()],
    }
    paths = {}
    for column, rows in lines.items():
        paths[column] = folder / f"adult_hierarchy_{column}.csv"
        paths[column].write_text("\n".join(rows) + "\n")
    return paths


def write_census_project(root: Path, rows: list[dict[str, Any]]) -> Path:
    """A project with one file source `census` and a product `census_out` under purpose
    `research` (legal basis contract: every row passes the guard)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tidegate.platform import Platform
    from tidegate.products.builder import build_products, load_sources

    for folder in ("sources", "products", "policies", "data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "census.parquet")
    types = {"id": "BIGINT", "age": "BIGINT"}
    # the quasi-identifiers are left for the export to generalise: declared non-personal
    columns = "".join(
        f"  {c}: {{type: {types.get(c, 'VARCHAR')}, classification: none}}\n" for c in rows[0]
    )
    (root / "tidegate.yml").write_text("name: census\n")
    (root / "sources" / "census.yml").write_text(
        "name: census\ntype: file\npath: data/census.parquet\nowner: stats\n"
        "key: id\nsubject: id\ncolumns:\n" + columns
    )
    (root / "products" / "census_out.yml").write_text(
        f"name: census_out\nowner: stats\nsql: SELECT {', '.join(rows[0])} FROM census\n"
        "key: id\nsubject: id\npurposes: [research]\ncolumns:\n" + columns
    )
    (root / "policies" / "policy.yml").write_text(
        "purposes:\n  research: {legal_basis: contract}\n"
        "roles:\n  statistician: {purposes: [research]}\n"
    )
    with Platform.open(root) as platform:
        load_sources(platform)
        built = build_products(platform)
        assert all(r.status == "live" for r in built), built
    return root


@pytest.fixture(scope="module")
def census_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_census_project(tmp_path_factory.mktemp("census"), census_rows(ROWS))


def run_export(project: Path, out: Path, *extra: str) -> tuple[list[dict[str, Any]], str]:
    result = CliRunner().invoke(
        app,
        ["export", "census_out", "--purpose", "research", "--k", "5",
         "--quasi-identifiers", ",".join(QIS), "--format", "csv", "--out", str(out),
         "--project", str(project), *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pcsv.read_csv(out, convert_options=pcsv.ConvertOptions(strings_can_be_null=False))
    return table.to_pylist(), result.output


def assert_k(rows: list[dict[str, Any]], k: int) -> None:
    classes = Counter(tuple(str(r[q]) for q in QIS) for r in rows)
    assert min(classes.values()) >= k


def test_default_export_keeps_age_and_the_categories(census_project: Path, tmp_path: Path) -> None:
    """Today: age becomes "[0, 128)" and marital status, occupation, race, sex all `*`."""
    rows, _ = run_export(census_project, tmp_path / "census.csv")
    assert len(rows) >= 0.95 * ROWS
    assert_k(rows, 5)
    ages = {str(r["age"]) for r in rows}
    assert len(ages) >= 5, ages  # age keeps a useful resolution
    for column in ("sex", "race", "marital_status", "occupation"):
        assert {str(r[column]) for r in rows} != {"*"}, f"{column} suppressed entirely"


def test_arx_hierarchies_generalise_within_the_tree(census_project: Path, tmp_path: Path) -> None:
    paths = write_arx_hierarchies(tmp_path / "hierarchies")
    options = [f"--hierarchy={c}={p}" for c, p in paths.items()]
    rows, output = run_export(census_project, tmp_path / "census.csv", *options)
    assert len(rows) >= 0.95 * ROWS
    assert_k(rows, 5)
    allowed_age = {
        line.split(";")[i] for line in paths["age"].read_text().split() for i in range(5)
    }
    assert {str(r["age"]) for r in rows} <= allowed_age
    assert len({str(r["age"]) for r in rows}) >= 4  # at most 20-year bands
    for column in ("sex", "race", "marital_status", "occupation"):
        assert {str(r[column]) for r in rows} != {"*"}, f"{column} suppressed entirely"
    assert "discernibility" in output
    assert "precision" in output


def test_export_with_l_diversity_is_guarded_and_audited(
    census_project: Path, tmp_path: Path
) -> None:
    from tidegate.egress.export import export
    from tidegate.errors import ForbiddenError
    from tidegate.platform import Platform
    from tidegate.privacy.anonymize import Privacy

    paths = write_arx_hierarchies(tmp_path / "hierarchies")
    privacy = Privacy(sensitive=("income",), l=2, t=0.2, hierarchies=paths)
    out = tmp_path / "census.parquet"
    with Platform.open(census_project) as platform:
        with pytest.raises(ForbiddenError):  # the guard still decides who may export
            export(platform, "census_out", purpose="research", k=5, quasi_identifiers=QIS,
                   out=out, roles=("nobody",), privacy=privacy)  # fmt: skip
        assert not out.exists()
        result = export(platform, "census_out", purpose="research", k=5,
                        quasi_identifiers=QIS, out=out, privacy=privacy)  # fmt: skip
        (seq, record) = list(platform.audit.records())[-1]
    import pyarrow.parquet as pq

    rows = pq.read_table(out).to_pylist()
    classes: dict[tuple[Any, ...], list[str]] = {}
    for row in rows:
        classes.setdefault(tuple(row[q] for q in QIS), []).append(row["income"])
    assert all(len(v) >= 5 and len(set(v)) >= 2 for v in classes.values())
    assert (seq, record.action, record.rows) == (result.audit_seq, "export", len(rows))
    loss = record.detail["information_loss"]
    assert loss["l"]["achieved"] >= 2
    assert loss["t"]["achieved"] <= 0.2
    assert loss["sensitive"] == ["income"]
    assert "+k5:level " in record.columns["age"]  # the ARX level, in the audit
    assert "id" in result.dropped


def test_cli_rejects_a_bad_hierarchy_file_with_its_line(
    census_project: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "sex.csv"
    bad.write_text("Male;*\nFemale;x;*\n")
    result = CliRunner().invoke(
        app,
        ["export", "census_out", "--purpose", "research", "--k", "5",
         "--quasi-identifiers", ",".join(QIS), "--out", str(tmp_path / "x.csv"),
         "--hierarchy", f"sex={bad}", "--project", str(census_project)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    flat = re.sub(r"[\s│╭╮╰╯─]+", "", result.output)  # the usage panel wraps long paths
    assert f"hierarchyfile{bad}".replace(" ", "") in flat
    assert "line2:3columns,buttherowsabovehave2" in flat
    assert not (tmp_path / "x.csv").exists()
    result = CliRunner().invoke(
        app,
        ["export", "census_out", "--purpose", "research", "--quasi-identifiers", "age",
         "--out", str(tmp_path / "x.csv"), "--l", "2", "--project", str(census_project)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "sensitive" in result.output


def test_export_config_declares_hierarchies_per_column(
    census_project: Path, tmp_path: Path
) -> None:
    """The same export from a YAML file: hierarchy paths relative to it; the command line
    wins over it."""
    paths = write_arx_hierarchies(tmp_path / "hierarchies")
    columns = "".join(f"  {c}: {{hierarchy: hierarchies/{p.name}}}\n" for c, p in paths.items())
    config = tmp_path / "export.yml"
    config.write_text(f"k: 10\nquasi_identifiers:\n{columns}sensitive: [income]\nl: 2\n")
    out = tmp_path / "census.csv"
    result = CliRunner().invoke(
        app,
        ["export", "census_out", "--purpose", "research", "--config", str(config), "--k", "7",
         "--format", "csv", "--out", str(out), "--project", str(census_project), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    loss = json.loads(result.output)["information_loss"]
    assert loss["k"] == 7  # the command line over the file
    assert loss["l"]["asked"] == 2
    assert loss["levels"]["age"]["as"].startswith("level ")  # the ARX file, not the default
    rows = pcsv.read_csv(out).to_pylist()
    classes = Counter(tuple(str(r[q]) for q in QIS) for r in rows)
    assert min(classes.values()) >= 7


def test_bad_export_config_names_file_line_and_field(census_project: Path, tmp_path: Path) -> None:
    config = tmp_path / "export.yml"
    config.write_text("k: 5\nquasi_identifiers:\n  age: {hierachy: age.csv}\n")
    result = CliRunner().invoke(
        app,
        ["export", "census_out", "--purpose", "research", "--config", str(config),
         "--out", str(tmp_path / "x.csv"), "--project", str(census_project)],
    )  # fmt: skip
    assert result.exit_code == 2
    flat = re.sub(r"[\s│╭╮╰╯─]+", "", result.output)
    assert f"{config}:3:[quasi_identifiers.age.hierachy]unknownkey".replace(" ", "") in flat
