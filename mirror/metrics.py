"""Prometheus metrics, defined once.

Labels are bounded: routes, status classes, sources and configured upstream hosts. Repository names and
digests never become labels (they are unbounded and would blow up the time-series database).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter("shoal_requests_total", "Registry API requests", ["route", "status"], registry=REGISTRY)
BYTES_SERVED = Counter("shoal_bytes_served_total", "Body bytes sent to clients", ["source"], registry=REGISTRY)
CACHE = Counter("shoal_cache_lookups_total", "Cache lookups", ["kind", "result"], registry=REGISTRY)
UPSTREAM_REQUESTS = Counter(
    "shoal_upstream_requests_total",
    "Requests sent upstream",
    ["upstream", "method", "status"],
    registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "shoal_upstream_latency_seconds",
    "Time to upstream response headers",
    ["upstream"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
UPSTREAM_BYTES = Counter("shoal_upstream_bytes_total", "Blob bytes fetched", ["upstream"], registry=REGISTRY)
INFLIGHT = Gauge("shoal_inflight_downloads", "Blob downloads in progress", registry=REGISTRY)
STALE_SERVES = Counter("shoal_stale_serves_total", "Tags served stale because upstreams failed", registry=REGISTRY)
INTEGRITY_FAILURES = Counter(
    "shoal_integrity_failures_total", "Downloads discarded for a digest or size mismatch", registry=REGISTRY
)
