"""What the mirror needs to know about a manifest's body: its size limit and the digests it references.

The references let the cache keep an index and its children together (prefetch, gc, bundles) without
understanding more of the manifest than descriptors.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from mirror.oci.errors import DigestInvalid, ManifestInvalid
from mirror.oci.reference import Digest

MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: str | None = None  # "os/arch[/variant]" for index entries


@dataclass(frozen=True, slots=True)
class ManifestRefs:
    """Children of an index (other manifests) or the config and layers of an image manifest."""

    manifests: tuple[Descriptor, ...] = ()
    blobs: tuple[Descriptor, ...] = ()
    subject: Digest | None = None


def schema1_payload(body: bytes) -> bytes | None:
    """The signed payload of a Docker schema1 (``prettyjws``) manifest, which is what its digest covers.

    libtrust signs the body with the ``signatures`` key cut out; each signature's protected header records
    where: the first ``formatLength`` bytes plus the base64url ``formatTail``. None when not a signed schema1.
    """
    try:
        doc = json.loads(body)
        protected = doc["signatures"][0]["protected"]
        header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
        length, tail = int(header["formatLength"]), str(header["formatTail"])
        return body[:length] + base64.urlsafe_b64decode(tail + "=" * (-len(tail) % 4))
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def check_size(size: int | None) -> None:
    if size is not None and size > MAX_MANIFEST_BYTES:
        raise ManifestInvalid(f"manifest larger than {MAX_MANIFEST_BYTES} bytes refused")


def _descriptor(raw: object) -> Descriptor:
    if not isinstance(raw, dict):
        raise ManifestInvalid("descriptor is not an object")
    try:
        digest = Digest.parse(str(raw["digest"]))
        size = int(raw.get("size", -1))
    except (KeyError, TypeError, ValueError, DigestInvalid) as exc:
        raise ManifestInvalid(f"bad descriptor: {exc}") from None
    platform = None
    plat = raw.get("platform")
    if isinstance(plat, dict) and plat.get("os") and plat.get("architecture"):
        platform = f"{plat['os']}/{plat['architecture']}" + (f"/{plat['variant']}" if plat.get("variant") else "")
    return Descriptor(str(raw.get("mediaType", "")), digest, size, platform)


def parse_refs(body: bytes) -> ManifestRefs:
    """Descriptors a manifest points at. Schema1 manifests reference layers as ``fsLayers[].blobSum``."""
    check_size(len(body))
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ManifestInvalid(f"manifest is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest is not a JSON object")
    manifests = tuple(_descriptor(d) for d in doc.get("manifests") or ())
    blobs: list[Descriptor] = []
    if isinstance(doc.get("config"), dict):
        blobs.append(_descriptor(doc["config"]))
    blobs.extend(_descriptor(d) for d in doc.get("layers") or ())
    for layer in doc.get("fsLayers") or ():
        if isinstance(layer, dict) and "blobSum" in layer:
            blobs.append(_descriptor({"digest": layer["blobSum"]}))
    subject = _descriptor(doc["subject"]).digest if isinstance(doc.get("subject"), dict) else None
    return ManifestRefs(manifests, tuple(blobs), subject)
