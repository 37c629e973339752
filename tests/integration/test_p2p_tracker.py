"""The tracker server and its client over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from p2p.auth import sign_headers
from p2p.pieces import Bitfield, PieceLayout, hash_piece
from p2p.scheduler import COMPLETE, SchedulerConfig
from p2p.tracker import make_tracker_app, run_tracker
from p2p.tracker_client import TrackerClient, TrackerUnavailable
from tests.integration.helpers import serving

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "d" * 64
SIZE = 40
PIECE = 10
SECRET = b"cluster-secret"
CONFIG = SchedulerConfig(node_ttl=30, stall_timeout=60, piece_size=PIECE)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def client_factory(
    session: aiohttp.ClientSession, urls: list[str], secret: bytes | None
) -> Callable[[str], TrackerClient]:
    return lambda node: TrackerClient(session, urls, node, f"http://{node}.test:5000", secret)


async def test_election_followers_and_piece_hashes(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with serving(make_tracker_app(SECRET, clock, CONFIG)) as url:
        node = client_factory(session, [url], SECRET)
        a, b = node("node-a"), node("node-b")

        first, second = await asyncio.gather(a.lookup(DIGEST, SIZE), b.lookup(DIGEST, SIZE))
        assert first.back_to_source and first.layout == PieceLayout(SIZE, PIECE)
        assert not second.back_to_source and second.source == "node-a"

        await a.announce(DIGEST, SIZE, Bitfield.from_indices(4, [0, 1]), piece_size=PIECE, load=1)
        plan = await b.lookup(DIGEST, SIZE)
        assert plan.candidates == (("node-a",), ("node-a",), (), ())
        assert plan.peers == {"node-a": "http://node-a.test:5000"}

        hashes = [hash_piece(bytes([i]) * PIECE) for i in range(4)]
        await a.announce(DIGEST, SIZE, COMPLETE)
        await a.publish_piece_hashes(DIGEST, PIECE, hashes)
        plan = await b.lookup(DIGEST, SIZE)
        assert plan.source is None and plan.candidates == (("node-a",),) * 4
        assert plan.piece_hashes == tuple(hashes)
        assert await b.piece_hashes(DIGEST) == (PieceLayout(SIZE, PIECE), tuple(hashes))
        assert await b.piece_hashes("sha256:" + "e" * 64) is None

        await a.withdraw()
        assert not await a.heartbeat()
        assert a.failures == 0 and b.failures == 0


async def test_announce_answers_the_layout_and_lookup_may_choose_it(session: aiohttp.ClientSession) -> None:
    async with serving(make_tracker_app(None, FakeClock(), CONFIG)) as url:
        node = client_factory(session, [url], None)
        a, b = node("node-a"), node("node-b")
        assert await a.announce(DIGEST, SIZE, COMPLETE) == PieceLayout(SIZE, PIECE)

        other = "sha256:" + "f" * 64
        plan = await b.lookup(other, SIZE, piece_size=20)
        assert plan.layout == PieceLayout(SIZE, 20)
        assert (await a.lookup(other, SIZE, piece_size=5)).layout == PieceLayout(SIZE, 20)  # a preference only
        bits = Bitfield.from_indices(2, [0])
        assert await b.announce(other, SIZE, bits, piece_size=20) == PieceLayout(SIZE, 20)


async def test_a_silent_node_loses_its_election(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with serving(make_tracker_app(None, clock, CONFIG)) as url:
        node = client_factory(session, [url], None)
        a, b = node("node-a"), node("node-b")
        assert (await a.lookup(DIGEST, None)).back_to_source
        clock.now += 20
        assert await a.heartbeat(load=0)
        clock.now += 20
        follower = await b.lookup(DIGEST, None)
        assert follower.source == "node-a" and follower.layout is None
        clock.now += CONFIG.node_ttl + 1
        assert (await b.lookup(DIGEST, SIZE)).back_to_source


async def test_the_sweeper_forgets_silent_nodes(session: aiohttp.ClientSession) -> None:
    config = SchedulerConfig(node_ttl=0.1, piece_size=PIECE)
    async with serving(make_tracker_app(None, config=config)) as url:
        a = TrackerClient(session, [url], "node-a", "http://a.test:5000", None)
        await a.announce(DIGEST, SIZE, COMPLETE)
        assert await a.heartbeat()
        deadline = time.monotonic() + 3
        while await a.heartbeat():
            assert time.monotonic() < deadline, "the tracker never expired a silent node"
            await asyncio.sleep(0.25)
        await a.announce(DIGEST, SIZE, COMPLETE)  # what a node does when the tracker forgot it
        assert await a.heartbeat()


async def test_the_secret_is_enforced(session: aiohttp.ClientSession) -> None:
    async with serving(make_tracker_app(SECRET, FakeClock(), CONFIG)) as url:
        for secret in (None, b"wrong-secret"):
            stranger = TrackerClient(session, [url], "stranger", "http://s.test:5000", secret)
            with pytest.raises(TrackerUnavailable, match="401"):
                await stranger.lookup(DIGEST, SIZE)
            with pytest.raises(TrackerUnavailable, match="401"):
                await stranger.announce(DIGEST, SIZE, COMPLETE)

        body = json.dumps({"node": "n", "digest": DIGEST, "size": SIZE}).encode()
        stale = sign_headers(SECRET, "POST", "/lookup", body, now=time.time() - 600)
        async with session.post(f"{url}/lookup", data=body, headers=stale) as response:
            assert response.status == 401
            assert "stale" in (await response.json())["error"]
        fresh = sign_headers(SECRET, "POST", "/lookup", body, now=time.time())
        async with session.post(f"{url}/lookup", data=body, headers=fresh) as response:
            assert response.status == 200
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 200 and await response.json() == {"status": "ok"}
        async with session.get(f"{url}/piece-hashes/{DIGEST}") as response:
            assert response.status == 401


async def test_bad_requests_and_conflicts(session: aiohttp.ClientSession) -> None:
    async with serving(make_tracker_app(None, FakeClock(), CONFIG)) as url:
        for body in (b"not json", b"[]", b'{"node": "n", "digest": "latest", "size": 1}'):
            async with session.post(f"{url}/lookup", data=body) as response:
                assert response.status == 400
                assert "error" in await response.json()
        a = TrackerClient(session, [url], "node-a", "http://a.test:5000", None)
        await a.lookup(DIGEST, SIZE)
        with pytest.raises(TrackerUnavailable, match="409"):
            await a.lookup(DIGEST, SIZE + 1)
        with pytest.raises(TrackerUnavailable, match="404"):
            await a.publish_piece_hashes("sha256:" + "e" * 64, PIECE, [])


async def test_trackers_are_tried_in_order_and_failures_are_quick(session: aiohttp.ClientSession) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with serving(make_tracker_app(None, FakeClock(), CONFIG)) as url:
        client = TrackerClient(session, [dead, url], "node-a", "http://a.test:5000", None)
        assert (await client.lookup(DIGEST, SIZE)).back_to_source
        assert client.requests == 2
        assert (await client.lookup(DIGEST, SIZE)).back_to_source
        assert client.requests == 3  # the dead tracker is skipped for a while

        # A refusal is final: asking the next tracker would split the cluster's state.
        refused = TrackerClient(session, [url, url], "node-b", "http://b.test:5000", None)
        with pytest.raises(TrackerUnavailable, match="409"):
            await refused.lookup(DIGEST, SIZE + 1)
        assert refused.requests == 1

    alone = TrackerClient(session, [dead], "node-a", "http://a.test:5000", None, retry_after=0)
    started = time.monotonic()
    for call in (alone.lookup(DIGEST, SIZE), alone.heartbeat(), alone.announce(DIGEST, SIZE, COMPLETE)):
        with pytest.raises(TrackerUnavailable, match="127.0.0.1"):
            await call
    assert time.monotonic() - started < 2
    assert alone.failures == 3

    skipping = TrackerClient(session, [dead], "node-a", "http://a.test:5000", None)
    with pytest.raises(TrackerUnavailable):
        await skipping.withdraw()
    with pytest.raises(TrackerUnavailable, match="skipped"):
        await skipping.withdraw()
    assert skipping.requests == 1


async def test_run_tracker_serves_until_cancelled(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="p2p.tracker"):
        task = asyncio.create_task(run_tracker("127.0.0.1", port, None))
        try:
            deadline = time.monotonic() + 3
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline, "run_tracker never started listening"
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert "no cluster secret" in caplog.text


async def test_a_secret_tracker_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="p2p.tracker"):
        task = asyncio.create_task(run_tracker("127.0.0.1", free_port(), SECRET))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "no cluster secret" not in caplog.text
