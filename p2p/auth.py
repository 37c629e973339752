"""Shared-secret authentication between Shoal nodes and the tracker (and, later, between peers).

When a cluster secret is configured, every request except health checks carries

    X-Shoal-Timestamp: <unix seconds>
    Authorization: Shoal-HMAC-SHA256 <hex HMAC-SHA256(secret, message)>

where message is METHOD, raw PATH?QUERY, TIMESTAMP and the hex sha256 of the body, joined by newlines.
A stranger can thus neither read the tracker's view of the cluster nor poison it, and a captured request
stops being accepted once its timestamp is more than `max_skew` seconds from the receiver's clock. The path
is the raw (percent-encoded) path and query as sent; a proxy in front of the tracker must not rewrite it.

`sign_headers` builds the headers on the client; `verify_request` checks them (pure, `now` passed in);
`signature_middleware` wraps `verify_request` for an aiohttp application and answers 401.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

SCHEME = "Shoal-HMAC-SHA256"
TIMESTAMP_HEADER = "X-Shoal-Timestamp"
DEFAULT_MAX_SKEW = 60.0

log = logging.getLogger(__name__)


class AuthError(Exception):
    """A request is not signed with the cluster secret, or its signature is stale."""


def read_secret_file(path: str | Path) -> bytes:
    """The cluster secret stored in `path`, without surrounding whitespace (a trailing newline is common)."""
    secret = Path(path).read_bytes().strip()
    if not secret:
        raise ValueError(f"secret file {path} is empty")
    return secret


def signature(secret: bytes, method: str, path: str, timestamp: int, body: bytes) -> str:
    message = "\n".join([method.upper(), path, str(timestamp), hashlib.sha256(body).hexdigest()])
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def sign_headers(secret: bytes, method: str, path: str, body: bytes, now: float) -> dict[str, str]:
    """Headers that authenticate a request for `method` `path` (raw path and query) carrying `body`."""
    timestamp = int(now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        "Authorization": f"{SCHEME} {signature(secret, method, path, timestamp, body)}",
    }


def verify_request(
    secret: bytes,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    max_skew: float = DEFAULT_MAX_SKEW,
) -> None:
    """Raise `AuthError` unless `headers` sign this request with `secret`, within `max_skew` of `now`."""
    scheme, _, given = headers.get("Authorization", "").partition(" ")
    if scheme != SCHEME or not given:
        raise AuthError("missing signature")
    try:
        timestamp = int(headers.get(TIMESTAMP_HEADER, ""))
    except ValueError:
        raise AuthError("missing or malformed timestamp") from None
    if abs(now - timestamp) > max_skew:
        raise AuthError("stale timestamp")
    if not hmac.compare_digest(given.strip(), signature(secret, method, path, timestamp, body)):
        raise AuthError("bad signature")


def signature_middleware(
    secret: bytes,
    *,
    exempt: Collection[str] = ("/healthz",),
    max_skew: float = DEFAULT_MAX_SKEW,
    clock: Callable[[], float] = time.time,
) -> Middleware:
    """An aiohttp middleware answering 401 to requests not signed with `secret`; `exempt` paths pass."""

    @web.middleware
    async def check_signature(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in exempt:
            body = await request.read()
            try:
                now = clock()
                verify_request(secret, request.method, request.raw_path, request.headers, body, now, max_skew)
            except AuthError as exc:
                log.debug("refused %s %s from %s: %s", request.method, request.path, request.remote, exc)
                raise web.HTTPUnauthorized(
                    text=json.dumps({"error": str(exc)}),
                    content_type="application/json",
                    headers={"WWW-Authenticate": SCHEME},
                ) from None
        return await handler(request)

    return check_signature
