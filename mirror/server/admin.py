"""Operator endpoints under ``/admin/``: node status, and preheat for a controller or CronJob.

``GET /admin/status``
    JSON: cache size and entry counts, quota use, hit ratios from the cache metrics, upstream health,
    downloads in flight, prefetch jobs.
``POST /admin/prefetch``
    Body ``{"images": ["library/nginx:1.27", ...], "platforms": ["linux/arm64"], "all_platforms": false,
    "wait": true}``. Runs the same prefetch walk as ``shoal prefetch``, in-process through the mirror's
    services (no platforms: this node's own). With ``wait`` (the default) the answer is the job's summary,
    200 when everything was fetched and 502 otherwise; with ``"wait": false`` it is 202 with the job's URL.
    A job belongs to the mirror, not to the request: a client hanging up does not stop it.
``GET /admin/prefetch/{id}``
    A job's progress and, once finished, its summary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from mirror import metrics
from mirror.edge.images import ImageError, ImageRef, PlatformFilter, parse_image, platform_filter
from mirror.edge.local_source import LocalSource
from mirror.edge.prefetch import ImageResult, Prefetcher
from mirror.edge.status import CacheUsage, cache_usage, hit_ratios
from mirror.oci.errors import BadRequest, NameUnknown

if TYPE_CHECKING:
    from mirror.server.app import Services

log = logging.getLogger("shoal.admin")

MAX_BODY = 64 * 1024
MAX_IMAGES = 500
KEEP_FINISHED = 20
USAGE_TTL = 10.0  # seconds a cache-size walk is reused


@dataclass(slots=True)
class PrefetchJob:
    id: str
    images: list[ImageRef]
    platforms: PlatformFilter
    prefetcher: Prefetcher
    started: float = field(default_factory=time.time)
    finished: float | None = None
    results: list[ImageResult] = field(default_factory=list)
    error: str | None = None
    task: asyncio.Task[None] | None = None

    @property
    def ok(self) -> bool:
        return self.finished is not None and self.error is None and not any(r.failures for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        p = self.prefetcher.progress
        doc: dict[str, Any] = {
            "id": self.id,
            "state": "running" if self.finished is None else ("done" if self.ok else "failed"),
            "images": [str(i) for i in self.images],
            "platforms": self.platforms.describe(),
            "started": self.started,
            "finished": self.finished,
            "progress": {
                "manifests": p.manifests,
                "blobs": p.blobs,
                "blobs_done": p.blobs_done,
                "bytes_total": p.bytes_total,
                "bytes_done": p.bytes_done,
            },
            "failures": list(p.failures) + ([self.error] if self.error else []),
        }
        if self.finished is not None:
            doc["results"] = [
                {"image": str(r.image), "digest": r.digest, "platforms": r.platforms, "failures": r.failures}
                for r in self.results
            ]
        return doc


class Admin:
    """The admin routes of one mirror process, with the prefetch jobs it runs."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.jobs: OrderedDict[str, PrefetchJob] = OrderedDict()
        self._usage: tuple[float, CacheUsage] | None = None

    def register(self, app: web.Application) -> None:
        app.router.add_get("/admin/status", self.status)
        app.router.add_post("/admin/prefetch", self.prefetch)
        app.router.add_get("/admin/prefetch/{id}", self.job)
        app.on_cleanup.append(self._cancel_jobs)

    # status ------------------------------------------------------------------------------------------

    async def _cache_usage(self) -> CacheUsage:
        now = time.monotonic()
        if self._usage is None or now - self._usage[0] > USAGE_TTL:
            usage = await asyncio.to_thread(cache_usage, self.services.config.cache_dir)
            self._usage = (now, usage)
        return self._usage[1]

    def _upstreams(self) -> list[dict[str, Any]]:
        config = self.services.config
        registries = list(dict.fromkeys([config.default_registry, *(config.registries or config.allowlist)]))
        requests: dict[str, list[float]] = {}
        for family in metrics.UPSTREAM_REQUESTS.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts = requests.setdefault(sample.labels["upstream"], [0.0, 0.0])
                    counts[0] += sample.value
                    if sample.labels["status"] == "error" or sample.labels["status"].startswith("5"):
                        counts[1] += sample.value
        out = []
        for registry in registries:
            ups = []
            for up in config.upstreams_for(registry):
                name = up.name.rpartition("@")[2]  # never show credentials given in a URL
                counts = requests.get(up.name, [0.0, 0.0])
                url = urlsplit(up.url)._replace(netloc=name).geturl()
                ups.append({"name": name, "url": url, "requests": int(counts[0]), "errors": int(counts[1])})
            out.append(
                {"registry": registry, "reachable": self.services.upstream.reachable(registry), "upstreams": ups}
            )
        return out

    async def status(self, request: web.Request) -> web.Response:
        request["route"] = "admin"
        lookups: dict[tuple[str, str], float] = {}
        for family in metrics.CACHE.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    lookups[(sample.labels["kind"], sample.labels["result"])] = sample.value
        usage = await self._cache_usage()
        doc = {
            "offline": self.services.manifests.offline,
            "cache": {"dir": str(self.services.config.cache_dir), **usage.as_dict()},
            "hit_ratio": hit_ratios(lookups),
            "upstreams": self._upstreams(),
            "inflight": {"downloads": len(self.services.blobs.inflight)},
            "prefetch": {
                "running": sum(1 for j in self.jobs.values() if j.finished is None),
                "jobs": [{"id": j.id, "state": j.as_dict()["state"]} for j in self.jobs.values()],
            },
            "stale_serves": int(_counter_total(metrics.STALE_SERVES)),
        }
        quota = self.services.quota
        if quota is not None:
            doc["quota"] = {"max_bytes": quota.max_bytes, "used_bytes": quota.total, "evicted": quota.evicted}
        return web.json_response(doc)

    # prefetch ----------------------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise BadRequest(f"request body larger than {MAX_BODY} bytes")
        try:
            doc = json.loads(raw or b"{}")
        except ValueError:
            raise BadRequest("request body is not JSON") from None
        if not isinstance(doc, dict):
            raise BadRequest("request body must be a JSON object")
        return doc

    def _parse_job(self, doc: dict[str, Any]) -> tuple[list[ImageRef], PlatformFilter]:
        images, platforms = doc.get("images"), doc.get("platforms") or []
        if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
            raise BadRequest('give "images": a non-empty list of IMAGE strings')
        if len(images) > MAX_IMAGES:
            raise BadRequest(f"at most {MAX_IMAGES} images per job")
        if not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms):
            raise BadRequest('"platforms" must be a list of OS/ARCH strings')
        try:
            refs = [parse_image(i) for i in images]
            return refs, platform_filter(platforms, bool(doc.get("all_platforms")))
        except ImageError as exc:
            raise BadRequest(str(exc)) from None

    async def prefetch(self, request: web.Request) -> web.Response:
        request["route"] = "admin"
        doc = await self._body(request)
        images, platforms = self._parse_job(doc)
        for image in images:
            if not self.services.upstream.has_upstreams(image.registry):
                raise BadRequest(f"registry {image.registry!r} is not mirrored here")
        source = LocalSource(self.services.manifests, self.services.blobs)
        job = PrefetchJob(secrets.token_hex(6), images, platforms, Prefetcher(source, platforms))
        job.task = asyncio.get_running_loop().create_task(self._run(job), name=f"prefetch {job.id}")
        self.jobs[job.id] = job
        self._forget_old()
        if doc.get("wait", True) is False:
            return web.json_response({"id": job.id, "url": f"/admin/prefetch/{job.id}"}, status=202)
        await asyncio.shield(job.task)  # the job outlives a client that hangs up
        return web.json_response(job.as_dict(), status=200 if job.ok else 502)

    async def _run(self, job: PrefetchJob) -> None:
        log.info("prefetch %s: %s (%s)", job.id, ", ".join(str(i) for i in job.images), job.platforms.describe())
        try:
            job.results = await job.prefetcher.run(job.images)
        except Exception as exc:  # a bug must not leave the job running forever
            log.exception("prefetch %s crashed", job.id)
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.time()
        p = job.prefetcher.progress
        log.info(
            "prefetch %s %s: %d manifests, %d/%d blobs, %d bytes, %d failures",
            job.id,
            "done" if job.ok else "failed",
            p.manifests,
            p.blobs_done - p.blobs_failed,
            p.blobs,
            p.bytes_done,
            len(p.failures),
        )

    def _forget_old(self) -> None:
        finished = [j.id for j in self.jobs.values() if j.finished is not None]
        for job_id in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.jobs[job_id]

    async def job(self, request: web.Request) -> web.Response:
        request["route"] = "admin"
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            raise NameUnknown("no such prefetch job")
        return web.json_response(job.as_dict())

    async def _cancel_jobs(self, app: web.Application) -> None:
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _counter_total(counter: Any) -> float:
    return float(sum(s.value for family in counter.collect() for s in family.samples if s.name.endswith("_total")))


def register(app: web.Application, services: Services) -> None:
    """Add the admin routes to the mirror's application."""
    Admin(services).register(app)
