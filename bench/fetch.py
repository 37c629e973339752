"""Timed single requests for the cold path: time to first byte, total time, and N clients at once.

Plain ``http.client`` in threads: each response body is read into one reused buffer (``readinto`` releases
the GIL), so the client costs little next to the transfer it times. TTFB is the time until the status line
and headers have arrived, which is when a pull-through cache has committed to an answer.
"""

from __future__ import annotations

import http.client
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.lab.process import CommandError
from bench.lab.skopeo import copy_from

_BUFFER = 1 << 20


@dataclass(frozen=True)
class Fetch:
    status: int  # 0 when the request failed before a status arrived
    ttfb_s: float
    total_s: float
    nbytes: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


def timed_get(host: str, path: str, headers: Mapping[str, str] | None = None, timeout: float = 120.0) -> Fetch:
    """GET ``http://host/path`` on a new connection, reading the whole body."""
    address, _, port = host.rpartition(":")
    conn = http.client.HTTPConnection(address, int(port), timeout=timeout)
    buf = bytearray(_BUFFER)
    started = time.perf_counter()
    ttfb = 0.0
    status = 0
    nbytes = 0
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        ttfb = time.perf_counter() - started
        status = response.status
        while n := response.readinto(buf):
            nbytes += n
        return Fetch(status, ttfb, time.perf_counter() - started, nbytes)
    except (OSError, http.client.HTTPException) as exc:
        return Fetch(status, ttfb, time.perf_counter() - started, nbytes, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def concurrent_gets(host: str, path: str, clients: int, timeout: float = 300.0) -> list[Fetch]:
    """``clients`` threads released together by a barrier, each doing one :func:`timed_get`."""
    barrier = threading.Barrier(clients)
    results: list[Fetch | None] = [None] * clients

    def one(i: int) -> None:
        barrier.wait()
        results[i] = timed_get(host, path, timeout=timeout)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    return [r if r is not None else Fetch(0, 0.0, timeout, 0, "client thread did not finish") for r in results]


def timed_pull(ref: str, timeout: float = 300.0) -> tuple[float, str]:
    """Seconds for ``skopeo copy docker://REF dir:TMP`` (all blobs and manifests), and an error or ''."""
    dest = Path(tempfile.mkdtemp(prefix="shoal-bench-pull-"))
    started = time.perf_counter()
    try:
        copy_from(ref, dest, timeout=timeout)
        return time.perf_counter() - started, ""
    except CommandError as exc:
        return time.perf_counter() - started, str(exc).splitlines()[0][:300]
    finally:
        shutil.rmtree(dest, ignore_errors=True)
