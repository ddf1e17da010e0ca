"""The prefetch thread (runtime/prefetch.py): batches decoded ahead, in chunks, are the
batches the worker would have decoded itself; it commits only what it is handed, and
records it gathered but never handed over are delivered again."""

from __future__ import annotations

import importlib.util
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidegate.ingest.compiled import DecodedBatch
from tidegate.ingest.intake import open_intake
from tidegate.log.base import Consumer, Record
from tidegate.platform import Platform
from tidegate.requests.subject_requests import erase
from tidegate.runtime.prefetch import Polled, Prefetcher, merge
from tidegate.runtime.worker import StreamWorker

_spec = importlib.util.spec_from_file_location(
    "tidegate_tests_streamshop_prefetch", Path(__file__).parents[1] / "ingest" / "streamshop.py"
)
assert _spec is not None
assert _spec.loader is not None
streamshop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(streamshop)

GONE = 7


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tidegate.products.builder import build_products, load_sources

    root: Path = streamshop.write_stream_project(tmp_path_factory.mktemp("prefetch") / "shop")
    with Platform.open(root) as platform:
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
    return root


# ------------------------------------------------------------------ chunks and merge

_order = st.fixed_dictionaries(
    {
        "order_id": st.integers(1, 10**6),
        "customer_id": st.one_of(st.integers(1, 50), st.none(), st.text(max_size=2)),
        "amount": st.one_of(st.floats(allow_nan=False, width=64), st.integers(-(2**60), 2**60)),
    },
    optional={
        "status": st.one_of(st.text(max_size=5), st.integers()),
        "ordered_at": st.sampled_from(["2026-11-01T00:00:00+00:00", "2026-11-01", "soon"]),
        "extra": st.booleans(),
    },
)
_click = st.fixed_dictionaries(
    {"event_id": st.text(min_size=1, max_size=4)},
    optional={"customer_id": st.integers(1, 50), "url": st.text(max_size=30)},
)
_value = st.one_of(
    _order.map(lambda e: ("orders", json.dumps(e).encode())),
    _click.map(lambda e: ("clicks", json.dumps(e).encode())),
    st.sampled_from(["orders", "clicks"]).map(lambda t: (t, b"{not json")),
    st.sampled_from(["orders", "clicks"]).map(lambda t: (t, None)),
    st.just(("accounts", b'{"op": "c", "after": {"id": 1}}')),  # Debezium: never ahead
)


def _records(values: list[tuple[str, bytes | None]]) -> list[Record]:
    return [Record(t, 0, i, None, v) for i, (t, v) in enumerate(values)]


def _same(one: DecodedBatch, other: DecodedBatch) -> bool:
    rows = [b.table.to_pylist() if b.table is not None else [] for b in (one, other)]
    return (one.taken, one.rest) == (other.taken, other.rest) and rows[0] == rows[1]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(_value, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=5))
def test_chunks_decoded_apart_merge_into_the_batch_decoded_whole(
    project: Path, values: list[tuple[str, bytes | None]], cuts: list[int]
) -> None:
    records = _records(values)
    bounds = sorted({0, len(records), *(c for c in cuts if c <= len(records))})
    with Platform.open(project) as platform:
        worker = StreamWorker(platform)
        try:
            chunks = [
                Polled(records[a:b], worker.predecode(records[a:b]))
                for a, b in itertools.pairwise(bounds)
            ]
            whole = worker.predecode(records)
        finally:
            worker.close()
    merged = merge(chunks) if chunks else Polled()
    assert merged.records == records
    assert set(merged.decoded) == set(whole) - {"accounts"}
    assert "accounts" not in whole
    for topic, batch in whole.items():
        assert _same(merged.decoded[topic], batch), topic


def test_a_topic_one_chunk_left_undecoded_is_left_to_the_worker() -> None:
    first = [Record("orders", 0, 0, None, b"{}")]
    second = [Record("orders", 0, 1, None, b"{}")]
    chunks = [Polled(first, {"orders": DecodedBatch(None, [], [0])}), Polled(second, {})]
    merged = merge(chunks)
    assert merged.records == first + second
    assert merged.decoded == {}


# ------------------------------------------------------------------ the worker with it


def _orders(first: int, customers: list[int]) -> list[dict[str, Any]]:
    return [
        {"order_id": first + i, "customer_id": c, "amount": 10.0, "status": "paid"}
        for i, c in enumerate(customers)
    ]


def _drain(platform: Platform, topics: list[str], group: str) -> list[Record]:
    intake = open_intake(platform.project)
    consumer = intake.log.consumer(group, topics)
    records: list[Record] = []
    try:
        while batch := consumer.poll(10_000, 0.2):
            records += batch
    finally:
        consumer.close()
        intake.close()
    return records


