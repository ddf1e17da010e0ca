"""The wiring (layer 2): every backend of a project opened once and handed down.

`Platform` may import only layers 0-1 (project, meta, log, store, audit); see
tests/test_layers.py and the README's architecture section.
"""

from tidegate.platform.wiring import STATE_DIR, Platform

__all__ = ["STATE_DIR", "Platform"]
