"""Single flight across worker processes: flock locks are per open file, so one process can play both roles."""

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from mirror.oci.errors import BlobUnknown, Unavailable
from mirror.oci.reference import Digest
from mirror.proxy.crossproc import DigestLock, ForeignDownload
from mirror.store.files import FileStore


def claims(store: FileStore, digest: Digest) -> tuple[DigestLock, ForeignDownload]:
    owner = DigestLock.try_acquire(store.tmp_dir, digest.hex)
    follower = DigestLock.try_acquire(store.tmp_dir, digest.hex)
    assert isinstance(owner, DigestLock) and isinstance(follower, ForeignDownload)
    follower.final_path = store.blob_path(digest)
    return owner, follower


async def test_follower_streams_the_owners_file_and_waits_for_the_commit(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    data = os.urandom(100_000)
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    owner, follower = claims(store, digest)
    begun = asyncio.create_task(follower.begun())
    await asyncio.sleep(0.02)
    assert not begun.done()  # nothing published yet
    writer = store.blob_writer(digest, len(data))
    owner.publish(writer.path, len(data))
    await begun
    fd = follower.attach()
    await writer.write(data[:40_000])
    assert await follower.wait_sendable(0) == 40_000
    await writer.write(data[40_000:])
    assert await follower.wait_sendable(40_000) == len(data) - 1  # the last byte waits for the commit
    waiter = asyncio.create_task(follower.wait_sendable(len(data) - 1))
    await asyncio.sleep(0.02)
    assert not waiter.done()
    await writer.commit()
    owner.release()
    assert await waiter == len(data) and follower.done
    assert os.pread(fd, len(data), 0) == data
    os.close(fd)
    follower.close()
    assert not (store.tmp_dir / f"{digest.hex}.lock").exists()


async def test_owner_failure_reaches_the_follower_as_the_same_error(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    digest = Digest("sha256", "c" * 64)
    owner, follower = claims(store, digest)
    owner.fail(BlobUnknown("no such blob upstream"))
    owner.release()
    with pytest.raises(BlobUnknown, match="no such blob"):
        await follower.begun()
    follower.close()


async def test_owner_crash_midway_is_unavailable(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    digest = Digest("sha256", "d" * 64)
    owner, follower = claims(store, digest)
    writer = store.blob_writer(digest, 10)
    owner.publish(writer.path, 10)
    await follower.begun()
    await writer.write(b"12345")
    writer.discard()
    os.close(owner.fd)  # the process died: its lock goes with it, nothing committed
    with pytest.raises(Unavailable):
        await follower.wait_sendable(5)
    follower.close()


async def test_lock_is_free_again_after_release(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    owner = DigestLock.try_acquire(store.tmp_dir, "e" * 64)
    assert isinstance(owner, DigestLock)
    owner.release()
    again = DigestLock.try_acquire(store.tmp_dir, "e" * 64)
    assert isinstance(again, DigestLock)
    again.release()
