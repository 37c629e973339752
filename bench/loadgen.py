"""Fallback load generator when ``wrk`` is missing: ``python -m bench.loadgen URL -c N -d SECONDS [-H ...]``.

It runs in its own process (so it never shares an interpreter with a server), keeps ``N`` keep-alive
connections busy for ``SECONDS``, discards bodies as they arrive and prints one JSON object with the fields
of :class:`bench.load.LoadResult`. It is slower than wrk, which makes its absolute numbers lower; ratios taken
in one run with the same client stay comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections.abc import Sequence

import aiohttp


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values, or None for no values."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values) - 1e-9) - 1))
    return sorted_values[rank]


async def _worker(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], deadline: float, stats: dict[str, list[float]]
) -> None:
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            async with session.get(url, headers=headers) as resp:
                size = 0
                async for chunk in resp.content.iter_any():
                    size += len(chunk)
                stats["bytes"].append(size)
                if not 200 <= resp.status < 400:
                    stats["non_2xx"].append(1)
        except (aiohttp.ClientError, TimeoutError):
            stats["errors"].append(1)
            continue
        stats["latency"].append((time.perf_counter() - started) * 1000)


async def _main(url: str, connections: int, duration: float, headers: dict[str, str]) -> dict[str, object]:
    stats: dict[str, list[float]] = {"bytes": [], "latency": [], "errors": [], "non_2xx": []}
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        started = time.monotonic()
        deadline = started + duration
        await asyncio.gather(*(_worker(session, url, headers, deadline, stats) for _ in range(connections)))
        elapsed = time.monotonic() - started
    latency = sorted(stats["latency"])
    return {
        "requests": len(latency),
        "duration_s": round(elapsed, 3),
        "bytes_read": sum(stats["bytes"]),
        "req_per_s": round(len(latency) / elapsed, 2),
        "p50_ms": percentile(latency, 0.50),
        "p99_ms": percentile(latency, 0.99),
        "errors": len(stats["errors"]),
        "non_2xx": len(stats["non_2xx"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("-c", "--connections", type=int, default=16)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    args = parser.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    print(json.dumps(asyncio.run(_main(args.url, args.connections, args.duration, headers))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
