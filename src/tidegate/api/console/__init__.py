"""The web console under `/console`: catalog, products, lineage, syncs, consent and
requests, audit, dead letters and health, for the people who share tidegate's data.

Server-rendered pages (Jinja2) with a little vanilla JavaScript; charts and the lineage
graph are SVG drawn on the server; every asset is packaged here (`static/`), nothing is
fetched from another host. Signed in with the API's keys and roles (`session.py`,
`core.py`). Part of the one HTTP app (`api/app.py`); nothing below `api/` imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from tidegate.egress.serve.service import Serving
    from tidegate.platform import Platform


def console_routes(platform: Platform, serving: Serving) -> list[BaseRoute]:
    from tidegate.api.console.routes import routes

    return routes(platform, serving)
