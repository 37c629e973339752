"""Manifests and tags through the mirror.

By digest, a manifest never changes: memory, then disk, then upstream once (verified, then cached). By tag,
the last resolution is trusted for ``tag_ttl`` with no upstream request at all; after that it is revalidated
with a HEAD (HEADs do not count against Docker Hub's pull limit), and when every upstream fails the last known
digest is served (stale-if-error), logged once per tag and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from mirror import metrics
from mirror.oci import mediatypes
from mirror.oci.errors import ManifestInvalid, ManifestUnknown, RegistryError, TooManyRequests, Unavailable
from mirror.oci.manifest import check_size, parse_refs, schema1_payload
from mirror.oci.reference import Digest, ImageRef, Reference
from mirror.store.files import FileStore, IntegrityError, StoredManifest
from mirror.store.tags import TagEntry, TagKey, TagStore
from mirror.upstream.client import UpstreamClient

log = logging.getLogger("shoal.manifests")

T = TypeVar("T")
_TAG_HIT = metrics.CACHE.labels("tag", "hit")
_MANIFEST_HIT = metrics.CACHE.labels("manifest", "hit")


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: Digest
    media_type: str
    body: bytes
    source: str  # "cache" or "upstream"
    upstream: str = "-"
    stale: bool = False


class ManifestMemory:
    """A byte-bounded LRU of manifest bodies: the hot path for manifests never touches the disk."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, StoredManifest] = OrderedDict()
        self._bytes = 0

    def get(self, digest: str) -> StoredManifest | None:
        item = self._items.get(digest)
        if item is not None:
            self._items.move_to_end(digest)
        return item

    def put(self, digest: str, item: StoredManifest) -> None:
        if digest in self._items or len(item.body) > self.max_bytes:
            return
        self._items[digest] = item
        self._bytes += len(item.body)
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old.body)

    def discard(self, digest: str) -> None:
        item = self._items.pop(digest, None)
        if item is not None:
            self._bytes -= len(item.body)


class SingleFlight:
    """Concurrent callers with the same key share one call's result."""

    def __init__(self) -> None:
        self._calls: dict[object, asyncio.Future[Any]] = {}

    async def do(self, key: object, call: Callable[[], Awaitable[T]]) -> T:
        pending = self._calls.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[key] = future
        try:
            result = await call()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved when nobody joined
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._calls[key]


