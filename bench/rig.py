"""The benchmark's servers on loopback, built from ``bench.lab``: one upstream, and the three servers compared.

* ``upstream``: a ``docker-registry`` holding one generated image, ``library/bench:v1``, whose layers are
  about 1 MiB, 8 MiB and 64 MiB of incompressible data (plus a small config blob).
* ``shoal``: ``python -m shoal serve`` mirroring docker.io from the upstream.
* ``cncf``: ``docker-registry`` in proxy mode (``proxy.remoteurl``) of the upstream.
* ``nginx``: nginx with sendfile serving the same blob files, laid out under ``/v2/library/bench/...`` so
  every server is asked for exactly the same URL paths; ``/v2/`` and the manifests get the headers a registry
  client needs, which makes it a static registry that skopeo can pull from too.

``fresh_shoal()`` and ``fresh_cncf()`` always start a new process on an empty cache directory: that is what
"cold" means in this harness. A new work directory replaces the old one, which is deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench.lab.images import ImageInfo, blob_path, make_image, push
from bench.lab.nginx import Nginx
from bench.lab.process import LabError
from bench.lab.registry import Registry
from bench.lab.shoal import ShoalServer
from bench.zerocopy import TracedShoal

S = TypeVar("S", Registry, ShoalServer, TracedShoal)

MiB = 1 << 20
REPO = "library/bench"
TAG = "v1"
LAYER_SIZES = {"1m": MiB, "8m": 8 * MiB, "64m": 64 * MiB}
MANIFEST_ACCEPT = ",".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


class StaticRegistryNginx(Nginx):
    """The lab's nginx, plus the two things a registry client needs from a static tree: ``GET /v2/`` answers
    200 and manifests carry their media type (nginx would call them application/octet-stream)."""

    def __init__(self, workdir: Path, root_dir: Path, manifest_type: str, workers: int = 2) -> None:
        super().__init__(workdir, root_dir, workers=workers)
        self.manifest_type = manifest_type

    def prepare(self) -> None:
        super().prepare()
        text = self.config_path.read_text()
        anchor = f"    root {self.root_dir};\n"
        if anchor not in text:
            raise LabError(f"cannot extend {self.config_path}: no '{anchor.strip()}' line")
        extra = (
            "    location = /v2/ { default_type application/json; return 200 '{}'; }\n"
            f"    location /v2/{REPO}/manifests/ {{ default_type {self.manifest_type}; }}\n"
        )
        self.config_path.write_text(text.replace(anchor, anchor + extra))


class Rig:
    """Owns every process and directory of one benchmark run; ``close()`` (or ``with``) stops them all."""

    def __init__(self, workdir: Path | None = None, shoal_args: list[str] | None = None, nginx_workers: int = 2):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="shoal-bench-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.shoal_args = list(shoal_args or [])
        self.nginx_workers = nginx_workers
        self.image: ImageInfo | None = None
        self.upstream: Registry | None = None
        self.nginx: StaticRegistryNginx | None = None
        self._current: dict[str, Registry | ShoalServer] = {}
        self._counter = 0
        self.keep_server_dirs = False

    # -- set-up ---------------------------------------------------------------------------------------
    def build_image(self) -> ImageInfo:
        sizes = list(LAYER_SIZES.values())
        self.image = make_image(self.workdir / "image", TAG, sizes, seed="shoal-bench")
        return self.image

    def start_upstream(self) -> Registry:
        image = self.image or self.build_image()
        self.upstream = Registry(self.workdir / "upstream").start()
        push(image.layout_dir, TAG, f"{self.upstream.host}/{REPO}:{TAG}")
        return self.upstream

    def start_nginx(self) -> StaticRegistryNginx:
        image = self._image()
        root = self.workdir / "nginx-root"
        repo_dir = root / "v2" / REPO
        (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "manifests").mkdir(parents=True, exist_ok=True)
        for digest in image.blobs:
            _link(blob_path(image.layout_dir, digest), repo_dir / "blobs" / digest)
        manifest = blob_path(image.layout_dir, image.digest)
        _link(manifest, repo_dir / "manifests" / image.digest)
        _link(manifest, repo_dir / "manifests" / TAG)
        self.nginx = StaticRegistryNginx(self.workdir / "nginx", root, image.media_type, self.nginx_workers).start()
        return self.nginx

    # -- fresh (cold) servers -------------------------------------------------------------------------
    def fresh_shoal(self, extra_args: list[str] | None = None, key: str = "shoal") -> ShoalServer:
        """Stop the previous server under ``key`` and start a Shoal on an empty cache."""
        upstream = self._upstream()
        args = ["--upstream", f"docker.io={upstream.url}", *self.shoal_args, *(extra_args or [])]
        return self._replace(key, lambda d: ShoalServer(d, args))

    def fresh_traced_shoal(self, extra_args: list[str] | None = None, key: str = "shoal") -> TracedShoal:
        """Like :meth:`fresh_shoal`, run under strace (see :mod:`bench.zerocopy`)."""
        upstream = self._upstream()
        args = ["--upstream", f"docker.io={upstream.url}", *self.shoal_args, *(extra_args or [])]
        return self._replace(key, lambda d: TracedShoal(d, args))

    def fresh_cncf(self, key: str = "cncf") -> Registry:
        """Stop the previous proxy under ``key`` and start a ``docker-registry`` proxy on empty storage."""
        upstream = self._upstream()
        return self._replace(key, lambda d: Registry(d, proxy_remote_url=upstream.url))

    def _replace(self, key: str, factory: Callable[[Path], S]) -> S:
        self.stop(key)
        self._counter += 1
        workdir = self.workdir / f"{key.replace(':', '-')}-{self._counter}"
        server = factory(workdir)
        self._current[key] = server
        server.start()
        return server

    def stop(self, key: str) -> None:
        old = self._current.pop(key, None)
        if old is not None:
            old.stop()
            if not self.keep_server_dirs:
                shutil.rmtree(old.workdir, ignore_errors=True)

    def close(self, keep_workdir: bool = False) -> None:
        for key in list(self._current):
            with contextlib.suppress(Exception):
                self.stop(key)
        for proc in (self.nginx, self.upstream):
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.stop()
        if self._own_workdir and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addresses ------------------------------------------------------------------------------------
    def _image(self) -> ImageInfo:
        if self.image is None:
            raise LabError("build_image() first")
        return self.image

    def _upstream(self) -> Registry:
        if self.upstream is None:
            raise LabError("start_upstream() first")
        return self.upstream

    def layer_digest(self, size_key: str) -> str:
        """The digest of the layer of about ``LAYER_SIZES[size_key]`` bytes."""
        image = self._image()
        return image.layers[list(LAYER_SIZES).index(size_key)].digest

    def layer_size(self, size_key: str) -> int:
        image = self._image()
        return image.layers[list(LAYER_SIZES).index(size_key)].size

    @staticmethod
    def blob_path(digest: str) -> str:
        return f"/v2/{REPO}/blobs/{digest}"

    @staticmethod
    def manifest_path(reference: str) -> str:
        return f"/v2/{REPO}/manifests/{reference}"


def _link(src: Path, dest: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
