"""`anonymize`: k-anonymity on a census table, tidegate side by side with anjana.

The data: an "adult"-like census table (the UCI adult data's columns and marginals:
age skewed to 20-50, sex, race, marital status, occupation, education, income),
generated here with a fixed seed because nothing may be downloaded at run time;
30,162 rows (adult without missing values; quick: 5,000). The quasi-identifiers are
age, sex, race, marital status and occupation, with the hierarchies ARX ships for adult
(5-, 10-, 20-year age bands; spouse present / not present; technical / non-technical /
other occupations; `*`), written as ARX CSV files that both tools read. k = 5, at most
5% of rows suppressed.

Contenders (all timed on data already in memory, returning the released table):

* `tidegate lattice (loss)`: `privacy.anonymize.anonymize` as `tidegate export` runs it
  by default: optimal full-domain generalisation for the generalisation-loss metric.
* `tidegate lattice (discernibility)`: the same search minimising discernibility.
* `tidegate mondrian`: local recoding with the same hierarchies.
* `anjana k_anonymity` (peer, the reference): `anjana==1.2.3` with the `pycanon==1.3.5`
  it pins, in `benchmarks/.venvs/anjana`, run by `benchmarks/anonymize_peer.py`.

Every output, tidegate's and anjana's, is measured untimed by the same code in the
peer venv: pycanon's `k_anonymity` on it (the k it really has), rows suppressed,
classes, and discernibility (`Σ|E|² + suppressed x N`, lower keeps more). A run whose
output does not reach k fails. The goal (issue 14): tidegate reaches k with lower
discernibility, no more suppression, and faster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, Benchmark, Contender, Sample, peer_venv, register, run_json

ANJANA_REQUIREMENTS = ["anjana==1.2.3", "pycanon==1.3.5"]
K = 5
MAX_SUPPRESSION = 0.05
QIS = ["age", "sex", "race", "marital_status", "occupation"]
LOSS = "tidegate lattice (loss)"
DISCERNIBILITY = "tidegate lattice (discernibility)"
MONDRIAN = "tidegate mondrian"
ANJANA = "anjana k_anonymity"

SEX = {"Male": 0.67, "Female": 0.33}
RACE = {"White": 0.85, "Black": 0.09, "Asian-Pac-Islander": 0.03, "Amer-Indian-Eskimo": 0.01,
        "Other": 0.02}  # fmt: skip
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


def census_table(rows: int, seed: int = 14) -> Any:
    """The adult-like table as Arrow (deterministic for a seed)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)

    def pick(options: dict[str, Any]) -> Any:
        names = np.array(list(options))
        shares = np.array([v[0] if isinstance(v, tuple) else v for v in options.values()])
        return names[rng.choice(len(names), rows, p=shares / shares.sum())]

    return pa.table(
        {
            "id": np.arange(1, rows + 1),
            "age": np.clip(rng.gamma(6.0, 6.5, rows) + 17, 17, 90).astype(np.int64),
            "sex": pick(SEX),
            "race": pick(RACE),
            "marital_status": pick(MARITAL),
            "occupation": pick(OCCUPATION),
            "education": rng.choice(EDUCATION, rows),
            "income": rng.choice(["<=50K", ">50K"], rows, p=[0.76, 0.24]),
        }
    )


def write_hierarchies(folder: Path) -> dict[str, Path]:
    """ARX's adult hierarchies as ARX writes them (value;level 1;...;*)."""
    folder.mkdir(parents=True, exist_ok=True)
    age = [
        f"{a};{a // 5 * 5}-{a // 5 * 5 + 4};{a // 10 * 10}-{a // 10 * 10 + 9};"
        f"{a // 20 * 20}-{a // 20 * 20 + 19};*"
        for a in range(17, 91)
    ]
    lines = {
        "age": age,
        "sex": [f"{s};*" for s in SEX],
        "race": [f"{r};*" for r in RACE],
        "marital_status": [f"{m};{level};*" for m, (_, level) in MARITAL.items()],
        "occupation": [f"{o};{level};*" for o, (_, level) in OCCUPATION.items()],
    }
    paths = {}
    for column, rows in lines.items():
        paths[column] = folder / f"adult_hierarchy_{column}.csv"
        paths[column].write_text("\n".join(rows) + "\n")
    return paths


