from __future__ import annotations

import importlib.util
from pathlib import Path

from tidegate.platform import Platform

_faults_spec = importlib.util.spec_from_file_location(
    "tidegate_tests_faults", Path(__file__).with_name("faults.py")
)
assert _faults_spec is not None
assert _faults_spec.loader is not None
faults = importlib.util.module_from_spec(_faults_spec)
_faults_spec.loader.exec_module(faults)


def differences(platform: Platform, product: str) -> int:
    """Rows in the live product that a batch recompute would not give, and the reverse."""
    from tidegate.store.warehouse import BUILDS, PRODUCTS, version_table

    project = platform.project
    check = 999_999
    platform.warehouse.build_version(project.products[product], project, check)
    fresh = f'{BUILDS}."{version_table(product, check)}"'
    live = f'{PRODUCTS}."{product}"'
    try:
        with platform.warehouse.cursor() as db:
            row = db.execute(
                f"SELECT (SELECT count(*) FROM (SELECT * FROM {live} EXCEPT ALL"
                f" SELECT * FROM {fresh})) + (SELECT count(*) FROM (SELECT * FROM {fresh}"
                f" EXCEPT ALL SELECT * FROM {live}))"
            ).fetchone()
    finally:
        platform.warehouse.drop_version(product, check)
    assert row is not None
    return int(row[0])
