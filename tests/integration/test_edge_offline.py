"""Edge site end to end: prefetch into a running node, export, carry the bundle across, import into an empty
cache, and serve it with no upstream at all; corrupt and truncated bundles are refused with the cache intact.

The upstream is a real docker-registry of our own (it is stopped half-way), the pulls are ``skopeo copy --all``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.lab import Registry, ShoalServer, shoal_cli
from bench.lab.images import OCI_INDEX
from bench.lab.skopeo import copy_from, dir_blob_digests, dir_manifest_digests

from .conftest import Pushed, ShoalFactory, UpstreamImages, push_all, require_shoal, require_tool
from .helpers import blob_path_re, raw_request, wait_until

pytestmark = pytest.mark.integration

CONTAINERD_ACCEPT = (
    "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json,"
    " application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*"
)


@dataclass(frozen=True)
class Exported:
    bundle: Path
    images: list[Pushed]
    prefetch_output: str
    status: dict[str, object]
    blob_gets: dict[str, int]  # upstream GETs per blob during prefetch + export


def _images(upstream_images: UpstreamImages) -> list[Pushed]:
    return [upstream_images.multi, upstream_images.single, upstream_images.docker_list]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, upstream_images: UpstreamImages) -> Iterator[Exported]:
    """Prefetch three images (an OCI index, a manifest, a Docker list) into a node, export them, stop it all."""
    require_tool("docker-registry")
    require_tool("skopeo")
    require_shoal()
    work = tmp_path_factory.mktemp("edge-source")
    images = _images(upstream_images)
    with Registry(work / "upstream") as registry:
        push_all(registry, *images)
        mark = registry.mark()
        with ShoalServer(work / "node", ["--upstream", f"docker.io={registry.url}"]) as node:
            try:
                names = [f"{image.repo}:{image.info.tag}" for image in images]
                result = shoal_cli("prefetch", "--server", node.url, "--all-platforms", *names, timeout=120)
                status = json.loads(shoal_cli("status", "--server", node.url, "--json").stdout)
                bundle = work / "site.tar.zst"
                shoal_cli("export", "--cache-dir", str(node.cache_dir), "-o", str(bundle), "--all-platforms", *names)
            finally:
                print(f"--- {node.log_path} (tail) ---\n{node.log_tail(40)}")
        registry.wait_quiet()
        gets = {
            digest: registry.count("GET", blob_path_re(image.repo, digest), since=mark)
            for image in images
            for digest in image.info.blobs
        }
    yield Exported(bundle, images, result.stdout.decode() + result.stderr.decode(), status, gets)


def test_prefetch_warmed_everything_once(exported: Exported) -> None:
    assert "prefetched 3/3 images" in exported.prefetch_output, exported.prefetch_output
    assert set(exported.blob_gets.values()) == {1}, exported.blob_gets  # export itself touched no network
    cache = exported.status["cache"]
    assert isinstance(cache, dict)
    expected_blobs = {d for image in exported.images for d in image.info.blobs}
    assert cache["blobs"] == len(expected_blobs)
    upstreams = exported.status["upstreams"]
    assert isinstance(upstreams, list) and upstreams[0]["registry"] == "docker.io" and upstreams[0]["reachable"]


def _serve(workdir: Path, bundle: Path, *args: str) -> ShoalServer:
    """A node whose cache is filled only by importing ``bundle`` (it has never seen an upstream)."""
    server = ShoalServer(workdir, list(args))
    assert not server.cache_dir.exists()
    result = shoal_cli("import", "--cache-dir", str(server.cache_dir), str(bundle), timeout=120)
    assert b"imported" in result.stdout, result.stdout
    return server


@pytest.mark.parametrize("mode", ["dead-upstream", "offline"])
def test_imported_bundle_serves_skopeo_with_no_upstream(mode: str, exported: Exported, tmp_path: Path) -> None:
    # A zero tag TTL makes every tag request try (and fail) to revalidate against the dead upstream first.
    dead = ["--upstream", "docker.io=http://127.0.0.1:1", "--tag-ttl", "0"]
    args = dead if mode == "dead-upstream" else ["--offline"]
    server = _serve(tmp_path / "edge", exported.bundle, *args)
    with server:
        try:
            for image in exported.images:
                for ref in (image.ref(server.host), image.digest_ref(server.host)):
                    dest = tmp_path / hashlib.sha256(ref.encode()).hexdigest()[:12]
                    copy_from(ref, dest, timeout=60)
                    assert dir_blob_digests(dest) == image.info.blobs, ref
                    assert dir_manifest_digests(dest) == set(image.info.manifest_digests), ref
            multi = exported.images[0]
            path = f"/v2/{multi.repo}/manifests/{multi.info.tag}"
            for accept in (CONTAINERD_ACCEPT, OCI_INDEX):  # containerd's Accept, and a minimal client's
                response = raw_request(server.host, "GET", path, {"Accept": accept})
                assert response.status == 200, (accept, response.body[:200])
                assert response.header("docker-content-digest") == multi.info.digest
            missing = raw_request(server.host, "GET", "/v2/library/never-imported/manifests/v1")
            assert missing.status in (404, 503)
        finally:
            print(f"--- {server.log_path} (tail) ---\n{server.log_tail(40)}")
    log = server.log_text()
    assert "Traceback" not in log and "source=upstream" not in log


def _cache_files(cache: Path) -> dict[str, str]:
    return {
        str(p.relative_to(cache)): hashlib.sha256(p.read_bytes()).hexdigest()
        for sub in ("blobs", "manifests", "tags")
        for p in sorted((cache / sub).rglob("*"))
        if p.is_file()
    }


def test_corrupt_or_truncated_bundle_is_refused_and_cache_unchanged(exported: Exported, tmp_path: Path) -> None:
    data = exported.bundle.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    broken = {
        "flipped": bytes(flipped),
        "truncated-half": data[: len(data) // 2],
        "truncated-tail": data[:-3],
    }
    empty, filled = tmp_path / "empty", tmp_path / "filled"
    shoal_cli("import", "--cache-dir", str(filled), str(exported.bundle), timeout=120)
    for cache in (empty, filled):
        before = _cache_files(cache) if cache.exists() else {}
        for name, content in broken.items():
            path = tmp_path / f"{name}.tar.zst"
            path.write_bytes(content)
            result = shoal_cli("import", "--cache-dir", str(cache), str(path), check=False, timeout=120)
            err = result.stderr.decode().strip()
            assert result.returncode == 2, (name, err)
            assert len(err.splitlines()) == 1 and "refused" in err and "not changed" in err, (name, err)
            assert "Traceback" not in err
            assert _cache_files(cache) == before, (cache, name)
            assert not list(cache.glob(".import-*"))
    good = shoal_cli("verify", "--cache-dir", str(filled))
    assert b"no problems" in good.stdout


def test_admin_prefetch_and_status(
    upstream: Registry, start_shoal: ShoalFactory, upstream_images: UpstreamImages
) -> None:
    node = start_shoal("--upstream", f"docker.io={upstream.url}", "--max-cache-size", "1G")
    image = upstream_images.docker_single
    body = json.dumps({"images": [f"{image.repo}:{image.info.tag}", "library/absent:v1"], "all_platforms": True})
    headers = {"Content-Type": "application/json"}
    response = raw_request(node.host, "POST", "/admin/prefetch", headers, body.encode())
    assert response.status == 502, response.body[:500]
    job = json.loads(response.body)
    assert job["state"] == "failed" and any("absent" in f for f in job["failures"])
    assert [r["digest"] for r in job["results"]][0] == image.info.digest

    ok = json.dumps({"images": [f"{image.repo}:{image.info.tag}"], "all_platforms": True, "wait": False})
    started = raw_request(node.host, "POST", "/admin/prefetch", headers, ok.encode())
    assert started.status == 202
    job_url = json.loads(started.body)["url"]
    assert wait_until(lambda: json.loads(raw_request(node.host, "GET", job_url).body)["state"] == "done", 20)

    status = json.loads(raw_request(node.host, "GET", "/admin/status").body)
    assert status["cache"]["blobs"] == len(image.info.blobs)
    assert status["hit_ratio"]["blob"] is not None and status["inflight"] == {"downloads": 0}
    assert status["quota"]["max_bytes"] == 1 << 30 and status["quota"]["used_bytes"] > 0
    text = shoal_cli("status", "--server", node.url).stdout.decode()
    assert "hit ratio" in text and "docker.io: reachable" in text and "quota" in text

    bad = raw_request(node.host, "POST", "/admin/prefetch", headers, b'{"images": ["Bad Name"]}')
    assert bad.status == 400 and json.loads(bad.body)["errors"][0]["code"] == "BAD_REQUEST"


def test_prefetch_exit_status_on_failure(shoal: ShoalServer, upstream_images: UpstreamImages) -> None:
    image = upstream_images.single
    result = shoal_cli("prefetch", "--server", shoal.url, f"{image.repo}:{image.info.tag}", "library/absent:v1",
                       check=False, timeout=60)  # fmt: skip
    out = result.stdout.decode()
    assert result.returncode == 1, out + result.stderr.decode()
    assert "prefetched 1/2 images" in out and "MANIFEST_UNKNOWN" in out
    dead = shoal_cli("prefetch", "--server", "http://127.0.0.1:1", "alpine", check=False)
    assert dead.returncode == 2 and b"cannot reach" in dead.stderr and len(dead.stderr.splitlines()) == 1
