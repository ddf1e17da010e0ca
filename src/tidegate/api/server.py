"""Run the one HTTP app under the configured server (`serve.server`, `serve.workers`).

* uvicorn, one worker (the default): the app runs in this process on the platform the
  caller opened, so `tidegate serve` starts in one step and shares nothing.
* uvicorn with several workers, or granian: each worker process opens the project itself
  through the factory `tidegate.api:app_from_env` (`TIDEGATE_PROJECT` names it), the way
  the README advises for several cores. Each worker's audit writer stores what it holds
  when the worker stops.

Why granian is offered (benchmarks/README.md, `serve`): on this 2-core machine, with the
same app, two workers each and the same load generator, granian answered about 1.7 to 2
times uvicorn's requests per second on entity reads at 16 connections and /v1/health
alike, with a lower p50 at one connection. uvicorn stays the default: it is pure Python
to install and the one `tidegate run` embeds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tidegate.extras import require

if TYPE_CHECKING:
    from tidegate.platform import Platform

FACTORY = "tidegate.api:app_from_env"


def serve_forever(
    platform: Platform, host: str, port: int, server: str = "uvicorn", workers: int = 1
) -> None:
    """Serve until interrupted. With one uvicorn worker, on `platform`; otherwise in
    worker processes that open `platform.project.root` themselves."""
    if server == "uvicorn" and workers == 1:
        import uvicorn

        from tidegate.api.app import create_app

        uvicorn.run(create_app(platform), host=host, port=port, log_level="warning")
        return
    os.environ["TIDEGATE_PROJECT"] = str(Path(platform.project.root).resolve())
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            FACTORY, factory=True, host=host, port=port, workers=workers, log_level="warning"
        )
        return
    granian = require("granian", "granian")
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    granian.Granian(
        FACTORY,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=workers,
        loop=Loops.uvloop,
        websockets=False,
        log_level=LogLevels.warning,
    ).serve()
