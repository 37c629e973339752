import hashlib
import json
import os
from pathlib import Path

import pytest

from mirror.config import ConfigError, mirror_config_from, parse_size
from mirror.oci.reference import Digest
from mirror.store.files import FileStore
from mirror.store.quota import CacheQuota


def d(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


async def put_blob(store: FileStore, quota: CacheQuota | None, data: bytes) -> str:
    digest = d(data)
    w = store.blob_writer(digest, len(data))
    await w.write(data)
    await w.commit()
    if quota is not None:
        await quota.added(str(digest), len(data))
    return str(digest)


def put_manifest(store: FileStore, *blobs: str) -> str:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"digest": blobs[0], "size": 1},
            "layers": [{"digest": b, "size": 1} for b in blobs[1:]],
        }
    ).encode()
    digest = d(body)
    store.write_manifest(digest, "application/vnd.oci.image.manifest.v1+json", body)
    return str(digest)


def has(store: FileStore, digest: str) -> bool:
    return store.blob_size(Digest.parse(digest)) is not None


async def test_lru_eviction_keeps_recently_used(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    quota = CacheQuota(store, 3000)
    a = await put_blob(store, quota, os.urandom(1000))
    b = await put_blob(store, quota, os.urandom(1000))
    c = await put_blob(store, quota, os.urandom(1000))
    quota.touch(a)  # a is now more recent than b
    e = await put_blob(store, quota, os.urandom(1000))
    assert [has(store, x) for x in (a, b, c, e)] == [True, False, True, True]
    assert quota.total == 3000 and quota.evicted == 1


async def test_in_use_and_pinned_are_never_evicted(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    pins: set[str] = set()
    quota = CacheQuota(store, 1500, pinned=lambda: pins)
    a = await put_blob(store, quota, os.urandom(1000))
    quota.acquire(a)
    b = await put_blob(store, quota, os.urandom(1000))
    assert has(store, a) and has(store, b)  # over the limit, but a is being read and b is the newest
    quota.release(a)
    pins.add(b)
    c = await put_blob(store, quota, os.urandom(400))
    assert not has(store, a) and has(store, b) and has(store, c)


async def test_evicting_a_blob_drops_every_manifest_that_needs_it(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    evicted: list[str] = []
    quota = CacheQuota(store, 2500, on_evict=evicted.extend)
    shared = await put_blob(store, quota, os.urandom(1000))
    own = await put_blob(store, quota, os.urandom(500))
    m1 = put_manifest(store, shared)
    m2 = put_manifest(store, own)
    index_body = json.dumps({"schemaVersion": 2, "manifests": [{"digest": m1, "size": 1}]}).encode()
    store.write_manifest(d(index_body), "application/vnd.oci.image.index.v1+json", index_body)
    quota.touch(own)
    await put_blob(store, quota, os.urandom(1001))  # over the limit: the LRU blob (shared) goes
    assert not has(store, shared)
    remaining = {str(x) for x, _ in store.iter_manifests()}
    assert remaining == {m2}  # m1 and the index above it are gone; m2 is complete and stays
    assert set(evicted) == {shared, m1, str(d(index_body))}


async def test_restart_keeps_the_order(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    quota = CacheQuota(store, 10_000)
    a = await put_blob(store, quota, os.urandom(1000))
    b = await put_blob(store, quota, os.urandom(1000))
    quota.touch(a)
    quota.flush()
    quota._index.close()
    again = CacheQuota(store, 1500)
    again.load()
    assert again.total == 2000
    await put_blob(store, again, os.urandom(100))
    assert has(store, a) and not has(store, b)


@pytest.mark.parametrize(
    ("text", "size"), [("1048576", 1 << 20), ("500M", 500 << 20), ("20GiB", 20 << 30), ("1.5g", 3 << 29)]
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_bad_quota_config() -> None:
    with pytest.raises(ConfigError, match="max_cache_size"):
        mirror_config_from({"max_cache_size": "lots"})
    with pytest.raises(ConfigError, match="pins"):
        mirror_config_from({"pins": ["Bad Name"]})
    cfg = mirror_config_from({"max_cache_size": "1G", "pins": ["registry.k8s.io/pause:3.9", "nginx"]})
    assert cfg.max_cache_bytes == 1 << 30
    assert cfg.pins == ("registry.k8s.io/pause:3.9", "docker.io/library/nginx:latest")
