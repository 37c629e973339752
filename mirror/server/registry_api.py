"""The registry v2 / OCI distribution pull API.

One catch-all route: paths are parsed by the pure grammar in ``mirror.oci.reference`` (names contain slashes,
so a router pattern cannot validate them), then each handler calls a service and streams. ``?ns=`` — which
containerd adds when it uses a mirror — picks the upstream registry; no ``ns`` means the default registry.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from aiohttp import web

from mirror.config import MirrorConfig
from mirror.oci import mediatypes
from mirror.oci.errors import Denied, ManifestUnknown, RegistryError, Unsupported
from mirror.oci.ranges import parse_range
from mirror.oci.reference import RegistryPath, Route, normalize_registry, normalize_repository, parse_path
from mirror.proxy.blobs import BlobService, CachedBlob, FollowedBlob
from mirror.proxy.manifests import ManifestService
from mirror.server.blob_response import BlobStream, blob_headers
from mirror.server.observe import INFO
from mirror.upstream.client import UpstreamClient

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


@dataclass(slots=True)
class RegistryAPI:
    config: MirrorConfig
    manifests: ManifestService
    blobs: BlobService
    upstream: UpstreamClient

    def register(self, app: web.Application) -> None:
        app.router.add_route("*", "/v2", self.handle)
        app.router.add_route("*", "/v2/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = parse_path(request.rel_url.raw_path)
        info = request[INFO]
        info.route = path.route.value
        if request.method not in ("GET", "HEAD"):
            raise Unsupported()
        if path.route is Route.BASE:
            return web.json_response({}, headers=API_VERSION)
        registry = self._registry(request.query.get("ns"))
        repository = normalize_repository(registry, path.name)
        if path.route is Route.BLOB:
            return await self._blob(request, registry, repository, path)
        if path.route is Route.MANIFEST:
            return await self._manifest(request, registry, repository, path)
        if path.route is Route.TAGS:
            return await self._tags(request, registry, repository, path.name)
        return await self._referrers(request, registry, repository, path)

    def _registry(self, ns: str | None) -> str:
        registry = normalize_registry(ns) if ns else self.config.default_registry
        if not self.upstream.has_upstreams(registry) and not self.manifests.offline:  # offline: cache only
            # A mirror must never be a way to make the server fetch from arbitrary hosts.
            raise Denied(f"registry {registry!r} is not mirrored here")
        return registry

    async def _manifest(
        self, request: web.Request, registry: str, repository: str, path: RegistryPath
    ) -> web.StreamResponse:
        assert path.reference is not None
        accepted = mediatypes.parse_accept(request.headers.getall("Accept", []))
        manifest = await self.manifests.get(registry, repository, path.reference, accepted)
        request[INFO].source, request[INFO].upstream = manifest.source, manifest.upstream
        digest = str(manifest.digest)
        headers = {
            "Content-Type": manifest.media_type,
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            **API_VERSION,
        }
        if manifest.stale:
            headers["Warning"] = '110 shoal "tag served stale: upstream unreachable"'
        if request.headers.get("If-None-Match") == headers["ETag"]:
            return web.Response(status=304, headers=headers)
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(manifest.body))
            return web.Response(status=200, headers=headers)
        return web.Response(body=manifest.body, headers=headers)

    async def _blob(
        self, request: web.Request, registry: str, repository: str, path: RegistryPath
    ) -> web.StreamResponse:
        assert path.digest is not None
        digest = str(path.digest)
        if request.method == "HEAD":
            size, source = await self.blobs.size(registry, repository, path.digest)
            request[INFO].source = "cache" if source == "cache" else "upstream"
            _, headers = blob_headers(digest, size, None)
            return web.Response(status=200, headers={**headers, **API_VERSION})
        blob = await self.blobs.open(registry, repository, path.digest)
        try:
            return await self._blob_response(request, digest, blob)
        except BaseException:
            os.close(blob.fd)
            if isinstance(blob, FollowedBlob) and blob.on_close is not None:
                blob.on_close()
            raise

    async def _blob_response(
        self, request: web.Request, digest: str, blob: CachedBlob | FollowedBlob
    ) -> web.StreamResponse:
        if isinstance(blob, CachedBlob):
            size, download, request[INFO].source = blob.size, None, "cache"
        else:
            download = blob.download
            if download.done:  # verified and on disk, only the rename is pending: a cache hit
                request[INFO].source = "cache"
            else:
                request[INFO].source, request[INFO].upstream = download.source, download.upstream
            if download.size is None:  # upstream sent no length: follow the download to its end first
                await download.wait_sendable(1 << 62)
            size = download.size if download.size is not None else download.received
        rng = parse_range(request.headers.get("Range"), size)
        if rng is not None and download is not None:
            await download.wait_received(rng.start)
        status, headers = blob_headers(digest, size, rng)
        offset, count = (rng.start, rng.length) if rng else (0, size)
        on_close = blob.on_close if isinstance(blob, FollowedBlob) else None
        quota = self.blobs.quota
        if quota is not None and download is None:  # never evict a blob while it is being read
            quota.acquire(digest)
            on_close = functools.partial(quota.release, digest)
        return BlobStream(status, {**headers, **API_VERSION}, blob.fd, offset, count, download, on_close)

    async def _tags(self, request: web.Request, registry: str, repository: str, name: str) -> web.StreamResponse:
        query = {k: v for k, v in request.query.items() if k in ("n", "last")}
        suffix = "tags/list" + (f"?{urlencode(query)}" if query else "")
        resp = await self.upstream.request(registry, repository, suffix, not_found=ManifestUnknown)
        try:
            doc = await resp.response.json(content_type=None)
        finally:
            resp.release()
        request[INFO].source, request[INFO].upstream = "upstream", resp.upstream.name
        if isinstance(doc, dict):
            doc["name"] = name
        headers = dict(API_VERSION)
        link = resp.headers.get("Link")
        if link:
            headers["Link"] = _rewrite_link(link, name, request.query.get("ns"))
        return web.json_response(doc, headers=headers)

    async def _referrers(
        self, request: web.Request, registry: str, repository: str, path: RegistryPath
    ) -> web.StreamResponse:
        assert path.digest is not None
        query = {k: v for k, v in request.query.items() if k == "artifactType"}
        suffix = f"referrers/{path.digest}" + (f"?{urlencode(query)}" if query else "")
        resp = await self.upstream.request(registry, repository, suffix, not_found=ManifestUnknown)
        try:
            body = await resp.response.read()
        finally:
            resp.release()
        request[INFO].source, request[INFO].upstream = "upstream", resp.upstream.name
        headers = {"Content-Type": resp.headers.get("Content-Type", mediatypes.OCI_INDEX), **API_VERSION}
        if "OCI-Filters-Applied" in resp.headers:
            headers["OCI-Filters-Applied"] = resp.headers["OCI-Filters-Applied"]
        return web.Response(body=body, headers=headers)


def _rewrite_link(link: str, name: str, ns: str | None) -> str:
    """Point a tags/list pagination link at this mirror's own path (the upstream's may carry a prefix)."""
    target = link.split(";", 1)[0].strip().strip("<>")
    query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items() if k in ("n", "last")}
    if ns:
        query["ns"] = ns
    return f'</v2/{name}/tags/list?{urlencode(query)}>; rel="next"'


def error_response(exc: RegistryError, head: bool) -> web.Response:
    headers = {"Content-Type": "application/json", **API_VERSION, **exc.headers()}
    return web.Response(status=exc.status, body=None if head else exc.body(), headers=headers)
