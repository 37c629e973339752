"""Fixtures that run real programs on loopback: docker-registry upstreams with pushed images,
Shoal itself, and containerd. Work dirs come from ``tmp_path_factory``; every process is stopped
at teardown even when a test fails, and Shoal's log tail is printed so a failure shows it."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from bench.lab import ImageInfo, Registry, ShoalServer, make_image, make_multiarch, push

MiB = 1 << 20


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} is not available")


def require_tool(name: str) -> None:
    """Skip (or, under CI=true, fail) when a command is not installed."""
    if shutil.which(name) is None:
        _missing(f"the {name!r} command")


def require_shoal() -> None:
    """Skip (or, under CI=true, fail) when ``python -m shoal`` cannot run yet."""
    if importlib.util.find_spec("shoal.__main__") is None:
        _missing("the shoal server (python -m shoal)")


@dataclass(frozen=True)
class Pushed:
    """An image built by the lab and pushed to an upstream under ``repo:info.tag``."""

    repo: str
    info: ImageInfo

    def ref(self, host: str) -> str:
        return f"{host}/{self.repo}:{self.info.tag}"

    def digest_ref(self, host: str) -> str:
        return f"{host}/{self.repo}@{self.info.digest}"


@dataclass(frozen=True)
class UpstreamImages:
    single: Pushed  # OCI manifest, 3 layers of 1-2 MiB
    multi: Pushed  # OCI index, linux/amd64 + linux/arm64
    big: Pushed  # OCI manifest, layers of 8 MiB and 16 MiB (single flight, disconnects)
    docker_single: Pushed  # Docker schema2 manifest
    docker_list: Pushed  # Docker manifest list


def push_all(registry: Registry, *images: Pushed) -> None:
    for image in images:
        push(image.info.layout_dir, image.info.tag, image.ref(registry.host))


@pytest.fixture(scope="session")
def upstream_images(tmp_path_factory: pytest.TempPathFactory) -> UpstreamImages:
    root = tmp_path_factory.mktemp("images")  # one layout per image: a layout's tags are unique
    return UpstreamImages(
        single=Pushed("library/app", make_image(root / "app", "v1", [MiB, 3 * MiB // 2, 2 * MiB], seed="app")),
        multi=Pushed("library/multi", make_multiarch(root / "multi", "v1", layer_sizes=[MiB, MiB // 2], seed="m")),
        big=Pushed("library/big", make_image(root / "big", "v1", [8 * MiB, 16 * MiB], seed="big")),
        docker_single=Pushed(
            "library/dsingle", make_image(root / "dsingle", "v1", [MiB // 4], seed="ds", media_types="docker")
        ),
        docker_list=Pushed(
            "library/dlist",
            make_multiarch(root / "dlist", "v1", layer_sizes=[MiB // 4], seed="dl", media_types="docker"),
        ),
    )


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory, upstream_images: UpstreamImages) -> Iterator[Registry]:
    """One docker-registry holding every image in ``upstream_images``; count with ``mark()``/``since``."""
    require_tool("docker-registry")
    require_tool("skopeo")
    with Registry(tmp_path_factory.mktemp("upstream")) as registry:
        i = upstream_images
        push_all(registry, i.single, i.multi, i.big, i.docker_single, i.docker_list)
        yield registry


ShoalFactory = Callable[..., ShoalServer]


@contextlib.contextmanager
def shoal_starter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShoalFactory]:
    """Yield ``start(*args)`` that runs a fresh Shoal (empty cache); all are stopped on exit and
    their log tails printed, which pytest shows for a failed test."""
    require_shoal()
    servers: list[ShoalServer] = []

    def start(*args: str) -> ShoalServer:
        server = ShoalServer(tmp_path_factory.mktemp("shoal"), list(args))
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
            print(f"--- {server.log_path} (tail) ---\n{server.log_tail(60)}")


@pytest.fixture
def start_shoal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShoalFactory]:
    with shoal_starter(tmp_path_factory) as start:
        yield start


@pytest.fixture
def shoal(start_shoal: ShoalFactory, upstream: Registry) -> ShoalServer:
    """A cold Shoal mirroring docker.io from ``upstream``."""
    return start_shoal("--upstream", f"docker.io={upstream.url}")
