"""`pip install .` without extras: the embedded demo runs, and an at-scale backend names its extra.

A fresh venv gets tidegate and its core dependencies only (pip's cache makes this take a
minute, not ten). The demo must then run on the embedded backends, and switching the
event log to Kafka must say `pip install 'tidegate[kafka]'` with exit 2, not crash.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = (
    "confluent_kafka",
    "psycopg",
    "redis",
    "pymysql",
    "matplotlib",
    "pyspark",
    "openlineage",
)


@pytest.mark.slow
def test_core_install_runs_the_demo_and_names_missing_extras(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and "VIRTUAL_ENV" not in k}
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)],
        capture_output=True, text=True, env=env, timeout=1200, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    missing = subprocess.run(
        [str(python), "-c", f"import importlib.util as u; print([m for m in {OPTIONAL!r} "
         "if u.find_spec(m)])"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert missing.stdout.strip() == "[]", "an optional package came with the core install"

    tidegate = str(env_dir / "bin" / "tidegate")
    shop = tmp_path / "shop"
    demo = subprocess.run(
        [tidegate, "demo", "--no-serve", "--small", "--dir", str(shop)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]

    # Lineage switched on without the `lineage` extra: the build still succeeds and says
    # once which extra would send the events.
    lineage_env = {**env, "TIDEGATE__OBSERVE__OPENLINEAGE__TRANSPORT": "file"}
    built = subprocess.run(
        [tidegate, "build", "-p", str(shop), "--skip-sources", "--no-sync"],
        capture_output=True, text=True, env=lineage_env, timeout=600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    assert "pip install 'tidegate[lineage]'" in built.stderr

    kafka_env = {**env, "TIDEGATE__BACKENDS__LOG__TYPE": "kafka"}
    replay = subprocess.run(
        [tidegate, "dlq", "replay", "--source", "orders", "-p", str(shop)],
        capture_output=True, text=True, env=kafka_env, timeout=300, check=False,
    )  # fmt: skip
    assert replay.returncode == 2, replay.stdout + replay.stderr
    assert "pip install 'tidegate[kafka]'" in replay.stderr
    assert "bug in tidegate" not in replay.stderr
    assert "Traceback" not in replay.stderr


def test_importing_the_cli_imports_no_optional_package() -> None:
    code = (
        "import sys, tidegate, tidegate.cli.app\n"
        f"print([m for m in {OPTIONAL!r} if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"
