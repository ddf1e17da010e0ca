"""Fixtures for typed subject requests: a built project with customers and employees
whose ids overlap (`typedshop.py`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tidegate.platform import Platform


def _typedshop() -> Any:
    spec = importlib.util.spec_from_file_location(
        "tidegate_tests_typedshop", Path(__file__).parent / "typedshop.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


typedshop = _typedshop()


@pytest.fixture
def typed_shop(tmp_path: Path) -> Path:
    """Customers 3 and 12 and employees 3 and 12, loaded and built."""
    from tidegate.products.builder import build_products, load_sources

    root: Path = typedshop.write_typed_project(tmp_path / "typed")
    with Platform.open(root) as platform:
        load_sources(platform)
        results = build_products(platform)
        assert all(r.status == "live" for r in results), results
    return root
