"""What every console page shares: templates, the signed-in principal, permissions, audit.

A page handler is a plain function `(Page) -> Response` run in the thread pool (pages
read SQLite and may run a sync or an erasure); `Console.page` wraps it with sign-in,
CSRF on POSTs and error pages. Permissions are the API's, read from the same policy:

* products and purposes: `roles_allow_product` and `purposes_of_roles` (the guard's);
* data-subject requests, the audit log and its verification: a role with
  `subject_requests: true` (what `DELETE /v1/subjects/{id}` requires);
* a subject's consent: `write_consent: true` or `subject_requests: true` (what
  `GET /v1/consent/{subject}` requires);
* triggering a sync: the roles may read the sync's product under the sync's purpose;
* replaying dead letters: the roles may post events to the source (`ingest`).

Every page view is audited like an API read (action `console`, the page and what it
named); a page that shows product rows reads them through `Serving.lookup`, so its
audit record is the API's own `serve` record, or (a quality check's failing rows,
`quality.py`) through the guard's plan for the viewer's purpose, with a `serve` record
of the same shape.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from tidegate.api.console.session import Credentials, Sessions, SignInRequired
from tidegate.audit.log import AuditRecord
from tidegate.egress.serve.service import Call, Serving
from tidegate.errors import ForbiddenError, TidegateError
from tidegate.platform.keys import Principal
from tidegate.timestamps import timestamp_text

if TYPE_CHECKING:
    from jinja2 import Environment

    from tidegate.observe.lineage import LineageGraph
    from tidegate.platform import Platform

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
MAX_FORM_BYTES = 64 * 1024

NAV = [
    ("catalog", "/console/", "Catalog"),
    ("lineage", "/console/lineage", "Lineage"),
    ("syncs", "/console/syncs", "Syncs"),
    ("privacy", "/console/privacy", "Consent & requests"),
    ("audit", "/console/audit", "Audit"),
    ("health", "/console/health", "Dead letters & health"),
]


@dataclass
class Page:
    """One request to one page, signed in."""

    console: Console
    request: Request
    principal: Principal
    credentials: Credentials
    form: dict[str, str] = field(default_factory=dict)

    @property
    def query(self) -> dict[str, str]:
        return dict(self.request.query_params)

    def param(self, name: str, default: str = "") -> str:
        value = self.form.get(name, self.request.query_params.get(name, default))
        return value.strip()[:500]

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        return self.console.render(self, template, status, **context)

    def audit(self, page: str, **fields: Any) -> None:
        """An audit record for this page view (queued, like an API read)."""
        detail = {"page": page, "key_id": self.principal.key_id, **fields.pop("detail", {})}
        self.console.platform.audit_writer.submit(
            AuditRecord(action="console", principal=self.principal.name, detail=detail, **fields)
        )

    def audit_now(self, action: str, **fields: Any) -> None:
        """A durable audit record for an action taken from the console."""
        detail = {"via": "console", "key_id": self.principal.key_id, **fields.pop("detail", {})}
        self.console.platform.audit.append(
            AuditRecord(action=action, principal=self.principal.name, detail=detail, **fields)
        )

    # ---------------------------------------------------------------- permissions

    @property
    def roles(self) -> tuple[str, ...]:
        return self.principal.roles

    def purposes(self) -> set[str]:
        return self.console.platform.project.policy.purposes_of_roles(self.roles)

    def may_read(self, product: str) -> bool:
        return self.console.platform.project.policy.roles_allow_product(self.roles, product)

    def _flag(self, name: str) -> bool:
        roles = self.console.platform.project.policy.roles
        return any(getattr(roles[r], name) for r in self.roles if r in roles)

    @property
    def may_answer_requests(self) -> bool:
        return self._flag("subject_requests")

    @property
    def may_read_consent(self) -> bool:
        return self._flag("write_consent") or self._flag("subject_requests")

    @property
    def may_audit(self) -> bool:
        return self._flag("subject_requests")

    def may_run_sync(self, name: str) -> bool:
        sync = self.console.platform.project.syncs.get(name)
        if sync is None:
            return False
        return sync.config.purpose in self.purposes() and self.may_read(sync.config.product)

    def may_replay(self, source: str) -> bool:
        roles = self.console.platform.project.policy.roles
        return any(
            "*" in roles[r].ingest or source in roles[r].ingest for r in self.roles if r in roles
        )

    def require(self, allowed: bool, what: str, needs: str) -> None:
        if not allowed:
            self.console.platform.audit_writer.submit(
                AuditRecord(
                    action="deny",
                    principal=self.principal.name,
                    outcome="denied",
                    detail={"via": "console", "page": what, "key_id": self.principal.key_id},
                )
            )
            raise ForbiddenError(f"principal {self.principal.name!r} may not {what}: {needs}")


Handler = Callable[[Page], Response]


class Console:
    def __init__(self, platform: Platform, serving: Serving) -> None:
        self.platform = platform
        self.serving = serving
        self.sessions = Sessions(platform)

    @cached_property
    def templates(self) -> Environment:
        from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

        env = Environment(
            loader=PackageLoader("tidegate.api.console", "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["when"] = _when
        env.filters["seconds"] = _seconds
        return env

    @cached_property
    def lineage(self) -> LineageGraph:
        """Built once per process: the project's SQL does not change while it runs."""
        from tidegate.observe.lineage import build_graph

        return build_graph(self.platform.project)

    def render(
        self, page: Page | None, template: str, status: int = 200, **context: Any
    ) -> Response:
        html = self.templates.get_template(template).render(
            project=self.platform.project.name,
            nav=NAV,
            principal=page.principal if page else None,
            csrf=self.sessions.csrf_token(page.credentials) if page else "",
            **context,
        )
        return HTMLResponse(html, status, headers={"content-security-policy": CSP})

    def authenticate(self, request: Request) -> tuple[Principal, Credentials]:
        credentials = self.sessions.credentials(request)
        if credentials is None:
            raise SignInRequired("sign in with an API key")
        call = Call(action="console")
        principal = self.serving.principal(call, credentials.token)  # auth + rate limit
        return principal, credentials

    def page(self, handler: Handler, name: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            form: dict[str, str] = {}
            if request.method == "POST":
                form = await _form(request)
            return await run_in_threadpool(self._answer, handler, name, request, form)

        return endpoint

    def _answer(
        self, handler: Handler, name: str, request: Request, form: dict[str, str]
    ) -> Response:
        try:
            principal, credentials = self.authenticate(request)
        except SignInRequired:
            if request.method != "GET":
                return self.render(None, "error.html", 401, message="sign in first", code=401)
            target = urllib.parse.quote(request.url.path + _query(request), safe="")
            return RedirectResponse(f"/console/signin?next={target}", 303)
        except TidegateError as err:
            if err.http_status == 401:
                return self._signed_out(request, err.message)
            return self.render(
                None, "error.html", err.http_status, message=err.message, code=err.http_status
            )
        page = Page(self, request, principal, credentials, form)
        try:
            if request.method == "POST":
                self.sessions.check_csrf(credentials, form.get("csrf"))
            return handler(page)
        except TidegateError as err:
            return page.render(
                "error.html",
                err.http_status,
                message=err.message,
                code=err.http_status,
                active=name,
            )
        except Exception:
            log.exception("console page %s failed", request.url.path)
            return page.render(
                "error.html",
                500,
                message="internal error; see the server log",
                code=500,
                active=name,
            )

    def _signed_out(self, request: Request, why: str) -> Response:
        from tidegate.api.console.session import SESSION_COOKIE, clear_cookie

        response = self.render(None, "signin.html", 401, error=why, nonce="", next="/console/")
        clear_cookie(response, SESSION_COOKIE)
        return response


def _query(request: Request) -> str:
    query = request.url.query
    return f"?{query}" if query else ""


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body, bounded (no multipart: the console never uploads)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise TidegateError("form too large")
    if content_type != "application/x-www-form-urlencoded":
        return {}
    pairs = urllib.parse.parse_qsl(body.decode("utf-8", errors="replace"), max_num_fields=200)
    return dict(pairs)


def _when(at: float | str | None) -> str:
    """A recorded time for the page: epoch seconds, or a report's time already formatted."""
    if at is None:
        return "—"
    if isinstance(at, str):
        return at
    return timestamp_text(float(at), "—")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    value = float(value)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.1f}s"
