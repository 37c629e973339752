"""tags/list pagination, referrers and /metrics through Shoal against a real registry."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.lab import Registry, ShoalServer
from bench.lab.images import push

from .conftest import UpstreamImages
from .helpers import raw_request, wait_until

pytestmark = pytest.mark.integration


def test_tags_list_passes_through_with_pagination(
    shoal: ShoalServer, upstream: Registry, upstream_images: UpstreamImages
) -> None:
    image = upstream_images.single
    for tag in ("v2", "v3"):
        push(image.info.layout_dir, image.info.tag, f"{upstream.host}/library/tagged:{tag}")
    resp = raw_request(shoal.host, "GET", "/v2/tagged/tags/list")
    assert resp.status == 200
    assert json.loads(resp.body) == {"name": "tagged", "tags": ["v2", "v3"]}
    # (distribution 2.8 ignores n/last on tags/list; pagination is tested against the fake upstream)
    missing = raw_request(shoal.host, "GET", "/v2/nosuchrepo/tags/list")
    assert missing.status == 404 and json.loads(missing.body)["errors"][0]["code"]


def test_referrers_unsupported_upstream_is_a_clean_404(shoal: ShoalServer, upstream_images: UpstreamImages) -> None:
    # distribution 2.8 predates the referrers API: the mirror must answer with OCI error JSON, not a trace.
    resp = raw_request(
        shoal.host, "GET", f"/v2/{upstream_images.single.repo}/referrers/{upstream_images.single.info.digest}"
    )
    assert resp.status == 404
    assert json.loads(resp.body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_metrics_count_requests_sources_and_upstreams(shoal: ShoalServer, upstream_images: UpstreamImages) -> None:
    image = upstream_images.single
    layer = image.info.layers[0]
    path = f"/v2/{image.repo}/blobs/{layer.digest}"
    assert raw_request(shoal.host, "GET", path).status == 200
    cached = shoal.cache_dir / "blobs" / "sha256" / layer.digest[7:9] / layer.digest[7:]
    assert wait_until(cached.exists)  # visible right after the response: verified first, fsynced after
    assert raw_request(shoal.host, "GET", path).status == 200
    text = raw_request(shoal.host, "GET", "/metrics").body.decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("shoal_requests_total", (("route", "blob"), ("status", "200")))] == 2
    assert samples[("shoal_bytes_served_total", (("source", "cache"),))] == layer.size
    assert samples[("shoal_bytes_served_total", (("source", "upstream"),))] == layer.size
    assert samples[("shoal_cache_lookups_total", (("kind", "blob"), ("result", "hit")))] == 1
    assert samples[("shoal_inflight_downloads", ())] == 0
    assert any(name == "shoal_upstream_requests_total" for name, _ in samples)
