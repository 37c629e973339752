"""Bundles: the index format, export from a cache, and all-or-nothing verified import.

Caches are built on a temp dir with the real FileStore and TagStore; no sockets. ``CacheBuilder`` and
``snapshot`` are shared with the other edge unit tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import tarfile
from pathlib import Path

import pytest
import zstandard

from mirror.edge.bundle import (
    BundleError,
    BundleIndex,
    BundleTag,
    accept_keys_serving,
    expand_tags,
    parse_member_name,
)
from mirror.edge.exporter import ExportError, export_images
from mirror.edge.images import PlatformFilter, parse_image
from mirror.edge.importer import STAGING_PREFIX, import_bundle, remove_stale_staging
from mirror.edge.prefetch import PREFETCH_ACCEPT
from mirror.oci import mediatypes
from mirror.oci.reference import Digest
from mirror.store.files import FileStore
from mirror.store.tags import TagEntry, TagKey, TagStore

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SKOPEO_ACCEPT = ", ".join(sorted(mediatypes.MANIFEST_TYPES))
CONTAINERD_ACCEPT = (
    "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json,"
    " application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*"
)


def sha(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


class CacheBuilder:
    """Puts images into a cache directory the way the mirror would have left them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = FileStore(root)
        self.tags = TagStore(root)

    def blob(self, data: bytes) -> dict[str, object]:
        digest = sha(data)
        path = self.store.blob_path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return {"mediaType": OCI_LAYER, "digest": str(digest), "size": len(data)}

    def manifest(self, doc: dict[str, object], media_type: str) -> dict[str, object]:
        body = json.dumps(doc).encode()
        digest = sha(body)
        self.store.write_manifest(digest, media_type, body)
        return {"mediaType": media_type, "digest": str(digest), "size": len(body)}

    def image(self, seed: str, layers: int = 2, size: int = 50_000) -> dict[str, object]:
        rng = random.Random(seed)
        config = {**self.blob(json.dumps({"seed": seed}).encode()), "mediaType": OCI_CONFIG}
        blobs = [self.blob(rng.randbytes(size)) for _ in range(layers)]
        doc = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST, "config": config, "layers": blobs}
        return self.manifest(doc, mediatypes.OCI_MANIFEST)

    def index(self, seed: str, platforms: list[str]) -> dict[str, object]:
        children = []
        for platform in platforms:
            os_, arch = platform.split("/")[:2]
            children.append({**self.image(f"{seed}-{platform}"), "platform": {"os": os_, "architecture": arch}})
        return self.manifest({"schemaVersion": 2, "manifests": children}, mediatypes.OCI_INDEX)

    def tag(self, repository: str, tag: str, top: dict[str, object], accepted: tuple[str, ...] = PREFETCH_ACCEPT,
            registry: str = "docker.io", fetched_at: float = 1000.0) -> None:  # fmt: skip
        key = TagKey(registry, repository, tag, mediatypes.accept_key(accepted))
        self.tags.put(key, TagEntry(str(top["digest"]), str(top["mediaType"]), int(str(top["size"])), fetched_at))

    def drop_blob(self, descriptor: dict[str, object]) -> None:
        self.store.delete_blob(Digest.parse(str(descriptor["digest"])))

    def children(self, index: dict[str, object]) -> list[dict[str, object]]:
        stored = self.store.read_manifest(Digest.parse(str(index["digest"])))
        assert stored is not None
        return list(json.loads(stored.body)["manifests"])

    def layers(self, manifest: dict[str, object]) -> list[dict[str, object]]:
        stored = self.store.read_manifest(Digest.parse(str(manifest["digest"])))
        assert stored is not None
        return list(json.loads(stored.body)["layers"])


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its content."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def source(tmp_path: Path) -> CacheBuilder:
    cache = CacheBuilder(tmp_path / "source")
    cache.multi = cache.index("m", ["linux/amd64", "linux/arm64"])  # type: ignore[attr-defined]
    cache.tag("library/multi", "v1", cache.multi)  # type: ignore[attr-defined]
    cache.tag("library/app", "v1", cache.image("app"))
    return cache


def export(cache: CacheBuilder, out: Path, *images: str, platforms: PlatformFilter | None = None) -> Path:
    export_images(cache.root, [parse_image(i) for i in images], out, platforms)
    return out


def do_import(cache_dir: Path, bundle: Path) -> object:
    return asyncio.run(import_bundle(cache_dir, bundle))


# format ------------------------------------------------------------------------------------------------


