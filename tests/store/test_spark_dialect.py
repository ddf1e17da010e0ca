"""Transpiling tidegate's SQL dialect to Spark, the config, and a missing Java: all
without starting a JVM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tidegate.project.models import SparkStoreConfig
from tidegate.store.spark.dialect import spark_type, to_spark
from tidegate.store.spark.session import SparkUnavailableError, find_java_home, spark_session

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))

GOLDEN = [
    # DuckDB's fmt `{}` is printf `%s` in Spark; a literal % is doubled
    ("SELECT format('x {} y', a)", "SELECT FORMAT_STRING('x %s y', a)"),
    ("SELECT format('{}% of {{n}}', a)", "SELECT FORMAT_STRING('%s%% of {n}', a)"),
    # epoch() keeps microseconds (unix_timestamp would drop them)
    ("SELECT epoch(t)", "SELECT UNIX_MICROS(CAST(t AS TIMESTAMP)) / 1000000.0"),
    ("SELECT CAST(t AS TIMESTAMP)", "SELECT CAST(t AS TIMESTAMP_NTZ)"),
    ("SELECT CAST(x AS HUGEINT)", "SELECT CAST(x AS DECIMAL(38, 0))"),
    ("SELECT count(*) FILTER (WHERE s = 'open')", "SELECT COUNT(*) FILTER(WHERE s = 'open')"),
    ("SELECT x::TIMESTAMPTZ", "SELECT CAST(x AS TIMESTAMP)"),
]


@pytest.mark.parametrize(("duckdb_sql", "spark_sql"), GOLDEN)
def test_transpile_golden(duckdb_sql: str, spark_sql: str) -> None:
    assert to_spark(duckdb_sql) == spark_sql


def test_demo_products_transpile_without_fmt_or_second_epochs() -> None:
    root = Path(__file__).parents[2] / "src/tidegate/demo/project/products"
    for path in root.glob("*.sql"):
        out = to_spark(path.read_text())
        assert "{}" not in out, path.name
        assert "UNIX_TIMESTAMP" not in out, path.name


def test_types() -> None:
    assert spark_type("TIMESTAMPTZ") == "TIMESTAMP"
    assert spark_type("VARCHAR") == "STRING"
    assert spark_type("DECIMAL(18,3)") == "DECIMAL(18, 3)"
    assert spark_type("TINYINT") == "TINYINT"
    assert spark_type("TIMESTAMP") == "TIMESTAMP_NTZ"


def test_missing_java_is_a_clear_error_naming_java_home(tmp_path: Path) -> None:
    config = SparkStoreConfig(type="spark", java_home=str(tmp_path / "no-jdk"))
    with pytest.raises(SparkUnavailableError) as caught:
        spark_session(config)
    assert "JAVA_HOME" in caught.value.message
    assert str(tmp_path / "no-jdk") in caught.value.message
    assert find_java_home(str(tmp_path)) is None


def test_missing_java_on_the_cli_is_not_a_traceback(tmp_path: Path) -> None:
    """`tidegate build` on a Spark project without Java: a clear message, no traceback."""
    project = tmp_path / "p"
    subprocess.run([TIDEGATE, "init", str(project)], check=True, capture_output=True)
    config = project / "tidegate.yml"
    text = config.read_text()
    duckdb_store = "store: {type: duckdb, path: .tidegate/warehouse.duckdb}"
    assert duckdb_store in text
    config.write_text(
        text.replace(duckdb_store, f"store: {{type: spark, java_home: {tmp_path / 'nojdk'}}}")
    )
    done = subprocess.run(
        [TIDEGATE, "build", "-p", str(project)], capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "JAVA_HOME" in output, output
    assert "Traceback" not in output


def test_stream_products_are_batch_on_spark(stream_project: Path) -> None:
    """Spark keeps immutable Parquet versions: the planner never picks the incremental
    recompute (which rewrites a version in place) on it, and says why."""
    from tidegate.products.planner import plan_project
    from tidegate.project import load_project

    on_duckdb = plan_project(load_project(stream_project))
    incremental = [name for name, plan in on_duckdb.items() if plan.mode == "incremental"]
    assert incremental
    config = stream_project / "tidegate.yml"
    text = config.read_text()
    if "backends:" in text:
        text = text.replace("backends:", "backends:\n  store: {type: spark}", 1)
    else:
        text += "\nbackends:\n  store: {type: spark}\n"
    config.write_text(text)
    on_spark = plan_project(load_project(stream_project))
    for name in incremental:
        assert on_spark[name].mode == "batch"
        assert "immutable versions" in " ".join(on_spark[name].reasons)
