"""Names, tags, digests and request paths, validated with the OCI distribution grammars.

Everything a client sends in a URL passes through here before it touches a cache path or an upstream URL,
so a value of these types is known-safe: no traversal, no separators, bounded length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from mirror.oci.errors import DigestInvalid, NameInvalid, TagInvalid, Unsupported

MAX_NAME_LENGTH = 255

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([A-Za-z0-9=_-]+)")
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX_RE = re.compile(r"[a-f0-9]+")
_REGISTRY_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?|\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?"
)

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        m = _DIGEST_RE.fullmatch(text)
        if not m:
            raise DigestInvalid(f"invalid digest {text[:80]!r}")
        algorithm, encoded = m.group(1), m.group(2)
        want = _HEX_LENGTHS.get(algorithm)
        if want is None:
            raise DigestInvalid(f"unsupported digest algorithm {algorithm!r}")
        if len(encoded) != want or not _HEX_RE.fullmatch(encoded):
            raise DigestInvalid(f"invalid {algorithm} digest {text[:80]!r}")
        return cls(algorithm, encoded)

    @classmethod
    def is_digest(cls, text: str) -> bool:
        return ":" in text


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise NameInvalid(f"repository name longer than {MAX_NAME_LENGTH} characters")
    if not _NAME_RE.fullmatch(name):
        raise NameInvalid(f"invalid repository name {name[:80]!r}")
    return name


def validate_tag(tag: str) -> str:
    if not _TAG_RE.fullmatch(tag):
        raise TagInvalid(f"invalid tag {tag[:80]!r}")
    return tag


def normalize_registry(registry: str) -> str:
    """Canonical registry host: Docker Hub's aliases fold to ``docker.io``; hosts are lower-cased."""
    host = registry.strip().lower()
    if not _REGISTRY_RE.fullmatch(host):
        raise NameInvalid(f"invalid registry host {registry[:80]!r}")
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def normalize_repository(registry: str, name: str) -> str:
    """Docker Hub keeps official images under ``library/``; a one-component name means one of those."""
    if registry == DOCKER_HUB and "/" not in name:
        return f"library/{name}"
    return name


@dataclass(frozen=True, slots=True)
class Reference:
    """A manifest reference: exactly one of a tag or a digest."""

    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        if Digest.is_digest(text):
            return cls(digest=Digest.parse(text))
        return cls(tag=validate_tag(text))

    def __str__(self) -> str:
        return str(self.digest) if self.digest else str(self.tag)


class Route(Enum):
    BASE = "base"
    MANIFEST = "manifest"
    BLOB = "blob"
    TAGS = "tags"
    REFERRERS = "referrers"


@dataclass(frozen=True, slots=True)
class RegistryPath:
    """A parsed ``/v2/...`` request path."""

    route: Route
    name: str = ""
    reference: Reference | None = None
    digest: Digest | None = None


def parse_path(path: str) -> RegistryPath:
    """Parse a raw (still percent-encoded) request path.

    Raw, because ``%2e%2e`` must never be decoded into a traversal; names cannot contain ``%`` anyway.
    Upload routes are recognised so they can be refused as UNSUPPORTED rather than as bad names.
    """
    if path in ("/v2", "/v2/"):
        return RegistryPath(Route.BASE)
    if not path.startswith("/v2/"):
        raise NameInvalid("not a registry API path")
    rest = path[4:]
    if "/blobs/uploads" in rest:
        raise Unsupported()
    markers = (("/manifests/", Route.MANIFEST), ("/blobs/", Route.BLOB), ("/referrers/", Route.REFERRERS))
    pos, marker, route = max((rest.rfind(m), m, r) for m, r in markers)
    if rest.endswith("/tags/list") and rest.rfind("/tags/list") > pos:
        return RegistryPath(Route.TAGS, validate_name(rest[: -len("/tags/list")]))
    if pos > 0:
        name, tail = rest[:pos], rest[pos + len(marker) :]
        validate_name(name)
        if route is Route.MANIFEST:
            return RegistryPath(route, name, reference=Reference.parse(tail))
        return RegistryPath(route, name, digest=Digest.parse(tail))
    raise NameInvalid("unknown registry API path")


@dataclass(frozen=True, slots=True)
class ImageRef:
    registry: str
    repository: str
    reference: Reference

    def __str__(self) -> str:
        sep = "@" if self.reference.digest else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


def parse_image(text: str, default_registry: str = DOCKER_HUB) -> ImageRef:
    """``name[:tag|@digest]`` with or without a registry host, as docker and containerd read it.

    The first component is a registry host when it contains ``.`` or ``:`` or is ``localhost``; a missing
    reference means ``latest``.
    """
    rest, at, digest = text.strip().partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, rest = normalize_registry(first), remainder
    else:
        registry = normalize_registry(default_registry)
    name, colon, tag = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if at:
        reference = Reference(digest=Digest.parse(digest))
    else:
        reference = Reference(tag=validate_tag(tag if colon else "latest"))
    return ImageRef(registry, normalize_repository(registry, validate_name(name)), reference)
