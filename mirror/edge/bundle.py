"""The bundle format: one zstd-compressed tar carrying images across an air gap.

Members, in this order::

    index.json                  BundleIndex: tags (registry, repository, tag, accept key -> digest, media
                                type), and every manifest and blob with its size
    manifests/sha256/<hex>      a manifest's exact bytes (its media type is in the index)
    blobs/sha256/<hex>          a config or layer, byte for byte

The index comes first so an importer knows, before it reads any content, what every member must be and
what it must hash to; anything unlisted, repeated, of another size or missing refuses the whole bundle.
This module is pure: the format, its validation, and which tag cache keys an imported tag fills.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

from mirror.oci import mediatypes
from mirror.oci.errors import RegistryError
from mirror.oci.manifest import MAX_MANIFEST_BYTES
from mirror.oci.reference import Digest, normalize_registry, validate_name, validate_tag
from mirror.store.tags import TagEntry, TagKey

FORMAT = "shoal-bundle"
VERSION = 1
INDEX_NAME = "index.json"
MAX_INDEX_BYTES = 64 * 1024 * 1024
_ACCEPT_KEY_RE = re.compile(r"default|[0-9a-f]{16}")
_MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


class BundleError(ValueError):
    """The bundle is malformed, corrupt or truncated; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class BundleTag:
    registry: str
    repository: str
    tag: str
    accept_key: str
    digest: str
    media_type: str
    size: int
    fetched_at: float

    @property
    def key(self) -> TagKey:
        return TagKey(self.registry, self.repository, self.tag, self.accept_key)

    @property
    def entry(self) -> TagEntry:
        return TagEntry(self.digest, self.media_type, self.size, self.fetched_at)


@dataclass(slots=True)
class BundleIndex:
    tags: list[BundleTag] = field(default_factory=list)
    manifests: dict[Digest, tuple[str, int]] = field(default_factory=dict)  # digest -> (media type, size)
    blobs: dict[Digest, int] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)  # what was asked for, for people reading it
    created: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.manifests.values()) + sum(self.blobs.values())

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "images": self.images,
            "tags": [asdict(t) for t in self.tags],
            "manifests": [{"digest": str(d), "media_type": mt, "size": s} for d, (mt, s) in self.manifests.items()],
            "blobs": [{"digest": str(d), "size": s} for d, s in self.blobs.items()],
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BundleIndex:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise BundleError(f"index is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BundleError("not a Shoal bundle (index has no shoal-bundle format marker)")
        if doc.get("version") != VERSION:
            raise BundleError(f"bundle version {doc.get('version')!r} is not supported (this Shoal reads {VERSION})")
        try:
            return _parse(doc)
        except (KeyError, TypeError, ValueError, RegistryError) as exc:
            message = exc.message if isinstance(exc, RegistryError) else str(exc)
            raise BundleError(f"bad index entry: {message}") from None


def _size(value: object, limit: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (limit is not None and value > limit):
        raise ValueError(f"bad size {value!r}")
    return value


def _media_type(value: object) -> str:
    if not isinstance(value, str) or not _MEDIA_TYPE_RE.fullmatch(value):
        raise ValueError(f"bad media type {str(value)[:80]!r}")
    return value


def _parse(doc: dict[str, Any]) -> BundleIndex:
    index = BundleIndex(created=str(doc.get("created", "")))
    for raw in doc["manifests"]:
        digest = Digest.parse(raw["digest"])
        if digest in index.manifests:
            raise ValueError(f"manifest {digest} listed twice")
        index.manifests[digest] = (_media_type(raw["media_type"]), _size(raw["size"], MAX_MANIFEST_BYTES))
    for raw in doc["blobs"]:
        digest = Digest.parse(raw["digest"])
        if digest in index.blobs:
            raise ValueError(f"blob {digest} listed twice")
        index.blobs[digest] = _size(raw["size"])
    for raw in doc["tags"]:
        registry = str(raw["registry"])
        if normalize_registry(registry) != registry:
            raise ValueError(f"registry {registry[:80]!r} is not in canonical form")
        if not isinstance(raw["accept_key"], str) or not _ACCEPT_KEY_RE.fullmatch(raw["accept_key"]):
            raise ValueError(f"bad accept key {str(raw['accept_key'])[:40]!r}")
        tag = BundleTag(
            registry,
            validate_name(str(raw["repository"])),
            validate_tag(str(raw["tag"])),
            raw["accept_key"],
            str(Digest.parse(raw["digest"])),
            _media_type(raw["media_type"]),
            _size(raw["size"], MAX_MANIFEST_BYTES),
            float(raw["fetched_at"]),
        )
        if Digest.parse(tag.digest) not in index.manifests:
            raise ValueError(f"tag {tag.repository}:{tag.tag} points at {tag.digest}, which the bundle lacks")
        index.tags.append(tag)
    images = doc.get("images", [])
    index.images = [i for i in images if isinstance(i, dict)] if isinstance(images, list) else []
    return index


def member_name(kind: str, digest: Digest) -> str:
    return f"{kind}/{digest.algorithm}/{digest.hex}"


def parse_member_name(name: str) -> tuple[str, Digest]:
    """``("manifests" | "blobs", digest)`` for a content member; anything else is refused."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] not in ("manifests", "blobs"):
        raise BundleError(f"unexpected member {name[:120]!r}")
    try:
        return parts[0], Digest.parse(f"{parts[1]}:{parts[2]}")
    except RegistryError:
        raise BundleError(f"member {name[:120]!r} is not named by a valid digest") from None


# tags ------------------------------------------------------------------------------------------------


def accept_keys_serving(media_type: str) -> list[str]:
    """Every tag cache key under which a client that accepts ``media_type`` looks the tag up.

    The mirror keys a tag by the exact set of manifest types a client accepts (``mediatypes.parse_accept``
    reduces ``Accept`` to a subset of ``MANIFEST_TYPES``). An imported tag must be found by whatever client
    an offline site runs, so it is filed under every subset that contains its type (2^5 of them), and under
    ``default`` (no preference) when the mirror's own default request would have accepted it.
    """
    others = sorted(mediatypes.MANIFEST_TYPES - {media_type})
    keys = []
    for n in range(len(others) + 1):
        for combo in combinations(others, n):
            keys.append(mediatypes.accept_key(tuple(sorted((media_type, *combo)))))
    if media_type in mediatypes.DEFAULT_ACCEPT:
        keys.append(mediatypes.accept_key(()))
    return keys


def _preference(tag: BundleTag) -> tuple[int, float]:
    # Where a client accepts several of a tag's variants, give it what a registry would: the index.
    return (0 if tag.media_type in mediatypes.INDEX_TYPES else 1, -tag.fetched_at)


def expand_tags(tags: list[BundleTag]) -> dict[TagKey, TagEntry]:
    """The tag cache entries an import writes: each recorded key as it was, then every other key a client
    accepting the variant's media type would use, without overriding a recorded key."""
    out: dict[TagKey, TagEntry] = {}
    for tag in tags:
        out[tag.key] = tag.entry
    for tag in sorted(tags, key=_preference):
        if tag.media_type not in mediatypes.MANIFEST_TYPES:
            continue
        for key in accept_keys_serving(tag.media_type):
            out.setdefault(TagKey(tag.registry, tag.repository, tag.tag, key), tag.entry)
    return out
