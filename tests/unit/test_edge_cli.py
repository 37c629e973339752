"""The edge subcommands end in one line and an exit status, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.cli import main

from .test_edge_bundle import CacheBuilder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"shoal {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def cache(tmp_path: Path) -> CacheBuilder:
    c = CacheBuilder(tmp_path / "cache")
    c.tag("library/multi", "v1", c.index("m", ["linux/amd64", "linux/arm64"]))
    return c


def test_export_import_verify_gc(capsys: pytest.CaptureFixture[str], cache: CacheBuilder, tmp_path: Path) -> None:
    bundle = str(tmp_path / "b.tar.zst")
    code, out, _ = run(capsys, "export", "--cache-dir", str(cache.root), "-o", bundle, "--all-platforms", "multi:v1")
    assert code == 0 and out.startswith("exported 1 images") and "6 blobs" in out
    target = str(tmp_path / "target")
    code, out, _ = run(capsys, "import", "--cache-dir", target, bundle)
    assert code == 0 and "6 blobs (6 new)" in out
    code, out, _ = run(capsys, "verify", "--cache-dir", target)
    assert code == 0 and "no problems" in out
    code, out, _ = run(capsys, "gc", "--cache-dir", target)
    assert code == 0 and "removed 0 manifests and 0 blobs" in out


def test_verify_exit_status(capsys: pytest.CaptureFixture[str], cache: CacheBuilder) -> None:
    path = next(p for _, p in cache.store.iter_blobs())
    path.write_bytes(path.read_bytes() + b"rot")
    code, out, _ = run(capsys, "verify", "--cache-dir", str(cache.root))
    assert code == 1 and out.startswith("corrupt blob ") and "1 corrupt" in out
    code, out, _ = run(capsys, "verify", "--cache-dir", str(cache.root), "--repair")
    assert code == 0 and "1 removed" in out and not path.exists()


@pytest.mark.parametrize(
    ("argv", "command", "expected"),
    [
        (["export", "-o", "{tmp}/x.tar.zst", "Bad/Name"], "export", "invalid repository name"),
        (["export", "--cache-dir", "{cache}", "-o", "{tmp}/x.tar.zst", "nope:v1"], "export", "tag not in the cache"),
        (["export", "--cache-dir", "{tmp}/none", "-o", "{tmp}/x", "a"], "export", "not a Shoal cache"),
        (["export", "--cache-dir", "{cache}", "-o", "{tmp}/no/such/dir/x", "multi:v1"], "export", "No such file"),
        (["import", "--cache-dir", "{cache}", "{tmp}/missing.tar.zst"], "import", "no such file"),
        (["import", "--cache-dir", "{cache}", "{tmp}/junk"], "import", "refused: not a zstd-compressed bundle"),
        (["verify", "--cache-dir", "{tmp}/none"], "verify", "not a Shoal cache"),
        (["gc", "--cache-dir", "{tmp}/none"], "gc", "not a Shoal cache"),
        (["prefetch", "--server", "ftp://x", "a"], "prefetch", "--server must be http(s)"),
        (["prefetch", "--server", "http://x", "--platform", "linux", "a"], "prefetch", "platform must be"),
        (
            ["prefetch", "--server", "http://x", "--all-platforms", "--platform", "linux/amd64", "a"],
            "prefetch",
            "not both",
        ),  # noqa: E501
        (["status", "--server", "localhost:5000"], "status", "--server must be http(s)"),
    ],
)
def test_one_line_errors(
    capsys: pytest.CaptureFixture[str],
    cache: CacheBuilder,
    tmp_path: Path,
    argv: list[str],
    command: str,
    expected: str,
) -> None:
    (tmp_path / "junk").write_bytes(b"this is not a bundle at all" * 100)
    args = [a.format(tmp=tmp_path, cache=cache.root) for a in argv]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert expected in one_line_error(err, command)


def test_refused_bundle_says_the_cache_is_unchanged(
    capsys: pytest.CaptureFixture[str], cache: CacheBuilder, tmp_path: Path
) -> None:
    bundle = tmp_path / "b.tar.zst"
    assert run(capsys, "export", "--cache-dir", str(cache.root), "-o", str(bundle), "multi:v1")[0] == 0
    bundle.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    code, _, err = run(capsys, "import", "--cache-dir", str(tmp_path / "t"), str(bundle))
    line = one_line_error(err, "import")
    assert code == 2 and "truncated" in line and line.endswith("the cache was not changed")
