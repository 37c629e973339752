"""Hostile and malformed requests get the right 4xx and an OCI error body, never a 500."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from bench.lab import Registry, ShoalServer

from .conftest import shoal_starter
from .helpers import oci_error_codes, raw_request

pytestmark = pytest.mark.integration

UNKNOWN = "sha256:" + "0" * 64
ANY_4XX = set(range(400, 500))
NOT_FOUND_OR_BAD = {400, 404}
TAG_CODES = {"TAG_INVALID", "MANIFEST_INVALID"}

# (id, method, request target, allowed statuses, allowed codes or None for "any code")
CASES = [
    ("traversal", "GET", "/v2/../../etc/passwd", NOT_FOUND_OR_BAD, None),
    ("traversal-after-name", "GET", "/v2/library/../../../etc/passwd/manifests/v1", NOT_FOUND_OR_BAD, None),
    ("encoded-traversal", "GET", "/v2/%2e%2e/%2e%2e/etc/passwd", NOT_FOUND_OR_BAD, None),
    ("encoded-traversal-in-name", "GET", "/v2/library/%2e%2e/%2e%2e/manifests/v1", NOT_FOUND_OR_BAD, None),
    ("encoded-slash-traversal", "GET", "/v2/library/app/blobs/..%2f..%2f..%2fetc%2fpasswd", NOT_FOUND_OR_BAD, None),
    ("bad-blob-digest", "GET", "/v2/library/app/blobs/sha256:xyz", {400}, {"DIGEST_INVALID"}),
    ("bad-blob-digest-head", "HEAD", "/v2/library/app/blobs/sha256:xyz", {400}, None),
    ("bad-manifest-digest", "GET", "/v2/library/app/manifests/sha256:xyz", {400}, {"DIGEST_INVALID", *TAG_CODES}),
    ("uppercase-name", "GET", "/v2/Library/App/manifests/v1", {400}, {"NAME_INVALID"}),
    ("dotdot-in-name", "GET", "/v2/library/a..b/manifests/v1", {400}, {"NAME_INVALID"}),
    ("name-over-255", "GET", "/v2/library/" + "a" * 300 + "/manifests/v1", {400}, {"NAME_INVALID"}),
    ("bad-tag", "GET", "/v2/library/app/manifests/-v1", {400}, TAG_CODES),
    ("tag-over-128", "GET", "/v2/library/app/manifests/" + "t" * 129, {400}, TAG_CODES),
    ("unknown-blob", "GET", f"/v2/library/app/blobs/{UNKNOWN}", {404}, {"BLOB_UNKNOWN"}),
    ("unknown-tag", "GET", "/v2/library/app/manifests/nosuchtag", {404}, {"MANIFEST_UNKNOWN"}),
    ("unknown-manifest-digest", "GET", f"/v2/library/app/manifests/{UNKNOWN}", {404}, {"MANIFEST_UNKNOWN"}),
    ("unknown-repository", "GET", "/v2/library/nosuchrepo/manifests/v1", {404}, {"NAME_UNKNOWN", "MANIFEST_UNKNOWN"}),
    ("put-manifest", "PUT", "/v2/library/app/manifests/v1", {405}, {"UNSUPPORTED"}),
    ("post-upload", "POST", "/v2/library/app/blobs/uploads/", {405}, {"UNSUPPORTED"}),
    ("patch-upload", "PATCH", "/v2/library/app/blobs/uploads/some-session", {405}, {"UNSUPPORTED"}),
    ("put-upload", "PUT", f"/v2/library/app/blobs/uploads/some-session?digest={UNKNOWN}", {405}, {"UNSUPPORTED"}),
    ("delete-manifest", "DELETE", f"/v2/library/app/manifests/{UNKNOWN}", {405}, {"UNSUPPORTED"}),
    ("delete-blob", "DELETE", f"/v2/library/app/blobs/{UNKNOWN}", {405}, {"UNSUPPORTED"}),
    ("registry-not-allowed", "GET", "/v2/library/app/manifests/v1?ns=evil.example.com", ANY_4XX, None),
]


@pytest.fixture(scope="module")
def shared_shoal(tmp_path_factory: pytest.TempPathFactory, upstream: Registry) -> Iterator[ShoalServer]:
    """One Shoal for every case here: these requests must not change what it caches."""
    with shoal_starter(tmp_path_factory) as start:
        yield start("--upstream", f"docker.io={upstream.url}")


@pytest.mark.parametrize(("method", "target", "statuses", "codes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_gets_oci_error(
    shared_shoal: ShoalServer, method: str, target: str, statuses: set[int], codes: set[str] | None
) -> None:
    body = b"{}" if method in ("PUT", "POST", "PATCH") else None
    response = raw_request(shared_shoal.host, method, target, body=body)
    assert response.status in statuses, (response.status, response.body[:300])
    assert b"root:" not in response.body
    if method == "HEAD":
        assert response.body == b""
        return
    assert (response.header("content-type") or "").startswith("application/json"), response.headers
    found = oci_error_codes(response.body)
    if codes is not None:
        assert set(found) & codes, found


def test_registry_not_allowlisted_is_refused_without_connecting(shared_shoal: ShoalServer) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        registry = f"127.0.0.1:{listener.getsockname()[1]}"
        for target in (
            f"/v2/library/app/manifests/v1?ns={registry}",
            f"/v2/library/app/blobs/{UNKNOWN}?ns={registry}",
        ):
            response = raw_request(shared_shoal.host, "GET", target)
            assert 400 <= response.status < 500, (target, response.status, response.body[:300])
            assert oci_error_codes(response.body)
        time.sleep(0.3)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected to the refused registry
