"""One benchmark run: start the rig, warm the caches, run the plan's workloads, collect a :class:`Report`.

Order matters for fairness and for "cold":

1. hot workloads (cache-hit blobs, manifests) against warmed servers, in rounds: every round runs every
   workload once per server, the servers taking turns (the order rotates), and the best round counts —
   interference on a shared machine only ever slows a run down, so the best is the least disturbed;
2. the cold path, each trial on freshly started servers with empty caches;
3. coalescing, a fresh server per client count, counting GETs in the upstream's access log;
4. skopeo pulls: cold on fresh servers, then warm on the same servers.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.fetch import Fetch, concurrent_gets, timed_get, timed_pull
from bench.lab.images import ImageInfo
from bench.lab.registry import Registry
from bench.load import LoadError, LoadGenerator, LoadResult
from bench.plan import Plan
from bench.results import CNCF, NGINX, SHOAL, UPSTREAM, Report, Row
from bench.rig import MANIFEST_ACCEPT, REPO, TAG, Rig
from bench.zerocopy import strace_available

Say = Callable[[str], None]


@dataclass
class HotJob:
    row: Row
    path: str
    connections: int
    headers: dict[str, str] = field(default_factory=dict)


class BenchError(RuntimeError):
    """A server gave wrong answers while warming up; measuring it would be meaningless."""


@dataclass
class Runner:
    rig: Rig
    plan: Plan
    load: LoadGenerator
    variants: dict[str, list[str]] = field(default_factory=dict)  # "shoal:<name>" -> extra args
    say: Say = print

    def run(self, report: Report) -> Report:
        rig = self.rig
        self.say("building the test image and starting the upstream registry ...")
        rig.build_image()
        rig.start_upstream()
        groups = self.plan.groups
        if "blob" in groups or "manifest" in groups:
            self._hot(report)
        if "zerocopy" in groups:
            self._zerocopy(report)
        if "cold" in groups:
            self._cold(report)
        if "coalescing" in groups:
            self._coalescing(report)
        if "pull" in groups:
            self._pulls(report)
        return report

    # -- hot path -------------------------------------------------------------------------------------
    def _hot(self, report: Report) -> None:
        rig = self.rig
        self.say("starting nginx, Shoal and the CNCF proxy, and warming their caches ...")
        hosts = {SHOAL: rig.fresh_shoal().host}
        for name, args in self.variants.items():
            hosts[name] = rig.fresh_shoal(args, key=name).host
        hosts[CNCF] = rig.fresh_cncf().host
        hosts[NGINX] = rig.start_nginx().host
        for server, host in hosts.items():
            self._warm(server, host)
        os.sync()  # flush the cache files just written, so writeback does not run during the measurements
        jobs = self._hot_jobs()
        runs, errors = self._load_rounds(jobs, hosts)
        for i, job in enumerate(jobs):
            row = report.add(job.row)
            headline = _headline(row)
            for server in hosts:
                results = runs.get((i, server), [])
                if not results:
                    row.set(server, None, failures=1, error=errors.get((i, server), "no run"))
                    continue
                best = max(results, key=headline)
                failed = sum(r.errors + r.non_2xx for r in results) + (1 if (i, server) in errors else 0)
                rounds = [round(headline(r), 1) for r in results]
                row.set(server, headline(best), failed, **best.as_json(), rounds=rounds)
            self.say(_progress(row))
        for key in [SHOAL, *self.variants, CNCF]:
            rig.stop(key)

    def _hot_jobs(self) -> list[HotJob]:
        rig, jobs = self.rig, []
        if "blob" in self.plan.groups:
            for name, size_key, conns in self.plan.blob_workloads():
                desc = f"cache-hit GET of the {size_key.upper()}iB layer, {conns} connection(s)"
                path = rig.blob_path(rig.layer_digest(size_key))
                jobs.append(HotJob(Row(name, "blob", "MB/s", True, description=desc), path, conns))
        if "manifest" in self.plan.groups:
            for name, kind, conns in self.plan.manifest_workloads():
                ref = self._image().digest if kind == "digest" else TAG
                desc = f"manifest by {kind} ({'within the tag TTL' if kind == 'tag' else 'immutable'}), {conns} conn(s)"
                row = Row(name, "manifest", "req/s", True, description=desc)
                jobs.append(HotJob(row, rig.manifest_path(ref), conns, {"Accept": MANIFEST_ACCEPT}))
        return jobs

    def _load_rounds(
        self, jobs: list[HotJob], hosts: dict[str, str]
    ) -> tuple[dict[tuple[int, str], list[LoadResult]], dict[tuple[int, str], str]]:
        """Every job against every server, ``plan.rounds`` times, the server order rotating."""
        order = list(hosts)
        runs: dict[tuple[int, str], list[LoadResult]] = {}
        errors: dict[tuple[int, str], str] = {}
        for round_ in range(self.plan.rounds):
            self.say(f"hot path, round {round_ + 1}/{self.plan.rounds}: {len(jobs)} workloads x {len(order)} servers")
            for i, job in enumerate(jobs):
                shift = (i + round_) % len(order)
                for server in order[shift:] + order[:shift]:
                    url = f"http://{hosts[server]}{job.path}"
                    try:
                        result = self.load.run(
                            url, connections=job.connections, duration=self.plan.duration_s, headers=job.headers
                        )
                    except LoadError as exc:
                        errors[(i, server)] = str(exc)[:500]
                        continue
                    runs.setdefault((i, server), []).append(result)
        return runs, errors

    def _warm(self, server: str, host: str) -> None:
        """Fetch every blob and both manifest references once, checking status and size."""
        image = self._image()
        checks: list[tuple[str, int, dict[str, str]]] = [(self.rig.blob_path(d), n, {}) for d, n in image.blobs.items()]
        for ref in (image.digest, TAG):
            checks.append((self.rig.manifest_path(ref), image.manifest.size, {"Accept": MANIFEST_ACCEPT}))
        for path, size, headers in checks:
            fetch = timed_get(host, path, headers)
            if not fetch.ok or fetch.nbytes != size:
                raise BenchError(
                    f"{server} answered GET {path} with status {fetch.status}, {fetch.nbytes} bytes"
                    f" (expected 200, {size}) {fetch.error}"
                )

    # -- zero-copy ------------------------------------------------------------------------------------
    def _zerocopy(self, report: Report) -> None:
        if not strace_available():
            self.say("strace is not installed: zero-copy check skipped")
            return
        rig, key, count = self.rig, self.plan.zerocopy_blob, self.plan.zerocopy_requests
        path, expected = rig.blob_path(rig.layer_digest(key)), rig.layer_size(key)
        desc = f"share of the bytes of {count} warm {key.upper()}iB blob GETs sent with sendfile (strace)"
        row = report.add(Row(f"zerocopy-{key}", "zerocopy", "share", True, description=desc))
        for server in [SHOAL, *self.variants]:
            self.say(f"zero-copy check: {server} under strace ...")
            shoal = rig.fresh_traced_shoal(self.variants.get(server), key=server)
            timed_get(shoal.host, path)  # cold: download it into the cache first
            mark = shoal.trace_mark()
            fetches = [timed_get(shoal.host, path) for _ in range(count)]
            shoal.stop()  # strace has written everything once the server is gone
            seen = shoal.syscalls(mark)
            rig.stop(server)
            failed = sum(1 for f in fetches if not f.ok or f.nbytes != expected)
            row.set(server, seen.sendfile_share, failed, requests=count, blob_bytes=expected,
                    calls=seen.calls, bytes=seen.bytes)  # fmt: skip
        self.say(_progress(row))

    # -- cold path ------------------------------------------------------------------------------------
    def _cold(self, report: Report) -> None:
        rig, plan = self.rig, self.plan
        key = plan.cold_blob
        path = rig.blob_path(rig.layer_digest(key))
        upstream = self._upstream()
        ttfb = report.add(
            Row(f"cold-{key}-ttfb", "cold", "ms", False, description=f"time to first byte, cold {key.upper()}iB blob")
        )
        total = report.add(
            Row(f"cold-{key}-total", "cold", "s", False, description=f"total time, cold {key.upper()}iB blob")
        )
        samples: dict[str, list[Fetch]] = {SHOAL: [], CNCF: [], UPSTREAM: []}
        gets: dict[str, list[int]] = {SHOAL: [], CNCF: []}
        for trial in range(plan.cold_trials):
            self.say(f"cold {key.upper()}iB blob, trial {trial + 1}/{plan.cold_trials} ...")
            for server in (SHOAL, CNCF, UPSTREAM):
                if server == UPSTREAM:
                    samples[server].append(timed_get(upstream.host, path))
                    continue
                host = rig.fresh_shoal().host if server == SHOAL else rig.fresh_cncf().host
                mark = upstream.mark()
                samples[server].append(timed_get(host, path))
                upstream.wait_quiet()
                gets[server].append(upstream.count("GET", re.escape(path), since=mark))
                rig.stop(server)
        expected = rig.layer_size(key)
        for server, fetches in samples.items():
            failed = sum(1 for f in fetches if not f.ok or f.nbytes != expected)
            good = [f for f in fetches if f.ok and f.nbytes == expected]
            detail = {"trials": len(fetches), "upstream_gets": gets.get(server)}
            ttfb.set(server, _median_or_none([f.ttfb_s * 1e3 for f in good]), failed, **detail,
                     samples_ms=[round(f.ttfb_s * 1e3, 2) for f in fetches])  # fmt: skip
            total.set(server, _median_or_none([f.total_s for f in good]), failed, **detail,
                      samples_s=[round(f.total_s, 3) for f in fetches])  # fmt: skip
        self.say(_progress(ttfb))
        self.say(_progress(total))

    def _coalescing(self, report: Report) -> None:
        rig, plan = self.rig, self.plan
        key = plan.coalesce_blob
        path = rig.blob_path(rig.layer_digest(key))
        expected = rig.layer_size(key)
        upstream = self._upstream()
        for clients in plan.coalesce_clients:
            row = report.add(
                Row(
                    f"coalesce-{key}-n{clients}",
                    "coalescing",
                    "GETs",
                    False,
                    description=f"{clients} concurrent cold clients of one {key.upper()}iB blob: upstream GETs",
                )
            )
            servers = [SHOAL, *self.variants]
            if clients in plan.coalesce_references:
                servers.append(CNCF)
            for server in servers:
                self.say(f"{clients} concurrent cold clients through {server} ...")
                if server == CNCF:
                    host = rig.fresh_cncf().host
                else:
                    host = rig.fresh_shoal(self.variants.get(server), key=server).host
                mark = upstream.mark()
                started = time.perf_counter()
                fetches = concurrent_gets(host, path, clients)
                wall = time.perf_counter() - started
                upstream.wait_quiet()
                entries = [e for e in upstream.requests(mark) if e.path == path]
                upstream_gets = sum(1 for e in entries if e.method == "GET")
                failed = sum(1 for f in fetches if not f.ok or f.nbytes != expected)
                row.set(
                    server,
                    upstream_gets,
                    failed,
                    clients=clients,
                    upstream_bytes=sum(e.size for e in entries if e.method == "GET"),
                    upstream_heads=sum(1 for e in entries if e.method == "HEAD"),
                    blob_bytes=expected,
                    wall_s=round(wall, 3),
                    ttfb_ms_max=round(max(f.ttfb_s for f in fetches) * 1e3, 1),
                    errors=sorted({f.error or f"status {f.status}" for f in fetches if not f.ok})[:5],
                )
                rig.stop(server)
            self.say(_progress(row))

    # -- skopeo pulls ---------------------------------------------------------------------------------
    def _pulls(self, report: Report) -> None:
        rig, plan = self.rig, self.plan
        upstream = self._upstream()
        cold = report.add(Row("pull-cold", "pull", "s", False, description="skopeo copy of the image, empty cache"))
        warm = report.add(Row("pull-warm", "pull", "s", False, description="skopeo copy of the image, cached"))
        cold_s: dict[str, list[tuple[float, str]]] = {SHOAL: [], CNCF: [], UPSTREAM: []}
        warm_s: dict[str, list[tuple[float, str]]] = {SHOAL: [], CNCF: [], NGINX: [], UPSTREAM: []}
        nginx = rig.nginx or rig.start_nginx()
        for trial in range(plan.pull_trials):
            self.say(f"skopeo pulls, trial {trial + 1}/{plan.pull_trials} ...")
            for server in (SHOAL, CNCF):
                host = rig.fresh_shoal().host if server == SHOAL else rig.fresh_cncf().host
                cold_s[server].append(timed_pull(f"{host}/{REPO}:{TAG}"))
                warm_s[server].append(timed_pull(f"{host}/{REPO}:{TAG}"))
                rig.stop(server)
            cold_s[UPSTREAM].append(timed_pull(f"{upstream.host}/{REPO}:{TAG}"))
            warm_s[UPSTREAM].append(timed_pull(f"{upstream.host}/{REPO}:{TAG}"))
            warm_s[NGINX].append(timed_pull(f"{nginx.host}/{REPO}:{TAG}"))
        for row, table in ((cold, cold_s), (warm, warm_s)):
            for server, runs in table.items():
                errors = [e for _, e in runs if e]
                seconds = [s for s, e in runs if not e]
                row.set(server, _median_or_none(seconds), len(errors), samples_s=[round(s, 3) for s, _ in runs],
                        errors=errors[:3])  # fmt: skip
            self.say(_progress(row))

    # -- helpers --------------------------------------------------------------------------------------
    def _image(self) -> ImageInfo:
        assert self.rig.image is not None
        return self.rig.image

    def _upstream(self) -> Registry:
        assert self.rig.upstream is not None
        return self.rig.upstream


def _headline(row: Row) -> Callable[[LoadResult], float]:
    """Blobs are compared by MB/s: bytes of responses still in flight when the run ends count too, which keeps
    64 MiB at 64 connections meaningful in a few seconds. Manifests by completed requests per second."""
    if row.metric == "MB/s":
        return lambda r: r.mb_per_s
    return lambda r: r.req_per_s


def _median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _progress(row: Row) -> str:
    parts = []
    for server, value in row.values.items():
        shown = "failed" if value is None else f"{value:,.1f}" if value >= 10 else f"{value:.3g}"
        parts.append(f"{server} {shown}")
    return f"  {row.workload:<22} {row.metric:<5} " + ", ".join(parts)
