"""The raw ASGI fast path (`EntityReads`) answers exactly what the Starlette routes answer.

Two servers on one platform: the app as shipped (entity reads and lookups answered by
`EntityReads`) and the same app with `fast_reads=False` (every route through Starlette).
Each request below goes to both; status, every response header (but `date`), the body
byte for byte, and the audit records each one wrote must be the same. A counter on the
fast path proves it answered the hot requests itself (and left the rest to Starlette).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidegate.api import create_app
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.egress.serve import app as serve_app
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.privacy.consent import ConsentEvent, consent_ledger_of
from tidegate.privacy.guard import guard_of

ADA, GRACE = "1", "2"
ENTITY = "/v1/products/{product}/entities/{key}"
LOOKUP = "/v1/products/customer_360/lookup"
THROTTLED_ROLE = """roles:
  throttled:
    description: One call now and then (the fast path's 429 test).
    purposes: [support]
    rate_limit: {requests_per_second: 0.0001, burst: 1}
"""


@dataclass
class Pair:
    platform: Platform
    slow: httpx.Client
    fast: httpx.Client
    keys: dict[str, str]
    hot: list[str]  # what the fast path answered itself


@pytest.fixture(scope="module")
def pair(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    directory = tmp_path_factory.mktemp("fast") / "shop"
    shutil.copytree(demo_dir, directory)
    policies = directory / "policies" / "purposes.yml"
    policies.write_text(policies.read_text().replace("roles:\n", THROTTLED_ROLE, 1))
    hot: list[str] = []
    patch = pytest.MonkeyPatch()
    entity_read, lookup_read = (
        serve_app.EntityReads._entity_read,
        serve_app.EntityReads._lookup_read,
    )

    async def counted_entity(self: Any, scope: Any, *args: Any) -> None:
        hot.append(scope["path"])
        await entity_read(self, scope, *args)

    async def counted_lookup(self: Any, scope: Any, *args: Any) -> None:
        hot.append(scope["path"])
        await lookup_read(self, scope, *args)

    patch.setattr(serve_app.EntityReads, "_entity_read", counted_entity)
    patch.setattr(serve_app.EntityReads, "_lookup_read", counted_lookup)
    platform = Platform.open(directory)
    servers = [
        BackgroundServer(create_app(platform, fast_reads=False), _free_port(0)),
        BackgroundServer(create_app(platform), _free_port(0)),
    ]
    for server in servers:
        server.start()
    try:
        slow, fast = (
            httpx.Client(base_url=f"http://127.0.0.1:{s.port}", timeout=10) for s in servers
        )
        keys = {
            role: create_key(platform.meta, f"app-{role}", [role])[0]
            for role in ("support_agent", "analyst", "marketer", "throttled")
        }
        with slow, fast:
            yield Pair(platform, slow, fast, keys, hot)
    finally:
        for server in servers:
            server.stop()
        platform.close()
        patch.undo()


def _audit(platform: Platform, after: int) -> list[dict[str, Any]]:
    """The records written since `after`, without what differs by time alone."""
    out = []
    for _, record in platform.audit.records(after_seq=after):
        out.append(
            {
                "action": record.action,
                "principal": record.principal,
                "purpose": record.purpose,
                "product": record.product,
                "columns": record.columns,
                "rows": record.rows,
                "subjects": record.subjects,
                "outcome": record.outcome,
                "detail": record.detail,
                "subject_type": record.subject_type,
            }
        )
    return out


_RETRY = re.compile(rb'"retry_after_seconds":[0-9.]+')


def _same(pair: Pair, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """Send one request to both servers; assert identical answers and audit; return one."""
    answers = []
    audits = []
    for client in (pair.slow, pair.fast):
        before = pair.platform.audit.last_seq()  # flushes the batched writer
        response = client.request(method, path, **kwargs)
        audits.append(_audit(pair.platform, before))
        answers.append(response)
    slow, fast = answers
    assert fast.status_code == slow.status_code, (path, slow.text, fast.text)
    # the seconds to wait (in a 429's body) run on a clock: all that may differ, with
    # the body's length
    clocked = {b"date", b"content-length"} if slow.status_code == 429 else {b"date"}
    headers = [[h for h in r.headers.raw if h[0].lower() not in clocked] for r in answers]
    assert headers[1] == headers[0], path
    assert _RETRY.sub(b"", fast.content) == _RETRY.sub(b"", slow.content), path
    assert audits[1] == audits[0], path
    return fast


def _auth(token: str, purpose: str | None = "support") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if purpose is not None:
        headers["X-Purpose"] = purpose
    return headers


def _pseudonym(platform: Platform, purpose: str, text: str) -> str:
    key = guard_of(platform).hash_key(purpose).key
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _entity(product: str, key: str) -> str:
    return ENTITY.format(product=product, key=key)


def test_entity_reads_answer_like_starlette(pair: Pair) -> None:
    support, marketer = pair.keys["support_agent"], pair.keys["marketer"]
    analyst = pair.keys["analyst"]
    ada = _entity("customer_360", ADA)
    pair.hot.clear()
    cases: list[tuple[str, dict[str, str], int]] = [
        (ada, _auth(support), 200),
        (_entity("customer_360", "424242"), _auth(support), 404),  # absent
        (ada, _auth("tg_000000000000_wrongsecret"), 401),  # bad token
        (ada, _auth("not-a-key"), 401),
        (ada, {"X-Purpose": "support"}, 401),  # no credentials
        (ada, {"Authorization": "Basic abc", "X-Purpose": "support"}, 401),
        (ada, {"X-API-Key": support, "X-Purpose": "support"}, 200),
        (ada, _auth(support, purpose=None), 400),  # missing purpose
        (ada, _auth(support, "no.such.purpose"), 403),
        (ada, _auth(marketer, "support"), 403),
        (_entity("marketing_audience", GRACE), _auth(marketer, "marketing.email"), 404),  # revoked
        (_entity("marketing_audience", ADA), _auth(marketer, "marketing.email"), 200),
        (_entity("no_such_product", ADA), _auth(support), 404),
        (_entity("customer_360", "9" * 300), _auth(support), 404),  # key over the limit
        (_entity("customer_360", "a%2Fb"), _auth(support), 404),  # an encoded slash
        ("/v1/products/customer_360/entities/", _auth(support), 404),  # empty key
        (ada + "?x=1&y", _auth(support), 200),  # a query string changes nothing
        (ada, _auth(analyst, "analytics"), 404),  # a clear id under a hashed key
        (
            _entity("customer_360", _pseudonym(pair.platform, "analytics", ADA)),
            _auth(analyst, "analytics"),
            200,
        ),
    ]
    for path, headers, status in cases:
        assert _same(pair, "GET", path, headers=headers).status_code == status, path
    # odd headers: repeated (the first counts), spaces around the token, scheme case
    odd = [
        [
            ("X-Purpose", "support"),
            ("X-Purpose", "analytics"),
            ("Authorization", f"Bearer {support}"),
        ],
        [
            ("X-Purpose", "analytics"),
            ("X-Purpose", "support"),
            ("Authorization", f"Bearer {support}"),
        ],
        [("X-Purpose", "support"), ("Authorization", f"bEaReR   {support}")],
        [("X-Purpose", "support"), ("Authorization", ""), ("X-API-Key", support)],
        [("X-Purpose", ""), ("Authorization", f"Bearer {support}")],
    ]
    statuses = [_same(pair, "GET", ada, headers=h).status_code for h in odd]
    assert statuses == [200, 403, 200, 200, 400]  # an empty Authorization: X-API-Key counts
    assert len(pair.hot) == len(cases) + len(odd)  # every one answered by the fast path


def test_what_the_fast_path_leaves_to_starlette_is_unchanged(pair: Pair) -> None:
    support = pair.keys["support_agent"]
    ada = _entity("customer_360", ADA)
    pair.hot.clear()
    assert _same(pair, "HEAD", ada, headers=_auth(support)).status_code == 200
    assert _same(pair, "POST", ada, headers=_auth(support)).status_code == 405
    assert _same(pair, "GET", LOOKUP, headers=_auth(support)).status_code == 405
    assert (
        _same(pair, "GET", "/v1/products/customer_360", headers=_auth(support)).status_code == 200
    )
    assert _same(pair, "GET", "/v1/health").status_code == 200
    assert pair.hot == []


def test_lookups_answer_like_starlette(pair: Pair) -> None:
    support = pair.keys["support_agent"]
    pair.hot.clear()
    keys = [str(k) for k in range(1, 101)] + ["424242", 3, "1"]
    json_ = {**_auth(support), "Content-Type": "application/json"}
    cases: list[tuple[dict[str, str], bytes, int]] = [
        (json_, httpx.Request("POST", "/", json={"keys": keys}).content, 200),
        ({**json_, "Content-Type": "application/json; charset=utf-8"}, b'{"keys": [1]}', 200),
        ({**json_, "Content-Type": "text/plain"}, b'{"keys": [1]}', 415),
        ({**_auth(support)}, b'{"keys": [1]}', 415),  # no content type
        (json_, b'{"keys": [1', 422),  # not JSON
        (json_, b'{"keys": [1], "more": 1}', 422),
        (json_, b'{"keys": []}', 422),
        (json_, b'{"keys": [true]}', 422),
        (json_, b'{"keys": [""]}', 422),
        (json_, b'{"keys": [%s]}' % b",".join([b"1"] * 1001), 422),
        ({**json_, "Authorization": "Bearer tg_000000000000_nope"}, b'{"keys": [1]}', 401),
        ({**json_, "X-Purpose": "analytics"}, b'{"keys": [1]}', 403),
        ({k: v for k, v in json_.items() if k != "X-Purpose"}, b'{"keys": [1]}', 400),
    ]
    for headers, body, status in cases:
        answer = _same(pair, "POST", LOOKUP, headers=headers, content=body)
        assert answer.status_code == status, (body[:40], answer.text[:300])

    def chunked() -> Iterator[bytes]:  # no Content-Length: Hardening reads it, then replays
        yield b'{"keys": '
        yield b"[1, 2, 3]}"

    for client in (pair.slow, pair.fast):  # an iterator is spent once: one per server
        answer = client.post(LOOKUP, headers=json_, content=chunked())
        assert answer.status_code == 200
        assert [r["key"] for r in answer.json()["results"]] == ["1", "2", "3"]
    assert len(pair.hot) == len(cases) + 1


def test_revocations_and_limits_count_on_the_fast_path(pair: Pair) -> None:
    analyst, support = pair.keys["analyst"], pair.keys["support_agent"]
    subject = "3"
    consent_ledger_of(pair.platform).record(
        [ConsentEvent(subject, "analytics", "grant", time.time() - 10, "test")]
    )
    path = _entity("customer_360", _pseudonym(pair.platform, "analytics", subject))
    assert _same(pair, "GET", path, headers=_auth(analyst, "analytics")).status_code == 200
    consent_ledger_of(pair.platform).record(
        [ConsentEvent(subject, "analytics", "revoke", time.time(), "test")]
    )
    assert _same(pair, "GET", path, headers=_auth(analyst, "analytics")).status_code == 404

    token, row = create_key(pair.platform.meta, "soon-revoked", ["support_agent"])
    ada = _entity("customer_360", ADA)
    assert _same(pair, "GET", ada, headers=_auth(token)).status_code == 200
    pair.platform.meta.revoke_api_key(row.key_id, time.time())
    assert _same(pair, "GET", ada, headers=_auth(token)).status_code == 401

    throttled = pair.keys["throttled"]  # one token, refilled once in hours
    assert _same(pair, "GET", ada, headers=_auth(throttled)).status_code == 200
    limited = _same(pair, "GET", ada, headers=_auth(throttled))
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 1000
    assert limited.json()["error"]["code"] == "rate_limited"
    lookup = _same(
        pair,
        "POST",
        LOOKUP,
        headers={**_auth(throttled), "Content-Type": "application/json"},
        content=b'{"keys": [1]}',
    )
    assert lookup.status_code == 429
    assert _same(pair, "GET", ada, headers=_auth(support)).status_code == 200


def test_the_startup_heap_is_frozen_once_the_app_has_started(demo_copy: Path) -> None:
    """`settled()` runs in the lifespan: what startup built leaves the collector's
    generations, so full collections under load no longer walk it."""
    import gc

    from starlette.testclient import TestClient

    gc.unfreeze()
    with Platform.open(demo_copy) as platform:
        try:
            with TestClient(create_app(platform)) as client:  # runs the lifespan
                assert gc.get_freeze_count() > 10_000
                assert client.get("/v1/health").status_code == 200
        finally:
            gc.unfreeze()


def test_pseudonyms_are_resolved_off_the_event_loop(demo_copy: Path) -> None:
    """Under a hashed key the pseudonym index asks the online store (its version, a scan
    of its keys): that must not run on the event loop, which serves every other caller."""
    import asyncio
    import threading

    from tidegate.egress.serve.service import Call, Serving

    with Platform.open(demo_copy) as platform:
        serving = Serving(platform)
        token = create_key(platform.meta, "t", ["analyst"])[0]
        seen: list[int] = []
        resolve = serving.pseudonyms.resolve

        def recorded(*args: Any) -> dict[str, str]:
            seen.append(threading.get_ident())
            return resolve(*args)

        serving.pseudonyms.resolve = recorded  # type: ignore[method-assign]
        ada = _pseudonym(platform, "analytics", ADA)

        async def reads() -> int:
            one = Call(action="serve", product="customer_360", purpose="analytics")
            body = await serving.aentity(one, token, ada)
            assert body["data"]["customer_id"] == ada
            many = Call(action="serve", product="customer_360", purpose="analytics")
            found = await serving.alookup(many, token, [ada, "1"])
            assert [r["found"] for r in found["results"]] == [True, False]
            return threading.get_ident()

        loop_thread = asyncio.run(reads())
        serving.close()
    assert len(seen) == 2
    assert loop_thread not in seen


_segment = st.text(alphabet="abv1/_-", max_size=8)


@given(path=_segment.map(lambda s: "/" + s), root=st.one_of(st.just(""), _segment))
def test_the_fast_path_sees_the_path_starlette_s_router_matches(path: str, root: str) -> None:
    """`route_path` is what Starlette's router matches against (its own helper is
    private: `starlette._utils.get_route_path`), under any mount point."""
    from starlette._utils import get_route_path

    for full in (path, root + path, root):
        scope = {"type": "http", "path": full, "root_path": root}
        assert serve_app.route_path(scope) == get_route_path(scope)
