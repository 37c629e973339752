"""Pulls with skopeo through Shoal: cold then warm, and offline once the upstream is gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.lab import Registry, ShoalServer
from bench.lab.skopeo import copy_from, dir_blob_digests, dir_manifest_digests

from .conftest import Pushed, ShoalFactory, UpstreamImages, push_all
from .helpers import ACCEPT_ALL, RawResponse, blob_path_re, raw_request

pytestmark = pytest.mark.integration


def assert_pulled(dest: Path, image: Pushed) -> None:
    assert dir_blob_digests(dest) == image.info.blobs
    assert dir_manifest_digests(dest) == set(image.info.manifest_digests)


@pytest.mark.parametrize("which", ["single", "multi"])
def test_warm_pull_makes_no_upstream_blob_requests(
    which: str, tmp_path: Path, shoal: ShoalServer, upstream: Registry, upstream_images: UpstreamImages
) -> None:
    image: Pushed = getattr(upstream_images, which)

    mark = upstream.mark()
    copy_from(image.ref(shoal.host), tmp_path / "cold")
    assert_pulled(tmp_path / "cold", image)
    upstream.wait_quiet()
    for digest in image.info.blobs:
        assert upstream.count("GET", blob_path_re(image.repo, digest), since=mark) == 1, digest

    mark = upstream.mark()
    copy_from(image.ref(shoal.host), tmp_path / "warm")
    assert_pulled(tmp_path / "warm", image)
    upstream.wait_quiet()
    warm = upstream.requests(since=mark)
    assert [e for e in warm if e.method == "GET" and "/blobs/" in e.path] == []
    assert [e for e in warm if e.method == "GET" and "/manifests/sha256:" in e.path] == []


def test_offline_serves_warm_tags_and_digests(
    tmp_path: Path, start_shoal: ShoalFactory, upstream_images: UpstreamImages
) -> None:
    images = [upstream_images.single, upstream_images.multi]
    with Registry(tmp_path / "upstream") as registry:
        push_all(registry, *images)
        # A zero TTL makes every tag request try to revalidate, which fails once the upstream is gone.
        shoal = start_shoal("--upstream", f"docker.io={registry.url}", "--tag-ttl", "0")
        for image in images:
            copy_from(image.ref(shoal.host), tmp_path / "warm" / image.repo)
            assert manifest_by_tag(shoal, image).status == 200
        registry.kill()

    for image in images:
        by_tag = tmp_path / "offline-tag" / image.repo
        copy_from(image.ref(shoal.host), by_tag)
        assert_pulled(by_tag, image)
        by_digest = tmp_path / "offline-digest" / image.repo
        copy_from(image.digest_ref(shoal.host), by_digest)
        assert_pulled(by_digest, image)
        response = manifest_by_tag(shoal, image)
        assert response.status == 200
        assert response.header("docker-content-digest") == image.info.digest


def manifest_by_tag(shoal: ShoalServer, image: Pushed) -> RawResponse:
    return raw_request(shoal.host, "GET", f"/v2/{image.repo}/manifests/{image.info.tag}", {"Accept": ACCEPT_ALL})
