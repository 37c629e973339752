"""Serving pieces to other nodes: `GET /p2p/blobs/{digest}` with `Range: bytes=<start>-<end>`.

The bytes come from this node's cache or from a download still in progress (`BlobService.open_local`), and only
from what is already on disk: a range reaching past `.readable()` is answered 416 with `X-Shoal-Readable`, never
with a partial piece. Downloaders check pieces against the published piece hashes; the whole blob is checked
against its digest by the receiving mirror.

With a cluster secret every request must be signed (`p2p.auth`), else 401: a stranger on the network cannot
read cached, possibly private, layers. Bodies go out with `sendfile` (zero-copy on the default asyncio loop), in
slices paced by the node's upload `TokenBucket` when a limit is configured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from typing import IO

from aiohttp import web

from mirror.oci.errors import RegistryError
from mirror.oci.reference import Digest
from mirror.proxy.blobs import BlobService, CachedBlob
from mirror.server.observe import INFO
from p2p import metrics
from p2p.auth import SCHEME, AuthError, verify_request
from p2p.pieces import parse_byte_range
from p2p.ratelimit import TokenBucket

PATH = "/p2p/blobs/{digest}"
READABLE_HEADER = "X-Shoal-Readable"
_SLICE = 1 << 20  # bytes per sendfile call when pacing uploads

log = logging.getLogger("shoal.p2p")


class PieceServer:
    """The peer endpoint of one node. `uploads` counts requests being served (the node's load)."""

    def __init__(
        self,
        blobs: BlobService,
        secret: bytes | None,
        limiter: TokenBucket | None = None,
        *,
        on_missing: Callable[[Digest], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._blobs = blobs
        self._on_missing = on_missing
        self._secret = secret
        self._limiter = limiter
        self._clock = clock
        self._monotonic = monotonic
        self.uploads = 0

    def register(self, app: web.Application) -> None:
        app.router.add_get(PATH, self.get)

    async def get(self, request: web.Request) -> web.StreamResponse:
        info = request.get(INFO)
        if info is not None:
            info.route, info.source = "p2p", "peer-upload"
        refused = self._refusal(request)
        if refused is not None:
            metrics.UPLOADS.labels(str(refused.status)).inc()
            return refused
        self.uploads += 1
        metrics.UPLOADS_ACTIVE.inc()
        try:
            return await self._serve(request)
        finally:
            self.uploads -= 1
            metrics.UPLOADS_ACTIVE.dec()

    def _refusal(self, request: web.Request) -> web.Response | None:
        if self._secret is None:
            return None
        try:
            verify_request(self._secret, request.method, request.raw_path, request.headers, b"", self._clock())
        except AuthError as exc:
            log.debug("refused piece request from %s: %s", request.remote, exc)
            return _error(401, str(exc), {"WWW-Authenticate": SCHEME})
        return None

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        try:
            digest = Digest.parse(request.match_info["digest"])
        except RegistryError as exc:
            return self._count(_error(400, exc.message))
        wanted = parse_byte_range(request.headers.get("Range"))
        if wanted is None:
            return self._count(_error(400, "a Range: bytes=<start>-<end> header is required"))
        local = self._blobs.open_local(digest)
        if local is None:
            if self._on_missing is not None:  # e.g. evicted while still announced: let the node withdraw it
                self._on_missing(digest)
            return self._count(_error(404, "not held here"))
        file: IO[bytes] = open(local.fd, "rb", buffering=0, closefd=True)  # noqa: SIM115, ASYNC230 - an fd: no IO
        try:
            readable = local.readable()
            start, end = wanted
            if end >= readable:
                return self._count(_error(416, f"only {readable} bytes readable", {READABLE_HEADER: str(readable)}))
            total = local.size if isinstance(local, CachedBlob) else local.download.size
            response = web.StreamResponse(
                status=206,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(end - start + 1),
                    "Content-Range": f"bytes {start}-{end}/{total or '*'}",
                },
            )
            await response.prepare(request)
            try:
                await self._send(request, response, file, start, end - start + 1)
            except ConnectionError:
                metrics.UPLOADS.labels("aborted").inc()
                return response
            await response.write_eof()
            metrics.UPLOADS.labels("206").inc()
            return response
        finally:
            file.close()

    async def _send(
        self, request: web.Request, response: web.StreamResponse, file: IO[bytes], offset: int, count: int
    ) -> None:
        loop = asyncio.get_running_loop()
        end = offset + count
        while offset < end:
            n = end - offset if self._limiter is None else min(_SLICE, end - offset)
            if self._limiter is not None:
                delay = self._limiter.reserve(n, self._monotonic())
                if delay > 0:
                    await asyncio.sleep(delay)
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("peer went away")
            try:
                await loop.sendfile(transport, file, offset, n, fallback=False)
            except (NotImplementedError, asyncio.SendfileNotAvailableError):
                await _copy(response, file, offset, n)
            metrics.UPLOAD_BYTES.inc(n)
            offset += n

    @staticmethod
    def _count(response: web.Response) -> web.Response:
        metrics.UPLOADS.labels(str(response.status)).inc()
        return response


async def _copy(response: web.StreamResponse, file: IO[bytes], offset: int, count: int) -> None:
    """Read/write fallback for loops without native sendfile (uvloop)."""
    loop = asyncio.get_running_loop()
    end = offset + count
    while offset < end:
        chunk = await loop.run_in_executor(None, os.pread, file.fileno(), min(_SLICE, end - offset), offset)
        if not chunk:
            raise ConnectionResetError("blob shorter than expected")
        await response.write(chunk)
        offset += len(chunk)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )
