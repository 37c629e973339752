"""Several upstreams for one registry are tried in order: a miss falls through, a hit stops there."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.lab import Registry, ShoalServer, make_image
from bench.lab.skopeo import copy_from, dir_blob_digests

from .conftest import Pushed, ShoalFactory, push_all, require_tool

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class TwoUpstreams:
    first: Registry
    second: Registry
    only_first: Pushed
    only_second: Pushed
    both_first: Pushed  # library/both:v1 as the first upstream holds it
    both_second: Pushed  # library/both:v1 as the second upstream holds it (different content)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoUpstreams]:
    require_tool("docker-registry")
    require_tool("skopeo")
    root = tmp_path_factory.mktemp("priority")

    def image(repo: str, seed: str) -> Pushed:
        return Pushed(repo, make_image(root / seed, "v1", [200_000, 100_000], seed=seed))

    with contextlib.ExitStack() as stack:
        first = stack.enter_context(Registry(root / "first"))
        second = stack.enter_context(Registry(root / "second"))
        pair = TwoUpstreams(
            first,
            second,
            only_first=image("library/onlyfirst", "only-first"),
            only_second=image("library/onlysecond", "only-second"),
            both_first=image("library/both", "both-first"),
            both_second=image("library/both", "both-second"),
        )
        push_all(first, pair.only_first, pair.both_first)
        push_all(second, pair.only_second, pair.both_second)
        yield pair


@pytest.fixture
def shoal_two(start_shoal: ShoalFactory, two: TwoUpstreams) -> ShoalServer:
    return start_shoal("--upstream", f"docker.io={two.first.url}", "--upstream", f"docker.io={two.second.url}")


def test_image_missing_from_first_upstream_comes_from_second(
    tmp_path: Path, shoal_two: ShoalServer, two: TwoUpstreams
) -> None:
    mark = two.second.mark()
    copy_from(two.only_second.ref(shoal_two.host), tmp_path / "pulled")
    assert dir_blob_digests(tmp_path / "pulled") == two.only_second.info.blobs
    two.second.wait_quiet()
    assert two.second.count("GET", r"/v2/library/onlysecond/blobs/.*", since=mark) == len(two.only_second.info.blobs)


@pytest.mark.parametrize("which", ["only_first", "both_first"])
def test_image_in_first_upstream_never_asks_second(
    which: str, tmp_path: Path, shoal_two: ShoalServer, two: TwoUpstreams
) -> None:
    image: Pushed = getattr(two, which)
    mark = two.second.mark()
    copy_from(image.ref(shoal_two.host), tmp_path / "pulled")
    assert dir_blob_digests(tmp_path / "pulled") == image.info.blobs
    two.first.wait_quiet()
    two.second.wait_quiet()
    asked = [e for e in two.second.requests(since=mark) if e.path.startswith(f"/v2/{image.repo}/")]
    assert asked == []
