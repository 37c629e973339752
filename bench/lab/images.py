"""Deterministic, valid container images built offline, as OCI image layout directories.

Every layer is a real gzip'd tar holding one file of seeded random bytes (so it does not
compress, and its size on the wire is close to the size asked for); the config has a correct
``rootfs.diff_ids``; manifests and indexes carry correct descriptors. The same seed gives the
same digests on every run, so containerd can unpack the layers and tests can compare what a
client pulled with what was pushed.

Layouts hold several tags: ``index.json`` maps ``org.opencontainers.image.ref.name`` to each
top-level manifest or index, which is what ``skopeo copy oci:DIR:TAG`` reads.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.lab.process import LabError
from bench.lab.skopeo import copy, inspect_raw

MediaFamily = Literal["oci", "docker"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

_TYPES: dict[MediaFamily, tuple[str, str, str, str]] = {
    # manifest, index, config, layer
    "oci": (OCI_MANIFEST, OCI_INDEX, OCI_CONFIG, OCI_LAYER_GZIP),
    "docker": (DOCKER_MANIFEST, DOCKER_LIST, DOCKER_CONFIG, DOCKER_LAYER_GZIP),
}
_REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class PlatformImage:
    """One runnable image: its manifest, config and layers."""

    platform: str
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageInfo:
    """What was built for one tag. ``manifest`` is the top-level manifest or index."""

    tag: str
    layout_dir: Path
    manifest: Descriptor
    images: tuple[PlatformImage, ...]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def media_type(self) -> str:
        return self.manifest.media_type

    @property
    def is_index(self) -> bool:
        return self.manifest.media_type in (OCI_INDEX, DOCKER_LIST)

    @property
    def child_digests(self) -> tuple[str, ...]:
        """The per-platform manifests of an index (empty for a single manifest)."""
        return tuple(i.manifest.digest for i in self.images) if self.is_index else ()

    @property
    def manifest_digests(self) -> tuple[str, ...]:
        """The top manifest and every child manifest."""
        return (self.digest, *self.child_digests)

    @property
    def blobs(self) -> dict[str, int]:
        """``{digest: size}`` of every config and layer blob (manifests excluded)."""
        out: dict[str, int] = {}
        for image in self.images:
            for d in (image.config, *image.layers):
                out[d.digest] = d.size
        return out

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return tuple(layer for image in self.images for layer in image.layers)

    def read_blob(self, digest: str) -> bytes:
        """The bytes of a blob or manifest stored in the layout."""
        return blob_path(self.layout_dir, digest).read_bytes()


def blob_path(layout_dir: Path, digest: str) -> Path:
    algorithm, _, hex_ = digest.partition(":")
    return Path(layout_dir) / "blobs" / algorithm / hex_


def _write_blob(layout_dir: Path, media_type: str, data: bytes) -> Descriptor:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_path(layout_dir, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return Descriptor(media_type, digest, len(data))


def _canonical(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _split_platform(platform: str) -> tuple[str, str, str | None]:
    parts = platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform must be os/arch[/variant], not {platform!r}")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _platform_json(platform: str) -> dict[str, str]:
    os_, arch, variant = _split_platform(platform)
    out = {"os": os_, "architecture": arch}
    if variant:
        out["variant"] = variant
    return out


def _layer_tar(path: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        directory = tarfile.TarInfo(path.rsplit("/", 1)[0])
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        for info in (directory, tarfile.TarInfo(path)):
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
        file_info = tarfile.TarInfo(path)
        file_info.size, file_info.mode, file_info.mtime = len(data), 0o644, 0
        file_info.uname = file_info.gname = "root"
        tar.addfile(directory)
        tar.addfile(file_info, io.BytesIO(data))
    return buf.getvalue()


def _build_platform_image(
    layout_dir: Path, platform: str, layer_sizes: list[int], seed: str, family: MediaFamily
) -> PlatformImage:
    manifest_type, _, config_type, layer_type = _TYPES[family]
    layers: list[Descriptor] = []
    diff_ids: list[str] = []
    history: list[dict[str, object]] = []
    slug = platform.replace("/", "-")
    for i, size in enumerate(layer_sizes):
        data = random.Random(f"{seed}:{platform}:{i}:{size}").randbytes(size)
        tar = _layer_tar(f"shoal-lab/{slug}-layer{i}.bin", data)
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        layers.append(_write_blob(layout_dir, layer_type, gzip.compress(tar, compresslevel=1, mtime=0)))
        history.append({"created": "1970-01-01T00:00:00Z", "created_by": f"shoal-lab layer {i} ({size} bytes)"})
    config_doc: dict[str, object] = {
        **_platform_json(platform),
        "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/true"], "Labels": {"shoal.lab.seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    config = _write_blob(layout_dir, config_type, _canonical(config_doc))
    manifest_doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config.as_json(),
        "layers": [layer.as_json() for layer in layers],
    }
    manifest = _write_blob(layout_dir, manifest_type, _canonical(manifest_doc))
    return PlatformImage(platform, manifest, config, tuple(layers))


def _tag_in_index(layout_dir: Path, tag: str, top: Descriptor) -> None:
    layout_dir.mkdir(parents=True, exist_ok=True)
    (layout_dir / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index_path = layout_dir / "index.json"
    entries: list[dict[str, object]] = []
    if index_path.exists():
        entries = [
            e for e in json.loads(index_path.read_text())["manifests"] if e.get("annotations", {}).get(_REF_NAME) != tag
        ]
    entries.append({**top.as_json(), "annotations": {_REF_NAME: tag}})
    index_path.write_text(json.dumps({"schemaVersion": 2, "manifests": entries}, indent=1))


def make_image(
    layout_dir: Path,
    tag: str,
    layer_sizes: list[int],
    seed: str | int,
    platform: str = "linux/amd64",
    media_types: MediaFamily = "oci",
) -> ImageInfo:
    """Build a single-platform image with one layer per entry of ``layer_sizes`` (bytes of payload)."""
    layout_dir = Path(layout_dir)
    image = _build_platform_image(layout_dir, platform, list(layer_sizes), str(seed), media_types)
    _tag_in_index(layout_dir, tag, image.manifest)
    return ImageInfo(tag, layout_dir, image.manifest, (image,))


def make_multiarch(
    layout_dir: Path,
    tag: str,
    platforms: list[str] | None = None,
    layer_sizes: list[int] | None = None,
    seed: str | int = 0,
    media_types: MediaFamily = "oci",
) -> ImageInfo:
    """Build an image index (or Docker manifest list) with one child manifest per platform."""
    layout_dir = Path(layout_dir)
    platforms = platforms or ["linux/amd64", "linux/arm64"]
    sizes = list(layer_sizes or [256 * 1024, 128 * 1024])
    images = tuple(_build_platform_image(layout_dir, p, sizes, str(seed), media_types) for p in platforms)
    _, index_type, _, _ = _TYPES[media_types]
    index_doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": index_type,
        "manifests": [{**i.manifest.as_json(), "platform": _platform_json(i.platform)} for i in images],
    }
    top = _write_blob(layout_dir, index_type, _canonical(index_doc))
    _tag_in_index(layout_dir, tag, top)
    return ImageInfo(tag, layout_dir, top, images)


def _tagged_digest(layout_dir: Path, tag: str) -> str:
    for entry in json.loads((layout_dir / "index.json").read_text())["manifests"]:
        if entry.get("annotations", {}).get(_REF_NAME) == tag:
            return str(entry["digest"])
    raise LabError(f"{layout_dir} has no tag {tag!r}")


def _stage_dir_layout(layout_dir: Path, top: str, out: Path) -> None:
    """Lay out the image tagged ``top`` as skopeo's ``dir:`` transport expects, by hard links."""

    def place(digest: str, name: str) -> None:
        src = blob_path(layout_dir, digest)
        try:
            os.link(src, out / name)
        except OSError:
            shutil.copyfile(src, out / name)

    (out / "version").write_text("Directory Transport Version: 1.1\n")
    place(top, "manifest.json")
    pending = [(top, True)]
    while pending:
        digest, is_top = pending.pop()
        doc = json.loads(blob_path(layout_dir, digest).read_bytes())
        if not is_top:
            place(digest, f"{digest.partition(':')[2]}.manifest.json")
        for child in doc.get("manifests", []):
            pending.append((child["digest"], False))
        for blob in [doc["config"], *doc["layers"]] if "config" in doc else []:
            place(blob["digest"], blob["digest"].partition(":")[2])


def push(layout_dir: Path, tag: str, dest: str, all_platforms: bool = True, *, timeout: float = 120.0) -> str:
    """Copy the image tagged ``tag`` in ``layout_dir`` to ``docker://dest`` (``HOST/REPO:TAG``).

    skopeo's ``oci:`` transport only lists OCI media types, so the image is staged as a ``dir:``
    layout (hard links, no copies) and sent with ``--preserve-digests``: the registry receives the
    manifests byte for byte, for OCI and Docker media types alike. Returns the digest the registry
    now holds for ``dest``; with ``all_platforms`` raises LabError unless it is the layout's.
    """
    layout_dir = Path(layout_dir)
    expected = _tagged_digest(layout_dir, tag)
    with tempfile.TemporaryDirectory(dir=layout_dir.parent, prefix=".push-") as staging:
        _stage_dir_layout(layout_dir, expected, Path(staging))
        copy(f"dir:{staging}", f"docker://{dest}", all_platforms=all_platforms, timeout=timeout)
    held = "sha256:" + hashlib.sha256(inspect_raw(dest)).hexdigest()
    if all_platforms and held != expected:
        raise LabError(f"registry holds {held} for {dest}, but the layout has {expected}")
    return held
