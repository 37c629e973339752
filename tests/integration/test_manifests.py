"""Manifest responses carry the upstream's digest, type and length, and Accept is respected."""

from __future__ import annotations

import pytest

from bench.lab import Registry, ShoalServer
from bench.lab.images import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

from .conftest import Pushed, UpstreamImages
from .helpers import ACCEPT_ALL, RawResponse, oci_error_codes, raw_request, sha256

pytestmark = pytest.mark.integration

ACCEPT_VARIANTS = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_LIST,
    f"{OCI_INDEX}, {OCI_MANIFEST}",
    f"{DOCKER_LIST}, {DOCKER_MANIFEST}",
]
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
IMAGES = ["single", "multi", "docker_single", "docker_list"]


@pytest.mark.parametrize("which", IMAGES)
def test_manifest_headers_by_tag_and_digest(
    which: str, shoal: ShoalServer, upstream: Registry, upstream_images: UpstreamImages
) -> None:
    image: Pushed = getattr(upstream_images, which)
    raw = image.info.read_blob(image.info.digest)
    for ref in (image.info.tag, image.info.digest):
        path = f"/v2/{image.repo}/manifests/{ref}"
        upstream_response = raw_request(upstream.host, "GET", path, {"Accept": ACCEPT_ALL})
        assert upstream_response.header("content-type") == image.info.media_type
        for method in ("HEAD", "GET", "HEAD"):  # a cold HEAD first, then warm
            response = raw_request(shoal.host, method, path, {"Accept": ACCEPT_ALL})
            where = (method, ref)
            assert response.status == 200, where
            assert response.header("docker-content-digest") == image.info.digest, where
            assert response.header("content-type") == upstream_response.header("content-type"), where
            assert response.header("content-length") == str(len(raw)), where
            assert image.info.digest in (response.header("etag") or ""), where
            assert response.body == (raw if method == "GET" else b""), where


def _assert_same_variant(accept: str, got: RawResponse, upstream_response: RawResponse) -> None:
    if got.status != 200:
        assert got.status in (404, 406), (accept, got.status, got.body[:300])
        assert oci_error_codes(got.body)
        return
    where = (accept, got.header("content-type"), upstream_response.status, upstream_response.header("content-type"))
    assert upstream_response.status == 200, where
    assert got.header("content-type") == upstream_response.header("content-type"), where
    assert got.header("docker-content-digest") == upstream_response.header("docker-content-digest"), where
    if got.header("content-type") != SCHEMA1_SIGNED:  # schema1 digests exclude the signatures
        assert sha256(got.body) == got.header("docker-content-digest"), where


@pytest.mark.parametrize("which", IMAGES)
def test_accept_never_gets_a_cached_variant_of_another_type(
    which: str, shoal: ShoalServer, upstream: Registry, upstream_images: UpstreamImages
) -> None:
    """By tag, what a client gets depends on its Accept (the upstream may answer with a child manifest
    or a converted schema1 one); Shoal must never hand one client's cached variant to another."""
    image: Pushed = getattr(upstream_images, which)
    path = f"/v2/{image.repo}/manifests/{image.info.tag}"
    warm = raw_request(shoal.host, "GET", path, {"Accept": ACCEPT_ALL})
    assert warm.status == 200 and warm.header("content-type") == image.info.media_type
    for accept in ACCEPT_VARIANTS:
        got = raw_request(shoal.host, "GET", path, {"Accept": accept})
        _assert_same_variant(accept, got, raw_request(upstream.host, "GET", path, {"Accept": accept}))
