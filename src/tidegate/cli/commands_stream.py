"""Real-time commands: run, worker, and the dead-letter queue (status and explain:
`commands_status.py`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tidegate.cli.commands_project import ProjectDir
from tidegate.cli.options import JsonOption
from tidegate.console import console, print_json, table
from tidegate.errors import NotFoundError, TidegateError
from tidegate.timestamps import timestamp_text

if TYPE_CHECKING:
    from tidegate.platform import Platform

dlq_app = typer.Typer(
    help="Dead letters: events tidegate could not take, with the reason.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("worker")(worker)
    app.add_typer(dlq_app, name="dlq")


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return timestamp_text(timestamp)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.1f}s"


def _ensure_built(platform: Platform) -> None:
    from tidegate.runtime.jobs import run_build

    missing = [n for n in platform.project.products if platform.meta.live_version(n) is None]
    if missing:
        console.print(f"building first: {', '.join(missing)} are not built yet")
        results = run_build(platform)
        failed = [r for r in results if r.status != "live"]
        if failed:
            raise TidegateError(
                "cannot start: " + "; ".join(f"{r.product}: {r.error}" for r in failed)
            )


@contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """The first Ctrl-C (or SIGTERM, what a service manager sends) sets `stop`: the worker
    finishes the micro-batch in hand, commits and closes in order. A second Ctrl-C stops
    at once (KeyboardInterrupt; nothing is lost, the log delivers the batch again).

    Without this, the interruption landed wherever the main thread was, often inside a
    micro-batch's transaction, and a clean stop depended on where that was."""
    import signal

    def handle(signum: int, frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()  # nothing else here: the main thread may be inside a write

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, handle) for s in handled}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def _holding(platform: Platform) -> Iterator[None]:
    """Hold the project as its runtime: wait (as a standby, for as long as it takes) until
    this process holds the warehouse, then answer CLI commands on the admin socket
    (`runtime/control.py`) and watch `policies/` for edits until the block ends."""
    from tidegate.cli.app import main
    from tidegate.cli.forward import executor
    from tidegate.runtime.control import AdminServer, install_thread_streams

    platform.lock_timeout = None
    platform.wait_notice = lambda message: console.print(
        f"standby: {message}; taking over when it ends", markup=False
    )
    _ = platform.warehouse
    install_thread_streams()
    from tidegate.privacy.policy_reload import reloader_of

    server = AdminServer(platform.state_dir, executor(platform, main), platform.writer_lock)
    server.start()
    reloader_of(platform).start()  # policies/ edits apply live (`tidegate reload` at once)
    try:
        yield
    finally:
        server.stop()


def run(
    project_dir: ProjectDir = Path("."),
    host: Annotated[str | None, typer.Option(help="API bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="API port.")] = None,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the API too.")] = True,
) -> None:
    """Worker, scheduler and API in one process: ingest, keep products fresh, serve.

    Builds the products first if they were never built. Ctrl-C (or SIGTERM) stops it
    cleanly: the API drains, the micro-batch in hand is applied and committed; a second
    Ctrl-C stops at once.
    """
    from tidegate.api import create_app
    from tidegate.platform import Platform
    from tidegate.runtime.worker import run_worker

    stop = threading.Event()
    with Platform.open(project_dir) as platform, _holding(platform):
        _ensure_built(platform)
        server = None

        def stopping() -> None:
            console.print("stopping…")
            if server is not None:
                server.stop()  # in-flight requests end before the stores close

        # from before the API starts: a Ctrl-C must never close the stores under it
        with _stopping_on_signals(stop):
            try:
                if serve:
                    from tidegate.demo.runner import BackgroundServer

                    settings = platform.project.config.serve
                    server = BackgroundServer(create_app(platform), port or settings.port)
                    if host:
                        server.server.config.host = host
                    server.start()
                    console.print(
                        f"serving [bold]{platform.project.name}[/bold] on "
                        f"http://{host or settings.host}:{server.port}; worker and scheduler"
                        " running"
                    )
                run_worker(platform, stop=stop, on_stopping=stopping)
            except KeyboardInterrupt:
                console.print("stopped at once")
            finally:
                stop.set()
                if server is not None:
                    server.stop()


def worker(
    project_dir: ProjectDir = Path("."),
    group: Annotated[str, typer.Option(help="Consumer group of the workers.")] = "tidegate-worker",
    max_records: Annotated[
        int, typer.Option(help="Most records per micro-batch (a worker behind takes more).")
    ] = 50_000,
    schedule: Annotated[
        bool, typer.Option("--schedule/--no-schedule", help="Also run scheduled rebuilds.")
    ] = True,
) -> None:
    """A stream worker without the API; more of them split a Kafka topic's partitions.

    With the embedded DuckDB store one process writes the warehouse: an extra worker is a
    hot standby that says what it waits for, and joins the consumer group once it holds
    the warehouse (when the first one stops or dies). Ctrl-C (or SIGTERM) stops it after
    the micro-batch in hand; a second Ctrl-C at once.
    """
    from tidegate.platform import Platform
    from tidegate.runtime.worker import run_worker

    with Platform.open(project_dir) as platform, _holding(platform):
        _ensure_built(platform)
        console.print(f"worker of group [bold]{group}[/bold] running; Ctrl-C stops it")
        stop = threading.Event()
        try:
            with _stopping_on_signals(stop):
                run_worker(
                    platform,
                    group=group,
                    max_records=max_records,
                    schedule=schedule,
                    stop=stop,
                    on_stopping=lambda: console.print("stopping…"),
                )
        except KeyboardInterrupt:
            console.print("stopped at once")


