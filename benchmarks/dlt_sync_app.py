"""The dlt side of the `sync_postgres` benchmark, run in its own venv (`benchmarks/.venvs/dlt`).

Reads one JSON object on stdin: {"dsn", "parquet", "dataset", "table", "pipelines_dir",
"pipeline", "since"}. Loads the rows of the Parquet file (all of them; or, with
`since`, only those whose `updated_at` is later: what dlt's `incremental` cursor would
select) into PostgreSQL as dlt's docs advise for tabular data: the rows as an Arrow
table, `loader_file_format="csv"` ("converted to CSV with pyarrow and then streamed
into postgres with the COPY command ... several times faster" than the default
INSERT VALUES), `write_disposition="merge"` with `primary_key="id"` (dlt's default
`delete-insert` merge strategy: load into a staging dataset, then delete and insert
by key in one transaction).

Prints one JSON line: the seconds of the timed part (reading the Parquet file and
`pipeline.run`: extract, normalize, load), dlt's own step times, and rows loaded.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main() -> None:
    spec = json.loads(sys.stdin.read())
    import dlt
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pipeline = dlt.pipeline(
        pipeline_name=spec["pipeline"],
        pipelines_dir=spec["pipelines_dir"],
        destination=dlt.destinations.postgres(spec["dsn"]),
        dataset_name=spec["dataset"],
    )
    started = time.perf_counter()
    table = pq.read_table(spec["parquet"])
    if spec.get("since") is not None:
        since = pc.cast(spec["since"], table.schema.field("updated_at").type)
        table = table.filter(pc.greater(table.column("updated_at"), since))
    info = pipeline.run(
        table,
        table_name=spec["table"],
        write_disposition="merge",
        primary_key="id",
        loader_file_format="csv",
    )
    seconds = time.perf_counter() - started
    info.raise_on_failed_jobs()
    steps: dict[str, Any] = {}
    trace = pipeline.last_trace
    for step in trace.steps if trace else []:
        if step.finished_at is not None and step.started_at is not None:
            steps[f"dlt_{step.step}_s"] = (step.finished_at - step.started_at).total_seconds()
    print(
        json.dumps(
            {"seconds": seconds, "rows": table.num_rows, "steps": steps, "dlt": dlt.__version__}
        )
    )


if __name__ == "__main__":
    main()
