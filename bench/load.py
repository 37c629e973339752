"""Driving HTTP load: ``wrk`` when it is installed, else :mod:`bench.loadgen` in its own process.

Both report a :class:`LoadResult`. The parsing of wrk's text report is pure (see :func:`parse_wrk`) so it is
unit-tested without running anything. On a 2-core machine the load generator competes with the server for
CPU, so the harness runs wrk with one thread (``-t1``): at most one core goes to the client, the same for
every server measured.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from bench.lab.process import run
from bench.lab.shoal import shoal_environment

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # to milliseconds
_BYTE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50}

_TOTALS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)([KMGTP]?B) read", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


class LoadError(RuntimeError):
    """The load generator failed or printed something that could not be understood."""


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured. Latencies are in milliseconds; ``errors`` counts socket errors and timeouts."""

    requests: int
    duration_s: float
    bytes_read: int
    req_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int = 0
    non_2xx: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / self.duration_s / 1e6 if self.duration_s > 0 else 0.0

    def as_json(self) -> dict[str, float | int | None]:
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 1)}


def parse_wrk(text: str) -> LoadResult:
    """Parse the report of ``wrk --latency``; raises LoadError if it has no totals."""
    totals = _TOTALS.search(text)
    rps = _RPS.search(text)
    if totals is None or rps is None:
        raise LoadError(f"unrecognised wrk output:\n{text[-2000:]}")
    percentiles = {m[1]: float(m[2]) * _TIME_UNITS[m[3]] for m in _PERCENTILE.finditer(text)}
    socket_errors = _SOCKET_ERRORS.search(text)
    non_2xx = _NON_2XX.search(text)
    return LoadResult(
        requests=int(totals[1]),
        duration_s=float(totals[2]) * _TIME_UNITS[totals[3]] / 1e3,
        bytes_read=int(float(totals[4]) * _BYTE_UNITS[totals[5]]),
        req_per_s=float(rps[1]),
        p50_ms=percentiles.get("50"),
        p99_ms=percentiles.get("99"),
        errors=sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
    )


def wrk_command(
    url: str,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """The wrk command line; threads never exceed connections (wrk refuses that)."""
    cmd = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration:g}s"]
    cmd += [f"--timeout={timeout:g}s", "--latency"]
    for name, value in (headers or {}).items():
        cmd += ["-H", f"{name}: {value}"]
    return [*cmd, url]


class LoadGenerator:
    """Runs a closed-loop load of ``connections`` keep-alive connections against one URL."""

    def __init__(self, prefer_wrk: bool = True, threads: int = 1) -> None:
        self.use_wrk = prefer_wrk and shutil.which("wrk") is not None
        self.threads = threads

    @property
    def description(self) -> str:
        if self.use_wrk:
            return f"wrk -t{self.threads} (one client thread; capped at the connection count)"
        return "python -m bench.loadgen (aiohttp client, one process)"

    def run(
        self, url: str, *, connections: int, duration: float, headers: Mapping[str, str] | None = None
    ) -> LoadResult:
        limit = duration + 60
        if self.use_wrk:
            cmd = wrk_command(url, connections=connections, duration=duration, threads=self.threads, headers=headers)
            return parse_wrk(run(cmd, timeout=limit).stdout.decode("utf-8", "replace"))
        cmd = [sys.executable, "-m", "bench.loadgen", url, "-c", str(connections), "-d", str(duration)]
        for name, value in (headers or {}).items():
            cmd += ["-H", f"{name}: {value}"]
        try:
            out = run(cmd, timeout=limit, env=shoal_environment()).stdout
            return LoadResult(**json.loads(out))
        except (ValueError, TypeError, subprocess.SubprocessError) as exc:
            raise LoadError(f"bench.loadgen failed: {exc}") from exc
