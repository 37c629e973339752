"""The prefetch walk, against an in-memory source: platforms, each blob once, failures collected."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable

import pytest

from mirror.edge.images import ImageRef, PlatformFilter, parse_image
from mirror.edge.prefetch import FetchedManifest, Prefetcher, PrefetchError, Progress
from mirror.edge.progress import PlainReporter, TerminalReporter, human, summary
from mirror.oci import mediatypes
from mirror.oci.reference import Digest


def _d(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


class FakeMirror:
    """Manifests by tag or digest and blobs by digest; counts requests; fails what it is told to."""

    def __init__(self) -> None:
        self.manifests: dict[str, tuple[str, bytes]] = {}
        self.tags: dict[str, str] = {}
        self.blobs: dict[Digest, bytes] = {}
        self.fail: set[str] = set()
        self.requests: Counter[str] = Counter()

    def add_manifest(self, doc: dict[str, object], media_type: str) -> dict[str, object]:
        body = json.dumps(doc).encode()
        self.manifests[str(_d(body))] = (media_type, body)
        return {"mediaType": media_type, "digest": str(_d(body)), "size": len(body)}

    def add_image(self, seed: str, shared: bytes = b"shared base layer") -> dict[str, object]:
        layers = []
        for data in (shared, seed.encode() * 100):
            self.blobs[_d(data)] = data
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": str(_d(data)),
                           "size": len(data)})  # fmt: skip
        config = f'{{"seed": "{seed}"}}'.encode()
        self.blobs[_d(config)] = config
        doc = {"config": {"mediaType": "c", "digest": str(_d(config)), "size": len(config)}, "layers": layers}
        return self.add_manifest(doc, mediatypes.OCI_MANIFEST)

    async def manifest(self, image: ImageRef, reference: str) -> FetchedManifest:
        self.requests[f"manifest {reference}"] += 1
        key = self.tags.get(f"{image.repository}:{reference}", reference)
        if key in self.fail or key not in self.manifests:
            raise PrefetchError("HTTP 404 MANIFEST_UNKNOWN: manifest unknown")
        media_type, body = self.manifests[key]
        return FetchedManifest(Digest.parse(key), media_type, body)

    async def blob(self, image: ImageRef, digest: Digest, size: int, on_bytes: Callable[[int], None]) -> None:
        self.requests[f"blob {digest}"] += 1
        if str(digest) in self.fail:
            raise PrefetchError("HTTP 503 UNAVAILABLE: no upstream could be reached")
        on_bytes(len(self.blobs[digest]))


@pytest.fixture
def mirror() -> FakeMirror:
    m = FakeMirror()
    amd, arm = m.add_image("amd"), m.add_image("arm")
    attestation = m.add_image("att")
    index = m.add_manifest(
        {
            "manifests": [
                {**amd, "platform": {"os": "linux", "architecture": "amd64"}},
                {**arm, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {**attestation, "platform": {"os": "unknown", "architecture": "unknown"}},
            ]
        },
        mediatypes.OCI_INDEX,
    )
    m.tags["library/multi:v1"] = str(index["digest"])
    m.tags["library/single:v1"] = str(m.add_image("single")["digest"])
    return m


async def test_one_platform(mirror: FakeMirror) -> None:
    prefetcher = Prefetcher(mirror, PlatformFilter(("linux/arm64",)))
    [result] = await prefetcher.run([parse_image("multi:v1")])
    assert result.failures == [] and result.platforms == ["linux/arm64/v8"]
    assert len(result.blobs) == 3
    assert prefetcher.progress.manifests == 2
    assert prefetcher.progress.bytes_done == prefetcher.progress.bytes_total > 0


async def test_all_platforms_fetch_each_blob_once(mirror: FakeMirror) -> None:
    prefetcher = Prefetcher(mirror, PlatformFilter(all_platforms=True), jobs=2)
    results = await prefetcher.run([parse_image("multi:v1"), parse_image("single:v1")])
    assert [r.failures for r in results] == [[], []]
    assert sorted(results[0].platforms) == ["linux/amd64", "linux/arm64/v8", "unknown/unknown"]
    blob_requests = [n for k, n in mirror.requests.items() if k.startswith("blob ")]
    assert blob_requests and set(blob_requests) == {1}  # the shared base layer too
    assert prefetcher.progress.blobs == prefetcher.progress.blobs_done == len(blob_requests) == 1 + 4 * 2


async def test_failures_are_collected_not_raised(mirror: FakeMirror) -> None:
    shared = str(_d(b"shared base layer"))
    mirror.fail.add(shared)
    prefetcher = Prefetcher(mirror, PlatformFilter(("linux/amd64",)))
    results = await prefetcher.run([parse_image("multi:v1"), parse_image("nope:v1"), parse_image("single:v1")])
    multi, nope, single = results
    assert len(multi.failures) == 1 and "blob" in multi.failures[0] and "UNAVAILABLE" in multi.failures[0]
    assert single.failures == multi.failures  # the same blob, fetched once, fails both images
    assert "MANIFEST_UNKNOWN" in nope.failures[0]
    assert prefetcher.progress.blobs_failed == 1
    assert len(prefetcher.progress.failures) == 2


async def test_no_matching_platform(mirror: FakeMirror) -> None:
    [result] = await Prefetcher(mirror, PlatformFilter(("linux/s390x",))).run([parse_image("multi:v1")])
    assert result.failures and "offers linux/amd64, linux/arm64/v8" in result.failures[0]


async def test_reporters_and_summary(mirror: FakeMirror) -> None:
    plain, bar = io.StringIO(), io.StringIO()
    for reporter in (PlainReporter(plain), TerminalReporter(bar)):
        prefetcher = Prefetcher(mirror, PlatformFilter(("linux/amd64",)), reporter)
        results = await prefetcher.run([parse_image("multi:v1"), parse_image("gone:v1")])
        reporter.finish()
    lines = plain.getvalue().splitlines()
    assert any(line.startswith("manifest ") for line in lines) and any(line.startswith("blob ") for line in lines)
    assert any(line.startswith("FAILED docker.io/library/gone:v1") for line in lines)
    assert "layers 3/3" in bar.getvalue() and "\r" in bar.getvalue()
    text = summary(prefetcher.progress, results)
    assert text.startswith("prefetched 1/2 images") and "1 failures" in text


def test_human() -> None:
    assert [human(n) for n in (0, 1023, 1024, 5 * 1024**3)] == ["0 B", "1023 B", "1.0 KiB", "5.0 GiB"]
    assert Progress().failures == []
