"""Incremental updates are observed: volume and lag as time series, OpenLineage events."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tidegate.ingest.intake import open_intake
from tidegate.observe.hooks import metadata_path
from tidegate.observe.timeseries import ObserveStore
from tidegate.platform import Platform
from tidegate.runtime.worker import StreamWorker

_spec = importlib.util.spec_from_file_location(
    "tidegate_tests_olschema", Path(__file__).parents[1] / "observe" / "olschema.py"
)
assert _spec is not None
assert _spec.loader is not None
olschema = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(olschema)


def test_each_micro_batch_records_volume_lag_and_lineage(built_stream_project: Path) -> None:
    config = built_stream_project / "tidegate.yml"
    config.write_text(
        config.read_text()
        + "observe:\n  openlineage: {transport: file, path: lineage.jsonl, batch_updates: 2}\n"
    )
    with Platform.open(built_stream_project) as platform:
        intake = open_intake(platform.project)
        worker = StreamWorker(platform, intake)
        for batch in range(2):
            orders = [
                {"order_id": 100 * batch + i, "customer_id": 1 + i % 2, "amount": 5.0}
                for i in range(1, 5)
            ]
            assert intake.submit("orders", orders, "test").accepted == 4
            consumer = intake.log.consumer("observe-test", intake.topics)
            try:
                records = consumer.poll(1000, 1.0)
                consumer.commit()
            finally:
                consumer.close()
            report = worker.process_batch(records)
            assert report.products["customer_orders"] == 2
        worker.close()
        with ObserveStore(metadata_path(platform)) as store:
            changed = store.series("customer_orders", "rows_changed", kind="incremental")
            lag = store.series("customer_orders", "event_lag_seconds", kind="incremental")
    assert [p.value for p in changed] == [2.0, 2.0]
    assert len(lag) == 2
    assert all(p.value >= 0 for p in lag)
    events = [
        json.loads(line)
        for line in (built_stream_project / "lineage.jsonl").read_text().splitlines()
        if line.strip()
    ]
    incremental = [e for e in events if e["job"]["name"] == "incremental.customer_orders"]
    assert [e["eventType"] for e in incremental] == ["START", "COMPLETE"]
    outputs = incremental[1]["outputs"][0]
    assert outputs["outputFacets"]["outputStatistics"]["rowCount"] == 4
    for event in incremental:
        assert olschema.problems(event) == []