# ---------------------------------------------------------------- dlq


def _store(project_dir: Path) -> Any:
    from tidegate.meta import open_metadata
    from tidegate.meta.parts import owning
    from tidegate.project import load_project

    project = load_project(project_dir)
    meta = open_metadata(project.config.backends.metadata, project.root)
    return owning(meta.dead_letters, meta)


def _preview(payload: bytes | None, width: int = 60) -> str:
    if payload is None:
        return "(none)"
    text = payload.decode("utf-8", errors="replace").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@dlq_app.command("list")
def dlq_list(
    project_dir: ProjectDir = Path("."),
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    limit: Annotated[int, typer.Option(help="How many.")] = 50,
    replayed: Annotated[bool, typer.Option("--replayed", help="Include replayed ones.")] = False,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dead letters, oldest first, with their reasons."""
    store = _store(project_dir)
    try:
        letters = store.list(source, limit, include_replayed=replayed)
        total = store.count(source, include_replayed=replayed)
    finally:
        store.close()
    if json_output:
        print_json(
            [
                {**d.__dict__, "payload": _preview(d.payload, 10_000), "key": _preview(d.key)}
                for d in letters
            ]
        )
        return
    console.print(
        table(
            f"Dead letters ({len(letters)} of {total})",
            ["id", "when", "source", "via", "reason", "payload"],
            [[d.id, _when(d.at), d.source, d.via, d.reason, _preview(d.payload)] for d in letters],
        )
    )


@dlq_app.command("show")
def dlq_show(
    letter_id: Annotated[int, typer.Argument(help="The dead letter's id.")],
    project_dir: ProjectDir = Path("."),
    json_output: JsonOption = False,
) -> None:
    """One dead letter in full."""
    store = _store(project_dir)
    try:
        letter = store.get(letter_id)
    finally:
        store.close()
    if letter is None:
        raise NotFoundError(f"no dead letter {letter_id}")
    if json_output:
        print_json(
            {
                "id": letter.id,
                "source": letter.source,
                "via": letter.via,
                "topic": letter.topic,
                "partition": letter.partition,
                "offset": letter.offset,
                "at": letter.at,
                "replayed_at": letter.replayed_at,
                "reason": letter.reason,
                "key": _preview(letter.key, 10_000),
                "payload": _preview(letter.payload, 1_000_000),
            }
        )
        return
    where = f"{letter.topic}[{letter.partition}]@{letter.offset}" if letter.topic else "-"
    console.print(f"id        {letter.id}", markup=False)
    console.print(f"source    {letter.source}", markup=False)
    console.print(f"via       {letter.via}   log position {where}", markup=False)
    console.print(f"when      {_when(letter.at)}", markup=False)
    console.print(f"replayed  {_when(letter.replayed_at)}", markup=False)
    console.print(f"reason    {letter.reason}", markup=False)
    console.print(f"key       {_preview(letter.key, 10_000)}", markup=False)
    console.print(f"payload   {_preview(letter.payload, 1_000_000)}", markup=False, soft_wrap=True)


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids (or --source).")] = None,
    project_dir: ProjectDir = Path("."),
    source: Annotated[str | None, typer.Option(help="Every dead letter of this source.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Check dead letters again; those that pass now go to their source's topic."""
    from tidegate.ingest.intake import platform_intake, replay
    from tidegate.platform import Platform

    if not ids and not source:
        raise TidegateError("give dead letter ids, or --source NAME to replay all of a source")
    platform = Platform.open(project_dir)
    intake = platform_intake(platform)  # letters of erased subjects go, never replayed
    try:
        if ids:
            letters = []
            for letter_id in ids:
                letter = intake.dead.get(letter_id)
                if letter is None:
                    raise NotFoundError(f"no dead letter {letter_id}")
                letters.append(letter)
        else:
            letters = intake.dead.list(source, limit=1_000_000)
        report = replay(intake, letters)
    finally:
        intake.close()
        platform.close()
    if json_output:
        body = {"replayed": report.replayed, "still_failing": report.still_failing}
        print_json(body | ({"erased": report.erased} if report.erased else {}))
    else:
        console.print(
            f"replayed {report.replayed}; {report.still_failing} still fail (reasons updated)"
        )
    if report.still_failing:
        raise typer.Exit(1)
