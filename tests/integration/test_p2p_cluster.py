"""A P2P cluster on loopback: `shoal tracker`, four `shoal serve` nodes and a real docker-registry upstream
behind a throttling proxy (`bench.throttle`), which counts the bytes that cross the "WAN".

Each test gets a fresh tracker and fresh nodes (empty caches); the registry and its ~32 MiB image are shared.
Nodes heartbeat every second and the tracker forgets a silent node after 4 s, so failures show within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bench.lab import ImageInfo, Registry, ShoalServer, make_image, push
from bench.lab.skopeo import copy_from, dir_blob_digests
from bench.p2p_swarm import Fetched, TrackerServer, fetch_all, fetch_blob, start_nodes
from bench.throttle import ThrottleProxy
from p2p.auth import sign_headers
from p2p.scheduler import COMPLETE
from p2p.tracker_client import TrackerClient

from .conftest import require_shoal, require_tool
from .helpers import blob_path_re, raw_request, wait_until

pytestmark = pytest.mark.integration

MiB = 1 << 20
REPO = "library/p2p"
SECRET = b"p2p-cluster-secret"
NODES = 4


@dataclass(frozen=True)
class Lab:
    registry: Registry
    proxy: ThrottleProxy
    image: ImageInfo
    secret_file: Path

    @property
    def layer(self) -> tuple[str, int]:
        big = max(self.image.layers, key=lambda d: d.size)
        return big.digest, big.size


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_tool("docker-registry")
    require_tool("skopeo")
    require_shoal()
    root = tmp_path_factory.mktemp("p2p-lab")
    image = make_image(root / "image", "v1", [32 * MiB, MiB // 2], seed="p2p-cluster")
    secret_file = root / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    with Registry(root / "registry") as registry:
        push(image.layout_dir, "v1", f"{registry.host}/{REPO}:v1")
        with ThrottleProxy("127.0.0.1", registry.port, rate=None) as proxy:
            yield Lab(registry, proxy, image, secret_file)


@dataclass
class Cluster:
    tracker: TrackerServer
    nodes: list[ShoalServer]


ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def start_cluster(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    started: list[Cluster] = []

    def start(count: int = NODES, rate: float | None = None) -> Cluster:
        lab.proxy.rate = rate
        root = tmp_path_factory.mktemp("p2p-cluster")
        secret = ["--peer-secret-file", str(lab.secret_file)]
        tracker = TrackerServer(root / "tracker", [*secret, "--node-ttl", "4"]).start()
        args = ["--upstream", f"docker.io={lab.proxy.url}", "--tracker", tracker.url, *secret, "--heartbeat", "1"]
        cluster = Cluster(tracker, [])
        started.append(cluster)
        cluster.nodes = start_nodes(root, count, args)
        return cluster

    try:
        yield start
    finally:
        lab.proxy.rate = None
        for cluster in started:
            for node in cluster.nodes:
                node.stop()
                print(f"--- {node.log_path} (tail) ---\n{node.log_tail(30)}")
            cluster.tracker.stop()
            print(f"--- {cluster.tracker.log_path} (tail) ---\n{cluster.tracker.log_tail(10)}")


def metric(node: ShoalServer, name: str, labels: str = "") -> float:
    """The value of one sample on a node's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"{node.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{{re.escape(labels)}\}})? (\S+)$", re.MULTILINE)
    match = pattern.search(text)
    return float(match[1]) if match else 0.0


