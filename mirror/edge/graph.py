"""What a cached manifest holds on to: an index its child manifests, an image manifest its config and layers.

Export uses :func:`image_closure` to pick exactly the objects an image needs (all of them present, or a
precise list of what is missing); gc uses :func:`reachable` to mark everything a set of roots keeps alive.
Both read only the local cache: no network.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mirror.edge.images import PlatformFilter
from mirror.oci import mediatypes
from mirror.oci.errors import ManifestInvalid
from mirror.oci.manifest import Descriptor, ManifestRefs, parse_refs, schema1_payload
from mirror.oci.reference import Digest
from mirror.store.files import FileStore, StoredManifest

MAX_DEPTH = 4  # an index of indexes is legal; deeper nesting is not something real images do


def is_distributable(descriptor: Descriptor) -> bool:
    """Foreign (Windows base) layers are fetched from their own URLs by clients, never from a registry."""
    media_type = descriptor.media_type
    return "foreign" not in media_type and "nondistributable" not in media_type


def manifest_matches(digest: Digest, media_type: str, body: bytes) -> bool:
    """Whether a manifest's bytes are what its digest names (a signed schema1's digest covers its payload)."""
    content = schema1_payload(body) if media_type == mediatypes.DOCKER_SCHEMA1_SIGNED else body
    return hashlib.new(digest.algorithm, content or body).hexdigest() == digest.hex


def read_refs(store: FileStore, digest: Digest) -> tuple[StoredManifest, ManifestRefs] | None:
    """A cached manifest and what it references; a body that does not parse references nothing."""
    stored = store.read_manifest(digest)
    if stored is None:
        return None
    try:
        return stored, parse_refs(stored.body)
    except ManifestInvalid:
        return stored, ManifestRefs()


@dataclass(slots=True)
class Closure:
    """The objects an image needs, and what kept it from being complete."""

    manifests: dict[Digest, tuple[str, int]] = field(default_factory=dict)  # digest -> (media type, size)
    blobs: dict[Digest, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # platforms left out because they are not cached
    platforms: list[str] = field(default_factory=list)

    def merge(self, other: Closure) -> None:
        self.manifests.update(other.manifests)
        self.blobs.update(other.blobs)
        self.missing.extend(other.missing)
        self.skipped.extend(other.skipped)
        self.platforms.extend(other.platforms)


def image_closure(store: FileStore, digest: Digest, platforms: PlatformFilter | None, depth: int = 0) -> Closure:
    """Everything needed to serve ``digest``; ``platforms=None`` takes the children that are complete."""
    out = Closure()
    found = read_refs(store, digest)
    if found is None:
        out.missing.append(f"manifest {digest}")
        return out
    stored, refs = found
    out.manifests[digest] = (stored.media_type, len(stored.body))
    if refs.manifests or stored.media_type in mediatypes.INDEX_TYPES:
        _index(store, refs, platforms, depth, out)
    else:
        for blob in refs.blobs:
            if not is_distributable(blob):
                continue
            size = store.blob_size(blob.digest)
            if size is None:
                out.missing.append(f"blob {blob.digest}")
            elif blob.size >= 0 and size != blob.size:
                out.missing.append(f"blob {blob.digest} (cached size {size}, manifest says {blob.size})")
            else:
                out.blobs[blob.digest] = size
    return out


def _index(store: FileStore, refs: ManifestRefs, platforms: PlatformFilter | None, depth: int, out: Closure) -> None:
    if depth >= MAX_DEPTH:
        out.missing.append("indexes nested too deeply")
        return
    taken = 0
    for child in refs.manifests:
        nested = child.media_type in mediatypes.INDEX_TYPES
        label = child.platform or str(child.digest)
        if platforms is not None and not nested and not platforms.matches(child.platform):
            continue
        sub = image_closure(store, child.digest, platforms, depth + 1)
        if platforms is None and sub.missing and not nested:
            if child.platform and child.platform != "unknown/unknown":
                out.skipped.append(label)
            continue
        out.merge(sub)
        if not nested and not sub.missing and child.platform != "unknown/unknown":  # not an attestation
            taken += 1
            if child.platform:
                out.platforms.append(child.platform)
    if taken == 0 and not out.missing:
        wanted = "any platform" if platforms is None else platforms.describe()
        out.missing.append(f"no manifest for {wanted} is cached")


def reachable(store: FileStore, roots: set[Digest]) -> tuple[set[Digest], set[Digest]]:
    """(manifests, blobs) kept alive by ``roots``: every child, config, layer and subject, at any depth."""
    manifests: set[Digest] = set()
    blobs: set[Digest] = set()
    pending = list(roots)
    while pending:
        digest = pending.pop()
        if digest in manifests:
            continue
        found = read_refs(store, digest)
        if found is None:
            continue
        manifests.add(digest)
        _, refs = found
        pending.extend(d.digest for d in refs.manifests)
        if refs.subject is not None:
            pending.append(refs.subject)
        blobs.update(d.digest for d in refs.blobs)
    return manifests, blobs
