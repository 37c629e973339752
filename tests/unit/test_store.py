import hashlib
import os
from pathlib import Path

import pytest

from mirror.oci.reference import Digest
from mirror.store.files import FileStore, IntegrityError
from mirror.store.tags import TagEntry, TagKey, TagStore


def digest_of(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


async def test_blob_becomes_visible_only_after_verified_commit(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    data = os.urandom(300_000)
    d = digest_of(data)
    writer = store.blob_writer(d, len(data))
    await writer.write(data[:1000])
    assert store.open_blob(d) is None and writer.path.exists()
    reader = os.open(writer.path, os.O_RDONLY)  # a follower opened the temp file
    await writer.write(data[1000:])
    await writer.commit()
    assert not writer.path.exists()
    assert os.pread(reader, len(data), 0) == data  # same inode after the rename
    os.close(reader)
    fd_size = store.open_blob(d)
    assert fd_size is not None and fd_size[1] == len(data)
    os.close(fd_size[0])
    assert store.blob_path(d) == tmp_path / "blobs" / "sha256" / d.hex[:2] / d.hex


@pytest.mark.parametrize("case", ["corrupt", "short", "long"])
async def test_mismatch_is_discarded(tmp_path: Path, case: str) -> None:
    store = FileStore(tmp_path)
    data = b"x" * 1000
    d = digest_of(data)
    writer = store.blob_writer(d, len(data))
    with pytest.raises(IntegrityError):
        if case == "corrupt":
            await writer.write(b"y" + data[1:])
        elif case == "short":
            await writer.write(data[:-1])
        else:
            await writer.write(data + b"!")
        await writer.commit()
    writer.discard()
    assert store.open_blob(d) is None
    assert list(store.tmp_dir.iterdir()) == []


async def test_unknown_size_still_verifies_digest(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    d = digest_of(b"abc")
    writer = store.blob_writer(d, None)
    await writer.write(b"abc")
    await writer.commit()
    assert store.blob_size(d) == 3


def test_leftovers_cleaned_at_start(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    (store.tmp_dir / "dead.part").write_bytes(b"partial")
    assert FileStore(tmp_path).clean_temp() == 1
    assert list(store.tmp_dir.iterdir()) == []


def test_manifest_round_trip_and_verification(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    body = b'{"schemaVersion":2}\n'
    d = digest_of(body)
    store.write_manifest(d, "application/vnd.oci.image.manifest.v1+json", body)
    got = store.read_manifest(d)
    assert got is not None and got.body == body and got.media_type.endswith("manifest.v1+json")
    with pytest.raises(IntegrityError):
        store.write_manifest(digest_of(b"other"), "x", body)
    assert [dd for dd, _ in store.iter_manifests()] == [d]


def test_tags_persist_across_instances(tmp_path: Path) -> None:
    key = TagKey("127.0.0.1:5000", "library/app", "v1", "default")
    TagStore(tmp_path).put(key, TagEntry("sha256:" + "a" * 64, "t", 10, 123.0))
    fresh = TagStore(tmp_path)
    assert fresh.get(key) == TagEntry("sha256:" + "a" * 64, "t", 10, 123.0)
    assert list(fresh.items()) == [(key, TagEntry("sha256:" + "a" * 64, "t", 10, 123.0))]
    fresh.touch(key, 200.0)
    assert fresh.get(key) is not None and fresh.get(key).fetched_at == 200.0  # type: ignore[union-attr]
    assert fresh.get(TagKey("127.0.0.1:5000", "library/app", "v2", "default")) is None
