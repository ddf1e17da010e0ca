"""HTTP / webhook destination: batched JSON POSTs (see `protocol` for the wire format).

This client makes one attempt per call and classifies the outcome; the sync engine
owns retries, backoff with jitter, `Retry-After` and the rate limit, so every
destination gets the same policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from tidegate.egress.destinations.base import (
    Capabilities,
    Destination,
    RowErrors,
    Written,
    register,
    setting,
)
from tidegate.egress.destinations.http import protocol
from tidegate.errors import TerminalDestinationError, TransientDestinationError
from tidegate.project.models import parse_duration


def _key_text(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


@register
class HttpDestination(Destination):
    kind: ClassVar[str] = "http"
    capabilities: ClassVar[Capabilities] = Capabilities(
        supports_upsert=True, supports_delete=True, max_batch_rows=1_000, supports_read=False
    )

    def __init__(
        self,
        url: str,
        *,
        delete_url: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        import httpx

        self.url = url
        self.delete_url = delete_url or url
        self.key = ""
        self._client = httpx.Client(
            timeout=timeout,
            headers={"Content-Type": "application/json", **(headers or {})},
            follow_redirects=False,
        )

    @classmethod
    def from_config(cls, config: Any, root: Path, sync: str = "") -> HttpDestination:
        headers = dict(config.headers)
        if config.auth_env:
            secret = setting(None, config.auth_env, "HTTP destination auth")
            scheme = f"{config.auth_scheme} " if config.auth_scheme else ""
            headers[config.auth_header] = f"{scheme}{secret}"
        return cls(
            config.url,
            delete_url=config.delete_url,
            headers=headers,
            timeout=parse_duration(config.timeout).total_seconds(),
        )

    def open(self, columns: dict[str, str], key: str) -> None:
        self.key = key

    def _post(self, url: str, content: bytes, keys: list[str]) -> int | Written:
        import httpx

        try:
            response = self._client.post(
                url,
                content=content,
                headers={"Idempotency-Key": protocol.idempotency_key(content)},
            )
        except httpx.TimeoutException as err:
            raise TransientDestinationError(f"HTTP: timed out: {err}") from None
        except httpx.TransportError as err:
            raise TransientDestinationError(f"HTTP: {type(err).__name__}: {err}") from None
        status = response.status_code
        if status == 429:
            wait = protocol.retry_after(response.headers.get("Retry-After"))
            raise TransientDestinationError(
                protocol.error_message(response.text, status), retry_after=wait
            )
        if status == 408 or status >= 500:
            raise TransientDestinationError(protocol.error_message(response.text, status))
        if status >= 300:
            raise TerminalDestinationError(protocol.error_message(response.text, status))
        rejected = protocol.row_errors(response.text, keys)
        if rejected:
            raise RowErrors(rejected)
        said = protocol.outcome(response.text, keys)
        if said is None:
            return len(keys)
        return Written(frozenset(said[0]), frozenset(said[1]))

    def write(self, batch: Any, mode: str) -> int | Written:
        rows = batch.to_pylist()
        content = protocol.body(self.sync_name, mode, self.key, rows)
        return self._post(self.url, content, [_key_text(r[self.key]) for r in rows])

    def delete(self, keys: list[Any]) -> int:
        content = protocol.body(self.sync_name, "delete", self.key, keys)
        self._post(self.delete_url, content, [_key_text(k) for k in keys])
        return len(keys)

    def read_all(self) -> list[dict[str, Any]]:
        raise TerminalDestinationError("an HTTP destination cannot be read back")

    def close(self) -> None:
        self._client.close()

    def describe(self) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        return f"http:{parts.scheme}://{parts.netloc}{parts.path}"
