import asyncio
from pathlib import Path

import pytest

from mirror.oci.errors import Unavailable
from mirror.proxy.inflight import Download, InflightTable


async def test_last_byte_held_back_until_verified(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    d = Download("sha256:x")
    d.begin(path, 10, "up")
    d.advance(4)
    assert d.sendable() == 4
    d.advance(6)
    assert d.sendable() == 9  # everything arrived, but not verified yet
    waiter = asyncio.create_task(d.wait_sendable(9))
    await asyncio.sleep(0)
    assert not waiter.done()
    await d.finish()
    assert await waiter == 10
    d.close()


async def test_unknown_size_holds_back_one_byte(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    d = Download("sha256:x")
    d.begin(path, None, "up")
    d.advance(5)
    assert d.sendable() == 4
    await d.finish()
    assert d.sendable() == 5 and d.size == 5
    d.close()


async def test_failure_reaches_waiters_and_starters() -> None:
    d = Download("sha256:x")
    waiter = asyncio.create_task(d.wait_received(0))
    await asyncio.sleep(0)
    await d.finish(Unavailable("boom"))
    with pytest.raises(Unavailable):
        await waiter
    with pytest.raises(Unavailable):
        await d.started


async def test_table_runs_detached_and_forgets_finished(tmp_path: Path) -> None:
    table = InflightTable()
    gate = asyncio.Event()

    async def run(d: Download) -> None:
        await gate.wait()
        await d.finish()

    d = table.start("sha256:x", run)
    assert table.get("sha256:x") is d and len(table) == 1
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert table.get("sha256:x") is None
    await table.shutdown()


async def test_shutdown_lets_downloads_finish_within_the_grace_then_cancels() -> None:
    table = InflightTable()
    finished: list[str] = []

    async def quick(d: Download) -> None:
        await asyncio.sleep(0.05)
        finished.append(d.digest)

    async def stuck(d: Download) -> None:
        await asyncio.Event().wait()

    table.start("sha256:quick", quick)
    table.start("sha256:stuck", stuck)
    await table.shutdown(grace=0.5)
    assert finished == ["sha256:quick"]
    assert len(table) == 0
