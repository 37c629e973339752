"""IMAGE arguments (``name[:tag|@digest]``, with or without a registry host) and platform selection.

Pure. The grammar is the core's (``mirror.oci.reference.parse_image``: the same as ``docker pull``); this
module gives edge commands a flat view of it (tag or digest) and one-line errors, and says which children
of an index a platform selection takes.
"""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass

from mirror.oci import reference
from mirror.oci.errors import RegistryError
from mirror.oci.reference import Digest


class ImageError(ValueError):
    """An IMAGE or platform argument that does not parse; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when there is one, else the tag."""
        return str(self.digest) if self.digest else str(self.tag)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image(text: str) -> ImageRef:
    """Parse ``[host[:port]/]name[:tag|@digest]`` with the core grammar (``mirror.oci.reference``)."""
    try:
        core = reference.parse_image(text)
    except RegistryError as exc:
        raise ImageError(f"{text!r}: {exc.message}") from None
    return ImageRef(core.registry, core.repository, core.reference.tag, core.reference.digest)


# platforms ------------------------------------------------------------------------------------------

_MACHINE_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm/v7",
    "armv6l": "arm/v6",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def parse_platform(text: str) -> str:
    """Validate ``os/arch[/variant]`` and lower-case it."""
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(p and p.replace("-", "").replace("_", "").isalnum() for p in parts):
        raise ImageError(f"platform must be OS/ARCH[/VARIANT], got {text!r}")
    return "/".join(parts)


def host_platform(machine: str | None = None) -> str:
    """The platform of this host as an image index names it (Linux: a mirror serves Linux nodes)."""
    machine = (machine or _platform.machine()).lower()
    return f"linux/{_MACHINE_ARCH.get(machine, machine)}"


@dataclass(frozen=True, slots=True)
class PlatformFilter:
    """Which children of an index to take. ``all_platforms`` takes every child, attestations included."""

    wanted: tuple[str, ...] = ()
    all_platforms: bool = False

    def matches(self, platform: str | None) -> bool:
        if self.all_platforms:
            return True
        if platform is None:
            return False
        have = platform.lower().split("/")
        for want in self.wanted:
            w = want.split("/")
            # A wanted platform without a variant takes every variant (linux/arm64 matches linux/arm64/v8);
            # linux/arm64/v8 also matches an entry that leaves the default variant out.
            if w[:2] == have[:2] and (len(w) == 2 or len(have) == 2 or w[2] == have[2]):
                return True
        return False

    def describe(self) -> str:
        return "all platforms" if self.all_platforms else ", ".join(self.wanted)


def platform_filter(platforms: list[str] | None, all_platforms: bool, default: str | None = None) -> PlatformFilter:
    """From ``--platform``/``--all-platforms``; neither means the host's platform (or ``default``)."""
    if all_platforms:
        if platforms:
            raise ImageError("give --all-platforms or --platform, not both")
        return PlatformFilter(all_platforms=True)
    wanted = tuple(dict.fromkeys(parse_platform(p) for p in platforms or ()))
    return PlatformFilter(wanted or (default or host_platform(),))
