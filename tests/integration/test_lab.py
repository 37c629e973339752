"""The lab itself works: real registry, skopeo, containerd and nginx on loopback, valid images."""

from __future__ import annotations

import gzip
import io
import json
import socket
import tarfile
from pathlib import Path

import pytest

from bench.lab import Containerd, Nginx, NotReadyError, Registry, ShoalServer, make_multiarch
from bench.lab.images import OCI_INDEX, OCI_MANIFEST
from bench.lab.skopeo import copy_from, dir_blob_digests, dir_manifest_digests, inspect_raw

from .conftest import UpstreamImages, require_tool
from .helpers import blob_path_re, raw_request, sha256

pytestmark = pytest.mark.integration


def test_images_are_deterministic_and_well_formed(tmp_path: Path) -> None:
    a = make_multiarch(tmp_path / "a", "t", layer_sizes=[1000, 70_000], seed=7)
    b = make_multiarch(tmp_path / "b", "t", layer_sizes=[1000, 70_000], seed=7)
    c = make_multiarch(tmp_path / "c", "t", layer_sizes=[1000, 70_000], seed=8)
    assert a.digest == b.digest and a.blobs == b.blobs
    assert not set(a.blobs) & set(c.blobs)
    assert a.media_type == OCI_INDEX and len(a.child_digests) == 2

    index = json.loads(a.read_blob(a.digest))
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    for image in a.images:
        manifest = json.loads(a.read_blob(image.manifest.digest))
        assert manifest["mediaType"] == OCI_MANIFEST == image.manifest.media_type
        config = json.loads(a.read_blob(manifest["config"]["digest"]))
        assert (config["os"], config["architecture"]) == tuple(image.platform.split("/"))
        for descriptor, diff_id, size in zip(
            manifest["layers"], config["rootfs"]["diff_ids"], [1000, 70_000], strict=True
        ):
            compressed = a.read_blob(descriptor["digest"])
            assert sha256(compressed) == descriptor["digest"] and len(compressed) == descriptor["size"]
            tar = gzip.decompress(compressed)
            assert sha256(tar) == diff_id
            with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
                assert [m.size for m in archive.getmembers() if m.isfile()] == [size]


def test_registry_push_inspect_and_access_log(upstream: Registry, upstream_images: UpstreamImages) -> None:
    for image in (upstream_images.single, upstream_images.multi, upstream_images.docker_list):
        assert sha256(inspect_raw(image.ref(upstream.host))) == image.info.digest

    layer = upstream_images.single.info.layers[0]
    mark = upstream.mark()
    response = raw_request(upstream.host, "GET", f"/v2/library/app/blobs/{layer.digest}?probe=1")
    assert response.status == 200 and sha256(response.body) == layer.digest
    upstream.wait_quiet()
    entries = upstream.requests(since=mark)
    assert [(e.method, e.status, e.size, e.query) for e in entries] == [("GET", 200, layer.size, "probe=1")]
    assert upstream.count("GET", blob_path_re("library/app", layer.digest), since=mark) == 1
    assert upstream.count("HEAD", blob_path_re("library/app", layer.digest), since=mark) == 0


def test_registry_pull_through_mode(tmp_path: Path, upstream: Registry, upstream_images: UpstreamImages) -> None:
    image = upstream_images.multi
    with Registry(tmp_path / "proxy", proxy_remote_url=upstream.url) as proxy:
        mark = upstream.mark()
        copy_from(image.ref(proxy.host), tmp_path / "pulled")
        assert dir_blob_digests(tmp_path / "pulled") == image.info.blobs
        assert dir_manifest_digests(tmp_path / "pulled") == set(image.info.manifest_digests)
        upstream.wait_quiet()
        assert upstream.count("GET", r"/v2/library/multi/blobs/.*", since=mark) >= len(image.info.blobs)


def test_registry_that_cannot_listen_reports_its_log(tmp_path: Path) -> None:
    require_tool("docker-registry")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        registry = Registry(tmp_path, port=taken.getsockname()[1], ready_timeout=10)
        with pytest.raises(NotReadyError, match="address already in use"):
            registry.start()
    assert not registry.running


def test_containerd_pulls_and_unpacks(tmp_path: Path, upstream: Registry, upstream_images: UpstreamImages) -> None:
    require_tool("containerd")
    require_tool("ctr")
    hosts = tmp_path / "hosts" / upstream.host
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(f'server = "{upstream.url}"\n')
    image = upstream_images.single
    with Containerd(tmp_path / "containerd") as containerd:
        containerd.ctr(
            "images", "pull", "--snapshotter", "native", "--hosts-dir", str(tmp_path / "hosts"),
            image.ref(upstream.host), timeout=60,
        )  # fmt: skip
        listing = containerd.ctr("images", "ls").stdout.decode()
        assert image.info.digest in listing
        snapshots = containerd.ctr("snapshots", "--snapshotter", "native", "ls").stdout.decode()
        assert snapshots.count("Committed") == len(image.info.layers)
    assert not containerd.running
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def test_nginx_serves_a_file(tmp_path: Path) -> None:
    require_tool("nginx")
    root = tmp_path / "www"
    root.mkdir()
    payload = bytes(range(256)) * 4096
    (root / "blob").write_bytes(payload)
    with Nginx(tmp_path / "nginx", root) as nginx:
        response = raw_request(nginx.host, "GET", "/blob")
        assert response.status == 200 and response.body == payload
        ranged = raw_request(nginx.host, "GET", "/blob", headers={"Range": "bytes=10-99"})
        assert ranged.status == 206 and ranged.body == payload[10:100]
    assert not nginx.running


def test_shoal_that_fails_to_start_reports_its_log(tmp_path: Path) -> None:
    server = ShoalServer(tmp_path, ["--no-such-flag-for-shoal"], ready_timeout=30)
    with pytest.raises(NotReadyError, match="exited with code"):
        server.start()
    assert not server.running