def signed_get(host: str, target: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    address, _, port = host.rpartition(":")
    conn = http.client.HTTPConnection(address, int(port), timeout=30)
    conn.request("GET", target, headers={**sign_headers(SECRET, "GET", target, b"", time.time()), **(headers or {})})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def tracker_has_hashes(tracker: TrackerServer, digest: str) -> bool:
    return signed_get(tracker.host, f"/piece-hashes/{digest}").status == 200


def test_nodes_pull_from_the_first_node(tmp_path: Path, lab: Lab, start_cluster: ClusterFactory) -> None:
    cluster = start_cluster()
    first, *others = cluster.nodes
    mark = lab.registry.mark()
    copy_from(f"{first.host}/{REPO}:v1", tmp_path / "first")
    assert dir_blob_digests(tmp_path / "first") == lab.image.blobs
    layer, _ = lab.layer
    assert wait_until(lambda: tracker_has_hashes(cluster.tracker, layer), timeout=10)

    for node in others:
        copy_from(f"{node.host}/{REPO}:v1", tmp_path / node.host)
        assert dir_blob_digests(tmp_path / node.host) == lab.image.blobs

    lab.registry.wait_quiet()
    for digest in lab.image.blobs:
        assert lab.registry.count("GET", blob_path_re(REPO, digest), since=mark) == 1, digest
    for node in others:
        assert metric(node, "shoal_p2p_download_bytes_total", 'source="peer"') >= lab.layer[1]
        assert metric(node, "shoal_p2p_download_bytes_total", 'source="upstream"') == 0
    assert metric(first, "shoal_p2p_upload_bytes_total") > 0


def test_cold_blob_asked_by_all_nodes_at_once_crosses_the_link_once(lab: Lab, start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(rate=16e6)  # 32 MiB take about 2 s: the four downloads overlap
    digest, size = lab.layer
    lab.proxy.reset_counts()
    mark = lab.registry.mark()

    results = fetch_all([node.host for node in cluster.nodes], REPO, digest, timeout=60)

    assert [(r.status, r.digest, r.error) for r in results] == [(200, digest, "")] * NODES
    assert lab.proxy.down_bytes <= 1.1 * size, lab.proxy.down_bytes / size
    lab.registry.wait_quiet()
    assert lab.registry.count("GET", blob_path_re(REPO, digest), since=mark) == 1
    followers = [n for n in cluster.nodes if metric(n, "shoal_p2p_downloads_total", 'outcome="peers"') == 1]
    assert len(followers) == NODES - 1


def test_follower_finishes_when_the_elected_node_is_killed(lab: Lab, start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(count=2, rate=6e6)  # the elected node needs about 6 s for the layer
    elected, follower = cluster.nodes
    digest, _ = lab.layer

    doomed = threading.Thread(target=fetch_blob, args=(elected.host, REPO, digest, 60), daemon=True)
    doomed.start()
    assert wait_until(lambda: metric(elected, "shoal_p2p_downloads_total", 'outcome="back_to_source"') == 1, 10)
    result: list[Fetched] = []
    follow = threading.Thread(target=lambda: result.append(fetch_blob(follower.host, REPO, digest, 90)))
    follow.start()
    assert wait_until(lambda: metric(follower, "shoal_p2p_download_bytes_total", 'source="peer"') > 0, 15)
    elected.kill()

    follow.join(90)
    assert not follow.is_alive()
    fetched = result[0]
    assert (fetched.status, fetched.digest) == (200, digest), fetched
    assert metric(follower, "shoal_p2p_download_bytes_total", 'source="upstream"') > 0
    doomed.join(30)


def tracker_plan(tracker: TrackerServer, digest: str, size: int) -> dict[str, Any]:
    """What the tracker tells an observer (a node id no real node uses) about `digest`."""
    body = json.dumps({"node": "observer", "digest": digest, "size": size}).encode()
    headers = {"Content-Type": "application/json", **sign_headers(SECRET, "POST", "/lookup", body, time.time())}
    response = raw_request(tracker.host, "POST", "/lookup", headers, body)
    assert response.status == 200, response.body
    plan: dict[str, Any] = json.loads(response.body)
    return plan


def test_a_restarted_node_announces_its_cache_and_withdraws_what_is_gone(
    lab: Lab, start_cluster: ClusterFactory
) -> None:
    cluster = start_cluster(count=3)
    first, second, third = cluster.nodes
    digest, size = lab.layer
    assert fetch_blob(first.host, REPO, digest).digest == digest
    first.stop()
    first.start()
    assert wait_until(lambda: "node0" in tracker_plan(cluster.tracker, digest, size)["peers"], timeout=10)

    mark = lab.registry.mark()
    assert fetch_blob(second.host, REPO, digest).digest == digest
    lab.registry.wait_quiet()
    assert lab.registry.count("GET", blob_path_re(REPO, digest), since=mark) == 0

    hex_ = digest.partition(":")[2]
    (first.cache_dir / "blobs" / "sha256" / hex_[:2] / hex_).unlink()  # as an eviction would
    assert fetch_blob(third.host, REPO, digest).digest == digest
    assert wait_until(lambda: "node0" not in tracker_plan(cluster.tracker, digest, size)["peers"], timeout=10)


def test_pulls_work_when_the_tracker_is_gone(tmp_path: Path, lab: Lab, start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(count=2)
    cluster.tracker.kill()
    digest, _ = lab.layer

    started = time.monotonic()
    copy_from(f"{cluster.nodes[0].host}/{REPO}:v1", tmp_path / "pulled")
    assert dir_blob_digests(tmp_path / "pulled") == lab.image.blobs
    fetched = fetch_blob(cluster.nodes[1].host, REPO, digest, timeout=60)
    assert (fetched.status, fetched.digest) == (200, digest)
    assert time.monotonic() - started < 30
    assert metric(cluster.nodes[1], "shoal_p2p_downloads_total", 'outcome="no_tracker"') == 1


class CorruptPeer:
    """A node that announces every blob complete and serves garbage of the right length, in its own thread."""

    def __init__(self, tracker_url: str, digest: str, size: int) -> None:
        self.tracker_url, self.digest, self.size = tracker_url, digest, size
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        start, _, end = request.headers["Range"].removeprefix("bytes=").partition("-")
        length = int(end) - int(start) + 1
        headers = {"Content-Range": f"bytes {start}-{end}/{self.size}"}
        return web.Response(status=206, body=b"\xee" * length, headers=headers)

    async def _main(self) -> None:
        app = web.Application()
        app.router.add_get("/p2p/blobs/{digest}", self._serve)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            client = TrackerClient(session, [self.tracker_url], "corrupt", f"http://{host}:{port}", SECRET)
            await client.announce(self.digest, self.size, COMPLETE)
            self._ready.set()
            while not self._stop.is_set():
                await client.heartbeat(0.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
        await runner.cleanup()

    def __enter__(self) -> CorruptPeer:
        self._thread.start()
        assert self._ready.wait(10), "the corrupt peer did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


def test_peer_sending_corrupt_pieces_is_banned(lab: Lab, start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(count=2)
    honest, victim = cluster.nodes
    digest, size = lab.layer
    first = fetch_blob(honest.host, REPO, digest, timeout=60)
    assert (first.status, first.digest) == (200, digest)
    assert wait_until(lambda: tracker_has_hashes(cluster.tracker, digest), timeout=10)

    with CorruptPeer(cluster.tracker.url, digest, size) as corrupt:
        fetched = fetch_blob(victim.host, REPO, digest, timeout=60)
        assert corrupt.requests >= 1

    assert (fetched.status, fetched.digest) == (200, digest)
    assert metric(victim, "shoal_p2p_peers_banned_total") == 1
    assert metric(victim, "shoal_p2p_piece_failures_total", 'reason="corrupt"') >= 1


def test_peer_and_tracker_endpoints_need_the_secret(lab: Lab, start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(count=1)
    node = cluster.nodes[0]
    digest, _ = lab.layer
    assert fetch_blob(node.host, REPO, digest).status == 200
    target = f"/p2p/blobs/{digest}"
    piece = {"Range": "bytes=0-1023"}

    assert raw_request(node.host, "GET", target, piece).status == 401
    forged = sign_headers(b"not-the-secret", "GET", target, b"", time.time())
    assert raw_request(node.host, "GET", target, {**piece, **forged}).status == 401
    stale = sign_headers(SECRET, "GET", target, b"", time.time() - 600)
    assert raw_request(node.host, "GET", target, {**piece, **stale}).status == 401
    assert signed_get(node.host, target, piece).status == 206

    body = json.dumps({"node": "stranger", "digest": digest, "size": None}).encode()
    headers = {"Content-Type": "application/json"}
    assert raw_request(cluster.tracker.host, "POST", "/lookup", headers, body).status == 401
    assert raw_request(cluster.tracker.host, "GET", "/healthz").status == 200
