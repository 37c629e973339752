"""``shoal import``: bring a bundle into a cache, all or nothing.

The bundle streams through zstd and tar (memory stays flat) into a staging store inside the cache directory
(same filesystem): every blob goes through the FileStore's :class:`BlobWriter` and every manifest through
``write_manifest``, which hash, check the size and fsync. Only when the whole bundle has been read, every
object the index lists has arrived and verified, and the zstd stream ended exactly at a frame boundary (its
checksum checked), are the staged files renamed into the cache — blobs first, then manifests, then tags.
A corrupt, truncated or foreign bundle is refused with one line and the cache is left as it was.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import zstandard

from mirror.edge.bundle import INDEX_NAME, MAX_INDEX_BYTES, BundleError, BundleIndex, expand_tags, parse_member_name
from mirror.edge.zstdframes import FrameError, FrameTracker
from mirror.oci.reference import Digest
from mirror.store.files import FileStore, IntegrityError
from mirror.store.tags import TagStore

CHUNK = 1 << 20
STAGING_PREFIX = ".import-"


@dataclass(frozen=True, slots=True)
class ImportSummary:
    manifests: int
    blobs: int
    new_manifests: int
    new_blobs: int
    bytes: int
    tags: int  # tag resolutions in the bundle
    tag_keys: int  # tag cache entries written (one per Accept variant a client may send)


class _TrackedInput:
    """The raw bundle file as zstd reads it, watched by a :class:`FrameTracker`."""

    def __init__(self, f: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self._f = f
        self.tracker = FrameTracker()
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        try:
            self.tracker.feed(data)
        except FrameError as exc:
            raise BundleError(f"not a zstd-compressed bundle: {exc}") from None
        self._on_bytes(len(data))
        return data

    @property
    def cut_short(self) -> bool:
        """All of the file has been read and it stopped inside a zstd frame."""
        return self._f.tell() >= os.fstat(self._f.fileno()).st_size and not self.tracker.complete


def remove_stale_staging(cache_dir: Path) -> None:
    """Staging directories of imports whose process is gone (killed mid-import)."""
    for path in cache_dir.glob(f"{STAGING_PREFIX}*"):
        try:
            pid = int(path.name[len(STAGING_PREFIX) :].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


async def import_bundle(cache_dir: Path, bundle: Path, on_bytes: Callable[[int], None] | None = None) -> ImportSummary:
    """Import ``bundle`` into the cache at ``cache_dir``; raises BundleError (cache unchanged) if it is bad."""
    raw = await asyncio.to_thread(open, bundle, "rb")
    try:
        staging = await asyncio.to_thread(_prepare, cache_dir)
        try:
            index = await _stage(FileStore(staging), _TrackedInput(raw, on_bytes or (lambda n: None)))
            return await asyncio.to_thread(_commit, FileStore(staging), cache_dir, index)
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
    finally:
        raw.close()


def _prepare(cache_dir: Path) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(cache_dir)
    return cache_dir / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


async def _stage(stage: FileStore, source: _TrackedInput) -> BundleIndex:
    reader = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], source), read_size=CHUNK, read_across_frames=True
    )
    try:
        tar = await asyncio.to_thread(tarfile.open, fileobj=reader, mode="r|", bufsize=CHUNK)
        index = await _read_index(tar)
        seen: set[tuple[str, Digest]] = set()
        while (member := await asyncio.to_thread(tar.next)) is not None:
            kind, digest = parse_member_name(member.name)
            listed = index.manifests.get(digest, (None, None))[1] if kind == "manifests" else index.blobs.get(digest)
            if not member.isreg():
                raise BundleError(f"member {member.name} is not a regular file")
            if listed is None:
                raise BundleError(f"{kind[:-1]} {digest} is not listed in the bundle's index")
            if (kind, digest) in seen:
                raise BundleError(f"{kind[:-1]} {digest} appears twice")
            if member.size != listed:
                raise BundleError(f"{kind[:-1]} {digest} is {member.size} bytes, the index says {listed}")
            seen.add((kind, digest))
            data = tar.extractfile(member)
            assert data is not None
            if kind == "manifests":
                body = await asyncio.to_thread(data.read, member.size + 1)
                await asyncio.to_thread(stage.write_manifest, digest, index.manifests[digest][0], body)
            else:
                await _stage_blob(stage, digest, member.size, data)
        missing = len(index.manifests) + len(index.blobs) - len(seen)
        if missing:
            raise BundleError(f"bundle is truncated: {missing} of the objects its index lists are missing")
        await asyncio.to_thread(_drain, reader, source)
    except IntegrityError as exc:
        raise BundleError(f"bundle is corrupt: {exc}") from None
    except (zstandard.ZstdError, tarfile.TarError, EOFError) as exc:
        if source.cut_short:
            raise BundleError(f"bundle is truncated after {source.tracker.consumed} bytes") from None
        raise BundleError(f"bundle is corrupt: {exc}") from None
    return index


async def _read_index(tar: tarfile.TarFile) -> BundleIndex:
    first = await asyncio.to_thread(tar.next)
    if first is None or first.name != INDEX_NAME or not first.isreg():
        raise BundleError(f"not a Shoal bundle: the first member must be {INDEX_NAME}")
    if first.size > MAX_INDEX_BYTES:
        raise BundleError(f"bundle index is larger than {MAX_INDEX_BYTES} bytes")
    data = tar.extractfile(first)
    assert data is not None
    raw = await asyncio.to_thread(data.read, first.size)
    if len(raw) != first.size:
        raise BundleError("bundle is truncated inside its index")
    return BundleIndex.from_json(raw)


async def _stage_blob(stage: FileStore, digest: Digest, size: int, data: IO[bytes]) -> None:
    writer = stage.blob_writer(digest, size)
    try:
        remaining = size
        while remaining:
            chunk = await asyncio.to_thread(data.read, min(CHUNK, remaining))
            if not chunk:
                raise BundleError(f"bundle is truncated inside blob {digest}")
            await writer.write(chunk)
            remaining -= len(chunk)
        await writer.commit()
    except BaseException:
        writer.discard()
        raise


def _drain(reader: IO[bytes], source: _TrackedInput) -> None:
    """Past the last member only tar's zero padding may follow, and the zstd stream must end a frame."""
    while chunk := reader.read(CHUNK):
        if chunk.count(0) != len(chunk):
            raise BundleError("unexpected data after the bundle's last member")
    while source.read(CHUNK):
        pass
    if not source.tracker.complete:
        raise BundleError("bundle is truncated: the compressed stream stops in the middle of a frame")


def _commit(stage: FileStore, cache_dir: Path, index: BundleIndex) -> ImportSummary:
    """Rename the verified objects into the cache (blobs, then manifests), then record the tags."""
    store = FileStore(cache_dir)
    new_blobs = sum(_place(stage.blob_path(d), store.blob_path(d)) for d in index.blobs)
    new_manifests = sum(_place(stage.manifest_path(d), store.manifest_path(d)) for d in index.manifests)
    tags = TagStore(cache_dir)
    written = 0
    for key, entry in expand_tags(index.tags).items():
        current = tags.get(key)
        if current is None or current.fetched_at <= entry.fetched_at:
            tags.put(key, entry)
            written += 1
    return ImportSummary(
        len(index.manifests),
        len(index.blobs),
        new_manifests,
        new_blobs,
        index.total_bytes,
        len(index.tags),
        written,
    )


def _place(staged: Path, final: Path) -> bool:
    """Move one verified object into the cache; an object the cache already holds stays as it is."""
    if final.exists():
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    return True
