"""A node's peer download (`p2p.download`) and peer endpoint (`p2p.peer_server`) against in-process peers on
loopback that misbehave on purpose: cut a piece short, stall, lie, or are not there at all."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mirror.oci.errors import BlobUnknown
from mirror.oci.reference import Digest
from mirror.proxy.blobs import CachedBlob, FollowedBlob
from p2p.auth import sign_headers
from p2p.config import NodeConfig
from p2p.download import Swarm, SwarmDownload
from p2p.peer_server import READABLE_HEADER, PieceServer
from p2p.pieces import PieceHasher, PieceLayout
from p2p.ratelimit import TokenBucket
from p2p.scheduler import Plan
from p2p.swarm import BanList, SwarmConfig
from tests.integration.helpers import serving as serve_app

pytestmark = pytest.mark.integration

PIECE = 16 * 1024
BLOB = random.Random(7).randbytes(7 * PIECE + 1000)  # 8 pieces, the last one short
DIGEST = Digest("sha256", hashlib.sha256(BLOB).hexdigest())
LAYOUT = PieceLayout(len(BLOB), PIECE)
HASHES = (lambda h: (h.update(BLOB), h.finish())[1])(PieceHasher(LAYOUT))
SECRET = b"download-secret"
CONFIG = NodeConfig(
    trackers=("http://tracker.invalid",),
    advertise="http://me.invalid",
    node_id="me",
    secret=SECRET,
    peer_timeout=0.3,
    swarm=SwarmConfig(orphan_wait=0.1, follow_stall=0.5, cooldown=5),
)

Behaviour = Callable[[web.Request, int, int], Awaitable[web.StreamResponse]]


class Peer:
    """A fake node serving `BLOB` pieces its own way; records the ranges asked for."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.ranges: list[tuple[int, int]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        start, _, end = request.headers["Range"].removeprefix("bytes=").partition("-")
        self.ranges.append((int(start), int(end)))
        return await self.behaviour(request, int(start), int(end))


async def honest(request: web.Request, start: int, end: int) -> web.StreamResponse:
    headers = {"Content-Range": f"bytes {start}-{end}/{len(BLOB)}"}
    return web.Response(status=206, body=BLOB[start : end + 1], headers=headers)


