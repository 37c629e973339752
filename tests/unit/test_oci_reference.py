import pytest

from mirror.oci.errors import DigestInvalid, NameInvalid, TagInvalid, Unsupported
from mirror.oci.reference import (
    Digest,
    Reference,
    Route,
    normalize_registry,
    normalize_repository,
    parse_path,
    validate_name,
)

HEX = "a" * 64


def test_digest_round_trip() -> None:
    d = Digest.parse(f"sha256:{HEX}")
    assert (d.algorithm, d.hex, str(d)) == ("sha256", HEX, f"sha256:{HEX}")


@pytest.mark.parametrize(
    "text",
    [
        "sha256:xyz",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX.upper()}",
        f"md5:{HEX}",
        "sha256",
        ":" + HEX,
        f"sha256:{HEX}/..",
    ],
)
def test_bad_digests(text: str) -> None:
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


@pytest.mark.parametrize("name", ["library/nginx", "a", "org/team/app", "a-b.c__d/e--f", "x" * 255])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Library/nginx", "../etc", "a/../b", "a//b", "/a", "a/", "-a", "a_", "a%2e", "x" * 256, "a b"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid):
        validate_name(name)


def test_reference_tag_or_digest() -> None:
    assert Reference.parse("v1.2_3").tag == "v1.2_3"
    assert Reference.parse(f"sha256:{HEX}").digest == Digest("sha256", HEX)
    with pytest.raises(TagInvalid):
        Reference.parse(".hidden")
    with pytest.raises(TagInvalid):
        Reference.parse("x" * 129)


def test_registry_normalisation() -> None:
    assert normalize_registry("index.docker.io") == "docker.io"
    assert normalize_registry("Registry-1.Docker.io") == "docker.io"
    assert normalize_registry("127.0.0.1:5000") == "127.0.0.1:5000"
    assert normalize_registry("[::1]:5000") == "[::1]:5000"
    for bad in ("evil/../x", "a b", "", "host:99999999"):
        with pytest.raises(NameInvalid):
            normalize_registry(bad)


def test_docker_hub_library_prefix() -> None:
    assert normalize_repository("docker.io", "nginx") == "library/nginx"
    assert normalize_repository("docker.io", "bitnami/nginx") == "bitnami/nginx"
    assert normalize_repository("ghcr.io", "nginx") == "nginx"


def test_parse_paths() -> None:
    assert parse_path("/v2/").route is Route.BASE
    p = parse_path("/v2/library/nginx/manifests/latest")
    assert (p.route, p.name, p.reference) == (Route.MANIFEST, "library/nginx", Reference(tag="latest"))
    p = parse_path(f"/v2/a/b/blobs/sha256:{HEX}")
    assert (p.route, p.name, p.digest) == (Route.BLOB, "a/b", Digest("sha256", HEX))
    assert parse_path("/v2/a/tags/list").route is Route.TAGS
    assert parse_path(f"/v2/a/referrers/sha256:{HEX}").route is Route.REFERRERS


def test_route_marker_inside_a_name() -> None:
    p = parse_path(f"/v2/x/manifests/y/blobs/sha256:{HEX}")
    assert (p.route, p.name) == (Route.BLOB, "x/manifests/y")
    p = parse_path("/v2/x/blobs/y/manifests/latest")
    assert (p.route, p.name) == (Route.MANIFEST, "x/blobs/y")
    p = parse_path("/v2/x/manifests/y/tags/list")
    assert (p.route, p.name) == (Route.TAGS, "x/manifests/y")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/../../etc/passwd/blobs/sha256:" + HEX,
        "/v2/%2e%2e/x/manifests/latest",
        "/v2/a/unknown",
        "/v3/a",
        "/v2/A/tags/list",
    ],
)
def test_hostile_paths(path: str) -> None:
    with pytest.raises(NameInvalid):
        parse_path(path)


def test_upload_routes_are_unsupported() -> None:
    with pytest.raises(Unsupported):
        parse_path("/v2/a/blobs/uploads/")
