"""`/docs`: the API's Swagger UI, served from the package (`static/vendor/swagger-ui/`).

The page used to load Swagger UI from a public CDN, so it was blank offline; the bundle
(Swagger UI 5, Apache-2.0, its LICENSE and NOTICE beside it) now ships with tidegate.
The validator badge is off: it would send the document to an outside service.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

ASSETS = "/console/static/vendor/swagger-ui"
DOCS_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tidegate API</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" href="/console/static/favicon.svg" type="image/svg+xml">
</head><body><div id="ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body></html>
"""
DOCS_JS = "SwaggerUIBundle({url: '/openapi.json', dom_id: '#ui', validatorUrl: null});\n"
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


def docs_routes() -> list[Route]:
    async def docs(request: Request) -> Response:
        return HTMLResponse(DOCS_HTML, headers={"content-security-policy": DOCS_CSP})

    async def docs_js(request: Request) -> Response:
        return Response(DOCS_JS, media_type="text/javascript")

    return [
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/init.js", docs_js, methods=["GET"]),
    ]
