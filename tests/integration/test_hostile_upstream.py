"""Shoal against an upstream that corrupts, truncates, stalls, rate-limits, challenges and redirects."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from mirror.config import Credentials, UpstreamConfig
from mirror.oci.reference import Digest
from mirror.server.app import Services
from tests.integration.hostile import Behaviour, Hostile, mirror_config, start_hostile, start_shoal

pytestmark = pytest.mark.integration
TIMEOUT = aiohttp.ClientTimeout(total=20)


class Env:
    def __init__(self, hostile: Hostile, url: str, services: Services, client: aiohttp.ClientSession) -> None:
        self.hostile, self.url, self.services, self.client = hostile, url, services, client

    async def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        async with self.client.get(self.url + path, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    def cached(self, digest: str) -> bool:
        return self.services.store.blob_size(Digest.parse(digest)) is not None

    async def eventually_cached(self, digest: str) -> bool:
        """A blob becomes visible just after its response completes (verified first, fsynced after)."""
        for _ in range(100):
            if self.cached(digest):
                return True
            await asyncio.sleep(0.02)
        return False


async def _env(tmp_path: Path, hostile: Hostile, **kw: object) -> AsyncIterator[Env]:
    runners = await start_hostile(hostile)
    upstream = UpstreamConfig(hostile.url, credentials=hostile.credentials, connect_timeout=2, idle_timeout=5)
    shoal_runner, url, services = await start_shoal(mirror_config(tmp_path, upstream, **kw))  # type: ignore[arg-type]
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        yield Env(hostile, url, services, client)
    await shoal_runner.cleanup()
    for r in runners:
        await r.cleanup()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in _env(tmp_path, Hostile()):
        yield e


def _no_temp_files(env: Env) -> bool:
    return not any(env.services.store.tmp_dir.iterdir())


@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
async def test_bad_blob_bytes_are_never_completed_nor_cached(env: Env, fault: str) -> None:
    data = os.urandom(600 * 1024)
    digest = env.hostile.add_blob(data)
    setattr(env.hostile.behaviour, fault, True)
    with pytest.raises(aiohttp.ClientPayloadError):
        await env.get(f"/v2/app/blobs/{digest}")
    assert not env.cached(digest)
    assert _no_temp_files(env)
    # The upstream heals: the next request fetches again and succeeds.
    env.hostile.behaviour = Behaviour()
    status, headers, body = await env.get(f"/v2/app/blobs/{digest}")
    assert status == 200 and body == data and headers["Docker-Content-Digest"] == digest
    assert await env.eventually_cached(digest)
    assert env.hostile.hits[f"GET /v2/library/app/blobs/{digest}"] == 2


async def test_slow_upstream_streams_first_bytes_to_every_client(env: Env) -> None:
    data = os.urandom(1024 * 1024)
    digest = env.hostile.add_blob(data)
    env.hostile.behaviour.chunk_delay = 0.001

    async def first_bytes_then_rest() -> tuple[bytes, bytes]:
        async with env.client.get(f"{env.url}/v2/app/blobs/{digest}") as resp:
            assert resp.status == 200
            first = await resp.content.readexactly(1000)  # arrives while upstream is still held
            return first, await resp.read()

    clients = [asyncio.create_task(first_bytes_then_rest()) for _ in range(4)]
    await asyncio.sleep(0.5)
    assert not any(c.done() for c in clients)
    assert env.hostile.hits[f"GET /v2/library/app/blobs/{digest}"] == 1
    env.hostile.release.set()
    for first, rest in await asyncio.gather(*clients):
        assert first + rest == data
    assert env.hostile.hits[f"GET /v2/library/app/blobs/{digest}"] == 1


async def test_client_hanging_up_does_not_cancel_the_download(env: Env) -> None:
    data = os.urandom(2 * 1024 * 1024)
    digest = env.hostile.add_blob(data)
    env.hostile.behaviour.chunk_delay = 0.001
    async with env.client.get(f"{env.url}/v2/app/blobs/{digest}") as resp:
        await resp.content.readexactly(1000)
    env.hostile.release.set()
    assert await env.eventually_cached(digest)
    status, _, body = await env.get(f"/v2/app/blobs/{digest}")
    assert status == 200 and hashlib.sha256(body).hexdigest() == digest.split(":")[1]
    assert env.hostile.hits[f"GET /v2/library/app/blobs/{digest}"] == 1


async def test_rate_limit_gives_429_then_backs_off(env: Env) -> None:
    digest = env.hostile.add_blob(b"x" * 100)
    env.hostile.behaviour.rate_limited = True
    status, headers, body = await env.get(f"/v2/app/blobs/{digest}")
    assert status == 429 and headers["Retry-After"] == "7" and b"TOOMANYREQUESTS" in body
    status, _, _ = await env.get(f"/v2/app/blobs/{digest}")
    assert status == 429
    assert env.hostile.hits[f"GET /v2/library/app/blobs/{digest}"] == 1  # backed off: not asked again


async def test_rate_limited_tag_is_served_stale(tmp_path: Path) -> None:
    hostile = Hostile()
    manifest_digest, _ = hostile.add_image("v1", b"layer")
    async for env in _env(tmp_path, hostile, tag_ttl=0):
        status, _, _ = await env.get("/v2/app/manifests/v1")
        assert status == 200
        hostile.behaviour.rate_limited = True
        status, headers, _ = await env.get("/v2/app/manifests/v1")
        assert status == 200 and headers["Docker-Content-Digest"] == manifest_digest
        assert "stale" in headers.get("Warning", "")


async def test_bearer_token_flow_with_credentials_and_cached_token(tmp_path: Path) -> None:
    hostile = Hostile(behaviour=Behaviour(require_token=True), credentials=Credentials("robot$puller", "s3cret"))
    manifest_digest, layer = hostile.add_image("v1", os.urandom(1000))
    async for env in _env(tmp_path, hostile):
        status, headers, _ = await env.get("/v2/app/manifests/v1")
        assert status == 200 and headers["Docker-Content-Digest"] == manifest_digest
        status, _, _ = await env.get(f"/v2/app/blobs/{layer}")
        assert status == 200
        assert hostile.token_requests == 1  # cached per scope


async def test_token_service_refusing_credentials_is_unavailable(tmp_path: Path) -> None:
    hostile = Hostile(behaviour=Behaviour(require_token=True), credentials=Credentials("u", "p"))
    hostile.add_image("v1", b"l")
    runners = await start_hostile(hostile)
    upstream = UpstreamConfig(hostile.url)  # no credentials configured: token service says 401
    shoal_runner, url, _ = await start_shoal(mirror_config(tmp_path, upstream))
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.get(f"{url}/v2/app/manifests/v1") as resp:
            assert resp.status == 503
            assert (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"
    finally:
        await shoal_runner.cleanup()
        for r in runners:
            await r.cleanup()


async def test_redirect_to_other_host_drops_authorization(tmp_path: Path) -> None:
    hostile = Hostile(behaviour=Behaviour(require_token=True, redirect_blobs=True))
    _, layer = hostile.add_image("v1", os.urandom(5000))
    hostile.behaviour.require_token = False  # the "CDN" (other origin) needs no auth
    async for env in _env(tmp_path, hostile):
        hostile.behaviour.require_token = True
        # First a manifest, so the token is known and sent pre-emptively to the registry host.
        assert (await env.get("/v2/app/manifests/v1"))[0] == 200
        hostile.behaviour.require_token = False
        status, _, body = await env.get(f"/v2/app/blobs/{layer}")
        assert status == 200 and body == hostile.blobs[layer]
        blob_path = f"/v2/library/app/blobs/{layer}"
        seen = [auth for path, auth in hostile.auth_seen if path == blob_path]
        assert seen == ["Bearer tok-123", None]  # registry got the token, the CDN did not


async def test_docker_hub_style_401_for_missing_repo_is_404(tmp_path: Path) -> None:
    hostile = Hostile(behaviour=Behaviour(missing_repo_401=True))
    async for env in _env(tmp_path, hostile):
        status, _, body = await env.get("/v2/missing/thing/manifests/latest")
        assert status == 404 and b"MANIFEST_UNKNOWN" in body


async def test_manifest_not_matching_its_claimed_digest_is_refused(tmp_path: Path) -> None:
    hostile = Hostile(behaviour=Behaviour(wrong_manifest_digest=True))
    hostile.add_image("v1", b"l")
    async for env in _env(tmp_path, hostile):
        status, _, body = await env.get("/v2/app/manifests/v1")
        assert status == 503 and b"UNAVAILABLE" in body
        assert not list(env.services.store.iter_manifests())


async def test_falls_back_to_next_upstream_on_5xx(tmp_path: Path) -> None:
    broken, good = Hostile(behaviour=Behaviour(status=500)), Hostile()
    digest = good.add_blob(b"payload")
    runners = await start_hostile(broken) + await start_hostile(good)
    cfg = mirror_config(tmp_path, UpstreamConfig(broken.url), UpstreamConfig(good.url))
    shoal_runner, url, _ = await start_shoal(cfg)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client, client.get(f"{url}/v2/app/blobs/{digest}") as resp:
            assert resp.status == 200 and await resp.read() == b"payload"
        assert broken.hits[f"GET /v2/library/app/blobs/{digest}"] == 1
    finally:
        await shoal_runner.cleanup()
        for r in runners:
            await r.cleanup()


async def test_broken_upstream_fails_fast_and_the_breaker_stops_retrying(tmp_path: Path) -> None:
    attempts = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        writer.close()  # accepts, then hangs up: a broken upstream

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    shoal_runner, url, _ = await start_shoal(mirror_config(tmp_path, UpstreamConfig(f"http://127.0.0.1:{port}")))
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
            first_request_attempts = 0
            for _ in range(3):
                started = asyncio.get_running_loop().time()
                async with client.get(f"{url}/v2/app/manifests/v1") as resp:
                    assert resp.status == 503 and (await resp.json())["errors"][0]["code"] == "UNAVAILABLE"
                assert asyncio.get_running_loop().time() - started < 2.5
                first_request_attempts = first_request_attempts or attempts
        assert first_request_attempts >= 1  # (aiohttp itself retries an idempotent request once)
        assert attempts == first_request_attempts  # then the breaker skips the upstream: no new connections
    finally:
        await shoal_runner.cleanup()
        server.close()
        await server.wait_closed()


async def test_large_manifest_in_small_chunks_and_oversized_refused(tmp_path: Path) -> None:
    hostile = Hostile()
    big = (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":"'
        + b"a" * (3 * 1024 * 1024)
        + b'"},"config":{"mediaType":"c","digest":"sha256:'
        + b"0" * 64
        + b'","size":1},"layers":[]}'
    )
    hostile.manifests["big"] = ("application/vnd.oci.image.manifest.v1+json", big)
    hostile.manifests["huge"] = ("application/vnd.oci.image.manifest.v1+json", b" " * (4 * 1024 * 1024 + 1))
    async for env in _env(tmp_path, hostile):
        status, headers, body = await env.get("/v2/app/manifests/big")
        assert status == 200 and body == big
        assert headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(big).hexdigest()
        status, _, body = await env.get("/v2/app/manifests/huge")
        assert status == 400 and b"MANIFEST_INVALID" in body


async def test_tags_list_pagination_links_point_at_the_mirror(tmp_path: Path) -> None:
    hostile = Hostile()
    for tag in ("a", "b", "c"):
        hostile.add_image(tag, tag.encode())
    runners = await start_hostile(hostile)
    upstream = UpstreamConfig(hostile.url, path_prefix="hub-proxy")
    shoal_runner, url, _ = await start_shoal(mirror_config(tmp_path, upstream))
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
            async with client.get(f"{url}/v2/app/tags/list?n=2&ns=docker.io") as resp:
                assert await resp.json() == {"name": "app", "tags": ["a", "b"]}
                assert resp.headers["Link"] == '</v2/app/tags/list?n=2&last=b&ns=docker.io>; rel="next"'
            async with client.get(f"{url}/v2/app/tags/list?n=2&last=b") as resp:
                assert (await resp.json())["tags"] == ["c"] and "Link" not in resp.headers
        assert hostile.hits["GET /v2/hub-proxy/library/app/tags/list"] == 2  # the prefix was applied upstream
    finally:
        await shoal_runner.cleanup()
        for r in runners:
            await r.cleanup()


async def test_offline_serves_cache_only_and_never_connects(tmp_path: Path) -> None:
    hostile = Hostile()
    manifest_digest, layer = hostile.add_image("v1", os.urandom(2000))
    runners = await start_hostile(hostile)
    cfg = mirror_config(tmp_path, UpstreamConfig(hostile.url))
    try:
        runner, url, _ = await start_shoal(cfg)  # warm the cache online
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
            for path in ("/v2/app/manifests/v1", f"/v2/app/blobs/{layer}"):
                async with client.get(url + path) as resp:
                    assert resp.status == 200
                    await resp.read()
        await runner.cleanup()
        before = sum(hostile.hits.values())
        runner, url, _ = await start_shoal(cfg, offline=True)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
            for path in ("/v2/app/manifests/v1", f"/v2/app/manifests/{manifest_digest}", f"/v2/app/blobs/{layer}"):
                async with client.get(url + path) as resp:
                    assert resp.status == 200, path
            other = hostile.add_blob(b"never fetched")
            for method in ("GET", "HEAD"):
                async with client.request(method, f"{url}/v2/app/blobs/{other}") as resp:
                    assert resp.status == 404
            async with client.get(f"{url}/v2/app/manifests/v2") as resp:
                assert resp.status == 404 and (await resp.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert sum(hostile.hits.values()) == before  # offline never asked the upstream
        await runner.cleanup()
    finally:
        for r in runners:
            await r.cleanup()
