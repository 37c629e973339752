"""An edge Shoal whose upstream is a central Shoal: ns routing, tags, and the edge serving on when the centre dies."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.lab import Registry
from bench.lab.skopeo import copy_from, dir_blob_digests

from .conftest import ShoalFactory, UpstreamImages
from .helpers import ACCEPT_ALL, raw_request

pytestmark = pytest.mark.integration


def test_edge_centre_upstream_chain_survives_the_centre(
    tmp_path: Path, start_shoal: ShoalFactory, upstream: Registry, upstream_images: UpstreamImages
) -> None:
    single, multi = upstream_images.single, upstream_images.multi
    # The centre mirrors docker.io and a private registry, both backed here by the same upstream.
    centre = start_shoal(
        "--upstream", f"docker.io={upstream.url}", "--upstream", f"private.example:5000={upstream.url}"
    )
    # The edge sends every registry to the centre, tagged with ?ns=; short tag TTL so tags revalidate.
    edge = start_shoal("--upstream", f"*={centre.url}", "--tag-ttl", "0")

    copy_from(single.ref(edge.host), tmp_path / "hub")  # no ns: the default registry, docker.io
    assert dir_blob_digests(tmp_path / "hub") == single.info.blobs

    # ns routing through the chain: the edge asks the centre for the private registry's copy.
    resp = raw_request(
        edge.host, "GET", f"/v2/{multi.repo}/manifests/{multi.info.tag}?ns=private.example:5000", {"Accept": ACCEPT_ALL}
    )
    assert resp.status == 200 and resp.headers["docker-content-digest"] == multi.info.digest
    assert "ns=private.example%3A5000" in centre.log_text() or "ns=private.example:5000" in centre.log_text()
    # A registry the centre does not mirror is refused by the centre, and the edge says so.
    resp = raw_request(edge.host, "GET", "/v2/x/manifests/v1?ns=evil.example.com", {"Accept": ACCEPT_ALL})
    assert 400 <= resp.status < 500 or resp.status == 503

    centre.stop()  # the WAN link to the centre is cut
    copy_from(single.ref(edge.host), tmp_path / "offline")
    assert dir_blob_digests(tmp_path / "offline") == single.info.blobs
    resp = raw_request(
        edge.host, "GET", f"/v2/{multi.repo}/manifests/{multi.info.tag}?ns=private.example:5000", {"Accept": ACCEPT_ALL}
    )
    assert resp.status == 200 and resp.headers["docker-content-digest"] == multi.info.digest
