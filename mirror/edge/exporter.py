"""``shoal export``: write images from a cache into a bundle, with no network at all.

Everything is decided before a byte is written: the tags of each IMAGE (every ``Accept`` variant the cache
holds), the manifests and blobs they need, and that all of them are cached. Then the index and the content
stream through tar and zstd into ``FILE.partial``, which is renamed over ``FILE`` only when complete, so memory
stays flat whatever the size and a failed export leaves no half bundle behind. Blobs are re-hashed on the
way out: bit rot in the cache is reported rather than carried to the other side.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from mirror.edge.bundle import INDEX_NAME, BundleIndex, BundleTag, member_name
from mirror.edge.graph import Closure, image_closure, manifest_matches
from mirror.edge.images import ImageRef, PlatformFilter
from mirror.oci.reference import Digest
from mirror.store.files import FileStore
from mirror.store.tags import TagEntry, TagKey, TagStore

log = logging.getLogger("shoal.export")

CHUNK = 1 << 20


class ExportError(Exception):
    """An image is not (completely) in the cache, or the cache is damaged; one line for the operator."""


@dataclass(frozen=True, slots=True)
class ExportSummary:
    images: int
    tags: int
    manifests: int
    blobs: int
    bytes: int  # uncompressed content
    written: int  # bundle size on disk
    skipped_platforms: tuple[str, ...]


def plan(store: FileStore, tags: TagStore, images: list[ImageRef], platforms: PlatformFilter | None) -> BundleIndex:
    """The bundle's index for ``images``; raises ExportError naming every image that cannot be exported."""
    index = BundleIndex(created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    variants: dict[tuple[str, str, str], list[tuple[TagKey, TagEntry]]] = {}
    if any(image.digest is None for image in images):
        for key, entry in tags.items():
            variants.setdefault((key.registry, key.repository, key.tag), []).append((key, entry))
    problems: list[str] = []
    for image in images:
        found: list[BundleTag] = []
        if image.digest is not None:
            closure = image_closure(store, image.digest, platforms)
        else:
            recorded = variants.get((image.registry, image.repository, str(image.tag)), [])
            if not recorded:
                problems.append(f"{image}: tag not in the cache (prefetch it first)")
                continue
            closure, found = _tag_closure(store, recorded, platforms)
        if closure.missing:
            problems.append(f"{image}: not completely cached: {_shorten(closure.missing)}")
            continue
        index.tags.extend(found)
        index.manifests.update(closure.manifests)
        index.blobs.update(closure.blobs)
        index.images.append(
            {
                "image": str(image),
                "digest": found[0].digest if found else str(image.digest),
                "platforms": sorted(set(closure.platforms)),
                "skipped_platforms": sorted(set(closure.skipped)),
            }
        )
    if problems:
        raise ExportError("; ".join(problems))
    return index


def _tag_closure(
    store: FileStore, recorded: list[tuple[TagKey, TagEntry]], platforms: PlatformFilter | None
) -> tuple[Closure, list[BundleTag]]:
    """Every ``Accept`` variant of a tag whose content is complete; one complete variant is enough."""
    closure, found, missing = Closure(), list[BundleTag](), list[str]()
    for key, entry in recorded:
        sub = image_closure(store, Digest.parse(entry.digest), platforms)
        if sub.missing:
            missing.extend(sub.missing)
            continue
        closure.merge(sub)
        found.append(BundleTag(**asdict(key), **asdict(entry)))
    if not found:
        closure.missing = missing
    return closure, found


def _shorten(items: list[str], limit: int = 3) -> str:
    unique = list(dict.fromkeys(items))
    more = f" and {len(unique) - limit} more" if len(unique) > limit else ""
    return ", ".join(unique[:limit]) + more


class _HashingReader:
    """Reads a cached blob for tar while hashing it; a mismatch at the end fails the export."""

    def __init__(self, f: BinaryIO, digest: Digest, on_bytes: Callable[[int], None]) -> None:
        self._f = f
        self._digest = digest
        self._hash = hashlib.new(digest.algorithm)
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._hash.update(data)
        self._on_bytes(len(data))
        return data

    def check(self) -> None:
        if self._hash.hexdigest() != self._digest.hex:
            raise ExportError(f"cached blob {self._digest} is corrupt; run shoal verify --repair, then prefetch again")


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    info.uname = info.gname = "root"
    return info


def write_bundle(
    store: FileStore, index: BundleIndex, output: Path, level: int = 3, on_bytes: Callable[[int], None] | None = None
) -> int:
    """Stream the index, manifests and blobs into ``output``; returns the bundle's size in bytes."""
    partial = output.with_name(output.name + ".partial")
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=-1)
    try:
        with open(partial, "wb") as raw:
            with (
                compressor.stream_writer(raw, closefd=False) as zout,
                tarfile.open(fileobj=zout, mode="w|", format=tarfile.USTAR_FORMAT, bufsize=CHUNK) as tar,
            ):
                _write_members(tar, store, index, on_bytes or (lambda n: None))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return output.stat().st_size


def _write_members(tar: tarfile.TarFile, store: FileStore, index: BundleIndex, progress: Callable[[int], None]) -> None:
    body = index.to_json()
    tar.addfile(_info(INDEX_NAME, len(body)), io.BytesIO(body))
    for digest, (_, size) in index.manifests.items():
        stored = store.read_manifest(digest)
        if stored is None or len(stored.body) != size:
            raise ExportError(f"manifest {digest} left the cache during the export")
        if not manifest_matches(digest, stored.media_type, stored.body):
            raise ExportError(f"cached manifest {digest} is corrupt; run shoal verify --repair")
        tar.addfile(_info(member_name("manifests", digest), size), io.BytesIO(stored.body))
        progress(size)
    for digest, size in index.blobs.items():
        try:
            f = open(store.blob_path(digest), "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            raise ExportError(f"blob {digest} left the cache during the export") from None
        with f:
            if os.fstat(f.fileno()).st_size != size:
                raise ExportError(f"cached blob {digest} changed size during the export")
            reader = _HashingReader(f, digest, progress)
            tar.addfile(_info(member_name("blobs", digest), size), reader)
            reader.check()


def export_images(
    cache_dir: Path,
    images: list[ImageRef],
    output: Path,
    platforms: PlatformFilter | None,
    level: int = 3,
    on_bytes: Callable[[int], None] | None = None,
) -> ExportSummary:
    if not (cache_dir / "manifests").is_dir():
        raise ExportError(f"{cache_dir} is not a Shoal cache (no manifests/ directory)")
    store, tags = FileStore(cache_dir), TagStore(cache_dir)
    index = plan(store, tags, images, platforms)
    written = write_bundle(store, index, output, level, on_bytes)
    skipped = tuple(sorted({p for i in index.images for p in i["skipped_platforms"]}))
    return ExportSummary(
        len(images), len(index.tags), len(index.manifests), len(index.blobs), index.total_bytes, written, skipped
    )
