"""IMAGE arguments and platform selection (pure)."""

from __future__ import annotations

import pytest

from mirror.edge.images import ImageError, PlatformFilter, host_platform, parse_image, platform_filter
from mirror.oci.reference import Digest

HEX = "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("library/nginx:1.27", "docker.io", "library/nginx", "1.27", None),
        ("org/app:v1", "docker.io", "org/app", "v1", None),
        ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
        ("index.docker.io/library/nginx:1", "docker.io", "library/nginx", "1", None),
        ("ghcr.io/org/app@sha256:" + HEX, "ghcr.io", "org/app", None, "sha256:" + HEX),
        ("ghcr.io/org/app:v2@sha256:" + HEX, "ghcr.io", "org/app", None, "sha256:" + HEX),
        ("localhost/app", "localhost", "app", "latest", None),
        ("127.0.0.1:5000/team/app:x", "127.0.0.1:5000", "team/app", "x", None),
        ("registry.k8s.io/pause:3.9", "registry.k8s.io", "pause", "3.9", None),
    ],
)
def test_parse_image(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    image = parse_image(text)
    assert (image.registry, image.repository, image.tag) == (registry, repository, tag)
    assert image.digest == (Digest.parse(digest) if digest else None)
    assert image.reference == (digest or tag)


def test_str_round_trips() -> None:
    for text in ("docker.io/library/nginx:1.27", f"ghcr.io/org/app@sha256:{HEX}", "127.0.0.1:5000/a/b:c"):
        assert str(parse_image(text)) == text
        assert parse_image(str(parse_image(text))) == parse_image(text)


@pytest.mark.parametrize("text", ["", "Nginx", "nginx:", "nginx:bad tag", "app@sha256:short", "a//b", "../etc"])
def test_bad_images_are_one_line_errors(text: str) -> None:
    with pytest.raises(ImageError) as info:
        parse_image(text)
    assert "\n" not in str(info.value)


def test_platform_matching() -> None:
    arm = PlatformFilter(("linux/arm64",))
    assert arm.matches("linux/arm64") and arm.matches("linux/arm64/v8")
    assert not arm.matches("linux/amd64") and not arm.matches(None) and not arm.matches("unknown/unknown")
    v7 = PlatformFilter(("linux/arm/v7",))
    assert v7.matches("linux/arm/v7") and v7.matches("linux/arm") and not v7.matches("linux/arm/v6")
    assert PlatformFilter(all_platforms=True).matches("unknown/unknown")


def test_platform_flags() -> None:
    assert platform_filter(None, True) == PlatformFilter(all_platforms=True)
    assert platform_filter(["Linux/ARM64", "linux/arm64"], False).wanted == ("linux/arm64",)
    assert platform_filter([], False, default="linux/s390x").wanted == ("linux/s390x",)
    with pytest.raises(ImageError):
        platform_filter(["linux/amd64"], True)
    with pytest.raises(ImageError):
        platform_filter(["linux"], False)


def test_host_platform() -> None:
    assert host_platform("x86_64") == "linux/amd64"
    assert host_platform("aarch64") == "linux/arm64"
    assert host_platform("armv7l") == "linux/arm/v7"
    assert host_platform().startswith("linux/")
