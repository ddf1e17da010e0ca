"""The one-table project several benchmarks share: a file source `people` (id, one
personal column, a score), a product `people_out` selecting all of it under one purpose,
and one role allowed that purpose in the clear.

The metadata, revocation and HTTP-sync benchmarks measure different paths out of the
same shape of project; writing it once keeps them comparable (same columns, same
classifications, same policy) and each benchmark adds only what it measures (a
metadata backend, its syncs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidegate.platform import Platform

PRODUCT = "people_out"


@dataclass(frozen=True)
class PeopleProject:
    """What varies between the benchmarks that use the project."""

    name: str
    purpose: str
    legal_basis: str  # consent: every person is granted the purpose by `open_people`
    role: str
    #: the personal column beside id and score: (name, classification, value template)
    personal: tuple[str, str, str] = ("email", "user.contact.email", "p{}@example.com")
    #: extra top-level YAML for tidegate.yml (e.g. `backends:`)
    settings: str = ""

    def write(self, root: Path) -> None:
        """The project's files (sources, products, policies; `syncs/` left empty)."""
        for folder in ("sources", "products", "policies", "syncs", "data"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        column, classification, _ = self.personal
        columns = (
            "  id: {type: BIGINT, nullable: false, classification: user.unique_id}\n"
            f"  {column}: {{type: VARCHAR, classification: {classification}}}\n"
            "  score: {type: DOUBLE, classification: none}\n"
        )
        (root / "tidegate.yml").write_text(f"name: {self.name}\n{self.settings}")
        (root / "sources" / "people.yml").write_text(
            "name: people\ntype: file\npath: data/people.parquet\nowner: bench\n"
            "key: id\nsubject: id\ncolumns:\n" + columns
        )
        (root / "products" / f"{PRODUCT}.yml").write_text(
            f"name: {PRODUCT}\nowner: bench\nsql: SELECT id, {column}, score FROM people\n"
            f"key: id\nsubject: id\npurposes: [{self.purpose}]\ncolumns:\n" + columns
        )
        (root / "policies" / "policy.yml").write_text(
            f"purposes:\n  {self.purpose}: {{legal_basis: {self.legal_basis}}}\n"
            f"roles:\n  {self.role}: {{purposes: [{self.purpose}]}}\n"
            f"treatments:\n  {self.purpose}:\n    user: clear\n"
        )

    def open_people(self, root: Path, people: int) -> Platform:
        """Write `people` rows, open the platform, grant the purpose to each (when it
        rests on consent), load and build. The caller closes the platform."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from tidegate.platform import Platform
        from tidegate.privacy.consent import ConsentEvent, consent_ledger_of
        from tidegate.products.builder import build_products, load_sources

        ids = list(range(1, people + 1))
        column, _, template = self.personal
        pq.write_table(
            pa.table(
                {
                    "id": pa.array(ids, pa.int64()),
                    column: [template.format(i) for i in ids],
                    "score": [float(i % 100) for i in ids],
                }
            ),
            root / "data" / "people.parquet",
        )
        platform = Platform.open(root)
        if self.legal_basis == "consent":
            now = time.time() - 60
            consent_ledger_of(platform).record(
                [ConsentEvent(str(i), self.purpose, "grant", now, "bench") for i in ids]
            )
        load_sources(platform)
        if not all(r.status == "live" for r in build_products(platform)):
            platform.close()
            raise RuntimeError(f"the benchmark product {PRODUCT} did not build")
        return platform
