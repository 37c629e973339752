"""Prefetch over HTTP: a :class:`~mirror.edge.prefetch.Source` that pulls through a running mirror.

It speaks the registry API exactly as containerd does through a mirror — ``/v2/<repo>/...?ns=<registry>`` —
so it warms any Shoal node (or any mirror that honours ``ns``). Bodies are read to the end and checked against
their digests, which is what makes the mirror finish and commit each download; nothing is kept here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from mirror.edge.graph import manifest_matches
from mirror.edge.images import ImageRef
from mirror.edge.prefetch import PREFETCH_ACCEPT, FetchedManifest, PrefetchError
from mirror.oci import mediatypes
from mirror.oci.errors import RegistryError
from mirror.oci.manifest import MAX_MANIFEST_BYTES
from mirror.oci.reference import Digest

CHUNK = 1 << 20


def check_server_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
        raise ValueError(f"--server must be http(s)://HOST[:PORT], got {url!r}")
    return url.rstrip("/")


def _error_text(status: int, body: bytes) -> str:
    """``HTTP 404 MANIFEST_UNKNOWN: manifest unknown`` from an OCI error body, or just the status."""
    try:
        errors = json.loads(body)["errors"]
        first = errors[0]
        return f"HTTP {status} {first['code']}: {first.get('message', '')}".strip()
    except (ValueError, KeyError, IndexError, TypeError):
        return f"HTTP {status}"


async def _read_limited(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to EOF or ``limit`` bytes (``read(n)`` alone may stop at whatever has arrived)."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


class HttpSource:
    def __init__(self, server: str, session: aiohttp.ClientSession) -> None:
        self.server = check_server_url(server)
        self.session = session

    @classmethod
    def new_session(cls, connect_timeout: float = 10.0, read_timeout: float = 300.0) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        return aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False, headers={"User-Agent": "shoal-prefetch/0.1"}
        )

    async def ping(self) -> None:
        """Fail early, with one line, when the server is not a reachable registry."""
        try:
            async with self.session.get(f"{self.server}/v2/") as resp:
                await resp.read()
                if resp.status != 200:
                    raise PrefetchError(f"{self.server}/v2/ answered HTTP {resp.status}; is it a registry mirror?")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PrefetchError(f"cannot reach {self.server}: {exc or type(exc).__name__}") from None

    def _url(self, image: ImageRef, suffix: str) -> str:
        return f"{self.server}/v2/{image.repository}/{suffix}"

    async def manifest(self, image: ImageRef, reference: str) -> FetchedManifest:
        headers = {"Accept": ", ".join(PREFETCH_ACCEPT)}
        try:
            async with self.session.get(
                self._url(image, f"manifests/{reference}"), params={"ns": image.registry}, headers=headers
            ) as resp:
                body = await _read_limited(resp.content, MAX_MANIFEST_BYTES + 1)
                if resp.status != 200:
                    raise PrefetchError(_error_text(resp.status, body))
                claimed = resp.headers.get("Docker-Content-Digest")
                media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PrefetchError(f"{type(exc).__name__}: {exc}") from None
        if len(body) > MAX_MANIFEST_BYTES:
            raise PrefetchError("manifest too large")
        if media_type not in mediatypes.MANIFEST_TYPES:
            media_type = mediatypes.sniff_media_type(body) or media_type
        try:
            digest = Digest.parse(claimed) if claimed else Digest("sha256", hashlib.sha256(body).hexdigest())
        except RegistryError:
            raise PrefetchError("server sent an invalid Docker-Content-Digest") from None
        if not manifest_matches(digest, media_type, body):
            raise PrefetchError("manifest does not match its Docker-Content-Digest")
        if Digest.is_digest(reference) and Digest.parse(reference) != digest:
            raise PrefetchError(f"server sent {digest} for {reference}")
        return FetchedManifest(digest, media_type, body)

    async def blob(self, image: ImageRef, digest: Digest, size: int, on_bytes: Callable[[int], None]) -> None:
        h = hashlib.new(digest.algorithm)
        received = 0
        try:
            async with self.session.get(self._url(image, f"blobs/{digest}"), params={"ns": image.registry}) as resp:
                if resp.status != 200:
                    raise PrefetchError(_error_text(resp.status, await _read_limited(resp.content, 64 * 1024)))
                async for chunk in resp.content.iter_chunked(CHUNK):
                    h.update(chunk)
                    received += len(chunk)
                    on_bytes(len(chunk))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PrefetchError(f"transfer failed after {received} bytes: {type(exc).__name__}: {exc}") from None
        if size > 0 and received != size:
            raise PrefetchError(f"got {received} bytes, expected {size}")
        if h.hexdigest() != digest.hex:
            raise PrefetchError("content does not match the digest")
