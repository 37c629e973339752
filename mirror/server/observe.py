"""What a handler tells the access log and metrics about a request: its route group and where bytes came from."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass

from aiohttp import web


@dataclass(slots=True)
class RequestInfo:
    route: str = "other"
    source: str = "-"  # cache | upstream | peer
    upstream: str = "-"
    outcome: str = ""  # "client-gone" or "aborted" when a body was cut short


INFO = web.RequestKey("shoal_request_info", RequestInfo)


class AccessLog:
    """One line per request, written in batches.

    The ``logging`` module costs ~10% of a manifest hit (LogRecord, formatting, a lock, a getpid per line);
    here a line is one f-string appended to a list, flushed to stderr a few times a second or when many are
    waiting.
    """

    FLUSH_AFTER = 0.2
    FLUSH_LINES = 512

    def __init__(self, fd: int = 2) -> None:
        self._fd = fd
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""
        self._scheduled: asyncio.Handle | None = None

    def write(self, method: str, path: str, status: int, sent: int, info: RequestInfo, ms: float) -> None:
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        outcome = f" {info.outcome}" if info.outcome else ""
        self._lines.append(
            f"{self._stamp} access {method} {path} {status} {sent} source={info.source} upstream={info.upstream}"
            f" {ms:.1f}ms{outcome}\n"
        )
        if len(self._lines) >= self.FLUSH_LINES:
            self.flush()
        elif self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._lines:
            data, self._lines = "".join(self._lines).encode(), []
            with contextlib.suppress(OSError):  # a closed stderr must not take requests down
                os.write(self._fd, data)
