"""--max-cache-size with real pulls: the cache stays under its limit and never holds an incomplete image."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.lab import Registry
from bench.lab.skopeo import copy_from, dir_blob_digests
from mirror.oci.manifest import parse_refs
from mirror.oci.reference import Digest
from mirror.store.files import FileStore

from .conftest import ShoalFactory, UpstreamImages

pytestmark = pytest.mark.integration
MiB = 1 << 20


def blob_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in (cache / "blobs").rglob("*") if p.is_file())


def assert_consistent(cache: Path) -> None:
    """Every cached manifest's children and blobs are cached too."""
    store = FileStore(cache)
    manifests = {str(d) for d, _ in store.iter_manifests()}
    blobs = {str(d) for d, _ in store.iter_blobs()}
    for digest in manifests:
        stored = store.read_manifest(Digest.parse(digest))
        assert stored is not None
        refs = parse_refs(stored.body)
        assert {str(m.digest) for m in refs.manifests} <= manifests, digest
        assert {str(b.digest) for b in refs.blobs} <= blobs, digest


def test_pulls_larger_than_the_quota_stay_under_it(
    tmp_path: Path, start_shoal: ShoalFactory, upstream: Registry, upstream_images: UpstreamImages
) -> None:
    limit = 5 * MiB
    shoal = start_shoal("--upstream", f"docker.io={upstream.url}", "--max-cache-size", str(limit))
    images = [upstream_images.single, upstream_images.multi, upstream_images.docker_list, upstream_images.single]
    assert sum(sum(i.info.blobs.values()) for i in images[:3]) > 1.5 * limit
    for n, image in enumerate(images):
        dest = tmp_path / f"pull{n}"
        copy_from(image.ref(shoal.host), dest)
        assert dir_blob_digests(dest) == image.info.blobs  # every pull complete and correct
        assert blob_bytes(shoal.cache_dir) <= limit
        assert_consistent(shoal.cache_dir)
    assert "evicted" in shoal.log_text()
