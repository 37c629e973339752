"""Prefetch in-process: a :class:`~mirror.edge.prefetch.Source` over the mirror's own services.

Behind ``POST /admin/prefetch`` a node preheats itself without a loop through its HTTP port: manifests come
from :class:`ManifestService` (tag resolution, cache, upstream — the same path a client's pull takes), blobs
from :class:`BlobService`, whose single-flight downloads are shared with any client pulling the same layer
at the same time. A cached blob costs one ``open``; a missing one is waited for until it has verified and
been committed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mirror.edge.images import ImageRef
from mirror.edge.prefetch import PREFETCH_ACCEPT, FetchedManifest, PrefetchError
from mirror.oci.errors import RegistryError
from mirror.oci.reference import Digest, Reference
from mirror.proxy.blobs import BlobService, CachedBlob
from mirror.proxy.manifests import ManifestService


class LocalSource:
    def __init__(self, manifests: ManifestService, blobs: BlobService) -> None:
        self.manifests = manifests
        self.blobs = blobs

    async def manifest(self, image: ImageRef, reference: str) -> FetchedManifest:
        try:
            ref = Reference.parse(reference)
            manifest = await self.manifests.get(image.registry, image.repository, ref, PREFETCH_ACCEPT)
        except RegistryError as exc:
            raise PrefetchError(_describe(exc)) from None
        return FetchedManifest(manifest.digest, manifest.media_type, manifest.body)

    async def blob(self, image: ImageRef, digest: Digest, size: int, on_bytes: Callable[[int], None]) -> None:
        try:
            opened = await self.blobs.open(image.registry, image.repository, digest)
        except RegistryError as exc:
            raise PrefetchError(_describe(exc)) from None
        try:
            if isinstance(opened, CachedBlob):
                on_bytes(opened.size)
                return
            download = opened.download
            try:
                await download.wait_sendable(1 << 62)  # returns once the whole blob has verified
            except Exception as exc:
                raise PrefetchError(_describe(exc)) from None
            on_bytes(download.received)
        finally:
            os.close(opened.fd)


def _describe(exc: Exception) -> str:
    if isinstance(exc, RegistryError):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
