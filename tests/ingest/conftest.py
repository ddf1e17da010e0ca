from __future__ import annotations

import importlib.util
from pathlib import Path

_faults_spec = importlib.util.spec_from_file_location(
    "tidegate_tests_faults", Path(__file__).parents[1] / "runtime" / "faults.py"
)
assert _faults_spec is not None
assert _faults_spec.loader is not None
faults = importlib.util.module_from_spec(_faults_spec)
_faults_spec.loader.exec_module(faults)
