"""A stream worker in its own process, for the kill -9 chaos test.

Usage: python worker_process.py PROJECT MAX_RECORDS
"""

from __future__ import annotations

import sys

from tidegate.platform import Platform
from tidegate.runtime.worker import run_worker

if __name__ == "__main__":
    with Platform.open(sys.argv[1]) as platform:
        run_worker(platform, max_records=int(sys.argv[2]), schedule=False, session_timeout=1.0)
