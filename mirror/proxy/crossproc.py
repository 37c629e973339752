"""Single flight across worker processes sharing one cache (``--workers N``).

Each worker has its own in-flight table; across workers, a per-digest lock file in ``tmp/`` decides who
downloads. The owner holds an exclusive ``flock`` on ``tmp/<hex>.lock`` and writes the name of its temp file
and the blob size into it; a worker that loses the race follows that temp file from disk, polling its size,
exactly as a client of the owner would, with the same rule that the last byte waits until the blob is
verified (here: visible under ``blobs/`` on the same inode). If the owner dies or fails, its lock is released
and the follower reports the failure; the next request starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from mirror.oci.errors import BlobUnknown, RegistryError, TooManyRequests, Unavailable
from mirror.proxy.inflight import sendable_bytes

_POLL = 0.005
_META_BYTES = 4096


class DigestLock:
    """The exclusive right, among processes, to download one digest."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def try_acquire(cls, tmp_dir: Path, hex_digest: str) -> DigestLock | ForeignDownload:
        """The lock, or a follower of the process that holds it."""
        path = tmp_dir / f"{hex_digest}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return ForeignDownload(fd, tmp_dir)
        os.ftruncate(fd, 0)
        return cls(fd, path)

    def publish(self, part: Path, size: int | None) -> None:
        """Tell followers in other workers where the bytes are going."""
        os.pwrite(self.fd, json.dumps({"part": part.name, "size": size}).encode(), 0)

    def fail(self, exc: BaseException) -> None:
        """Leave the reason for followers, so their clients get the same answer (a 404 stays a 404)."""
        err = exc if isinstance(exc, RegistryError) else Unavailable(str(exc))
        retry = getattr(err, "retry_after", None)
        doc = {"error": {"code": err.code, "message": err.message, "retry_after": retry}}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(doc).encode(), 0)

    def release(self) -> None:
        """After the blob is committed (or failed): unlink first, so nobody new queues on this inode."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)  # drops the flock


class ForeignDownload:
    """A download owned by another worker, followed through its temp file.

    Offers what blob responses need from :class:`mirror.proxy.inflight.Download`: ``size``, ``received``,
    ``done``, ``source``, ``upstream``, ``wait_sendable`` and ``wait_received``.
    """

    source = "upstream"
    upstream = "other-worker"

    def __init__(self, lock_fd: int, tmp_dir: Path) -> None:
        self._lock_fd = lock_fd
        self._tmp_dir = tmp_dir
        self._part_fd: int | None = None
        self.size: int | None = None
        self.received = 0
        self.done = False
        self.error: BaseException | None = None
        self.final_path: Path | None = None

    def close(self) -> None:
        for fd in (self._part_fd, self._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._part_fd = None

    def _refresh(self) -> None:
        if self.done or self.error is not None:
            return
        if self._part_fd is None:
            meta = self._meta()
            if "part" in meta:
                with contextlib.suppress(OSError):
                    self._part_fd = os.open(self._tmp_dir / str(meta["part"]), os.O_RDONLY | os.O_CLOEXEC)
                    self.size = meta.get("size")
        if self._part_fd is not None:
            st = os.fstat(self._part_fd)
            self.received = st.st_size
            final = self.final_path
            with contextlib.suppress(FileNotFoundError):
                if final is not None and os.stat(final).st_ino == st.st_ino:
                    self.done, self.size = True, st.st_size
                    return
        if self._owner_gone():
            self._settle_after_owner()

    def _meta(self) -> dict[str, Any]:
        raw = os.pread(self._lock_fd, _META_BYTES, 0)
        try:
            meta = json.loads(raw) if raw else {}
        except ValueError:  # caught mid-write
            return {}
        return meta if isinstance(meta, dict) else {}

    def _owner_gone(self) -> bool:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        return True

    def _settle_after_owner(self) -> None:
        """The owner let go: the blob is either committed (same inode as what we read) or it failed."""
        final = self.final_path
        try:
            final_st = os.stat(final) if final is not None else None
        except FileNotFoundError:
            final_st = None
        if final_st is not None and self._part_fd is None and final is not None:
            self._part_fd = os.open(final, os.O_RDONLY | os.O_CLOEXEC)  # committed before we looked
        if final_st is not None and self._part_fd is not None and os.fstat(self._part_fd).st_ino == final_st.st_ino:
            self.done, self.size, self.received = True, final_st.st_size, final_st.st_size
        else:
            self.error = _owner_error(self._meta().get("error"))

    # the Download interface ------------------------------------------------------------------------------

    async def begun(self) -> None:
        """Wait until the size is known (or the blob is done); raises if the owner failed first."""
        while self.size is None and not self.done:
            self._refresh()
            if self.error is not None:
                raise self.error
            if self.size is None and not self.done:
                await asyncio.sleep(_POLL)

    def attach(self) -> int:
        assert self._part_fd is not None
        return os.open(f"/proc/self/fd/{self._part_fd}", os.O_RDONLY | os.O_CLOEXEC)

    def sendable(self) -> int:
        return sendable_bytes(self.received, self.size, self.done)

    async def wait_sendable(self, offset: int) -> int:
        while True:
            self._refresh()
            if self.error is not None:
                raise self.error
            if self.done or self.sendable() > offset:
                return self.sendable()
            await asyncio.sleep(_POLL)

    async def wait_received(self, offset: int) -> None:
        while True:
            self._refresh()
            if self.error is not None:
                raise self.error
            if self.done or self.received > offset:
                return
            await asyncio.sleep(_POLL)


def _owner_error(doc: object) -> RegistryError:
    """The owner's error as the follower's client should see it."""
    if not isinstance(doc, dict):
        return Unavailable("the download in another worker failed; try again")
    message = str(doc.get("message") or "")
    if doc.get("code") == BlobUnknown.code:
        return BlobUnknown(message)
    if doc.get("code") == TooManyRequests.code:
        return TooManyRequests(int(doc.get("retry_after") or 30), message)
    return Unavailable(message or None)
