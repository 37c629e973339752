"""Blob serving: one upstream fetch for many cold clients, Range and HEAD, and client hang-ups."""

from __future__ import annotations

import asyncio
import hashlib
import re

import aiohttp
import pytest

from bench.lab import Registry, ShoalServer

from .conftest import ShoalFactory, UpstreamImages
from .helpers import TIMEOUT, blob_path_re, raw_request, sha256, wait_until

pytestmark = pytest.mark.integration

CLIENTS = 8


async def test_concurrent_cold_clients_share_one_upstream_fetch(
    shoal: ShoalServer, upstream: Registry, upstream_images: UpstreamImages
) -> None:
    image = upstream_images.big
    layer = image.info.layers[0]  # ~8 MiB
    url = f"{shoal.url}/v2/{image.repo}/blobs/{layer.digest}"
    mark = upstream.mark()

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:

        async def get(path_or_url: str) -> tuple[int, bytes]:
            async with session.get(path_or_url) as response:
                return response.status, await response.read()

        # Open every connection first, so the blob requests all leave within a millisecond or so.
        assert {s for s, _ in await asyncio.gather(*(get(f"{shoal.url}/healthz") for _ in range(CLIENTS)))} == {200}
        results = await asyncio.gather(*(get(url) for _ in range(CLIENTS)))

    for status, body in results:
        assert status == 200
        assert len(body) == layer.size and sha256(body) == layer.digest
    await asyncio.to_thread(upstream.wait_quiet)
    assert upstream.count("GET", blob_path_re(image.repo, layer.digest), since=mark) == 1


def test_range_requests(shoal: ShoalServer, upstream_images: UpstreamImages) -> None:
    image = upstream_images.single
    layer = image.info.layers[0]
    data = image.info.read_blob(layer.digest)
    size = len(data)
    path = f"/v2/{image.repo}/blobs/{layer.digest}"

    def check_ranges(state: str) -> None:
        for header, start, end in (
            ("bytes=10-99", 10, 99),
            ("bytes=100-", 100, size - 1),
            ("bytes=-100", size - 100, size - 1),
        ):
            response = raw_request(shoal.host, "GET", path, {"Range": header})
            assert response.status == 206, (state, header, response)
            assert response.header("content-range") == f"bytes {start}-{end}/{size}", (state, header)
            assert response.header("content-length") == str(end - start + 1), (state, header)
            assert response.body == data[start : end + 1], (state, header)
        response = raw_request(shoal.host, "GET", path, {"Range": f"bytes={size}-"})
        assert response.status == 416, (state, response)
        assert response.header("content-range") == f"bytes */{size}", state

    check_ranges("cold")
    full = raw_request(shoal.host, "GET", path)
    assert full.status == 200 and full.body == data
    check_ranges("warm")


def test_head_of_uncached_blob_asks_upstream_head_only(
    shoal: ShoalServer, upstream: Registry, upstream_images: UpstreamImages
) -> None:
    image = upstream_images.single
    layer = image.info.layers[1]
    mark = upstream.mark()
    response = raw_request(shoal.host, "HEAD", f"/v2/{image.repo}/blobs/{layer.digest}")
    assert response.status == 200
    assert response.header("content-length") == str(layer.size)
    assert response.body == b""
    upstream.wait_quiet()
    regex = blob_path_re(image.repo, layer.digest)
    assert upstream.count("HEAD", regex, since=mark) >= 1
    assert upstream.count("GET", regex, since=mark) == 0


async def test_blob_is_cached_when_the_client_hangs_up(
    shoal: ShoalServer, upstream: Registry, upstream_images: UpstreamImages
) -> None:
    image = upstream_images.big
    layer = image.info.layers[1]  # ~16 MiB
    path = f"/v2/{image.repo}/blobs/{layer.digest}"
    regex = blob_path_re(image.repo, layer.digest)
    mark = upstream.mark()

    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", shoal.port), TIMEOUT)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {shoal.host}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 200"), head
        await asyncio.wait_for(reader.readexactly(4096), TIMEOUT)
    finally:
        writer.transport.abort()

    # The registry logs the GET once it has sent the whole blob to Shoal.
    assert await asyncio.to_thread(wait_until, lambda: upstream.count("GET", regex, since=mark) >= 1, TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
        session.get(f"{shoal.url}{path}") as response,
    ):
        assert response.status == 200
        body = await response.read()
    assert sha256(body) == layer.digest
    await asyncio.to_thread(upstream.wait_quiet)
    gets = [e for e in upstream.requests(since=mark) if e.method == "GET" and e.path == path]
    assert len(gets) == 1, gets
    assert gets[0].size == layer.size


def test_workers_share_one_download_per_digest(
    start_shoal: ShoalFactory, upstream: Registry, upstream_images: UpstreamImages
) -> None:
    """--workers 2: clients land on both processes (SO_REUSEPORT); still one upstream GET, every body right."""
    import concurrent.futures
    import urllib.request

    image = upstream_images.big
    layer = max(image.info.layers, key=lambda d: d.size)
    shoal = start_shoal("--upstream", f"docker.io={upstream.url}", "--workers", "2")
    mark = upstream.mark()

    def fetch(_: int) -> str:
        url = f"{shoal.url}/v2/{image.repo}/blobs/{layer.digest}"
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - loopback
            return "sha256:" + hashlib.sha256(resp.read()).hexdigest()

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        assert set(pool.map(fetch, range(12))) == {layer.digest}
    upstream.wait_quiet()
    assert upstream.count("GET", blob_path_re(image.repo, layer.digest), since=mark) == 1
    log = shoal.log_text()
    assert len(set(re.findall(r"shoal mirror pid (\d+)", log))) == 2
    assert "upstream=other-worker" in log  # some clients followed the other process's download
