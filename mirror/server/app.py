"""The mirror's HTTP application: wiring, the one error middleware, access log, metrics and health.

Errors are rendered here and nowhere else: a :class:`RegistryError` becomes OCI error JSON with its status;
anything unexpected is logged with its traceback and becomes a 500 ``UNKNOWN`` — clients never see a trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mirror import metrics
from mirror.config import MirrorConfig
from mirror.oci.errors import NameUnknown, RegistryError, Unsupported
from mirror.oci.reference import Digest, parse_image
from mirror.proxy.blobs import BlobService
from mirror.proxy.manifests import ManifestService
from mirror.proxy.peers import PeerSource
from mirror.server import admin
from mirror.server.blob_response import BlobStream
from mirror.server.observe import INFO, AccessLog, RequestInfo
from mirror.server.registry_api import API_VERSION, RegistryAPI
from mirror.store.files import FileStore
from mirror.store.quota import CacheQuota
from mirror.store.tags import TagStore
from mirror.upstream.client import UpstreamClient

log = logging.getLogger("shoal")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ACCESS_LOG = web.AppKey("access_log", AccessLog)


class Services:
    """The object graph of one mirror process."""

    def __init__(self, config: MirrorConfig, peers: PeerSource | None = None, offline: bool = False) -> None:
        self.config = config
        self.store = FileStore(config.cache_dir)
        self.tags = TagStore(config.cache_dir)
        self.upstream = UpstreamClient(config.upstreams_for)
        self.manifests = ManifestService(
            self.store, self.tags, self.upstream, config.tag_ttl, config.manifest_memory_bytes, offline=offline
        )
        self.quota: CacheQuota | None = None
        if config.max_cache_bytes:
            self.quota = CacheQuota(self.store, config.max_cache_bytes, self.pinned_digests, self._evicted)
        self.blobs = BlobService(self.store, self.upstream, peers, self.quota, offline=offline)
        self._background: list[asyncio.Task[None]] = []

    def _evicted(self, digests: list[str]) -> None:
        """Evicted blobs and manifests: out of the manifest memory, and withdrawn from peers."""
        self.manifests.forget(digests)
        if self.blobs.peers is not None:
            for digest in digests:
                self.blobs.peers.dropped(Digest.parse(digest))

    def pinned_digests(self) -> set[str]:
        """Every digest the configured pins reach through cached tags, indexes and manifests."""
        return self.manifests.closure(parse_image(pin) for pin in self.config.pins)

    async def start(self) -> None:
        if self.quota is not None:
            await asyncio.to_thread(self.quota.load)
            log.info("cache holds %d bytes of blobs (limit %d)", self.quota.total, self.quota.max_bytes)
            self._background.append(asyncio.create_task(self.quota.run_flusher()))

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.blobs.inflight.shutdown()
        await self.upstream.close()


SERVICES = web.AppKey("services", Services)


def error_response(exc: RegistryError, head: bool) -> web.Response:
    headers = {"Content-Type": "application/json", **API_VERSION, **exc.headers()}
    return web.Response(status=exc.status, body=None if head else exc.body(), headers=headers)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status, sent = 500, 0
    info = request[INFO] = RequestInfo()
    try:
        try:
            response = await handler(request)
        except RegistryError as exc:
            response = error_response(exc, request.method == "HEAD")
        except web.HTTPException as exc:  # router 404/405 for non-registry paths
            response = error_response(_http_error(exc), request.method == "HEAD")
        status = response.status
        if isinstance(response, BlobStream):
            await response.prepare(request)  # stream inside the middleware so the log sees the outcome
            sent, info.outcome = response.sent, response.outcome
        elif isinstance(response, web.Response) and response.body is not None and request.method != "HEAD":
            sent = response.content_length or 0
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        raise
    finally:
        metrics.REQUESTS.labels(info.route, str(status)).inc()
        if sent and info.source != "-":
            metrics.BYTES_SERVED.labels(info.source).inc(sent)
        access = request.app.get(ACCESS_LOG)
        if access is not None:
            ms = (time.perf_counter() - started) * 1000
            access.write(request.method, request.path_qs, status, sent, info, ms)


def _http_error(exc: web.HTTPException) -> RegistryError:
    return Unsupported() if exc.status == 405 else NameUnknown("no such endpoint")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(services: Services) -> web.Application:
    app = web.Application(middlewares=[observe], client_max_size=1024)
    app[SERVICES] = services
    access = AccessLog() if services.config.access_log else None
    if access is not None:
        app[ACCESS_LOG] = access
    RegistryAPI(services.config, services.manifests, services.blobs, services.upstream).register(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    admin.register(app, services)

    async def on_startup(app: web.Application) -> None:
        await services.start()

    async def on_cleanup(app: web.Application) -> None:
        await services.close()
        if access is not None:
            access.flush()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
