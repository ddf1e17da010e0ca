"""Property: random erasures interleaved with every kind of rebuild, replay, event and
sync never bring an erased subject back (issue 12, item 2).

On the small stream project (a file source of customers with emails, order and click
streams, a per-customer product and a ranking, a sync into SQLite), hypothesis draws a
history of steps; after each one, no erased customer is in a raw table, a product, the
online store, the destination, the event log, or a dead letter (by id or by email)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidegate.egress.sync import run_sync
from tidegate.ingest.intake import open_intake, replay
from tidegate.platform import Platform
from tidegate.products.builder import build_products, load_sources
from tidegate.requests.subject_requests import erase
from tidegate.runtime.worker import StreamWorker

_spec = importlib.util.spec_from_file_location(
    "tidegate_tests_streamshop_erasure_props",
    Path(__file__).parents[1] / "ingest" / "streamshop.py",
)
assert _spec is not None
assert _spec.loader is not None
streamshop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(streamshop)

_world = importlib.util.spec_from_file_location(
    "tidegate_tests_erasure_world_props", Path(__file__).parent / "erasure_world.py"
)
assert _world is not None
assert _world.loader is not None
world = importlib.util.module_from_spec(_world)
_world.loader.exec_module(world)

CUSTOMERS = range(1, 7)
SYNC = """
name: people
product: customer_orders
purpose: support
destination: {type: sqlite, path: people.db, table: people}
mode: upsert
trigger: manual
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root: Path = streamshop.write_stream_project(tmp_path_factory.mktemp("props") / "shop")
    (root / "syncs").mkdir(exist_ok=True)
    (root / "syncs" / "people.yml").write_text(SYNC.lstrip())
    with Platform.open(root) as platform:
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
        assert run_sync(platform, "people").added > 0
    return root


customer = st.sampled_from(list(CUSTOMERS))
step = st.one_of(
    st.tuples(st.just("erase"), customer),
    st.tuples(st.just("order"), customer),  # through the door (HTTP ingest's intake)
    st.tuples(st.just("order_direct"), customer),  # a producer writing the topic itself
    st.tuples(st.just("broken"), customer),  # an invalid event: a dead letter
    st.tuples(st.just("reload"), st.none()),  # source reload and rebuild
    st.tuples(st.just("scheduled"), st.none()),  # rebuild without loading sources
    st.tuples(st.just("sync"), st.booleans()),  # incremental or full
    st.tuples(st.just("dlq_replay"), st.none()),
    st.tuples(st.just("log_replay"), st.none()),  # a new consumer group from offset 0
)


class History:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.worker = StreamWorker(platform)
        self.erased: set[int] = set()
        self.ids = itertools.count(1000)
        self.groups = itertools.count()

    def order(self, who: int) -> dict[str, Any]:
        return {"order_id": next(self.ids), "customer_id": who, "amount": 5.0, "status": "paid"}

    def run(self, kind: str, arg: Any) -> None:
        platform = self.platform
        if kind == "erase":
            assert erase(platform, str(arg), "dpo").complete
            self.erased.add(arg)
        elif kind == "order":
            self.worker.intake.submit("orders", [self.order(arg)], "test")
            world.drain(self.worker, "props")
        elif kind == "order_direct":
            direct = open_intake(platform.project)
            direct.submit("orders", [self.order(arg)], "test")
            direct.close()
            world.drain(self.worker, "props")
        elif kind == "broken":
            bad = {**self.order(arg), "amount": "lots", "email": f"c{arg}@example.com"}
            self.worker.intake.submit("orders", [bad], "test")
        elif kind == "reload":
            load_sources(platform)
            assert all(r.status == "live" for r in build_products(platform))
        elif kind == "scheduled":
            assert all(r.status == "live" for r in build_products(platform, principal="s"))
        elif kind == "sync":
            run_sync(platform, "people", full=arg)
        elif kind == "dlq_replay":
            letters = platform.meta.dead_letters.list(limit=1000)
            replay(self.worker.intake, letters)
            world.drain(self.worker, "props")
        elif kind == "log_replay":
            world.drain(self.worker, f"replay-{next(self.groups)}")

    def resurrected(self) -> list[str]:
        if not self.erased:
            return []
        platform = self.platform
        found = []
        ids = sorted(self.erased)
        marks = ", ".join("?" for _ in ids)
        with platform.warehouse.cursor() as cur:
            for relation in ('raw."customers"', 'raw."orders"', 'raw."clicks"',
                             'products."customer_orders"', 'products."top_customers"'):  # fmt: skip
                row = cur.execute(
                    f"SELECT count(*) FROM {relation} WHERE customer_id IN ({marks})", ids
                ).fetchone()
                if row and row[0]:
                    found.append(relation)
        for product in platform.project.products:
            if platform.online.read_many(product, [str(i) for i in ids]):
                found.append(f"online {product}")
        with closing(sqlite3.connect(platform.project.path("people.db"))) as db:
            held = {int(r[0]) for r in db.execute("SELECT customer_id FROM people")}
        found += [f"destination {i}" for i in held & self.erased]
        emails = [f"c{i}@example.com" for i in ids]
        for letter in platform.meta.dead_letters.list(limit=10_000, include_replayed=True):
            text = (letter.payload or b"").decode()
            data = json.loads(text)
            if data.get("customer_id") in self.erased or any(e in text for e in emails):
                found.append(f"dead letter {letter.id}")
        log = self.worker.intake.log
        for topic in log_topics(platform):
            for partition in log.end_offsets(topic):
                for record in log.read(topic, partition, 0, 100_000):
                    data = json.loads(record.value or b"{}")
                    row = data.get("row", data)
                    if isinstance(row, dict) and row.get("customer_id") in self.erased:
                        found.append(f"log {topic}/{partition}@{record.offset}")
        return found

    def close(self) -> None:
        self.worker.close()


def log_topics(platform: Platform) -> list[str]:
    from tidegate.log.base import CHANGES_PREFIX

    return ["orders", "clicks", "accounts"] + [
        CHANGES_PREFIX + p for p in platform.project.products
    ]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=2, max_size=7))
def test_erased_subjects_never_come_back(built: Path, steps: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "shop"
        shutil.copytree(built, root)
        with Platform.open(root) as platform:
            history = History(platform)
            try:
                first = next((a for k, a in steps if k == "erase"), 1)
                for kind, arg in [("erase", first), *steps]:
                    history.run(kind, arg)
                    assert history.resurrected() == [], (kind, arg, history.erased)
            finally:
                history.close()
