"""Small client-side helpers for the integration tests: exact raw HTTP, OCI error bodies, digests."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from bench.lab.images import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

TIMEOUT = 30.0
ACCEPT_ALL = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def raw_request(
    host: str,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = TIMEOUT,
) -> RawResponse:
    """Send ``target`` exactly as given (no normalisation of ``..`` or ``%2e``) and read the response."""
    address, _, port = host.rpartition(":")
    conn = http.client.HTTPConnection(address, int(port), timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def oci_error_codes(body: bytes) -> list[str]:
    """The codes in an OCI error body; fails the test if the body is not ``{"errors":[{code,message}]}``."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise AssertionError(f"error body is not JSON: {body[:300]!r}") from exc
    errors = doc.get("errors") if isinstance(doc, dict) else None
    assert isinstance(errors, list) and errors, f"no errors list in {doc!r}"
    for err in errors:
        assert isinstance(err, dict), doc
        assert isinstance(err.get("code"), str) and err["code"], doc
        assert isinstance(err.get("message"), str), doc
    return [err["code"] for err in errors]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path_re(repo: str, digest: str) -> str:
    """A registry access-log path regex for one blob of one repository."""
    return rf"/v2/{re.escape(repo)}/blobs/{re.escape(digest)}"


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Run an aiohttp app on a free 127.0.0.1 port for the duration of the block; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
