"""An in-process upstream registry that misbehaves on request, for fault-injection tests.

It serves blobs and manifests from dicts, counts every request, and can corrupt, truncate, slow down,
rate-limit, demand a bearer token from its own token service, or redirect blobs to a second "CDN" server
on another host name (``localhost`` vs ``127.0.0.1``: a different origin).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from mirror.config import Credentials, MirrorConfig, UpstreamConfig
from mirror.server.app import Services, make_app

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Behaviour:
    corrupt: bool = False
    truncate: bool = False
    chunk_delay: float = 0.0
    rate_limited: bool = False
    require_token: bool = False
    missing_repo_401: bool = False
    redirect_blobs: bool = False
    wrong_manifest_digest: bool = False
    status: int | None = None  # answer every /v2/<name>/... request with this status


@dataclass
class Hostile:
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # tag or digest -> (type, body)
    behaviour: Behaviour = field(default_factory=Behaviour)
    hits: Counter[str] = field(default_factory=Counter)
    auth_seen: list[tuple[str, str | None]] = field(default_factory=list)
    token_requests: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    cdn_url: str = ""
    credentials: Credentials | None = None

    def add_blob(self, data: bytes) -> str:
        d = digest_of(data)
        self.blobs[d] = data
        return d

    def add_image(self, tag: str, layer: bytes) -> tuple[str, str]:
        layer_digest = self.add_blob(layer)
        config_digest = self.add_blob(b'{"architecture":"amd64","os":"linux"}')
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": 37,
                },
                "layers": [
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}
                ],
            }
        ).encode()
        md = digest_of(manifest)
        self.manifests[tag] = self.manifests[md] = (OCI_MANIFEST, manifest)
        return md, layer_digest

    # handlers ------------------------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if self.credentials and request.headers.get("Authorization") is None:
            return web.Response(status=401)
        return web.json_response({"token": "tok-123", "expires_in": 300})

    def _challenge(self) -> web.Response:
        realm = f"{self.url}/token"
        return web.Response(
            status=401,
            headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="hostile",scope="repository:x:pull"'},
        )

    async def registry(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[f"{request.method} {path}"] += 1
        self.auth_seen.append((path, request.headers.get("Authorization")))
        b = self.behaviour
        if b.status is not None:
            return web.Response(status=b.status, headers={"Retry-After": "7"} if b.status == 429 else {})
        if b.rate_limited:
            return web.Response(status=429, headers={"Retry-After": "7"})
        if b.require_token and request.headers.get("Authorization") != "Bearer tok-123":
            return self._challenge()
        if b.missing_repo_401 and "/missing/" in path:
            return self._challenge()
        if path.endswith("/tags/list"):
            tags = sorted(t for t in self.manifests if ":" not in t)
            last, n = request.query.get("last"), int(request.query.get("n", "100"))
            tags = [t for t in tags if last is None or t > last]
            page, more = tags[:n], len(tags) > n
            headers = {"Link": f'<{path}?n={n}&last={page[-1]}>; rel="next"'} if more else {}
            return web.json_response(
                {"name": path.split("/v2/")[1].rsplit("/tags", 1)[0], "tags": page}, headers=headers
            )
        kind, _, ref = path.rpartition("/")
        if kind.endswith("/manifests"):
            if ref not in self.manifests:
                return web.Response(status=404)
            media_type, body = self.manifests[ref]
            claimed = digest_of(b"x") if b.wrong_manifest_digest else digest_of(body)
            headers = {"Content-Type": media_type, "Docker-Content-Digest": claimed}
            if request.method == "HEAD":
                return web.Response(headers={**headers, "Content-Length": str(len(body))})
            return web.Response(body=body, headers=headers)
        if kind.endswith("/blobs"):
            if ref not in self.blobs:
                return web.Response(status=404)
            if b.redirect_blobs and request.host.split(":")[0] != "localhost":
                return web.Response(status=307, headers={"Location": f"{self.cdn_url}{path}"})
            return await self._send_blob(request, self.blobs[ref])
        return web.Response(status=404)

    async def _send_blob(self, request: web.Request, data: bytes) -> web.StreamResponse:
        b = self.behaviour
        resp = web.StreamResponse(
            headers={"Content-Length": str(len(data)), "Content-Type": "application/octet-stream"}
        )
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        body = bytearray(data)
        if b.corrupt:
            body[len(body) // 2] ^= 0xFF
        end = len(body) // 2 if b.truncate else len(body)
        step = 64 * 1024
        for pos in range(0, end, step):
            await resp.write(bytes(body[pos : min(pos + step, end)]))
            if b.chunk_delay:
                await asyncio.sleep(b.chunk_delay)
            if pos == 0 and b.chunk_delay:
                await self.release.wait()  # hold after the first chunk until the test lets go
        if b.truncate:
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp


async def start_app(app: web.Application, host: str = "127.0.0.1") -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{host}:{port}"


async def start_hostile(hostile: Hostile) -> list[web.AppRunner]:
    app = web.Application()
    app.router.add_get("/token", hostile.token)
    app.router.add_route("*", "/v2/{tail:.*}", hostile.registry)
    runner, hostile.url = await start_app(app)
    port = hostile.url.rsplit(":", 1)[1]
    hostile.cdn_url = f"http://localhost:{port}"  # same server, other origin
    return [runner]


async def start_shoal(cfg: MirrorConfig, offline: bool = False) -> tuple[web.AppRunner, str, Services]:
    services = Services(cfg, offline=offline)
    runner, url = await start_app(make_app(services))
    return runner, url, services


def mirror_config(tmp: object, *upstreams: UpstreamConfig, tag_ttl: float = 300.0) -> MirrorConfig:
    from pathlib import Path

    return MirrorConfig(
        cache_dir=Path(str(tmp)) / "cache",
        registries={"docker.io": tuple(upstreams)},
        tag_ttl=tag_ttl,
        access_log=False,
    )
