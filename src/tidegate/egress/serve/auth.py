"""Who is calling: an API key (`tg_…`) or, when configured, a JWT bearer token.

API keys are checked against the metadata store; a successful check is cached in
memory while the metadata database has not been committed to (`ChangeWatch`), so a
revocation, expiry or rotation counts from the very next request, and a quiet
database costs no query. Expiry and scheduled revocation are compared with the clock
on every request, cached or not.

JWTs (`serve.jwt` in tidegate.yml) are verified with PyJWT against the keys of a JWKS
file: the signature (RS256 or ES256 only; `none` and HMAC are refused), `exp` (required),
`nbf`, `iss` and `aud`. Roles come from a claim (a list, or a space-separated string);
the principal is `jwt:<sub>`. PyJWT is imported only when JWTs are configured.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tidegate.egress.serve.state import ChangeWatch
from tidegate.errors import AuthenticationError, ConfigError, Problem
from tidegate.meta.base import ApiKeyRow, MetadataStore
from tidegate.platform.keys import Principal, check_row, split_token
from tidegate.project.models import JwtConfig

CACHE_LIMIT = 10_000
MAX_TOKEN_LENGTH = 8_192


def bearer_token(authorization: str | None, api_key: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return api_key or None


class JwtVerifier:
    def __init__(self, config: JwtConfig, root: Path) -> None:
        import jwt

        self.config = config
        path = Path(config.jwks_file)
        path = path if path.is_absolute() else root / path
        try:
            self._jwks = jwt.PyJWKSet.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, jwt.exceptions.PyJWTError) as err:
            raise ConfigError(
                [Problem("tidegate.yml", 0, "serve.jwt.jwks_file", f"cannot load {path}: {err}")]
            ) from None
        self._jwt = jwt

    def _key(self, token: str) -> Any:
        jwt = self._jwt
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in self.config.algorithms:
            raise AuthenticationError("token algorithm not accepted")
        kid = header.get("kid")
        keys = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
        if len(keys) != 1:
            raise AuthenticationError("token signed by an unknown key")
        return keys[0].key

    def verify(self, token: str) -> Principal:
        jwt = self._jwt
        try:
            claims = jwt.decode(
                token,
                self._key(token),
                algorithms=list(self.config.algorithms),
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_seconds,
                options={"require": ["exp", "iss", "aud", self.config.principal_claim]},
            )
        except jwt.exceptions.ExpiredSignatureError:
            raise AuthenticationError("this token has expired") from None
        except jwt.exceptions.PyJWTError:
            raise AuthenticationError("invalid token") from None
        raw_roles = claims.get(self.config.roles_claim, [])
        if isinstance(raw_roles, str):
            raw_roles = raw_roles.split()
        if not isinstance(raw_roles, list) or not all(isinstance(r, str) for r in raw_roles):
            raise AuthenticationError(f"claim {self.config.roles_claim!r} must list roles")
        subject = str(claims[self.config.principal_claim])[:200]
        return Principal(name=f"jwt:{subject}", roles=tuple(raw_roles), key_id="jwt")


class Authenticator:
    def __init__(
        self,
        meta: MetadataStore,
        watch: ChangeWatch,
        jwt_config: JwtConfig | None = None,
        root: Path | None = None,
    ) -> None:
        self._meta = meta
        self._watch = watch
        self._jwt = JwtVerifier(jwt_config, root or Path(".")) if jwt_config else None
        self._cache: dict[str, tuple[int, ApiKeyRow]] = {}
        self._generation = -1

    def authenticate(self, token: str | None, generation: int | None = None) -> Principal:
        """The principal behind `token`; `generation`: the watch's value for this request."""
        if not token:
            raise AuthenticationError(
                "credentials are required (Authorization: Bearer <API key or token>)"
            )
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationError("malformed credentials")
        if token.count(".") == 2 and not token.startswith("tg_"):
            if self._jwt is None:
                raise AuthenticationError("bearer tokens (JWT) are not enabled on this server")
            return self._jwt.verify(token)
        now = time.time()
        if generation is None:
            generation = self._watch.generation()
        if generation != self._generation:
            self._cache.clear()
            self._generation = generation
        cached = self._cache.get(token)
        if cached is not None:
            return check_row(cached[1], split_token(token)[1], now)
        key_id, secret = split_token(token)
        row = self._meta.api_key(key_id)
        principal = check_row(row, secret, now)
        if row is not None:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = (generation, row)
        return principal