def test_index_round_trip_and_validation() -> None:
    digest = sha(b"m")
    index = BundleIndex(created="now")
    index.manifests[digest] = (mediatypes.OCI_MANIFEST, 1)
    index.blobs[sha(b"b")] = 1
    index.tags.append(
        BundleTag("docker.io", "library/a", "v1", "default", str(digest), mediatypes.OCI_MANIFEST, 1, 5.0)
    )
    again = BundleIndex.from_json(index.to_json())
    assert (again.tags, again.manifests, again.blobs) == (index.tags, index.manifests, index.blobs)
    doc = json.loads(index.to_json())
    for path, value in [
        (("tags", 0, "repository"), "../../etc"),
        (("tags", 0, "accept_key"), "../x"),
        (("tags", 0, "registry"), "Docker.IO"),
        (("tags", 0, "digest"), str(sha(b"other"))),
        (("manifests", 0, "media_type"), "text/plain\nx"),
        (("manifests", 0, "size"), 10 * 1024 * 1024),
        (("blobs", 0, "size"), -1),
        (("format",), "tar"),
        (("version",), 99),
    ]:
        bad = json.loads(json.dumps(doc))
        target = bad
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        with pytest.raises(BundleError):
            BundleIndex.from_json(json.dumps(bad).encode())
    with pytest.raises(BundleError):
        parse_member_name("blobs/sha256/../../x")
    assert parse_member_name(f"blobs/sha256/{digest.hex}") == ("blobs", digest)


@pytest.mark.parametrize("accept", [SKOPEO_ACCEPT, CONTAINERD_ACCEPT, mediatypes.OCI_INDEX, ""])
def test_imported_tags_are_found_by_real_clients_accept(accept: str) -> None:
    key = mediatypes.accept_key(mediatypes.parse_accept([accept] if accept else []))
    assert key in accept_keys_serving(mediatypes.OCI_INDEX)
    if accept != SKOPEO_ACCEPT:
        assert key not in accept_keys_serving(mediatypes.DOCKER_SCHEMA1)


def test_expanded_tags_prefer_recorded_keys_then_indexes() -> None:
    index_tag = BundleTag("docker.io", "r", "t", "aaaaaaaaaaaaaaaa", str(sha(b"i")), mediatypes.OCI_INDEX, 1, 1.0)
    manifest_only = mediatypes.accept_key((mediatypes.OCI_MANIFEST,))
    image_tag = BundleTag("docker.io", "r", "t", manifest_only, str(sha(b"m")), mediatypes.OCI_MANIFEST, 1, 2.0)
    entries = expand_tags([image_tag, index_tag])
    assert entries[index_tag.key].digest == index_tag.digest
    assert entries[image_tag.key].digest == image_tag.digest
    both = mediatypes.accept_key(tuple(sorted((mediatypes.OCI_MANIFEST, mediatypes.OCI_INDEX))))
    assert entries[TagKey("docker.io", "r", "t", both)].digest == index_tag.digest
    assert entries[TagKey("docker.io", "r", "t", "default")].digest == index_tag.digest


# export and import -------------------------------------------------------------------------------------


def test_round_trip_into_an_empty_cache(source: CacheBuilder, tmp_path: Path) -> None:
    bundle = export(source, tmp_path / "b.tar.zst", "multi:v1", "docker.io/library/app:v1")
    target = tmp_path / "target"
    summary = do_import(target, bundle)
    assert summary.new_blobs == summary.blobs == 9  # type: ignore[attr-defined]
    before = snapshot(source.root)
    after = snapshot(target)
    for name in before:
        if name.startswith(("blobs/", "manifests/")):
            assert after[name] == before[name], name
    tags = TagStore(target)
    for accept in (SKOPEO_ACCEPT, CONTAINERD_ACCEPT):
        key = TagKey("docker.io", "library/multi", "v1", mediatypes.accept_key(mediatypes.parse_accept([accept])))
        entry = tags.get(key)
        assert entry is not None and entry.media_type == mediatypes.OCI_INDEX
    assert not list(target.glob(f"{STAGING_PREFIX}*"))


def test_import_twice_and_over_newer_tags(source: CacheBuilder, tmp_path: Path) -> None:
    bundle = export(source, tmp_path / "b.tar.zst", "app:v1")
    target = CacheBuilder(tmp_path / "target")
    newer = target.image("newer")
    target.tag("library/app", "v1", newer, fetched_at=5000.0)
    do_import(target.root, bundle)
    summary = do_import(target.root, bundle)
    assert summary.new_blobs == 0 and summary.new_manifests == 0  # type: ignore[attr-defined]
    key = TagKey("docker.io", "library/app", "v1", mediatypes.accept_key(PREFETCH_ACCEPT))
    assert TagStore(target.root).get(key).digest == newer["digest"]  # type: ignore[union-attr]


