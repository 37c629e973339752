"""Thin, bounded wrappers around the ``skopeo`` CLI, the lab's reference registry client.

To pull *through* a mirror, address the mirror itself, e.g.
``copy_from("127.0.0.1:5000/library/foo:tag", dest)``: Shoal's default registry is docker.io and
one-component docker.io names live under ``library/``. TLS verification is off by default
because everything in the lab is plain HTTP on loopback.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from bench.lab.process import run


def _docker_ref(ref: str) -> str:
    return ref if ref.startswith("docker://") else f"docker://{ref}"


def _env(registries_conf: Path | None) -> dict[str, str] | None:
    if registries_conf is None:
        return None
    return {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(registries_conf)}


def skopeo(
    *args: str, timeout: float = 120.0, registries_conf: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """``skopeo --insecure-policy ARGS`` with a timeout; raises CommandError on failure if ``check``."""
    return run(["skopeo", "--insecure-policy", *args], timeout=timeout, env=_env(registries_conf), check=check)


def copy(
    src: str,
    dest: str,
    *,
    all_platforms: bool = True,
    src_tls_verify: bool = False,
    dest_tls_verify: bool = False,
    preserve_digests: bool = True,
    registries_conf: Path | None = None,
    timeout: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """``skopeo copy`` between two full transport references (``docker://``, ``oci:``, ``dir:`` ...)."""
    args = ["copy", f"--src-tls-verify={str(src_tls_verify).lower()}"]
    args.append(f"--dest-tls-verify={str(dest_tls_verify).lower()}")
    if all_platforms:
        args.append("--all")
    if preserve_digests:
        args.append("--preserve-digests")
    return skopeo(*args, src, dest, timeout=timeout, registries_conf=registries_conf, check=check)


def copy_from(
    src_docker_ref: str,
    dest_dir: Path,
    all_platforms: bool = True,
    tls_verify: bool = False,
    registries_conf: Path | None = None,
    *,
    timeout: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Pull ``HOST/REPO:TAG`` (or ``@DIGEST``) into ``dest_dir`` using skopeo's ``dir:`` layout.

    The ``dir:`` layout keeps manifests and blobs byte for byte: ``manifest.json`` is the top
    manifest, ``<hex>.manifest.json`` each child manifest of an index, and each blob is a file
    named by its sha256 hex digest (see :func:`dir_blob_digests`). Missing parents are created.
    """
    Path(dest_dir).parent.mkdir(parents=True, exist_ok=True)
    return copy(
        _docker_ref(src_docker_ref),
        f"dir:{dest_dir}",
        all_platforms=all_platforms,
        src_tls_verify=tls_verify,
        registries_conf=registries_conf,
        timeout=timeout,
        check=check,
    )


def inspect_raw(ref: str, tls_verify: bool = False, *, timeout: float = 30.0) -> bytes:
    """The raw manifest bytes of ``HOST/REPO:TAG`` (or a full ``docker://`` reference)."""
    result = skopeo("inspect", "--raw", f"--tls-verify={str(tls_verify).lower()}", _docker_ref(ref), timeout=timeout)
    return result.stdout


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dir_blob_digests(dest_dir: Path, verify: bool = True) -> dict[str, int]:
    """``{digest: size}`` of the blobs in a ``dir:`` layout; with ``verify`` each is re-hashed."""
    blobs: dict[str, int] = {}
    for path in Path(dest_dir).iterdir():
        name = path.name
        if len(name) != 64 or not all(c in "0123456789abcdef" for c in name):
            continue
        digest = f"sha256:{name}"
        if verify:
            actual = _file_digest(path)
            if actual != digest:
                raise ValueError(f"{path} holds {actual}, not {digest}")
        blobs[digest] = path.stat().st_size
    return blobs


def dir_manifest_digests(dest_dir: Path) -> set[str]:
    """Digests of every manifest in a ``dir:`` layout: the top one and any per-instance ones."""
    digests = {sha256_digest((Path(dest_dir) / "manifest.json").read_bytes())}
    for path in Path(dest_dir).glob("*.manifest.json"):
        digests.add(sha256_digest(path.read_bytes()))
    return digests


def _file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()
