"""`type: postgres` with `cdc: logical`: what the config accepts, and how the project sees it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.errors import ConfigError
from tidegate.project import load_project
from tidegate.project.project import cdc_slot, is_stream, stream_sources

from ..conftest import streamshop  # type: ignore[import-not-found]

SOURCE = """name: accounts
type: postgres
dsn_env: ACCOUNTS_DSN
table: accounts
{extra}
columns:
  id: {{type: BIGINT, nullable: false}}
  tier: {{type: VARCHAR}}
"""


def _project(tmp_path: Path, extra: str) -> Path:
    root: Path = streamshop.write_stream_project(tmp_path / "shop")
    (root / "sources" / "accounts.yml").write_text(SOURCE.format(extra=extra))
    product = root / "products" / "customer_orders.yml"
    product.write_text(
        product.read_text().replace(
            "SELECT customer_id, max(tier) AS tier FROM accounts GROUP BY customer_id",
            "SELECT 1 AS customer_id, max(tier) AS tier FROM accounts",
        )
    )
    return root


def test_a_cdc_source_is_a_debezium_stream_with_a_slot(tmp_path: Path) -> None:
    project = load_project(_project(tmp_path, "cdc: logical\nkey: id"))
    config = project.sources["accounts"].config
    assert is_stream(config)
    stream = stream_sources(project)["accounts"]
    assert (stream.format, stream.topic_name, stream.table, stream.key) == (
        "debezium",
        "accounts",
        "accounts",
        "id",
    )
    assert cdc_slot(project, config) == "tidegate_streamshop_accounts"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("cdc: logical", "a cdc source needs `key`"),
        ("key: id\nslot: s1", "`slot` needs `cdc: logical`"),
        ("cdc: logical\nkey: id\nslot: Bad-Name", "slot"),
        ("cdc: snapshot\nkey: id", "cdc"),
    ],
)
def test_bad_cdc_config_names_the_field(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_project(_project(tmp_path, extra))
    assert message in str(caught.value)
    assert "accounts.yml" in str(caught.value)


def test_cdc_reset_usage_mistakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown source is a usage mistake (exit 2); an unset DSN says which variable."""
    import subprocess
    import sys

    root = _project(tmp_path, "cdc: logical\nkey: id")
    monkeypatch.delenv("ACCOUNTS_DSN", raising=False)
    tidegate = str(Path(sys.executable).with_name("tidegate"))
    unknown = subprocess.run(
        [tidegate, "cdc", "reset", "nope", "-p", str(root)], capture_output=True, text=True
    )
    assert unknown.returncode == 2
    assert "no cdc source named 'nope' (cdc sources: accounts)" in unknown.stderr
    unset = subprocess.run(
        [tidegate, "cdc", "reset", "accounts", "-p", str(root)], capture_output=True, text=True
    )
    assert unset.returncode == 1
    assert "ACCOUNTS_DSN is unset" in unset.stderr
    assert "Traceback" not in unset.stderr


def test_cdc_on_the_spark_store_is_refused_by_validate_naming_the_field(tmp_path: Path) -> None:
    """Spark keeps immutable Parquet versions: row changes cannot be applied in place, so
    the combination fails `validate` at the source's `cdc` line, not inside `run`."""
    root = _project(tmp_path, "cdc: logical\nkey: id")
    config = root / "tidegate.yml"
    text = config.read_text()
    spark = "  store: {type: spark, warehouse: .tidegate/spark}\n"
    if "backends:\n" in text:
        text = text.replace("backends:\n", "backends:\n" + spark, 1)
    else:
        text += "backends:\n" + spark
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_project(root)
    text = str(caught.value)
    assert "sources/accounts.yml:5: [cdc]" in text  # the `cdc:` line
    assert "`cdc: logical` needs the duckdb store" in text