@register
class AnonymizeBenchmark(Benchmark):
    name = "anonymize"
    title = "k-anonymity (k=5, ≤5% suppressed) on an adult-like census table, vs anjana"
    rounds_full = 3
    rounds_quick = 2
    warmup_full = 1
    warmup_quick = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows = 5_000 if self.quick else 30_162
        self.table: Any = None
        self.csv = self.workdir / "census.csv"
        self.hierarchies: dict[str, Path] = {}
        self.peer_python: Path | None = None

    def sizes(self) -> dict[str, Any]:
        return {"rows": self.rows, "k": K, "max_suppression": MAX_SUPPRESSION, "qis": QIS}

    def contenders(self) -> list[Contender]:
        return [
            Contender(LOSS, "tidegate", description="optimal full-domain, generalisation loss"),
            Contender(DISCERNIBILITY, "tidegate", description="optimal full-domain, DM"),
            Contender(MONDRIAN, "tidegate", description="local recoding, same hierarchies"),
            Contender(
                ANJANA,
                "peer",
                reference=True,
                description=f"{' + '.join(ANJANA_REQUIREMENTS)} in its own venv; timed: "
                "k_anonymity(data, [], qis, k, 5, hierarchies) on a DataFrame",
            ),
        ]

    def prepare(self) -> None:
        import pyarrow.csv as pcsv

        self.peer_python = peer_venv("anjana", ANJANA_REQUIREMENTS)
        self.table = census_table(self.rows)
        pcsv.write_csv(self.table, self.csv)
        self.hierarchies = write_hierarchies(self.workdir / "hierarchies")

    def environment(self) -> dict[str, Any]:
        return {"peer": ANJANA_REQUIREMENTS, "dataset": "adult-like, generated (seed 14)"}

    def _measure(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.peer_python is not None
        return run_json(
            [str(self.peer_python), str(ROOT / "anonymize_peer.py")], stdin=payload, timeout=3600
        )

    def run(self, contender: Contender) -> Sample:
        if contender.name == ANJANA:
            found = self._measure(
                {
                    "mode": "anjana",
                    "csv": str(self.csv),
                    "qis": QIS,
                    "k": K,
                    "supp_level": MAX_SUPPRESSION * 100,
                    "hierarchies": {q: str(p) for q, p in self.hierarchies.items()},
                }
            )
            seconds = float(found.pop("seconds"))
            version = found.pop("anjana")
            return self._sample(seconds, found, {"anjana": version})
        return self._tidegate(contender)

    def _tidegate(self, contender: Contender) -> Sample:
        import time

        import pyarrow.csv as pcsv

        from tidegate.privacy.anonymize import Privacy, anonymize

        privacy = Privacy(
            algorithm="mondrian" if contender.name == MONDRIAN else "lattice",
            metric="discernibility" if contender.name == DISCERNIBILITY else "loss",
            hierarchies=self.hierarchies,
        )
        started = time.perf_counter()
        result = anonymize(self.table, QIS, K, MAX_SUPPRESSION, privacy)
        seconds = time.perf_counter() - started
        out = self.workdir / f"tidegate-{privacy.algorithm}-{privacy.metric}.csv"
        pcsv.write_csv(result.table, out)
        found = self._measure({"mode": "check", "csv": str(out), "qis": QIS, "rows_in": self.rows})
        report = result.loss_report()
        if found["discernibility"] != report["discernibility"]:
            raise RuntimeError(f"discernibility {report['discernibility']} != {found}")
        info = {"levels": {q: v["as"] for q, v in report["levels"].items()},
                "steps": report["steps"][:1]}  # fmt: skip
        return self._sample(seconds, found, info)

    def _sample(self, seconds: float, found: dict[str, Any], info: dict[str, Any]) -> Sample:
        if found["k_pycanon"] < K:
            raise RuntimeError(f"pycanon finds k={found['k_pycanon']} < {K}: {found}")
        if found["suppressed"] > MAX_SUPPRESSION * self.rows:
            raise RuntimeError(f"suppressed {found['suppressed']} rows, over the budget")
        metrics = {
            "discernibility": float(found["discernibility"]),
            "suppressed": float(found["suppressed"]),
            "classes": float(found["classes"]),
            "k_pycanon": float(found["k_pycanon"]),
        }
        return Sample(seconds, metrics, info=info)
