"""`sync_postgres`: a product of N rows into PostgreSQL, against COPY (the physical limit).

The product: a file source (Parquet written here: `id` BIGINT key and subject, `email`
classified `user.contact.email`, `score` DOUBLE, `country`, `updated_at` TIMESTAMP)
selected as is by a product, synced under `support` (legal basis `contract`, so every
row passes the guard and the email is shown in clear) to `{type: postgres, mode:
upsert}`. Everything goes through `tidegate.egress.sync.run_sync`, as `tidegate sync
run` does.

Two groups, each with its own reference:

* **initial**: an empty destination table and no sync state, N rows sent. tidegate
  against the fastest of three ways to COPY the same rows, read from the same built
  product in DuckDB, into an empty table with the same columns and primary key:
  CSV made by Arrow (`COPY … (FORMAT csv)`), psycopg's binary COPY row by row, and
  binary COPY encoded from Arrow by pgpq (what tidegate's destination uses).
* **incremental**: 1% of the source rows change (score and updated_at), the product
  is rebuilt (untimed), and the sync runs again: diff + apply. The limit does the
  same job the raw way: DuckDB diffs the two product versions (a join), the changed
  rows go by COPY into a staging table and one `INSERT … ON CONFLICT DO UPDATE`.

Each contender brings its own destination up to date untimed before it runs, so the
rotation of contenders never hands one of them a bigger diff. Tables are named
`bench_sync_<run>` and dropped at the end.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    ROOT,
    Benchmark,
    Contender,
    Sample,
    Stopwatch,
    peer_venv,
    register,
    run_json,
    timed_attribute,
)

DSN = os.environ.get(
    "TIDEGATE_BENCH_PG_DSN", "postgresql://tidegate:tidegate@127.0.0.1:5432/tidegate"
)
SYNC = "to_pg"
PRODUCT = "people_out"
SOURCE = "people"
COLUMNS = {  # name -> (DuckDB type, classification)
    "id": ("BIGINT", "none"),
    "email": ("VARCHAR", "user.contact.email"),
    "score": ("DOUBLE", "none"),
    "country": ("VARCHAR", "none"),
    "updated_at": ("TIMESTAMP", "none"),
}
BINARY_TYPES = ["int8", "text", "float8", "text", "timestamp"]
COUNTRIES = ("GB", "US", "DE", "FR", "NL", "IE", "ES", "CA")
CHANGED_SHARE = 0.01
READ_BATCH = 100_000
BACKGROUND = {"state_checkpoint"}  # spans that may overlap the others (see _timed_sync)
BASE_MICROS = 1_700_000_000_000_000

TG_INITIAL = "tidegate sync: initial"
COPY_CSV = "COPY csv (Arrow-written)"
COPY_BINARY = "COPY binary (psycopg rows)"
COPY_PGPQ = "COPY binary (pgpq from Arrow)"
TG_INCREMENTAL = "tidegate sync: 1% changed"
RAW_INCREMENTAL = "raw: DuckDB diff + COPY + upsert"
DLT_INITIAL = "dlt merge (Arrow → CSV COPY)"
DLT_REQUIREMENTS = ["dlt[postgres,parquet]==1.31.0"]


def _column_yaml() -> str:
    lines = []
    for name, (kind, classification) in COLUMNS.items():
        extra = f", classification: {classification}" if classification else ""
        extra += ", nullable: false" if name == "id" else ""
        lines.append(f"  {name}: {{type: {kind}{extra}}}")
    return "\n".join(lines) + "\n"


def write_project(root: Path, table: str) -> None:
    """A minimal tidegate project: one file source, one product, one policy, one sync."""
    for folder in ("sources", "products", "policies", "syncs", "data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "tidegate.yml").write_text("name: bench_sync\n")
    (root / "sources" / f"{SOURCE}.yml").write_text(
        f"name: {SOURCE}\ntype: file\npath: data/{SOURCE}.parquet\nowner: bench\n"
        "key: id\nsubject: id\ncolumns:\n" + _column_yaml()
    )
    (root / "products" / f"{PRODUCT}.yml").write_text(
        f"name: {PRODUCT}\nowner: bench\n"
        f"sql: SELECT {', '.join(COLUMNS)} FROM {SOURCE}\n"
        "key: id\nsubject: id\npurposes: [support]\ncolumns:\n" + _column_yaml()
    )
    (root / "policies" / "policy.yml").write_text(
        "purposes:\n  support: {legal_basis: contract}\n"
        "roles:\n  support_agent: {purposes: [support]}\n"
        "treatments:\n  support:\n    user.contact.email: clear\n"
    )
    (root / "syncs" / f"{SYNC}.yml").write_text(
        f"name: {SYNC}\nproduct: {PRODUCT}\npurpose: support\n"
        f'destination: {{type: postgres, dsn: "{DSN}", table: {table}}}\n'
        "mode: upsert\ntrigger: manual\n"
    )


@register
class SyncPostgresBenchmark(Benchmark):
    name = "sync_postgres"
    title = "product → PostgreSQL sync (initial and 1% incremental), vs COPY"
    rounds_full = 3
    rounds_quick = 3
    warmup_full = 0
    warmup_quick = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows = 50_000 if self.quick else 1_000_000
        self.run_id = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.tg_table = f"bench_sync_{self.run_id}"
        self.raw_table = f"bench_sync_{self.run_id}_raw"
        self.project_dir = self.workdir / "project"
        self.platform: Any = None
        self.rng: Any = None
        self.columns: dict[str, Any] = {}
        self.live = 0  # live version of the product
        self.mutated: set[int] = set()  # versions made by a 1% change of the one before
        self.tg_version: int | None = None  # what tidegate's destination mirrors
        self.raw_version: int | None = None  # what the raw table mirrors
        self.changed_rows = max(1, int(self.rows * CHANGED_SHARE))
        self.server_version = ""
        self.dlt_python: Path | None = None
        self.dlt_dataset = f"bench_dlt_{self.run_id}"

    def sizes(self) -> dict[str, Any]:
        return {"rows": self.rows, "changed_rows": self.changed_rows}

    def contenders(self) -> list[Contender]:
        return [
            Contender(TG_INITIAL, "tidegate", "initial", description="run_sync into empty table"),
            Contender(COPY_CSV, "limit", "initial", reference=True),
            Contender(COPY_BINARY, "limit", "initial", reference=True),
            Contender(COPY_PGPQ, "limit", "initial", reference=True),
            Contender(
                DLT_INITIAL,
                "peer",
                "initial",
                description=(
                    f"{DLT_REQUIREMENTS[0]} in its own venv, as its Postgres docs advise for "
                    "tabular data: the same Parquet rows as an Arrow table, "
                    'loader_file_format="csv" (pyarrow CSV streamed by COPY), '
                    'write_disposition="merge", primary_key="id" (default delete-insert '
                    "strategy, staging dataset); timed: read Parquet + pipeline.run"
                ),
            ),
            Contender(TG_INCREMENTAL, "tidegate", "incremental", description="diff + apply"),
            Contender(RAW_INCREMENTAL, "limit", "incremental", reference=True),
        ]

    def todo(self) -> list[str]:
        return ["peer: dlt incremental (an `incremental` cursor on updated_at + merge)"]

    # ------------------------------------------------------------ setup

    def prepare(self) -> None:
        import numpy as np
        import psycopg

        from tidegate.platform import Platform

        with psycopg.connect(DSN, connect_timeout=10) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            self.server_version = str(row[0]) if row else ""
        self.rng = np.random.default_rng(20240601)
        ids = np.arange(1, self.rows + 1, dtype=np.int64)
        self.columns = {
            "id": ids,
            "email": [f"person{i}@example.com" for i in range(1, self.rows + 1)],
            "score": self.rng.random(self.rows),
            "country": np.array(COUNTRIES)[self.rng.integers(0, len(COUNTRIES), self.rows)],
            "updated_at": BASE_MICROS + ids * 1_000,
        }
        self.dlt_python = peer_venv("dlt", DLT_REQUIREMENTS)
        write_project(self.project_dir, self.tg_table)
        self._write_source()
        self.platform = Platform.open(self.project_dir)
        self._rebuild()

    def environment(self) -> dict[str, Any]:
        return {
            "postgres": self.server_version,
            "dsn": DSN.split("@")[-1],
            "tables": [self.tg_table, self.raw_table],
            "sync_batch_rows": self.platform.project.config.defaults.sync_batch_rows,
            "dlt": DLT_REQUIREMENTS,
        }

    def _write_source(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "id": pa.array(self.columns["id"], pa.int64()),
                "email": pa.array(self.columns["email"], pa.string()),
                "score": pa.array(self.columns["score"], pa.float64()),
                "country": pa.array(self.columns["country"], pa.string()),
                "updated_at": pa.array(self.columns["updated_at"], pa.timestamp("us")),
            }
        )
        pq.write_table(table, self.project_dir / "data" / f"{SOURCE}.parquet")

    def _rebuild(self) -> None:
        from tidegate.products.builder import build_products, load_sources

        load_sources(self.platform)
        results = build_products(self.platform)
        if any(r.status != "live" for r in results):
            raise RuntimeError(f"the product did not build: {results}")
        version = self.platform.meta.live_version(PRODUCT)
        self.live = int(version.version)

    def _mutate(self) -> None:
        """Change score and updated_at of 1% of the rows, rebuild: one new version."""
        picked = self.rng.choice(self.rows, self.changed_rows, replace=False)
        self.columns["score"] = self.columns["score"].copy()
        self.columns["score"][picked] = self.rng.random(len(picked))
        self.columns["updated_at"] = self.columns["updated_at"].copy()
        self.columns["updated_at"][picked] += 86_400_000_000
        self._write_source()
        self._rebuild()
        self.mutated.add(self.live)

    def _needs_change(self, mirrored: int | None) -> bool:
        """Whether a contender mirroring `mirrored` must make a new 1% change first (True),
        or can sync the one already waiting (False). Raises when it must catch up."""
        if mirrored == self.live:
            return True
        if mirrored == self.live - 1 and self.live in self.mutated:
            return False
        raise LookupError("behind by more than one change")

    def _pg(self) -> Any:
        import psycopg

        return psycopg.connect(DSN, connect_timeout=10)

    def _drop(self, *tables: str) -> None:
        from psycopg import sql

        with self._pg() as conn:
            for table in tables:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))

    def _create_raw(self, conn: Any, table: str) -> None:
        """The table tidegate's destination creates: same columns, same primary key."""
        from psycopg import sql

        from tidegate.egress.destinations.postgres.client import pg_type

        defs = sql.SQL(", ").join(
            sql.SQL("{} {}{}").format(
                sql.Identifier(name),
                sql.SQL(pg_type(kind)),
                sql.SQL(" PRIMARY KEY" if name == "id" else ""),
            )
            for name, (kind, _) in COLUMNS.items()
        )
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), defs))

    def _count(self, table: str) -> int:
        from psycopg import sql

        with self._pg() as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
        return int(row[0]) if row else 0

    def _reset_tidegate(self) -> None:
        """Empty destination and no sync state: what a first sync meets."""
        self._drop(self.tg_table)
        self.platform.meta.forget_sync(SYNC)
        self.tg_version = None

    # ------------------------------------------------------------ runs

    def run(self, contender: Contender) -> Sample:
        if contender.name == TG_INITIAL:
            return self._tidegate_initial()
        if contender.name == TG_INCREMENTAL:
            return self._tidegate_incremental()
        if contender.name == RAW_INCREMENTAL:
            return self._raw_incremental()
        if contender.name == DLT_INITIAL:
            return self._dlt_initial()
        return self._copy_initial(
            how={COPY_BINARY: "binary", COPY_PGPQ: "pgpq"}.get(contender.name, "csv")
        )

    def _timed_sync(self) -> tuple[float, Any, dict[str, float]]:
        """`run_sync`, timed, with a breakdown from wrapping the functions it calls.

        Probes that do not exist in the code at hand (it moves on) are left out. The
        parts do not overlap, except the checkpoints of batches, which may run in a
        thread while the next batch is written (`BACKGROUND`: not subtracted); `other_s`
        is the rest (streaming the diff's rows out of DuckDB, Arrow bookkeeping, audit,
        opening and closing).
        """
        import importlib

        import tidegate.egress.sync as sync_module
        from tidegate.egress.destinations.postgres.client import PostgresDestination

        try:
            diff_class = importlib.import_module("tidegate.egress.sync.diff").Diff
        except (ImportError, AttributeError):
            diff_class = None
        meta = self.platform.meta
        probes = [
            (sync_module, "_guarded_rows", "guarded_query"),
            (meta, "synced_state", "load_state"),
            (diff_class, "compare", "diff"),
            (PostgresDestination, "write", "destination_write"),
            (meta, "checkpoint_sync", "state_checkpoint"),
            (meta, "set_sync_inflight", "state_checkpoint"),
            (meta, "compact_sync_state", "state_compaction"),
        ]
        watch = Stopwatch()
        with contextlib.ExitStack() as stack:
            for owner, attribute, span in probes:
                if owner is not None:
                    stack.enter_context(
                        timed_attribute(owner, attribute, watch, span, missing_ok=True)
                    )
            started = time.perf_counter()
            report = sync_module.run_sync(self.platform, SYNC)
            seconds = time.perf_counter() - started
        if report.failed:
            raise RuntimeError(f"sync failed: {report.errors[:3]}")
        spans = watch.spans
        metrics = {
            f"{span}_s": spans[span]
            for span in dict.fromkeys(p[2] for p in probes)
            if span in spans
        }
        metrics["other_s"] = seconds - sum(v for k, v in spans.items() if k not in BACKGROUND)
        return seconds, report, metrics

    def _tidegate_initial(self) -> Sample:
        self._reset_tidegate()
        seconds, report, metrics = self._timed_sync()
        if report.added != self.rows or self._count(self.tg_table) != self.rows:
            raise RuntimeError(f"initial sync sent {report.added} of {self.rows} rows")
        self.tg_version = self.live
        metrics["rows_per_s"] = self.rows / seconds
        return Sample(seconds, metrics, info={"added": report.added})

    def _tidegate_incremental(self) -> Sample:
        from tidegate.egress.sync import run_sync

        try:
            change = self._needs_change(self.tg_version)
        except LookupError:
            if self.tg_version is None:
                self._reset_tidegate()
            run_sync(self.platform, SYNC)  # catch up, untimed
            self.tg_version = self.live
            change = True
        if change:
            self._mutate()
        seconds, report, metrics = self._timed_sync()
        if report.changed != self.changed_rows or report.added or report.removed:
            raise RuntimeError(
                f"expected {self.changed_rows} changed rows, got {report.changed} changed, "
                f"{report.added} added, {report.removed} removed"
            )
        self.tg_version = self.live
        metrics["changed_rows_per_s"] = report.changed / seconds
        return Sample(seconds, metrics, info={"changed": report.changed})

    def _product_reader(self, relation: str) -> Any:
        with self.platform.warehouse.cursor() as cur:
            return cur.sql(f"SELECT * FROM {relation}").to_arrow_table()

    def _copy_initial(self, *, how: str) -> Sample:
        from psycopg import sql

        from tidegate.store.warehouse import PRODUCTS

        self._drop(self.raw_table)
        with self._pg() as conn:
            self._create_raw(conn, self.raw_table)
        self.raw_version = None
        watch = Stopwatch()
        started = time.perf_counter()
        with watch("read"):
            table = self._product_reader(f'{PRODUCTS}."{PRODUCT}"')
        with watch("copy"), self._pg() as conn, conn.cursor() as cur:
            target = sql.Identifier(self.raw_table)
            if how == "binary":
                self._copy_binary(cur, target, table)
            elif how == "pgpq":
                self._copy_pgpq(cur, target, table)
            else:
                self._copy_csv(cur, target, table)
            conn.commit()
        seconds = time.perf_counter() - started
        if self._count(self.raw_table) != self.rows:
            raise RuntimeError("COPY did not load every row")
        self.raw_version = self.live
        metrics = {
            "read_product_s": watch.spans["read"],
            "copy_s": watch.spans["copy"],
            "rows_per_s": self.rows / seconds,
        }
        return Sample(seconds, metrics)

    @staticmethod
    def _copy_csv(cur: Any, target: Any, table: Any) -> None:
        import pyarrow.csv as pa_csv
        from psycopg import sql

        options = pa_csv.WriteOptions(include_header=False)
        with cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(target)) as copy:
            for batch in table.to_batches(READ_BATCH):
                buffer = io.BytesIO()
                pa_csv.write_csv(batch, buffer, options)
                copy.write(buffer.getbuffer())

    @staticmethod
    def _copy_binary(cur: Any, target: Any, table: Any) -> None:
        from psycopg import sql

        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            target, sql.SQL(", ").join(sql.Identifier(n) for n in COLUMNS)
        )
        with cur.copy(statement) as copy:
            copy.set_types(BINARY_TYPES)
            for batch in table.to_batches(READ_BATCH):
                columns = [batch.column(name).to_pylist() for name in COLUMNS]
                for row in zip(*columns, strict=True):
                    copy.write_row(row)

    @staticmethod
    def _copy_pgpq(cur: Any, target: Any, table: Any) -> None:
        from pgpq import ArrowToPostgresBinaryEncoder
        from psycopg import sql

        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            target, sql.SQL(", ").join(sql.Identifier(n) for n in COLUMNS)
        )
        encoder = ArrowToPostgresBinaryEncoder(table.schema)
        with cur.copy(statement) as copy:
            copy.write(encoder.write_header())
            for batch in table.to_batches(READ_BATCH):
                copy.write(encoder.write_batch(batch))
            copy.write(encoder.finish())

    def _reload_raw(self) -> None:
        """Untimed: make the raw table mirror the live version from scratch."""
        from psycopg import sql

        from tidegate.store.warehouse import PRODUCTS

        self._drop(self.raw_table)
        table = self._product_reader(f'{PRODUCTS}."{PRODUCT}"')
        with self._pg() as conn, conn.cursor() as cur:
            self._create_raw(conn, self.raw_table)
            self._copy_csv(cur, sql.Identifier(self.raw_table), table)
            conn.commit()
        self.raw_version = self.live

    def _raw_incremental(self) -> Sample:
        import pyarrow.csv as pa_csv
        from psycopg import sql

        from tidegate.store.warehouse import BUILDS, version_table

        try:
            change = self._needs_change(self.raw_version)
        except LookupError:
            self._reload_raw()
            change = True
        if change:
            self._mutate()
        old = f'{BUILDS}."{version_table(PRODUCT, self.live - 1)}"'
        new = f'{BUILDS}."{version_table(PRODUCT, self.live)}"'
        differs = " OR ".join(f'n."{c}" IS DISTINCT FROM o."{c}"' for c in COLUMNS if c != "id")
        watch = Stopwatch()
        started = time.perf_counter()
        with watch("diff"):
            changed = self._product_reader(
                f"(SELECT n.* FROM {new} n LEFT JOIN {old} o ON o.id = n.id"
                f" WHERE o.id IS NULL OR {differs})"
            )
            removed = self._product_reader(
                f"(SELECT o.id FROM {old} o LEFT JOIN {new} n ON n.id = o.id WHERE n.id IS NULL)"
            )
        with watch("apply"), self._pg() as conn, conn.cursor() as cur:
            target = sql.Identifier(self.raw_table)
            stage = sql.Identifier("bench_stage")
            cur.execute(
                sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, target)
            )
            options = pa_csv.WriteOptions(include_header=False)
            with cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(stage)) as copy:
                buffer = io.BytesIO()
                pa_csv.write_csv(changed, buffer, options)
                copy.write(buffer.getbuffer())
            updates = sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                for c in COLUMNS
                if c != "id"
            )
            cur.execute(
                sql.SQL("INSERT INTO {} SELECT * FROM {} ON CONFLICT (id) DO UPDATE SET {}").format(
                    target, stage, updates
                )
            )
            if removed.num_rows:
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(target),
                    (removed.column("id").to_pylist(),),
                )
            conn.commit()
        seconds = time.perf_counter() - started
        if changed.num_rows != self.changed_rows:
            raise RuntimeError(f"raw diff found {changed.num_rows} rows, not {self.changed_rows}")
        self.raw_version = self.live
        metrics = {
            "duckdb_diff_s": watch.spans["diff"],
            "pg_apply_s": watch.spans["apply"],
            "changed_rows_per_s": changed.num_rows / seconds,
        }
        return Sample(seconds, metrics, info={"changed": changed.num_rows})

    def _drop_dlt(self) -> None:
        from psycopg import sql

        with self._pg() as conn:
            for schema in (self.dlt_dataset, f"{self.dlt_dataset}_staging"):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )

    def _dlt_initial(self) -> Sample:
        """dlt's merge load of the same rows into an empty dataset (its own process)."""
        import shutil

        from psycopg import sql

        assert self.dlt_python is not None
        self._drop_dlt()
        pipelines = self.workdir / "dlt_pipelines"
        shutil.rmtree(pipelines, ignore_errors=True)
        result = run_json(
            [str(self.dlt_python), str(ROOT / "dlt_sync_app.py")],
            stdin={
                "dsn": DSN,
                "parquet": str(self.project_dir / "data" / f"{SOURCE}.parquet"),
                "dataset": self.dlt_dataset,
                "table": "people",
                "pipelines_dir": str(pipelines),
                "pipeline": f"bench_{self.run_id}",
            },
            timeout=1800,
        )
        with self._pg() as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(self.dlt_dataset, "people")
                )
            ).fetchone()
        if not row or int(row[0]) != self.rows:
            raise RuntimeError(f"dlt loaded {row} rows, not {self.rows}")
        seconds = float(result["seconds"])
        metrics = {k: float(v) for k, v in result["steps"].items()}
        metrics["rows_per_s"] = self.rows / seconds
        return Sample(seconds, metrics, info={"dlt": result["dlt"]})

    def teardown(self) -> None:
        try:
            self._drop_dlt()
            self._drop(self.tg_table, self.raw_table)
        finally:
            if self.platform is not None:
                self.platform.close()