async def cuts_halfway(request: web.Request, start: int, end: int) -> web.StreamResponse:
    response = web.StreamResponse(
        status=206,
        headers={"Content-Range": f"bytes {start}-{end}/{len(BLOB)}", "Content-Length": str(end - start + 1)},
    )
    await response.prepare(request)
    await response.write(BLOB[start : start + (end - start + 1) // 2])
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.abort()
    return response


async def stalls(request: web.Request, start: int, end: int) -> web.StreamResponse:
    response = web.StreamResponse(
        status=206,
        headers={"Content-Range": f"bytes {start}-{end}/{len(BLOB)}", "Content-Length": str(end - start + 1)},
    )
    await response.prepare(request)
    await response.write(BLOB[start : start + 1000])
    await asyncio.sleep(30)
    return response


async def lies(request: web.Request, start: int, end: int) -> web.StreamResponse:
    headers = {"Content-Range": f"bytes {start}-{end}/{len(BLOB)}"}
    return web.Response(status=206, body=b"\0" * (end - start + 1), headers=headers)


@asynccontextmanager
async def serving(peers: dict[str, Peer]) -> AsyncIterator[dict[str, str]]:
    """Each fake peer on its own loopback port; yields their URLs by node id."""
    runners, urls = [], {}
    try:
        for node_id, peer in peers.items():
            app = web.Application()
            app.router.add_get("/p2p/blobs/{digest}", peer.handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            host, port = runner.addresses[0][:2]
            urls[node_id] = f"http://{host}:{port}"
        yield urls
    finally:
        for runner in runners:
            await runner.cleanup()


class FakeTracker:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.lookups = 0

    async def lookup(self, digest: str, size: int | None, **_: Any) -> Plan:
        self.lookups += 1
        return self.plan


class FakeUpstream:
    """`BlobService.fetch_range` over `BLOB`, recording the ranges asked for."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.fail = fail

    async def fetch_range(self, registry: str, repo: str, digest: Digest, start: int, end: int) -> AsyncIterator[bytes]:
        self.ranges.append((start, end))
        if self.fail is not None:
            raise self.fail
        yield BLOB[start : end + 1]


def plan_for(urls: dict[str, str], rows: list[tuple[str, ...]], hashes: bool = True) -> Plan:
    return Plan(str(DIGEST), LAYOUT, False, None, tuple(rows), urls, HASHES if hashes else None)


async def download(plan: Plan, upstream: FakeUpstream | None = None, bans: BanList | None = None) -> bytes:
    async with aiohttp.ClientSession() as session:
        swarm = Swarm(session, FakeTracker(plan), upstream or FakeUpstream(), CONFIG, bans or BanList())  # type: ignore[arg-type]
        data = b""
        async for chunk in SwarmDownload(swarm, "docker.io", "library/x", DIGEST, plan).stream():
            data += chunk
        return data


async def test_pieces_from_several_peers_arrive_in_order() -> None:
    peers = {"a": Peer(honest), "b": Peer(honest)}
    async with serving(peers) as urls:
        data = await asyncio.wait_for(download(plan_for(urls, [("a", "b")] * LAYOUT.count)), 20)
    assert data == BLOB
    assert peers["a"].ranges and peers["b"].ranges
    assert sorted(peers["a"].ranges + peers["b"].ranges) == [LAYOUT.piece_range(i) for i in range(LAYOUT.count)]


async def test_a_piece_cut_short_resumes_elsewhere_from_the_byte_reached() -> None:
    peers = {"cutter": Peer(cuts_halfway), "good": Peer(honest)}
    upstream = FakeUpstream()
    async with serving(peers) as urls:
        data = await asyncio.wait_for(download(plan_for(urls, [("cutter", "good")] * LAYOUT.count), upstream), 20)
    assert data == BLOB
    cut_start, cut_end = peers["cutter"].ranges[0]
    resumed = cut_start + (cut_end - cut_start + 1) // 2
    assert (resumed, cut_end) in peers["good"].ranges
    assert upstream.ranges == []


async def test_a_stalling_peer_is_dropped_and_the_piece_resumed() -> None:
    peers = {"slow": Peer(stalls), "good": Peer(honest)}
    started = time.monotonic()
    async with serving(peers) as urls:
        data = await asyncio.wait_for(download(plan_for(urls, [("slow", "good")] * LAYOUT.count)), 20)
    assert data == BLOB
    start, end = peers["slow"].ranges[0]
    assert (start + 1000, end) in peers["good"].ranges
    assert time.monotonic() - started < 5


async def test_a_lying_peer_is_banned_and_its_pieces_fetched_again() -> None:
    peers = {"liar": Peer(lies), "good": Peer(honest)}
    bans = BanList()
    async with serving(peers) as urls:
        data = await asyncio.wait_for(download(plan_for(urls, [("liar", "good")] * LAYOUT.count), bans=bans), 20)
    assert data == BLOB
    assert bans.active(time.monotonic()) == ["liar"]
    assert len(peers["liar"].ranges) <= 2  # its first fetches, before the ban


async def test_hashes_arriving_late_still_catch_a_liar_before_its_pieces_stream() -> None:
    async def slow_honest(request: web.Request, start: int, end: int) -> web.StreamResponse:
        await asyncio.sleep(1.5)  # holds the head of the stream while the liar's pieces wait, unverified
        return await honest(request, start, end)

    peers = {"slow": Peer(slow_honest), "liar": Peer(lies), "good": Peer(honest)}
    bans = BanList()
    async with serving(peers) as urls, aiohttp.ClientSession() as session:
        rows = [("slow",)] + [("liar", "good")] * (LAYOUT.count - 1)
        tracker = FakeTracker(plan_for(urls, rows, hashes=False))
        swarm = Swarm(session, tracker, FakeUpstream(), CONFIG, bans)  # type: ignore[arg-type]

        async def consume() -> bytes:
            stream = SwarmDownload(swarm, "docker.io", "library/x", DIGEST, tracker.plan).stream()
            return b"".join([chunk async for chunk in stream])

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        assert peers["liar"].ranges  # it has answered already
        tracker.plan = plan_for(urls, rows)  # the elected node finished and published the hashes
        data = await asyncio.wait_for(task, 20)
    assert data == BLOB
    assert bans.active(time.monotonic()) == ["liar"]


async def test_pieces_nobody_can_serve_come_from_upstream() -> None:
    dead = {"gone": "http://127.0.0.1:9"}  # nothing listens on the discard port
    upstream = FakeUpstream()
    plan = plan_for(dead, [("gone",)] * 3 + [()] * (LAYOUT.count - 3))
    data = await asyncio.wait_for(download(plan, upstream), 20)
    assert data == BLOB
    assert sorted(upstream.ranges) == [LAYOUT.piece_range(i) for i in range(LAYOUT.count)]


async def test_wrong_published_hashes_do_not_block_a_download_from_upstream() -> None:
    wrong = tuple("sha256:" + "0" * 64 for _ in HASHES)
    plan = Plan(str(DIGEST), LAYOUT, False, None, ((),) * LAYOUT.count, {}, wrong)
    upstream = FakeUpstream()
    assert await asyncio.wait_for(download(plan, upstream), 20) == BLOB
    assert len(upstream.ranges) == LAYOUT.count  # each piece once: no refetch loop


async def test_upstream_trouble_ends_the_stream_like_a_plain_download() -> None:
    plan = plan_for({}, [()] * LAYOUT.count)
    with pytest.raises(BlobUnknown):
        await asyncio.wait_for(download(plan, FakeUpstream(fail=BlobUnknown())), 20)


# --- the peer endpoint ------------------------------------------------------------------------------------------


@asynccontextmanager
async def piece_server(tmp_path: Path, local: str, limiter: TokenBucket | None = None) -> AsyncIterator[str]:
    path = tmp_path / "blob"
    path.write_bytes(BLOB)

    class Blobs:
        def open_local(self, digest: Digest) -> CachedBlob | FollowedBlob | None:
            fd = os.open(path, os.O_RDONLY)
            if local == "cached":
                return CachedBlob(fd, len(BLOB))
            download = SimpleNamespace(received=3 * PIECE + 10, size=len(BLOB))
            return FollowedBlob(fd, download)  # type: ignore[arg-type]

    app = web.Application()
    PieceServer(Blobs(), SECRET, limiter).register(app)  # type: ignore[arg-type]
    async with serve_app(app) as url:
        yield url


async def get_piece(session: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> tuple[int, bytes, Any]:
    path = f"/p2p/blobs/{DIGEST}"
    signed = {**sign_headers(SECRET, "GET", path, b"", time.time()), **headers}
    async with session.get(base + path, headers=signed) as response:
        return response.status, await response.read(), response.headers


async def test_the_peer_endpoint_serves_only_readable_bytes(tmp_path: Path) -> None:
    async with piece_server(tmp_path, "followed") as base, aiohttp.ClientSession() as session:
        status, body, headers = await get_piece(session, base, {"Range": f"bytes={PIECE}-{2 * PIECE - 1}"})
        assert (status, body) == (206, BLOB[PIECE : 2 * PIECE])
        assert headers["Content-Range"] == f"bytes {PIECE}-{2 * PIECE - 1}/{len(BLOB)}"
        status, _, headers = await get_piece(session, base, {"Range": f"bytes={3 * PIECE}-{4 * PIECE - 1}"})
        assert status == 416 and headers[READABLE_HEADER] == str(3 * PIECE + 10)
        assert (await get_piece(session, base, {}))[0] == 400
        assert (await get_piece(session, base, {"Range": "bytes=0-"}))[0] == 400
        async with session.get(f"{base}/p2p/blobs/{DIGEST}", headers={"Range": "bytes=0-9"}) as unsigned:
            assert unsigned.status == 401


async def test_the_peer_endpoint_paces_uploads(tmp_path: Path) -> None:
    limiter = TokenBucket(rate=400_000, burst=20_000, now=time.monotonic())
    async with piece_server(tmp_path, "cached", limiter) as base, aiohttp.ClientSession() as session:
        started = time.monotonic()
        statuses = await asyncio.gather(
            *(get_piece(session, base, {"Range": f"bytes={i * PIECE}-{(i + 1) * PIECE - 1}"}) for i in range(7))
        )
        elapsed = time.monotonic() - started
    assert [s[0] for s in statuses] == [206] * 7
    assert b"".join(s[1] for s in statuses) == BLOB[: 7 * PIECE]
    assert elapsed >= (7 * PIECE - 20_000) / 400_000 * 0.9