class ManifestService:
    def __init__(
        self,
        store: FileStore,
        tags: TagStore,
        upstream: UpstreamClient,
        tag_ttl: float,
        memory_bytes: int,
        offline: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.tags = tags
        self.upstream = upstream
        self.tag_ttl = tag_ttl
        self.offline = offline
        self.memory = ManifestMemory(memory_bytes)
        self._clock = clock
        self._flights = SingleFlight()
        self._stale_logged: set[TagKey] = set()

    async def get(self, registry: str, repository: str, ref: Reference, accepted: tuple[str, ...]) -> Manifest:
        if ref.digest is not None:
            return await self.by_digest(registry, repository, ref.digest)
        assert ref.tag is not None
        key = TagKey(registry, repository, ref.tag, mediatypes.accept_key(accepted))
        entry = self.tags.cached(key)
        if entry is not None and self._fresh(entry, self._clock()):
            _TAG_HIT.inc()  # the hot path: fresh tag, no single-flight bookkeeping
            return await self._from_entry(key, entry)
        return await self._flights.do(key, lambda: self._by_tag(key, accepted))

    # by digest ---------------------------------------------------------------------------------------

    def cached(self, digest: Digest) -> StoredManifest | None:
        """From memory only; the hot path."""
        return self.memory.get(str(digest))

    async def by_digest(self, registry: str, repository: str, digest: Digest) -> Manifest:
        item = self.memory.get(str(digest))
        if item is None:
            item = await asyncio.to_thread(self.store.read_manifest, digest)
            if item is not None:
                self.memory.put(str(digest), item)
        if item is not None:
            _MANIFEST_HIT.inc()
            return Manifest(digest, item.media_type, item.body, "cache")
        metrics.CACHE.labels("manifest", "miss").inc()
        if self.offline:
            raise ManifestUnknown("not cached, and this mirror is offline")
        return await self._flights.do(
            ("digest", str(digest)), lambda: self._fetch(registry, repository, str(digest), (), digest)
        )

    # by tag ------------------------------------------------------------------------------------------

    async def _by_tag(self, key: TagKey, accepted: tuple[str, ...]) -> Manifest:
        entry = self.tags.cached(key) or await asyncio.to_thread(self.tags.get, key)
        now = self._clock()
        if entry is not None and self._fresh(entry, now):
            _TAG_HIT.inc()
            return await self._from_entry(key, entry)
        if entry is None and self.offline:
            entry = await self._any_variant(key, accepted)
            if entry is None:
                raise ManifestUnknown("tag not cached, and this mirror is offline")
            return await self._from_entry(key, entry)
        try:
            if entry is None:
                metrics.CACHE.labels("tag", "miss").inc()
                return await self._fetch_tag(key, accepted)
            metrics.CACHE.labels("tag", "revalidate").inc()
            current = await self._head_digest(key, accepted)
            if current == entry.digest:
                self.tags.touch(key, now)
                self._stale_logged.discard(key)
                return await self._from_entry(key, entry)
            return await self._fetch_tag(key, accepted)
        except (Unavailable, TooManyRequests) as exc:
            stale = entry or await self._any_variant(key, accepted)
            if stale is None:
                raise
            if key not in self._stale_logged:
                self._stale_logged.add(key)
                log.warning(
                    "serving %s/%s:%s stale (%s): %s", key.registry, key.repository, key.tag, stale.digest, exc.message
                )
            metrics.STALE_SERVES.inc()
            return dataclasses.replace(await self._from_entry(key, stale), stale=True)

    def _fresh(self, entry: TagEntry, now: float) -> bool:
        """Trusted without asking upstream: within the TTL, or always when offline."""
        return self.offline or now - entry.fetched_at < self.tag_ttl

    async def _any_variant(self, key: TagKey, accepted: tuple[str, ...]) -> TagEntry | None:
        """A resolution cached for another Accept whose media type this client accepts (upstream unreachable,
        or an imported bundle): better than failing an edge node's pull."""
        variants = await asyncio.to_thread(self.tags.variants, key.registry, key.repository, key.tag)
        for _, entry in variants:
            if mediatypes.is_acceptable(entry.media_type, accepted):
                return entry
        return None

    async def _from_entry(self, key: TagKey, entry: TagEntry) -> Manifest:
        return await self.by_digest(key.registry, key.repository, Digest.parse(entry.digest))

    async def _head_digest(self, key: TagKey, accepted: tuple[str, ...]) -> str | None:
        resp = await self.upstream.request(
            key.registry,
            key.repository,
            f"manifests/{key.tag}",
            method="HEAD",
            not_found=ManifestUnknown,
            headers={"Accept": mediatypes.upstream_accept(accepted)},
        )
        resp.release()
        return resp.headers.get("Docker-Content-Digest")

    async def _fetch_tag(self, key: TagKey, accepted: tuple[str, ...]) -> Manifest:
        manifest = await self._fetch(key.registry, key.repository, key.tag, accepted, None)
        entry = TagEntry(str(manifest.digest), manifest.media_type, len(manifest.body), self._clock())
        await asyncio.to_thread(self.tags.put, key, entry)
        self._stale_logged.discard(key)
        return manifest

    # cache lifecycle ---------------------------------------------------------------------------------

    def forget(self, digests: Iterable[str]) -> None:
        """Drop evicted manifests from memory (the quota already removed them from disk)."""
        for digest in digests:
            self.memory.discard(digest)

    def closure(self, images: Iterable[ImageRef]) -> set[str]:
        """Every manifest and blob digest the images reach through cached tags and manifests (blocking)."""
        seen: set[str] = set()
        roots: list[str] = []
        for image in images:
            if image.reference.digest is not None:
                roots.append(str(image.reference.digest))
            else:
                variants = self.tags.variants(image.registry, image.repository, str(image.reference.tag))
                roots.extend(entry.digest for _, entry in variants)
        while roots:
            digest = roots.pop()
            if digest in seen:
                continue
            seen.add(digest)
            stored = self.store.read_manifest(Digest.parse(digest))
            if stored is None:
                continue
            with contextlib.suppress(RegistryError):
                refs = parse_refs(stored.body)
                roots.extend(str(d.digest) for d in refs.manifests)
                seen.update(str(d.digest) for d in refs.blobs)
        return seen

    # upstream ----------------------------------------------------------------------------------------

    async def _fetch(
        self, registry: str, repository: str, ref: str, accepted: tuple[str, ...], expected: Digest | None
    ) -> Manifest:
        resp = await self.upstream.request(
            registry,
            repository,
            f"manifests/{ref}",
            not_found=ManifestUnknown,
            headers={"Accept": mediatypes.upstream_accept(accepted)},
        )
        try:
            length = resp.headers.get("Content-Length")
            check_size(int(length) if length and length.isdigit() else None)
            body = await _read_manifest_body(resp.response.content)
        except Exception:
            resp.close()
            raise
        resp.release()
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in mediatypes.MANIFEST_TYPES:
            media_type = mediatypes.sniff_media_type(body) or media_type or mediatypes.OCI_MANIFEST
        digest = expected or _digest_of(body, resp.headers.get("Docker-Content-Digest"), media_type)
        try:
            await asyncio.to_thread(self.store.write_manifest, digest, media_type, body)
        except IntegrityError as exc:
            metrics.INTEGRITY_FAILURES.inc()
            log.error("upstream %s sent a manifest that does not match: %s", resp.upstream.name, exc)
            raise Unavailable("upstream sent a manifest that does not match its digest") from None
        self.memory.put(str(digest), StoredManifest(media_type, body))
        return Manifest(digest, media_type, body, "upstream", resp.upstream.name)


async def _read_manifest_body(content: aiohttp.StreamReader) -> bytes:
    """The whole body, refused as soon as it grows past the limit (Content-Length may lie or be absent)."""
    parts: list[bytes] = []
    total = 0
    while chunk := await content.read(64 * 1024):
        total += len(chunk)
        check_size(total)
        parts.append(chunk)
    return b"".join(parts)


def _digest_of(body: bytes, claimed: str | None, media_type: str) -> Digest:
    """The digest of a manifest fetched by tag; the upstream's claim must agree with the bytes.

    A signed schema1 manifest's digest covers its JWS payload, not the body with signatures.
    """
    content = body
    if media_type == mediatypes.DOCKER_SCHEMA1_SIGNED:
        content = schema1_payload(body) or body
    actual = Digest("sha256", hashlib.sha256(content).hexdigest())
    if claimed:
        try:
            claim = Digest.parse(claimed)
        except RegistryError:
            raise ManifestInvalid("upstream sent an invalid Docker-Content-Digest") from None
        if claim.algorithm == "sha256" and claim != actual:
            metrics.INTEGRITY_FAILURES.inc()
            raise Unavailable("upstream manifest does not match its Docker-Content-Digest")
        if claim.algorithm != "sha256":
            return claim if hashlib.new(claim.algorithm, content).hexdigest() == claim.hex else actual
    return actual
