"""One download per digest, however many clients want it.

A :class:`Download` is owned by the blob service, not by any client request: clients attach to it, read what
has already reached the temp file, and wait for more. A client hanging up detaches; the download goes on and
is committed for the next client. The last bytes of a blob are held back from every client until the whole
blob has verified, so no response is ever completed with bytes that do not hash to the digest.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol


def sendable_bytes(received: int, size: int | None, done: bool) -> int:
    """Bytes a client may be sent now: everything once verified, else never the blob's last byte."""
    if done:
        return received
    if size is None:
        return max(0, received - 1)
    return min(received, size - 1)


class Followable(Protocol):
    """What a client response needs from a download: this process's own, or another worker's."""

    size: int | None
    received: int
    done: bool
    source: str
    upstream: str

    async def wait_sendable(self, offset: int) -> int: ...

    async def wait_received(self, offset: int) -> None: ...


class Download:
    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.size: int | None = None
        self.received = 0
        self.done = False
        self.error: BaseException | None = None
        self.source = "upstream"
        self.upstream = ""
        self._read_fd: int | None = None
        self._loop = asyncio.get_running_loop()
        self._changed: asyncio.Future[None] = self._loop.create_future()  # resolved, then replaced, on news
        self.started: asyncio.Future[None] = self._loop.create_future()

    # writer side ---------------------------------------------------------------------------------------

    def begin(self, path: Path, size: int | None, upstream: str, source: str = "upstream") -> None:
        """The temp file exists and the size is known: clients may attach now."""
        self._read_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.size, self.upstream, self.source = size, upstream, source
        if not self.started.done():
            self.started.set_result(None)

    def advance(self, n: int) -> None:
        """``n`` more bytes are on disk (synchronous: callable from a write's done-callback)."""
        self.received += n
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, self._loop.create_future()
        changed.set_result(None)

    async def _wait(self, ready: Callable[[], bool]) -> None:
        while not (self.error is not None or self.done or ready()):
            await asyncio.wait({self._changed})  # not `await`: a cancelled waiter must not cancel the others
        if self.error is not None:
            raise self.error

    async def finish(self, error: BaseException | None = None) -> None:
        if error is None:
            self.done = True
            self.size = self.received
        else:
            self.error = error
            if not self.started.done():
                self.started.set_exception(error)
                self.started.exception()  # retrieved: a waiter may not exist
        self._notify()

    def close(self) -> None:
        if self._read_fd is not None:
            os.close(self._read_fd)
            self._read_fd = None

    # reader side ---------------------------------------------------------------------------------------

    @property
    def attachable(self) -> bool:
        return self._read_fd is not None

    def attach(self) -> int:
        """A private read-only fd on the download's file (valid across the final rename).

        Must be called synchronously right after finding the download, so the owner cannot close the
        shared fd in between.
        """
        assert self._read_fd is not None, "attach before begin"
        return os.open(f"/proc/self/fd/{self._read_fd}", os.O_RDONLY | os.O_CLOEXEC)

    def sendable(self) -> int:
        return sendable_bytes(self.received, self.size, self.done)

    async def wait_sendable(self, offset: int) -> int:
        """Wait until more than ``offset`` bytes may be sent; raises the download's error if it failed."""
        await self._wait(lambda: self.sendable() > offset)
        return self.sendable()

    async def wait_received(self, offset: int) -> None:
        """Wait until byte ``offset`` has arrived (Range requests served from what has arrived)."""
        await self._wait(lambda: self.received > offset)


class InflightTable:
    """Downloads in progress, by digest. Held by the blob service instance, not a global."""

    def __init__(self) -> None:
        self._downloads: dict[str, Download] = {}
        self._tasks: dict[asyncio.Task[None], Download] = {}

    def get(self, digest: str) -> Download | None:
        return self._downloads.get(digest)

    def __len__(self) -> int:
        return len(self._downloads)

    def start(self, digest: str, run: Callable[[Download], Awaitable[None]]) -> Download:
        """Register a download and run ``run(download)`` detached from any client request."""
        download = Download(digest)
        self._downloads[digest] = download

        async def runner() -> None:
            try:
                await run(download)
            finally:
                self._downloads.pop(digest, None)
                download.close()

        task = asyncio.get_running_loop().create_task(runner(), name=f"download {digest[:19]}")
        self._tasks[task] = download
        task.add_done_callback(lambda t: self._tasks.pop(t, None))
        return download

    async def shutdown(self, grace: float = 10.0) -> None:
        """Let downloads in progress finish (and be committed) for up to ``grace`` seconds, then cancel the
        rest: a SIGTERM during a pull should not throw away a layer that is nearly or entirely downloaded."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
