"""Manifest media types and ``Accept`` negotiation.

A tag can resolve to different manifests depending on what the client accepts (an OCI index for a modern
client, a Docker schema2 manifest for an old one). The mirror forwards the client's manifest types upstream
and keys cached tags by the normalised set, so clients with different ``Accept`` never get each other's variant.
"""

from __future__ import annotations

import hashlib
import json

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES | {DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED}

# What we ask upstream for when a client states no preference: everything modern, as containerd does.
DEFAULT_ACCEPT: tuple[str, ...] = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)


def parse_accept(headers: list[str]) -> tuple[str, ...]:
    """Manifest media types a client accepts, sorted and de-duplicated; empty means "no preference".

    ``*/*`` and non-manifest types are dropped: they do not select a variant.
    """
    found: set[str] = set()
    for header in headers:
        for item in header.split(","):
            media_type = item.split(";", 1)[0].strip().lower()
            if media_type in MANIFEST_TYPES:
                found.add(media_type)
    return tuple(sorted(found))


def accept_key(accepted: tuple[str, ...]) -> str:
    """A short stable key for an accepted-types set, for tag cache entries."""
    if not accepted:
        return "default"
    return hashlib.sha256("\n".join(accepted).encode()).hexdigest()[:16]


def upstream_accept(accepted: tuple[str, ...]) -> str:
    return ", ".join(accepted or DEFAULT_ACCEPT)


def is_acceptable(media_type: str, accepted: tuple[str, ...]) -> bool:
    """Whether a cached manifest of ``media_type`` may be given to a client (by-digest requests)."""
    return not accepted or media_type in accepted or media_type not in MANIFEST_TYPES


def sniff_media_type(body: bytes) -> str | None:
    """The media type a manifest declares or implies, for upstreams that send a generic Content-Type."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in doc else DOCKER_SCHEMA1
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    return None
