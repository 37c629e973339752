import json

import pytest

from mirror.oci import mediatypes as mt
from mirror.oci.challenge import parse_challenge
from mirror.oci.errors import ManifestInvalid, RangeNotSatisfiable
from mirror.oci.manifest import MAX_MANIFEST_BYTES, parse_refs
from mirror.oci.ranges import ByteRange, parse_range

HEX = "b" * 64


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", ByteRange(0, 9)),
        ("bytes=10-", ByteRange(10, 99)),
        ("bytes=90-200", ByteRange(90, 99)),
        ("bytes=-10", ByteRange(90, 99)),
        ("bytes=-1000", ByteRange(0, 99)),
        ("items=0-1", None),
        ("bytes=0-1,5-6", None),
        ("bytes=x-y", None),
        ("bytes=5-2", None),
    ],
)
def test_ranges(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as err:
        parse_range(header, 100)
    assert err.value.status == 416
    assert err.value.headers() == {"Content-Range": "bytes */100"}


def test_content_range() -> None:
    assert ByteRange(10, 99).content_range(100) == "bytes 10-99/100"
    assert ByteRange(10, 99).length == 90


def test_accept_parsing_and_keys() -> None:
    got = mt.parse_accept([f"{mt.OCI_INDEX}, {mt.DOCKER_MANIFEST};q=0.5", "*/*", f"{mt.OCI_INDEX}"])
    assert got == tuple(sorted({mt.OCI_INDEX, mt.DOCKER_MANIFEST}))
    assert mt.accept_key(()) == "default"
    assert mt.accept_key(got) == mt.accept_key(tuple(sorted(got)))
    assert mt.accept_key((mt.OCI_INDEX,)) != mt.accept_key((mt.DOCKER_MANIFEST,))
    assert mt.upstream_accept(()) == ", ".join(mt.DEFAULT_ACCEPT)


def test_sniff_media_type() -> None:
    assert mt.sniff_media_type(b'{"mediaType": "x/y"}') == "x/y"
    assert mt.sniff_media_type(b'{"schemaVersion": 2, "manifests": []}') == mt.OCI_INDEX
    assert mt.sniff_media_type(b'{"schemaVersion": 2, "config": {}, "layers": []}') == mt.OCI_MANIFEST
    assert mt.sniff_media_type(b"not json") is None


def _desc(media_type: str, ch: str, size: int, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": f"sha256:{ch * 64}", "size": size, **extra}


def test_parse_refs_of_index_and_image() -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            _desc(mt.OCI_MANIFEST, "c", 10, platform={"os": "linux", "architecture": "arm64", "variant": "v8"})
        ],
    }
    refs = parse_refs(json.dumps(index).encode())
    assert [d.platform for d in refs.manifests] == ["linux/arm64/v8"]
    image = {
        "schemaVersion": 2,
        "config": _desc("c", "d", 5),
        "layers": [_desc("l", "e", 7)],
        "subject": _desc("s", "f", 1),
    }
    refs = parse_refs(json.dumps(image).encode())
    assert [str(b.digest)[-1] for b in refs.blobs] == ["d", "e"]
    assert refs.subject is not None


@pytest.mark.parametrize("body", [b"[]", b"nope", json.dumps({"layers": [{"digest": "sha256:zz"}]}).encode()])
def test_parse_refs_rejects_garbage(body: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        parse_refs(body)


def test_manifest_size_limit() -> None:
    with pytest.raises(ManifestInvalid):
        parse_refs(b" " * (MAX_MANIFEST_BYTES + 1))


def test_bearer_challenge() -> None:
    ch = parse_challenge('Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"')
    assert ch is not None and ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull,push"}
    basic = parse_challenge('Basic realm="x"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("") is None


def test_schema1_payload_is_what_the_digest_covers() -> None:
    import base64

    from mirror.oci.manifest import schema1_payload

    payload = b'{\n   "schemaVersion": 1,\n   "name": "library/app",\n   "fsLayers": []\n}'
    cut = payload.rindex(b"\n}")
    tail = base64.urlsafe_b64encode(payload[cut:]).rstrip(b"=").decode()
    protected = base64.urlsafe_b64encode(json.dumps({"formatLength": cut, "formatTail": tail}).encode()).decode()
    sig = json.dumps([{"header": {}, "signature": "x", "protected": protected.rstrip("=")}]).encode()
    signed = payload[:cut] + b',\n   "signatures": ' + sig + payload[cut:]
    assert schema1_payload(signed) == payload
    assert schema1_payload(payload) is None
