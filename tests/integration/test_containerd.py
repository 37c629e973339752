"""containerd pulls through Shoal using the hosts.toml that ``shoal containerd-config`` writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.lab import Containerd, Registry, ShoalServer, shoal_cli

from .conftest import UpstreamImages, require_tool
from .helpers import blob_path_re, raw_request

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    require_tool("containerd")
    require_tool("ctr")
    with Containerd(tmp_path_factory.mktemp("containerd")) as daemon:
        yield daemon


@pytest.fixture
def hosts_dir(tmp_path: Path, shoal: ShoalServer) -> Path:
    out = tmp_path / "certs.d"
    shoal_cli("containerd-config", "--mirror", shoal.url, "--registry", "docker.io", "--output-dir", str(out))
    return out


def test_containerd_config_writes_hosts_toml(hosts_dir: Path, shoal: ShoalServer) -> None:
    hosts_toml = (hosts_dir / "docker.io" / "hosts.toml").read_text()
    assert f'[host."{shoal.url}"]' in hosts_toml
    assert "pull" in hosts_toml and "resolve" in hosts_toml


def test_namespace_query_selects_the_registry(shoal: ShoalServer, upstream_images: UpstreamImages) -> None:
    image = upstream_images.single
    response = raw_request(
        shoal.host, "HEAD", f"/v2/{image.repo}/manifests/{image.info.tag}?ns=docker.io",
        {"Accept": image.info.media_type},
    )  # fmt: skip
    assert response.status == 200
    assert response.header("docker-content-digest") == image.info.digest


def test_ctr_content_fetch_through_shoal(
    containerd: Containerd, hosts_dir: Path, upstream: Registry, upstream_images: UpstreamImages
) -> None:
    image = upstream_images.single
    mark = upstream.mark()
    containerd.ctr("content", "fetch", "--hosts-dir", str(hosts_dir), f"docker.io/{image.repo}:v1", timeout=90)
    content = containerd.ctr("content", "ls", "-q").stdout.decode().split()
    assert set(image.info.blobs) | {image.info.digest} <= set(content)
    # containerd only knows Shoal; every blob it got was fetched upstream by Shoal exactly once.
    upstream.wait_quiet()
    for digest in image.info.blobs:
        assert upstream.count("GET", blob_path_re(image.repo, digest), since=mark) == 1, digest


def test_ctr_images_pull_through_shoal(
    containerd: Containerd, hosts_dir: Path, upstream: Registry, upstream_images: UpstreamImages
) -> None:
    image = upstream_images.multi
    amd64 = next(i for i in image.info.images if i.platform == "linux/amd64")
    ref = f"docker.io/{image.repo}:{image.info.tag}"
    mark = upstream.mark()
    containerd.ctr(
        "images", "pull", "--snapshotter", "native", "--platform", "linux/amd64",
        "--hosts-dir", str(hosts_dir), ref, timeout=90,
    )  # fmt: skip
    listing = containerd.ctr("images", "ls").stdout.decode()
    assert any(line.startswith(ref) and image.info.digest in line for line in listing.splitlines()), listing
    upstream.wait_quiet()
    for layer in (amd64.config, *amd64.layers):
        assert upstream.count("GET", blob_path_re(image.repo, layer.digest), since=mark) == 1, layer
    containerd.ctr("images", "rm", "--sync", ref, timeout=60)
