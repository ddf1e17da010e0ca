"""Files dropped into a folder: each is ingested once, then moved to `done/`.

JSON lines (`.jsonl`, `.ndjson`), a JSON array (`.json`) or CSV with a header row
(`.csv`, empty cells are nulls). Every line goes through the same checks as an HTTP
event; a bad line is dead-lettered with its reason and the rest of the file goes on.
A file is moved only after its events are in the log; if the process dies in
between, the file is ingested again on restart and the event ids deduplicate it.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidegate.ingest.intake import Intake, IntakeResult

SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv"}
DONE = "done"


@dataclass
class FileReport:
    files: list[str] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0


def ingest_folder(intake: Intake, source: str, folder: Path) -> FileReport:
    report = FileReport()
    if not folder.is_dir():
        return report
    done = folder / DONE
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.suffix.lower() not in SUFFIXES or path.name.startswith("."):
            continue
        result = ingest_file(intake, source, path)
        done.mkdir(exist_ok=True)
        target = done / path.name
        if target.exists():
            target = done / f"{path.stem}.{time.time_ns()}{path.suffix}"
        path.rename(target)
        report.files.append(path.name)
        report.accepted += result.accepted
        report.rejected += len(result.rejected)
    return report


def ingest_file(intake: Intake, source: str, path: Path) -> IntakeResult:
    via = f"file:{path.name}"
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".csv":
        text = data.decode("utf-8-sig", errors="replace")
        rows: list[Any] = [
            {k: (v if v != "" else None) for k, v in row.items() if k is not None}
            for row in csv.DictReader(io.StringIO(text))
        ]
        return intake.submit(source, rows, via)
    if suffix == ".json":
        try:
            events = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            events = None
        if isinstance(events, list):
            return intake.submit(source, events, via)
    lines = [line for line in data.split(b"\n") if line.strip()]
    return intake.submit(source, lines, via, raw=True)
