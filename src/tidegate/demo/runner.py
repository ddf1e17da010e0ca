"""`tidegate demo`: the whole loop on one laptop, with no services.

Generate the shop → load its consent choices → build the products → sync the
marketing audience into a local "CRM" database → serve the API → walk a tour of real
calls under three purposes → revoke a consent and show the person vanish from the API
and the CRM → go live: the shop's backend keeps posting web events and orders, the
stream worker keeps `customer_360` fresh, and the tour times a counter changing.
Every step goes through the same code a real project uses.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from tidegate.console import console
from tidegate.errors import TidegateError
from tidegate.privacy.consent import consent_ledger_of

if TYPE_CHECKING:
    from tidegate.platform import Platform

MARKER = ".tidegate-demo"
TOUR_CUSTOMER = "1"  # Ada: consented to marketing.email and analytics
REVOKED_CUSTOMER = "2"  # Grace: revoked marketing.email
PRINCIPALS = {
    "support_agent": "support-desk",
    "analyst": "analytics-notebook",
    "marketer": "crm-campaigns",
}


@dataclass
class DemoOptions:
    directory: Path
    seed: int = 7
    small: bool = False
    serve: bool = True
    port: int = 8787


def prepare_directory(directory: Path) -> None:
    """A fresh copy of the demo project; refuses to touch a folder that is not a demo's."""
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise TidegateError(
                f"{directory} exists and is not a tidegate demo folder; choose another --dir"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _copy_tree(resources.files("tidegate.demo").joinpath("project"), directory)
    (directory / MARKER).write_text("created by `tidegate demo`; safe to delete\n")


def _copy_tree(node: Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for child in node.iterdir():
        if child.name == "__pycache__":
            continue
        if child.is_dir():
            _copy_tree(child, target / child.name)
        else:
            (target / child.name).write_bytes(child.read_bytes())


def generate(options: DemoOptions) -> dict[str, int]:
    from tidegate.demo.generator import SMALL, ShopSize, generate_shop

    size = SMALL if options.small else ShopSize()
    with Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        TextColumn("{task.completed:>10,}/{task.total:,} rows"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def report(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = progress.add_task(f"generating {table}", total=total)
            progress.update(tasks[table], completed=done, total=total)

        return generate_shop(
            options.directory / "data", seed=options.seed, size=size, progress=report
        )


def load_consent(platform: Platform, directory: Path) -> int:
    import pyarrow.parquet as pq

    from tidegate.audit.log import AuditRecord
    from tidegate.privacy.consent import ConsentEvent

    table = pq.read_table(directory / "data" / "consent_events.parquet")
    events = [
        ConsentEvent(
            subject=str(row["subject"]),
            purpose=row["purpose"],
            action=row["action"],
            occurred_at=row["occurred_at"].timestamp(),
            source=row["source"],
            evidence=row["evidence"] or "",
        )
        for row in table.to_pylist()
    ]
    consent_ledger_of(platform).record(events)
    platform.audit.append(
        AuditRecord(
            action="consent",
            principal="demo",
            rows=len(events),
            detail={"op": "import", "file": "data/consent_events.parquet"},
        )
    )
    return len(events)


def create_keys(platform: Platform) -> dict[str, str]:
    from tidegate.platform.keys import create_key

    return {
        role: create_key(platform.meta, principal, [role])[0]
        for role, principal in PRINCIPALS.items()
    }


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise TidegateError("no free port to serve on")


class BackgroundServer:
    """uvicorn in a thread, so the tour can call it and Ctrl-C can stop it cleanly."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.port = port
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="tidegate-api", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise TidegateError(f"the API did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def crm_rows(platform: Platform) -> list[dict[str, Any]]:
    from tidegate.egress.destinations.base import open_destination

    sync = platform.project.syncs["crm_audience"].config
    destination = open_destination(sync.destination, platform.project.root)
    try:
        return destination.read_all()
    finally:
        destination.close()


def live_tour(
    live: Any, client: httpx.Client, base: str, keys: dict[str, str], watches: int = 3
) -> list[float]:
    """Step 6: the shop is live; time a counter of customer 1 moving after a new event."""
    headers = {"Authorization": f"Bearer {keys['support_agent']}", "X-Purpose": "support"}

    def read() -> dict[str, Any]:
        response = client.get(
            f"/v1/products/customer_360/entities/{TOUR_CUSTOMER}", headers=headers
        )
        response.raise_for_status()
        data: dict[str, Any] = response.json()["data"]
        return data

    console.print(
        "\n[bold]6. The shop is live.[/bold] Its backend posts web events and orders to "
        f"{base}/v1/events/web_events_live and …/orders_live; the stream worker applies them in "
        "micro-batches and recomputes only the customers they touch."
    )
    console.print(
        f"  curl -X POST -H 'Authorization: Bearer {live.token[:12]}…' "
        f'{base}/v1/events/web_events_live -d \'[{{"event_id": 99, "customer_id": 1}}]\'',
        markup=False,
        soft_wrap=True,
    )
    delays = []
    for index in range(watches):
        counter = "order_count" if index % 3 == 2 else "web_event_count"
        seen = live.watch(client, read, int(TOUR_CUSTOMER), counter)
        moved = seen.after != seen.before
        delays.append(seen.seconds if moved else float("inf"))
        console.print(
            f"  a new {'order' if counter == 'order_count' else 'web event'} for customer "
            f"{TOUR_CUSTOMER}: {counter} {seen.before} → {seen.after}, "
            + (
                f"visible in the API {seen.seconds * 1000:.0f} ms after it was posted"
                if moved
                else f"[red]not visible after {seen.seconds:.1f}s[/red]"
            )
        )
    console.print(
        f"  meanwhile the generator posted {live.posted:,} events for other customers; "
        f"the worker applied {live.batches:,} micro-batches"
    )
    return delays


def tour(platform: Platform, client: httpx.Client, base: str, keys: dict[str, str]) -> None:
    from tidegate.egress.sync import run_sync
    from tidegate.privacy.consent import ConsentEvent
    from tidegate.privacy.guard import guard_of

    def call(role: str, product: str, key: str, purpose: str, note: str) -> None:
        path = f"/v1/products/{product}/entities/{key}"
        console.print(f"\n[bold]{note}[/bold]")
        console.print(
            f"  curl -H 'Authorization: Bearer {keys[role][:12]}…' -H 'X-Purpose: {purpose}' "
            f"{base}{path}",
            markup=False,
            soft_wrap=True,
        )
        response = client.get(
            path, headers={"Authorization": f"Bearer {keys[role]}", "X-Purpose": purpose}
        )
        body = response.json()
        shown = body.get("data", body.get("error"))
        if isinstance(shown, dict) and "data" in body:
            shown = {k: shown[k] for k in list(shown)[:6]}
        console.print(f"  → {response.status_code} {shown}", markup=False, soft_wrap=True)

    console.rule("Tour")
    call(
        "support_agent",
        "customer_360",
        TOUR_CUSTOMER,
        "support",
        "1. Support desk reads customer 1 for `support` (contract basis): email in clear",
    )
    call(
        "analyst",
        "customer_360",
        # analytics knows customers by pseudonym only: a clear id addresses nothing, so
        # lookups cannot pair tokens with ids (the tour, run by the operator, computes it)
        guard_of(platform).hash_key("analytics").hmac_hex(TOUR_CUSTOMER),
        "analytics",
        "2. Analytics notebook reads the same customer for `analytics`, by its pseudonym: "
        "email and id hashed (keyed HMAC, the same on every call)",
    )
    call(
        "marketer",
        "marketing_audience",
        REVOKED_CUSTOMER,
        "marketing.email",
        "3. CRM campaigns read customer 2, who revoked marketing email: 404, as if absent",
    )
    call(
        "analyst",
        "customer_360",
        TOUR_CUSTOMER,
        "marketing.email",
        "4. The analytics key declares a purpose its role may not use: 403",
    )

    before = {str(r["customer_id"]) for r in crm_rows(platform)}
    console.print(
        f"\n[bold]5. Revocation, live.[/bold] The CRM holds {len(before):,} people; "
        f"customer {TOUR_CUSTOMER} is {'in' if TOUR_CUSTOMER in before else 'not in'} it."
    )
    consent_ledger_of(platform).record(
        [
            ConsentEvent(
                TOUR_CUSTOMER,
                "marketing.email",
                "revoke",
                time.time(),
                "demo",
                "tour: unsubscribe link",
            )
        ]
    )
    call(
        "marketer",
        "customer_360",
        TOUR_CUSTOMER,
        "marketing.email",
        f"   Customer {TOUR_CUSTOMER} clicks unsubscribe. The very next API read:",
    )
    report = run_sync(platform, "crm_audience")
    after = {str(r["customer_id"]) for r in crm_rows(platform)}
    console.print(
        f"   The CRM sync runs: {report.removed} removed; customer {TOUR_CUSTOMER} is "
        f"{'still in' if TOUR_CUSTOMER in after else 'gone from'} the CRM "
        f"({len(after):,} people)."
    )


def summary(platform: Platform, base: str | None) -> None:
    issues = platform.audit.verify()
    count = len(platform.meta.audit_records())
    root = platform.project.root
    console.rule("Where things are")
    console.print(f"  project      {root}")
    store = platform.project.config.backends.store
    where = store.path if store.type == "duckdb" else f"{store.warehouse} (spark {store.master})"
    console.print(f"  warehouse    {platform.project.path(where)}")
    console.print(f"  CRM (sync)   {root / 'crm.db'}")
    console.print(
        f"  audit log    {platform.meta.where()}"
        f" ({count} records, chain {'intact' if not issues else 'BROKEN'})"
    )
    console.print(
        f"  try          tidegate audit tail -p {root}   ·   tidegate audit verify -p {root}"
    )
    if base:
        console.print(f"  API          {base}/docs  (Ctrl-C stops the demo)")


def run_demo(options: DemoOptions) -> None:
    from tidegate.api import create_app
    from tidegate.demo.livefeed import LiveShop, apply_live_overlay
    from tidegate.platform import Platform
    from tidegate.runtime.jobs import run_build, syncs_after_build

    started = time.perf_counter()
    directory = options.directory.resolve()
    console.rule(f"tidegate demo: a small online shop in {directory}")
    options.directory = directory
    prepare_directory(directory)
    apply_live_overlay(directory)
    rows = generate(options)
    console.print(f"generated {sum(rows.values()):,} rows (seed {options.seed})")
    with Platform.open(directory) as platform:
        consent_count = load_consent(platform, directory)
        console.print(f"loaded {consent_count:,} consent choices into the ledger")
        results = run_build(platform)
        if any(r.status != "live" for r in results):
            raise TidegateError("the demo's products did not build; see the table above")
        for report in syncs_after_build(platform, results):
            console.print(
                f"sync {report.sync}: {report.added:,} people sent to the CRM "
                f"(only those who consented to its purpose)"
            )
        keys = create_keys(platform)
        console.print("API keys (shown once):")
        for role, token in keys.items():
            console.print(f"  {role:<14} {token}", markup=False, soft_wrap=True)
        app = create_app(platform)
        server = BackgroundServer(app, _free_port(options.port))
        server.start()
        base = f"http://127.0.0.1:{server.port}"
        live = LiveShop(platform, base, rows.get("customers", 0), seed=options.seed)
        try:
            with httpx.Client(base_url=base, timeout=10) as client:
                tour(platform, client, base, keys)
                live.start()
                live_tour(live, client, base, keys)
            summary(platform, base if options.serve else None)
            elapsed = time.perf_counter() - started
            if not options.serve:
                console.print(f"\ndemo finished in {elapsed:.1f}s (--no-serve: the API stops now)")
                return
            console.print(f"\ndemo ready in {elapsed:.1f}s; serving on {base}")
            while server.thread.is_alive():
                server.thread.join(timeout=0.5)
        except KeyboardInterrupt:
            console.print("\nstopping…")
        finally:
            live.stop()
            server.stop()
        if options.serve:
            console.print("stopped cleanly")
