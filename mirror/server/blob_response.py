"""Sending blob bytes: zero-copy ``sendfile`` from the cache, and from a download still in progress.

aiohttp's ``FileResponse`` stats and opens the file in a thread pool on every request; on a cache hit we
already hold an open fd and its size, so we write the headers and hand the fd to ``loop.sendfile`` directly
(a real ``os.sendfile`` on the default asyncio loop). A download in progress is followed the same way, piece
by piece as it arrives, with the blob's last byte held back until it verified.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import IO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from mirror.oci.errors import RegistryError
from mirror.oci.ranges import ByteRange
from mirror.proxy.inflight import Followable

_COPY_CHUNK = 1 << 20
log = logging.getLogger("shoal.blobs")


def blob_headers(digest: str, size: int, rng: ByteRange | None) -> tuple[int, dict[str, str]]:
    headers = {
        "Docker-Content-Digest": digest,
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",
    }
    if rng is None:
        headers["Content-Length"] = str(size)
        return 200, headers
    headers["Content-Length"] = str(rng.length)
    headers["Content-Range"] = rng.content_range(size)
    return 206, headers


class BlobStream(web.StreamResponse):
    """A response whose body is ``count`` bytes of an fd from ``offset``, possibly still being written."""

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        fd: int,
        offset: int,
        count: int,
        download: Followable | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(status=status, headers=headers)
        self._on_close = on_close
        self._file: IO[bytes] = open(fd, "rb", buffering=0, closefd=True)  # noqa: SIM115 - closed in prepare
        self._offset = offset
        self._count = count
        self._download = download
        self.sent = 0
        self.outcome = ""

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        """Headers, then the body; ends with the response sent, the client gone, or the connection aborted.

        Never raises for a client hanging up or a failed download: aiohttp then finishes quietly, and
        ``outcome`` tells the access log what happened.
        """
        if self.prepared:  # already streamed by the middleware; aiohttp calls prepare again
            return await super().prepare(request)
        try:
            writer = await super().prepare(request)
            if request.method != "HEAD" and self._count:
                if self._download is None:
                    await self._send(request, self._offset, self._count)
                else:
                    await self._follow(request)
            await super().write_eof()
            return writer
        except ConnectionError:
            self.outcome = "client-gone"
        except RegistryError as exc:  # the download failed: never complete a response with unverified bytes
            self.outcome = "aborted"
            log.warning("aborted %s after %d bytes: %s", request.path, self.sent, exc.message)
            _abort(request)
        finally:
            self._file.close()
            if self._on_close is not None:
                self._on_close()
        return None

    async def _follow(self, request: web.BaseRequest) -> None:
        download = self._download
        assert download is not None
        pos, end = self._offset, self._offset + self._count
        while pos < end:
            available = await download.wait_sendable(pos)
            n = min(available, end) - pos
            if n > 0:
                await self._send(request, pos, n)
                pos += n

    async def _send(self, request: web.BaseRequest, offset: int, count: int) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away")
        loop = asyncio.get_running_loop()
        try:
            await loop.sendfile(transport, self._file, offset, count, fallback=False)
        except (NotImplementedError, asyncio.SendfileNotAvailableError):
            await self._copy(offset, count)
        self.sent += count

    async def _copy(self, offset: int, count: int) -> None:
        """Read/write fallback for event loops without native sendfile (uvloop, TLS)."""
        fd = self._file.fileno()
        loop = asyncio.get_running_loop()
        end = offset + count
        while offset < end:
            chunk = await loop.run_in_executor(None, os.pread, fd, min(_COPY_CHUNK, end - offset), offset)
            if not chunk:
                raise ConnectionResetError("blob shorter than expected")
            await self.write(chunk)
            offset += len(chunk)


def _abort(request: web.BaseRequest) -> None:
    if request.transport is not None:
        request.transport.abort()
