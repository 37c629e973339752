"""The content-addressed disk cache.

Layout under the cache root::

    blobs/sha256/ab/<hex>          layer and config bytes, exactly as upstream sent them
    manifests/sha256/ab/<hex>      "<media type>\\n" followed by the manifest's exact bytes
    tmp/                           downloads in progress; emptied at start-up

Nothing appears under ``blobs/`` or ``manifests/`` unless its size and digest were verified: writers hash as
they write to a temp file on the same filesystem, fsync, and ``os.replace`` only on a match. A reader that
opened a temp file keeps reading the same inode after the rename, which is what lets late joiners of an
in-flight download follow it from disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mirror.oci.manifest import schema1_payload
from mirror.oci.mediatypes import DOCKER_SCHEMA1_SIGNED
from mirror.oci.reference import Digest


class IntegrityError(Exception):
    """Downloaded bytes did not match the expected digest or size; nothing was committed."""


@dataclass(frozen=True, slots=True)
class StoredManifest:
    media_type: str
    body: bytes


class BlobWriter:
    """Writes one blob to a temp file while hashing it; :meth:`commit` makes it visible only if it verifies.

    Writes and hashing run in a worker thread (hashlib releases the GIL), so a multi-GB layer never blocks
    the event loop.
    """

    def __init__(self, final_path: Path, tmp_dir: Path, digest: Digest, expected_size: int | None) -> None:
        self.digest = digest
        self.expected_size = expected_size
        self.final_path = final_path
        self.path = tmp_dir / f"{digest.hex}.{secrets.token_hex(4)}.part"
        self._fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644)
        self._hash = hashlib.new(digest.algorithm)
        self.size = 0
        self._closed = False

    def _hash_sync(self, chunks: list[bytes]) -> None:
        for data in chunks:
            self._hash.update(data)

    def _write_sync(self, chunks: list[bytes], offset: int) -> None:
        for data in chunks:
            view = memoryview(data)
            while view:
                written = os.pwrite(self._fd, view, offset)
                view, offset = view[written:], offset + written

    def submit(self, chunks: list[bytes]) -> asyncio.Future[int]:
        """Hash and write ``chunks`` in two worker threads at once; the future gives the byte count once both
        are done (the bytes are on disk and hashed).

        Submissions must not overlap (wait for one before the next): hashing must see the bytes in order,
        while the caller goes on receiving the next chunks.
        """
        n = sum(len(c) for c in chunks)
        if self.expected_size is not None and self.size + n > self.expected_size:
            raise IntegrityError(f"{self.digest}: more bytes than the expected {self.expected_size}")
        offset, self.size = self.size, self.size + n
        loop = asyncio.get_running_loop()
        hashed = loop.run_in_executor(None, self._hash_sync, chunks)
        written = loop.run_in_executor(None, self._write_sync, chunks, offset)

        async def both() -> int:
            await asyncio.gather(hashed, written)
            return n

        return asyncio.ensure_future(both())

    async def write(self, data: bytes) -> None:
        await self.submit([data])

    def _verify_sync(self) -> None:
        try:
            if self.expected_size is not None and self.size != self.expected_size:
                raise IntegrityError(f"{self.digest}: got {self.size} bytes, expected {self.expected_size}")
            actual = self._hash.hexdigest()
            if actual != self.digest.hex:
                raise IntegrityError(f"{self.digest}: content hashes to {self.digest.algorithm}:{actual}")
        except BaseException:
            self._discard_sync()
            raise

    async def verify(self) -> None:
        """Check size and digest; the temp file is discarded on a mismatch. Nothing is visible yet."""
        await asyncio.get_running_loop().run_in_executor(None, self._verify_sync)

    def _persist_sync(self) -> None:
        try:
            os.fsync(self._fd)
            self.final_path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path, self.final_path)
        except BaseException:
            self._discard_sync()
            raise
        finally:
            self._close()

    async def persist(self) -> None:
        """fsync and rename into place: the blob becomes visible in the cache. Call after :meth:`verify`."""
        await asyncio.get_running_loop().run_in_executor(None, self._persist_sync)

    async def commit(self) -> None:
        """verify, then persist."""
        await self.verify()
        await self.persist()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def _discard_sync(self) -> None:
        self._close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def discard(self) -> None:
        """Drop the temp file; safe to call more than once and after a failed commit."""
        self._discard_sync()


class FileStore:
    """Blobs and manifests on the local filesystem, addressed by digest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self._blobs = f"{root}/blobs/"  # plain strings: pathlib costs ~5 us per cache hit
        for sub in ("blobs", "manifests", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def clean_temp(self) -> int:
        """Remove leftovers of downloads interrupted by a crash; returns how many were removed."""
        removed = 0
        for entry in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
        return removed

    # blobs ---------------------------------------------------------------------------------------------

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex[:2] / digest.hex

    def open_blob(self, digest: Digest) -> tuple[int, int] | None:
        """An open read-only fd and its size, or None. Cheap enough to call inline on the hot path."""
        try:
            fd = os.open(f"{self._blobs}{digest.algorithm}/{digest.hex[:2]}/{digest.hex}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        return fd, os.fstat(fd).st_size

    def blob_size(self, digest: Digest) -> int | None:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def blob_writer(self, digest: Digest, expected_size: int | None) -> BlobWriter:
        return BlobWriter(self.blob_path(digest), self.tmp_dir, digest, expected_size)

    def delete_blob(self, digest: Digest) -> bool:
        return _unlink(self.blob_path(digest))

    def iter_blobs(self) -> Iterator[tuple[Digest, Path]]:
        yield from self._iter("blobs")

    # manifests -----------------------------------------------------------------------------------------

    def manifest_path(self, digest: Digest) -> Path:
        return self.root / "manifests" / digest.algorithm / digest.hex[:2] / digest.hex

    def read_manifest(self, digest: Digest) -> StoredManifest | None:
        try:
            raw = self.manifest_path(digest).read_bytes()
        except FileNotFoundError:
            return None
        media_type, _, body = raw.partition(b"\n")
        return StoredManifest(media_type.decode(), body)

    def write_manifest(self, digest: Digest, media_type: str, body: bytes) -> None:
        """Verify and store a manifest (blocking; call from a thread). Raises IntegrityError on mismatch."""
        content = schema1_payload(body) if media_type == DOCKER_SCHEMA1_SIGNED else body
        if hashlib.new(digest.algorithm, content or body).hexdigest() != digest.hex:
            raise IntegrityError(f"manifest does not hash to {digest}")
        final = self.manifest_path(digest)
        tmp = self.tmp_dir / f"m-{digest.hex}.{secrets.token_hex(4)}.part"
        try:
            with open(tmp, "wb") as f:
                f.write(media_type.encode() + b"\n" + body)
                f.flush()
                os.fsync(f.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def delete_manifest(self, digest: Digest) -> bool:
        return _unlink(self.manifest_path(digest))

    def iter_manifests(self) -> Iterator[tuple[Digest, Path]]:
        yield from self._iter("manifests")

    def _iter(self, kind: str) -> Iterator[tuple[Digest, Path]]:
        base = self.root / kind
        for algo_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for path in sorted(algo_dir.glob("??/*")):
                yield Digest(algo_dir.name, path.name), path


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