def test_a_batch_decoded_ahead_is_applied_as_decoded_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    """The worker drops an erased subject's rows from the batch it applies, never from
    the batch decoded ahead: a retried micro-batch reads that batch again."""
    from tidegate.products.builder import build_products, load_sources

    root: Path = streamshop.write_stream_project(tmp_path / "shop")
    with Platform.open(root) as platform:
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
        assert erase(platform, str(GONE), "dpo").complete
        intake = open_intake(platform.project)
        intake.submit("orders", _orders(1, [GONE, 8, GONE, 9]), "test")
        intake.close()
        records = _drain(platform, ["orders"], "ahead")
        worker = StreamWorker(platform)
        try:
            ahead = worker.predecode(records)
            before = ahead["orders"].table.to_pylist()
            report = worker.process_batch(records, ahead)
            assert (report.applied, report.erased) == (2, 2)
            assert ahead["orders"].table.to_pylist() == before  # untouched: 4 rows
            assert len(before) == 4
            with platform.warehouse.cursor() as db:
                stored = db.execute('SELECT customer_id FROM raw."orders" ORDER BY 1').fetchall()
            assert stored == [(8,), (9,)]
        finally:
            worker.close()


# ------------------------------------------------------------------ the thread and the log


def _wait(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_the_thread_hands_over_in_order_and_commits_only_what_it_is_handed(
    tmp_path: Path,
) -> None:
    root: Path = streamshop.write_stream_project(tmp_path / "shop")
    with Platform.open(root) as platform:
        intake = open_intake(platform.project)
        log_ = intake.log
        worker_decode = StreamWorker(platform)
        try:

            def consumer() -> Consumer:
                return log_.consumer("prefetch", ["orders"])

            prefetch = Prefetcher(
                consumer, worker_decode.predecode, max_records=1_000, poll_timeout=0.05
            )
            intake.submit("orders", _orders(1, [1, 2, 3]), "test")
            intake.submit("orders", _orders(4, [4, 5]), "test")
            taken: list[Record] = []
            _wait(lambda: len(taken.extend(prefetch.take(0.05).records) or taken) >= 5, "5")
            by_partition: dict[int, list[int]] = {}
            for record in taken:
                by_partition.setdefault(record.partition, []).append(record.offset)
            assert all(offsets == sorted(offsets) for offsets in by_partition.values())
            assert sorted(json.loads(r.value or b"")["order_id"] for r in taken) == [1, 2, 3, 4, 5]
            # the first three applied and handed back; the last two never handed back
            handed: dict[tuple[str, int], int] = {}
            for record in taken[:3]:
                tp = ("orders", record.partition)
                handed[tp] = max(handed.get(tp, 0), record.offset + 1)
            prefetch.close(handed)
            committed = log_.committed("prefetch", "orders")
            assert {("orders", p): o for p, o in committed.items() if o} == handed
            # gathered and never taken: delivered again to the next member
            prefetch = Prefetcher(
                consumer, worker_decode.predecode, max_records=1_000, poll_timeout=0.05
            )
            intake.submit("orders", _orders(6, [6]), "test")
            _wait(lambda: prefetch._count >= 3, "the thread to gather")
            prefetch.close({})
            again = _drain(platform, ["orders"], "prefetch")
            left = [
                json.loads(r.value or b"")["order_id"]
                for r in taken
                if r.offset >= handed.get(("orders", r.partition), 0)
            ]
            assert len(left) == 2
            assert sorted(json.loads(r.value or b"")["order_id"] for r in again) == sorted(
                [*left, 6]
            )
        finally:
            worker_decode.close()
            intake.close()


def test_a_consumer_that_cannot_open_is_the_constructor_s_error() -> None:
    class Refused(RuntimeError):
        pass

    def consumer() -> Consumer:
        raise Refused("no broker")

    with pytest.raises(Refused):
        Prefetcher(consumer, lambda records: {}, max_records=10, poll_timeout=0.01)


def test_a_poll_that_fails_is_raised_to_the_worker(tmp_path: Path) -> None:
    from tidegate.errors import LogError

    root: Path = streamshop.write_stream_project(tmp_path / "shop")
    with Platform.open(root) as platform:
        intake = open_intake(platform.project)
        closed = intake.log.consumer("prefetch", ["orders"])
        closed.close()  # its polls fail: "poll on a closed consumer"
        prefetch = Prefetcher(lambda: closed, lambda r: {}, max_records=10, poll_timeout=0.01)
        with pytest.raises(LogError, match="closed consumer"):
            _wait(lambda: prefetch.take(0.05).records or False, "the error")
        prefetch.close({})
        intake.close()
