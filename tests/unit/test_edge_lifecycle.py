"""Cache lifecycle: verify finds (and repairs) rot, gc drops exactly what nothing references."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

from mirror.edge.gc import collect
from mirror.edge.verify import verify_cache
from mirror.oci import mediatypes
from mirror.oci.reference import Digest

from .test_edge_bundle import CacheBuilder, snapshot


def _digest(descriptor: dict[str, object]) -> Digest:
    return Digest.parse(str(descriptor["digest"]))


def _flip(path: Path, at: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


@pytest.fixture
def cache(tmp_path: Path) -> CacheBuilder:
    c = CacheBuilder(tmp_path / "cache")
    c.multi = c.index("m", ["linux/amd64", "linux/arm64"])  # type: ignore[attr-defined]
    c.tag("library/multi", "v1", c.multi)  # type: ignore[attr-defined]
    return c


def test_verify_clean_cache(cache: CacheBuilder) -> None:
    report = verify_cache(cache.root)
    assert report.problems == []
    assert (report.blobs, report.manifests, report.tags) == (6, 3, 1)
    assert report.bytes > 4 * 50_000


def test_verify_finds_and_repairs_rot(cache: CacheBuilder) -> None:
    child = cache.children(cache.multi)[0]  # type: ignore[attr-defined]
    layer = _digest(cache.layers(child)[1])
    _flip(cache.store.blob_path(layer), 1000)
    _flip(cache.store.manifest_path(_digest(child)), 60)
    tag_file = next((cache.root / "tags").rglob("*.json"))
    tag_file.write_text("{not json")
    stray = cache.root / "blobs" / "sha256" / "zz" / "not-a-digest"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"?")

    report = verify_cache(cache.root, workers=2)
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == ["blob", "manifest", "stray", "tag"]
    assert all(p.path.exists() for p in report.problems)

    repaired = verify_cache(cache.root, repair=True)
    assert repaired.removed == 4
    assert not any(p.path.exists() for p in report.problems)
    assert verify_cache(cache.root).problems == []


def test_verify_accepts_signed_schema1(cache: CacheBuilder) -> None:
    payload = b'{\n   "schemaVersion": 1,\n   "name": "a",\n   "fsLayers": []'
    tail = b"\n}"
    protected = base64.urlsafe_b64encode(
        json.dumps({"formatLength": len(payload), "formatTail": base64.urlsafe_b64encode(tail).decode()}).encode()
    ).decode()
    body = payload + b',\n   "signatures": [{"protected": "' + protected.encode() + b'"}]' + tail
    digest = Digest("sha256", hashlib.sha256(payload + tail).hexdigest())
    cache.store.write_manifest(digest, mediatypes.DOCKER_SCHEMA1_SIGNED, body)
    assert verify_cache(cache.root).problems == []


def test_gc_keeps_what_tags_reach(cache: CacheBuilder) -> None:
    before = snapshot(cache.root)
    report = collect(cache.root)
    assert report.removed_blobs == [] and report.removed_manifests == []
    assert (report.kept_manifests, report.kept_blobs) == (3, 6)
    assert snapshot(cache.root) == before


def test_gc_drops_the_unreferenced(cache: CacheBuilder) -> None:
    orphan_image = cache.image("untagged")  # pulled by digest only
    orphan_blob = _digest(cache.blob(b"left over by an interrupted pull"))
    old_index = cache.index("old", ["linux/amd64"])  # a tag moved on from it
    cache.tag("library/multi", "v0", old_index)
    cache.tag("library/multi", "v0", cache.multi)  # type: ignore[attr-defined]

    dry = collect(cache.root, dry_run=True)
    assert orphan_blob in dry.removed_blobs and _digest(orphan_image) in dry.removed_manifests
    assert cache.store.blob_path(orphan_blob).exists()

    untagged = collect(cache.root, keep_untagged=True)
    assert _digest(orphan_image) not in untagged.removed_manifests
    assert orphan_blob in untagged.removed_blobs

    report = collect(cache.root)
    gone = {_digest(orphan_image), _digest(old_index)}
    assert gone <= set(report.removed_manifests)
    assert not any(cache.store.manifest_path(d).exists() for d in gone)
    assert len(report.removed_blobs) == 3 + 3  # two images: config and 2 layers each (the orphan went above)
    for child in cache.children(cache.multi):  # type: ignore[attr-defined]
        assert cache.store.manifest_path(_digest(child)).exists()
        for layer in cache.layers(child):
            assert cache.store.blob_path(_digest(layer)).exists()
    assert verify_cache(cache.root).problems == []


def test_gc_min_age_keeps_fresh_objects(cache: CacheBuilder) -> None:
    orphan = _digest(cache.blob(b"just written by a live mirror"))
    report = collect(cache.root, min_age=3600)
    assert orphan not in report.removed_blobs
    old = cache.store.blob_path(orphan)
    os.utime(old, (1, 1))
    assert orphan in collect(cache.root, min_age=3600).removed_blobs


def test_not_a_cache(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a Shoal cache"):
        verify_cache(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="not a Shoal cache"):
        collect(tmp_path / "nothing")