def test_export_refuses_what_is_not_cached(source: CacheBuilder, tmp_path: Path) -> None:
    out = tmp_path / "b.tar.zst"
    with pytest.raises(ExportError, match="tag not in the cache"):
        export(source, out, "library/nope:v1")
    arm = next(c for c in source.children(source.multi) if c["platform"]["architecture"] == "arm64")  # type: ignore
    dropped = source.layers(arm)[0]
    source.drop_blob(dropped)
    with pytest.raises(ExportError, match="not completely cached"):
        export(source, out, "multi:v1", platforms=PlatformFilter(all_platforms=True))
    with pytest.raises(ExportError, match="not completely cached"):
        export(source, out, "multi:v1", platforms=PlatformFilter(("linux/arm64",)))
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    export(source, out, "multi:v1")  # by default: the platforms that are complete
    target = tmp_path / "target"
    do_import(target, out)
    arm_layer = Digest.parse(str(source.layers(arm)[1]["digest"]))
    assert FileStore(target).blob_size(arm_layer) is None
    assert FileStore(target).read_manifest(Digest.parse(str(arm["digest"]))) is None
    assert FileStore(target).read_manifest(Digest.parse(str(source.multi["digest"]))) is not None  # type: ignore


def test_export_notices_bit_rot(source: CacheBuilder, tmp_path: Path) -> None:
    path = next(p for _, p in source.store.iter_blobs() if p.stat().st_size > 1000)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="corrupt"):
        export(source, tmp_path / "b.tar.zst", "multi:v1", "app:v1")
    assert not list(tmp_path.glob("b.tar.zst*"))


@pytest.fixture
def bundle(source: CacheBuilder, tmp_path: Path) -> Path:
    return export(source, tmp_path / "b.tar.zst", "multi:v1", "app:v1")


@pytest.fixture
def target(tmp_path: Path) -> CacheBuilder:
    cache = CacheBuilder(tmp_path / "target")
    cache.tag("library/other", "v1", cache.image("other"))
    return cache


def _refused(target: CacheBuilder, broken: Path, match: str | None = None) -> None:
    before = snapshot(target.root)
    with pytest.raises(BundleError, match=match) as info:
        do_import(target.root, broken)
    assert "\n" not in str(info.value)
    assert snapshot(target.root) == before
    assert not list(target.root.glob(f"{STAGING_PREFIX}*"))


def test_flipped_byte_anywhere_is_refused(bundle: Path, target: CacheBuilder, tmp_path: Path) -> None:
    data = bundle.read_bytes()
    for where in (len(data) // 2, len(data) // 3, 200, len(data) - 10):
        broken = bytearray(data)
        broken[where] ^= 0x40
        path = tmp_path / f"flip-{where}.tar.zst"
        path.write_bytes(bytes(broken))
        _refused(target, path)


def test_truncated_anywhere_is_refused(bundle: Path, target: CacheBuilder, tmp_path: Path) -> None:
    data = bundle.read_bytes()
    for keep in (0, 3, 100, len(data) // 2, len(data) - 600, len(data) - 4, len(data) - 1):
        path = tmp_path / f"cut-{keep}.tar.zst"
        path.write_bytes(data[:keep])
        _refused(target, path)


def _tar_zst(path: Path, members: list[tuple[str, bytes]]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(raw.getvalue()))
    return path


def _members(bundle: Path) -> list[tuple[str, bytes]]:
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(bundle.read_bytes())).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def test_forged_bundles_are_refused(bundle: Path, target: CacheBuilder, tmp_path: Path) -> None:
    members = _members(bundle)
    index, content = members[0], members[1:]
    blob_at = next(i for i, (name, _) in enumerate(content) if name.startswith("blobs/"))
    name, body = content[blob_at]
    swapped = [*content[:blob_at], (name, bytes(len(body))), *content[blob_at + 1 :]]
    cases = {
        "wrong-content": ([index, *swapped], "corrupt"),
        "missing-member": ([index, *content[:-1]], "missing"),
        "duplicate": ([index, *content, content[0]], "twice"),
        "unlisted": ([index, *content, (f"blobs/sha256/{'b' * 64}", b"x")], "not listed"),
        "traversal": ([index, ("../../escape", b"x")], "unexpected member"),
        "no-index": (content, "first member"),
        "not-json": ([("index.json", b"{nope"), *content], "not JSON"),
    }
    for label, (parts, match) in cases.items():
        _refused(target, _tar_zst(tmp_path / f"{label}.tar.zst", parts), match)
    plain = tmp_path / "plain.tar"
    plain.write_bytes(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(bundle.read_bytes())).read())
    _refused(target, plain, "zstd")


def test_stale_staging_of_a_dead_import_is_removed(tmp_path: Path) -> None:
    dead = tmp_path / f"{STAGING_PREFIX}999999999-abcd"
    alive = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-abcd"
    for path in (dead, alive):
        (path / "blobs").mkdir(parents=True)
    remove_stale_staging(tmp_path)
    assert not dead.exists() and alive.exists()
