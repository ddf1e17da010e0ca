"""Who is looking at the console: the same credentials, roles and purposes as the API.

A person signs in with an API key (or a JWT, when the server accepts them). The key is
kept in a session cookie that is HttpOnly (no script reads it), SameSite=Strict (no
other site's page sends it) and encrypted and signed with Fernet, under a key derived
from the project's master key in the state dir: the browser holds the key only in a
form that this server alone can open, and an edited cookie is refused. Every request
authenticates the key again (through the serving API's `Authenticator`), so a revoked
or expired key signs the person out at once.

A script or tool can skip the cookie and send `Authorization: Bearer <key>` like an
API client.

POSTs carry a CSRF token: for a cookie session, an HMAC of the session cookie under a
second derived key (it changes with every sign-in); for the sign-in form itself, a
double-submit cookie. A request authenticated by its Authorization header needs none
(a browser never adds that header to a cross-site request).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from tidegate.egress.serve.auth import bearer_token
from tidegate.errors import ForbiddenError, TidegateError

if TYPE_CHECKING:
    from tidegate.platform import Platform

SESSION_COOKIE = "tidegate_console"
SIGNIN_COOKIE = "tidegate_signin"
SESSION_SECONDS = 8 * 3600
PATH = "/console"


class CsrfError(ForbiddenError):
    code = "csrf"


@dataclass(frozen=True)
class Credentials:
    token: str
    cookie: str | None  # the session cookie it came from; None: an Authorization header


class Sessions:
    """Seals and opens session cookies; makes and checks CSRF tokens."""

    def __init__(self, platform: Platform) -> None:
        from cryptography.fernet import Fernet

        master = platform.master_key
        seal = hmac.new(master, b"tidegate console session v1", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(seal))
        self._csrf_key = hmac.new(master, b"tidegate console csrf v1", hashlib.sha256).digest()

    def seal(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def open(self, cookie: str) -> str | None:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(cookie.encode(), ttl=SESSION_SECONDS).decode()
        except (InvalidToken, ValueError):
            return None

    def credentials(self, request: Request) -> Credentials | None:
        headers = request.headers
        if "authorization" in headers or "x-api-key" in headers:
            token = bearer_token(headers.get("authorization"), headers.get("x-api-key"))
            return Credentials(token, None) if token else None
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        token = self.open(cookie)
        return Credentials(token, cookie) if token else None

    def csrf_token(self, credentials: Credentials | None) -> str:
        if credentials is None or credentials.cookie is None:
            return ""
        digest = hmac.new(self._csrf_key, credentials.cookie.encode(), hashlib.sha256)
        return digest.hexdigest()[:40]

    def check_csrf(self, credentials: Credentials, sent: str | None) -> None:
        if credentials.cookie is None:
            return
        if not sent or not hmac.compare_digest(sent, self.csrf_token(credentials)):
            raise CsrfError("the form is stale or came from another site: reload the page")

    # ---------------------------------------------------------------- sign-in form

    @staticmethod
    def new_signin_nonce() -> str:
        return secrets.token_urlsafe(24)

    @staticmethod
    def check_signin(request: Request, sent: str | None) -> None:
        cookie = request.cookies.get(SIGNIN_COOKIE)
        if not cookie or not sent or not hmac.compare_digest(cookie, sent):
            raise CsrfError("the sign-in form is stale or came from another site: reload it")


def set_cookie(response: Response, name: str, value: str, max_age: int, request: Request) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path=PATH, httponly=True, samesite="strict")


class SignInRequired(TidegateError):
    """No (valid) credentials: pages redirect to the sign-in form."""

    code = "unauthenticated"
    http_status = 401
