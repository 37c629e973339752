"""Counting the bytes that blob syscalls moved, from strace output, and the zero-copy gate."""

from pathlib import Path

import pytest

from bench.floors import Floors, FloorsError, check_floors, parse_floors
from bench.results import SHOAL, Report, Row
from bench.zerocopy import TracedShoal, parse_strace

TRACE = """\
4242  sendfile(12, 9, [0] => [2621440], 8391488) = 2621440
4242  sendfile(12, 9, [2621440] => [8391488], 5770048 <unfinished ...>
4243  pread64(7, ""..., 1048576, 0) = 1048576
4242  <... sendfile resumed>) = 5770048
4242  sendfile(12, 9, [8391488], 1024) = -1 EAGAIN (Resource temporarily unavailable)
4244  write(2, ""..., 10) = 10
"""


def test_parse_strace_counts_calls_and_bytes() -> None:
    seen = parse_strace(TRACE)
    assert seen.calls == {"sendfile": 3, "pread64": 1}
    assert seen.bytes == {"sendfile": 8391488, "pread64": 1048576}
    assert seen.sendfile_share == pytest.approx(8391488 / (8391488 + 1048576))


def test_parse_strace_without_pid_prefix_and_empty() -> None:
    assert parse_strace("sendfile64(3, 4, NULL, 10) = 10\n").sendfile_bytes == 10
    assert parse_strace("").sendfile_share is None


def test_traced_shoal_wraps_the_command(tmp_path: Path) -> None:
    cmd = TracedShoal(tmp_path, ["--loop", "uvloop"]).command()
    assert cmd[:2] == ["strace", "-f"]
    assert "trace=/^(sendfile|sendfile64|pread64)$" in cmd
    assert cmd[-2:] == ["--loop", "uvloop"]
    assert "shoal" in cmd and "serve" in cmd


def _report(share: float | None) -> Report:
    report = Report()
    report.add(Row("zerocopy-8m", "zerocopy", "share", True)).set(SHOAL, share)
    return report


def test_zerocopy_floor() -> None:
    floors = parse_floors("[zerocopy]\nmin_sendfile_share = 0.9\n")
    assert floors.min_sendfile_share == 0.9
    assert check_floors(_report(1.0), floors) == ([], [])
    violations, _ = check_floors(_report(0.0), floors)
    assert violations == [
        "zerocopy-8m: only 0% of blob bytes went out through sendfile (min 90%): the blob path lost zero-copy"
    ]
    violations, _ = check_floors(_report(None), floors)
    assert violations == ["zerocopy-8m: no blob bytes were seen in the strace output"]
    assert check_floors(_report(0.0), Floors()) == ([], [])  # no [zerocopy] section, no check


@pytest.mark.parametrize("text", ["[zerocopy]\nmin_sendfile_share = 1.5\n", "[zerocopy]\nshare = 1\n"])
def test_zerocopy_floor_rejects_mistakes(text: str) -> None:
    with pytest.raises(FloorsError, match="zerocopy"):
        parse_floors(text)
