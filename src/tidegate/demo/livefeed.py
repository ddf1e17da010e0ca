"""The live part of `tidegate demo`: the shop keeps trading while the tour watches.

* `apply_live_overlay` copies `demo/live/` over the demo project: two stream sources
  (`web_events_live`, `orders_live`), a `customer_360` that reads them too with a `1s`
  freshness, and a `shop_backend` role allowed to post events.
* `LiveShop` runs, in this process, what `tidegate run` runs: the stream worker and its
  scheduler (`run_worker`), beside the API the tour already serves; and a generator that
  plays the shop's backend, posting web events and orders to `POST /v1/events/<source>`
  a few times a second. Every event takes the real path: HTTP ingest, checks, the event
  log, a micro-batch, an incremental recompute, the online store, the API.
* `LiveShop.watch` posts one event for a customer and reads the API until the counter
  moved, and says how long that took.

The generator touches only customers from 3 up, so the counters of the tour's customers
change only when the tour itself posts.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import threading
import time
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tidegate.console import console

if TYPE_CHECKING:
    from tidegate.platform import Platform

OVERLAY = "live"
ROLE = "shop_backend"
WEB_SOURCE = "web_events_live"
ORDER_SOURCE = "orders_live"
#: events the generator posts per second (about), and the share of them that are orders
RATE = 20.0
ORDER_SHARE = 0.1
FIRST_GENERATED_CUSTOMER = 3
EVENT_TYPES = ("page_view", "product_view", "add_to_cart", "checkout")
URLS = ("/", "/products/42", "/cart", "/checkout")


def apply_live_overlay(directory: Path) -> None:
    """Copy the live sources, product and role over a prepared demo project."""
    _copy(resources.files("tidegate.demo").joinpath(OVERLAY), directory)


def _copy(node: Traversable, target: Path) -> None:
    for child in node.iterdir():
        if child.name in ("__pycache__", "README.md"):
            continue
        if child.is_dir():
            (target / child.name).mkdir(parents=True, exist_ok=True)
            _copy(child, target / child.name)
        else:
            (target / child.name).write_bytes(child.read_bytes())


@dataclass(frozen=True)
class Observation:
    counter: str
    before: int
    after: int
    seconds: float  # from posting the event to the API showing it


class LiveShop:
    """The stream worker and an event generator, each in a thread, until `stop()`."""

    def __init__(self, platform: Platform, base: str, customers: int, seed: int = 7) -> None:
        from tidegate.platform.keys import create_key

        self.platform = platform
        self.base = base
        self.customers = max(customers, FIRST_GENERATED_CUSTOMER)
        self.token = create_key(platform.meta, "shop-backend", [ROLE])[0]
        self.rng = random.Random(seed)
        self.ids = itertools.count(1)
        self.posted = 0
        self.batches = 0
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._guarded(self._work), name="demo-worker", daemon=True),
            threading.Thread(target=self._guarded(self._generate), name="demo-shop", daemon=True),
        ]

    # ---------------------------------------------------------------- threads

    def _guarded(self, body: Any) -> Any:
        def run() -> None:
            try:
                body()
            except BaseException as err:  # shown by stop(); the demo goes on without it
                self._errors.append(err)
                self._stop.set()

        return run

    def _work(self) -> None:
        from tidegate.runtime.worker import BatchReport, run_worker

        def counted(report: BatchReport) -> None:
            self.batches += 1

        run_worker(self.platform, stop=self._stop, on_batch=counted)

    def _generate(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            pause = 1.0 / RATE
            while not self._stop.wait(pause):
                customer = self.rng.randint(FIRST_GENERATED_CUSTOMER, self.customers)
                if self.rng.random() < ORDER_SHARE:
                    self.post(client, ORDER_SOURCE, [self.order(customer)])
                else:
                    self.post(client, WEB_SOURCE, [self.web_event(customer)])

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        if self._errors:
            err = self._errors[0]
            console.print(f"[yellow]the live shop stopped early: {type(err).__name__}: {err}")

    @property
    def running(self) -> bool:
        return not self._stop.is_set()

    # ---------------------------------------------------------------- events

    def web_event(self, customer: int) -> dict[str, Any]:
        kind = self.rng.randrange(len(EVENT_TYPES))
        return {
            "event_id": next(self.ids),
            "customer_id": customer,
            "session_id": f"live-{customer}",
            "event_type": EVENT_TYPES[kind],
            "url": URLS[kind],
            "occurred_at": _now(),
            "ip_address": f"203.0.113.{customer % 250 + 1}",
        }

    def order(self, customer: int) -> dict[str, Any]:
        return {
            "order_id": next(self.ids),
            "customer_id": customer,
            "ordered_at": _now(),
            "amount": round(self.rng.uniform(5, 200), 2),
            "status": "paid",
        }

    def post(self, client: httpx.Client, source: str, events: list[dict[str, Any]]) -> None:
        response = client.post(
            f"/v1/events/{source}", json=events, headers={"Authorization": f"Bearer {self.token}"}
        )
        response.raise_for_status()
        body = response.json()
        if body["rejected"]:
            raise RuntimeError(f"the demo's own events were rejected: {body['rejected']}")
        self.posted += body["accepted"]

    # ---------------------------------------------------------------- the tour's view

    def watch(
        self, client: httpx.Client, read: Any, customer: int, counter: str, timeout: float = 10
    ) -> Observation:
        """Post one event for `customer`, read `counter` through `read()` until it moved."""
        before = int(read()[counter])
        event = self.order(customer) if counter == "order_count" else self.web_event(customer)
        source = ORDER_SOURCE if counter == "order_count" else WEB_SOURCE
        started = time.perf_counter()
        self.post(client, source, [event])
        deadline = started + timeout
        after = before
        while after == before and time.perf_counter() < deadline:
            time.sleep(0.005)
            after = int(read()[counter])
        return Observation(counter, before, after, time.perf_counter() - started)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
