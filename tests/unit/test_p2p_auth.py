from pathlib import Path

import pytest

from p2p.auth import AuthError, read_secret_file, sign_headers, verify_request

SECRET = b"cluster-secret"
PATH = "/piece-hashes/sha256:abc?x=1"
NOW = 1_700_000_000.0


def test_signed_request_verifies() -> None:
    headers = sign_headers(SECRET, "POST", PATH, b"{}", now=NOW)
    verify_request(SECRET, "POST", PATH, headers, b"{}", now=NOW)
    verify_request(SECRET, "post", PATH, headers, b"{}", now=NOW + 59)


@pytest.mark.parametrize(
    ("secret", "method", "path", "body"),
    [
        (b"other-secret", "POST", PATH, b"{}"),
        (SECRET, "GET", PATH, b"{}"),
        (SECRET, "POST", "/piece-hashes/sha256:abd?x=1", b"{}"),
        (SECRET, "POST", PATH, b'{"node": "evil"}'),
    ],
)
def test_any_change_breaks_the_signature(secret: bytes, method: str, path: str, body: bytes) -> None:
    headers = sign_headers(SECRET, "POST", PATH, b"{}", now=NOW)
    with pytest.raises(AuthError, match="bad signature"):
        verify_request(secret, method, path, headers, body, now=NOW)


@pytest.mark.parametrize("skew", [-61.0, 61.0, 3600.0])
def test_stale_or_future_timestamps_are_refused(skew: float) -> None:
    headers = sign_headers(SECRET, "POST", PATH, b"", now=NOW + skew)
    with pytest.raises(AuthError, match="stale"):
        verify_request(SECRET, "POST", PATH, headers, b"", now=NOW)
    verify_request(SECRET, "POST", PATH, headers, b"", now=NOW, max_skew=abs(skew) + 1)


def test_a_replayed_timestamp_cannot_be_moved_forward() -> None:
    headers = sign_headers(SECRET, "POST", PATH, b"", now=NOW)
    headers["X-Shoal-Timestamp"] = str(int(NOW) + 100)
    with pytest.raises(AuthError, match="bad signature"):
        verify_request(SECRET, "POST", PATH, headers, b"", now=NOW + 100)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing signature"),
        ({"Authorization": "Bearer xyz", "X-Shoal-Timestamp": "1"}, "missing signature"),
        ({"Authorization": "Shoal-HMAC-SHA256 ", "X-Shoal-Timestamp": "1"}, "missing signature"),
        ({"Authorization": "Shoal-HMAC-SHA256 abc"}, "timestamp"),
        ({"Authorization": "Shoal-HMAC-SHA256 abc", "X-Shoal-Timestamp": "soon"}, "timestamp"),
    ],
)
def test_malformed_headers_are_refused(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        verify_request(SECRET, "POST", PATH, headers, b"", now=NOW)


def test_secret_file_is_stripped_and_must_not_be_empty(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"  s3cret\n")
    assert read_secret_file(tmp_path / "secret") == b"s3cret"
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(ValueError, match="empty"):
        read_secret_file(str(tmp_path / "empty"))
