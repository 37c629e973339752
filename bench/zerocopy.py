"""Is the blob path really zero-copy? Run Shoal under ``strace`` and see which syscalls carry the bytes.

Throughput ratios cannot tell a silent read/write fallback from a noisy machine (aiohttp under uvloop falls back
without a word and loses about half of its 1 MiB throughput). This check is exact instead: a Shoal started as
``strace -f -e trace=sendfile,sendfile64,pread64 ...`` serves a few warm blob GETs, and the share of the blob
bytes that went out through ``sendfile`` is counted from the trace (1.0 under the default asyncio loop). The
Shoal is started as strace's child, so no ptrace attach permission is needed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from bench.lab.shoal import ShoalServer

TRACED = ("sendfile", "sendfile64", "pread64")
_CALL = re.compile(r"^(?:\[pid\s+)?(?:\d+\]?\s+)?(?P<name>\w+)\(.*\)\s+=\s+(?P<ret>-?\d+)")
_RESUMED = re.compile(r"<\.\.\. (?P<name>\w+) resumed>.*\)\s+=\s+(?P<ret>-?\d+)")


@dataclass(frozen=True)
class SyscallBytes:
    calls: dict[str, int]
    bytes: dict[str, int]

    @property
    def sendfile_bytes(self) -> int:
        return self.bytes.get("sendfile", 0) + self.bytes.get("sendfile64", 0)

    @property
    def sendfile_share(self) -> float | None:
        """Share of the bytes moved by the traced calls that went through sendfile; None if nothing moved."""
        total = self.sendfile_bytes + self.bytes.get("pread64", 0)
        return self.sendfile_bytes / total if total else None


def parse_strace(text: str) -> SyscallBytes:
    """Count calls and bytes returned per traced syscall in ``strace -f -o`` output (failed calls count 0 bytes)."""
    calls: dict[str, int] = {}
    moved: dict[str, int] = {}
    for line in text.splitlines():
        match = _CALL.match(line) or _RESUMED.search(line)
        if match is None or match["name"] not in TRACED:
            continue
        name = match["name"]
        calls[name] = calls.get(name, 0) + 1
        moved[name] = moved.get(name, 0) + max(0, int(match["ret"]))
    return SyscallBytes(calls, moved)


def strace_available() -> bool:
    return shutil.which("strace") is not None


class TracedShoal(ShoalServer):
    """A Shoal whose blob-carrying syscalls are written to ``trace_path`` as they happen."""

    name = "shoal-traced"

    def __init__(self, workdir: Path, args: list[str] | None = None) -> None:
        super().__init__(workdir, args)
        self.trace_path = self.workdir / "strace.txt"

    def command(self) -> list[str]:
        trace = "trace=/^(" + "|".join(TRACED) + ")$"
        strace = ["strace", "-f", "-qq", "-s", "0", "-e", trace, "-e", "signal=none", "-o", str(self.trace_path)]
        return [*strace, *super().command()]

    def trace_mark(self) -> int:
        try:
            return self.trace_path.stat().st_size
        except FileNotFoundError:
            return 0

    def syscalls(self, since: int = 0) -> SyscallBytes:
        with open(self.trace_path, "rb") as trace:
            trace.seek(since)
            return parse_strace(trace.read().decode("utf-8", "replace"))

    def stop(self, timeout: float | None = None) -> None:
        # strace itself waits out SIGTERM; ending the traced Shoal first lets strace exit with it.
        pid = self.pid
        if pid is not None and self.running:
            with contextlib.suppress(OSError, ValueError):
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                for child in children:
                    os.kill(int(child), signal.SIGTERM)
        super().stop(timeout)
