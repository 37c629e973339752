"""Prefetch (preheat): resolve images and pull every manifest, config and layer they need into a mirror.

The walk is written once against a two-method :class:`Source`, so the same logic runs from the command line
over HTTP against any running mirror (``mirror.edge.http_source``) and in-process behind ``POST
/admin/prefetch`` through the mirror's own services (``mirror.edge.local_source``). Tags are resolved, indexes
walked to the platforms asked for (or all of them), and the blobs of all images fetched a few at a time,
each once. Failures are collected, never raised: one bad image does not stop the others, and the caller
turns a non-empty failure list into a non-zero exit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mirror.edge.graph import MAX_DEPTH, is_distributable
from mirror.edge.images import ImageRef, PlatformFilter
from mirror.oci import mediatypes
from mirror.oci.errors import ManifestInvalid
from mirror.oci.manifest import Descriptor, parse_refs
from mirror.oci.reference import Digest

# What prefetch asks for when resolving a tag: the set containerd and docker send, so the tag resolution a
# node's runtime will look up is the one warmed.
PREFETCH_ACCEPT: tuple[str, ...] = tuple(sorted(mediatypes.DEFAULT_ACCEPT))


class PrefetchError(Exception):
    """One manifest or blob could not be fetched; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    digest: Digest
    media_type: str
    body: bytes


class Source(Protocol):
    async def manifest(self, image: ImageRef, reference: str) -> FetchedManifest:
        """Fetch (and so cache) a manifest by tag or digest; raises PrefetchError."""
        ...

    async def blob(self, image: ImageRef, digest: Digest, size: int, on_bytes: Callable[[int], None]) -> None:
        """Fetch (and so cache) a whole blob, reporting bytes as they pass; raises PrefetchError."""
        ...


@dataclass(slots=True)
class Progress:
    """Counters a reporter draws from; updated as the walk goes."""

    images: int = 0
    images_done: int = 0
    manifests: int = 0
    blobs: int = 0
    blobs_done: int = 0
    blobs_failed: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class Reporter(Protocol):
    def event(self, progress: Progress, message: str) -> None:
        """Something finished (a manifest, a blob, an image) or failed (message starts with ``FAILED``)."""
        ...

    def tick(self, progress: Progress) -> None:
        """Bytes arrived."""
        ...


class SilentReporter:
    def event(self, progress: Progress, message: str) -> None:
        pass

    def tick(self, progress: Progress) -> None:
        pass


@dataclass(slots=True)
class ImageResult:
    image: ImageRef
    digest: str | None = None
    platforms: list[str] = field(default_factory=list)
    blobs: dict[Digest, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def short(digest: Digest | str) -> str:
    text = str(digest)
    algorithm, _, hex_ = text.partition(":")
    return f"{algorithm}:{hex_[:12]}"


class Prefetcher:
    def __init__(self, source: Source, platforms: PlatformFilter, reporter: Reporter | None = None, jobs: int = 4):
        self.source = source
        self.platforms = platforms
        self.reporter: Reporter = reporter or SilentReporter()
        self.jobs = max(1, jobs)
        self.progress = Progress()
        self._manifest_slots: asyncio.Semaphore | None = None

    async def run(self, images: list[ImageRef]) -> list[ImageResult]:
        """Resolve every image, then fetch all their blobs (each digest once); returns one result per image."""
        self.progress.images = len(images)
        self._manifest_slots = asyncio.Semaphore(self.jobs * 2)
        results = [ImageResult(image) for image in images]
        await asyncio.gather(*(self._resolve(r) for r in results))
        owners: dict[Digest, tuple[ImageRef, int, list[ImageResult]]] = {}
        for result in results:
            for digest, size in result.blobs.items():
                owners.setdefault(digest, (result.image, size, []))[2].append(result)
        self.progress.blobs = len(owners)
        self.progress.bytes_total = sum(size for _, size, _ in owners.values())
        limit = asyncio.Semaphore(self.jobs)

        async def fetch(digest: Digest, image: ImageRef, size: int, wanted_by: list[ImageResult]) -> None:
            async with limit:
                error = await self._blob(image, digest, size)
            for result in wanted_by:
                if error:
                    result.failures.append(error)
            self.progress.blobs_done += 1

        await asyncio.gather(*(fetch(d, image, size, users) for d, (image, size, users) in owners.items()))
        for result in results:
            self.progress.images_done += 1
            state = "FAILED" if result.failures else "done"
            platforms = f" [{', '.join(result.platforms)}]" if result.platforms else ""
            self.reporter.event(self.progress, f"{state} {result.image}{platforms} {short(result.digest or '-')}")
        return results

    def _fail(self, result: ImageResult, message: str) -> None:
        result.failures.append(message)
        self.progress.failures.append(message)
        self.reporter.event(self.progress, f"FAILED {message}")

    async def _manifest(self, result: ImageResult, reference: str) -> FetchedManifest | None:
        assert self._manifest_slots is not None
        try:
            async with self._manifest_slots:
                manifest = await self.source.manifest(result.image, reference)
        except PrefetchError as exc:
            self._fail(result, f"{result.image}: manifest {reference}: {exc}")
            return None
        self.progress.manifests += 1
        self.reporter.event(self.progress, f"manifest {result.image.repository} {short(manifest.digest)}")
        return manifest

    async def _resolve(self, result: ImageResult) -> None:
        top = await self._manifest(result, result.image.reference)
        if top is not None:
            result.digest = str(top.digest)
            await self._walk(result, top, 0)

    async def _walk(self, result: ImageResult, manifest: FetchedManifest, depth: int) -> None:
        try:
            refs = parse_refs(manifest.body)
        except ManifestInvalid as exc:
            self._fail(result, f"{result.image}: {short(manifest.digest)}: {exc.message}")
            return
        if not (refs.manifests or manifest.media_type in mediatypes.INDEX_TYPES):
            for blob in refs.blobs:
                if is_distributable(blob):
                    result.blobs[blob.digest] = max(blob.size, 0)
            return
        if depth >= MAX_DEPTH:
            self._fail(result, f"{result.image}: indexes nested too deeply")
            return
        children = [c for c in refs.manifests if _is_index(c) or self.platforms.matches(c.platform)]
        if not children:
            offered = ", ".join(sorted({c.platform for c in refs.manifests if c.platform})) or "none"
            self._fail(result, f"{result.image}: no manifest for {self.platforms.describe()} (offers {offered})")
            return
        fetched = await asyncio.gather(*(self._manifest(result, str(c.digest)) for c in children))
        for child, sub in zip(children, fetched, strict=True):
            if sub is None:
                continue
            if child.platform and not _is_index(child):
                result.platforms.append(child.platform)
            await self._walk(result, sub, depth + 1)

    async def _blob(self, image: ImageRef, digest: Digest, size: int) -> str | None:
        def on_bytes(n: int) -> None:
            self.progress.bytes_done += n
            self.reporter.tick(self.progress)

        try:
            await self.source.blob(image, digest, size, on_bytes)
        except PrefetchError as exc:
            message = f"{image}: blob {short(digest)}: {exc}"
            self.progress.blobs_failed += 1
            self.progress.failures.append(message)
            self.reporter.event(self.progress, f"FAILED {message}")
            return message
        self.reporter.event(self.progress, f"blob {short(digest)} {size} bytes")
        return None


def _is_index(descriptor: Descriptor) -> bool:
    return descriptor.media_type in mediatypes.INDEX_TYPES
