"""A throttling TCP proxy on loopback: a slow, metered link in front of a server, for tests and measurements.

Every connection accepted on 127.0.0.1 is relayed to the target; the bytes of all connections together are
limited to `rate` bytes per second in each direction (one token bucket per direction, like a WAN link), and
counted, so a test can assert how many bytes crossed the link::

    with ThrottleProxy("127.0.0.1", registry.port, rate=16e6) as proxy:   # runs in its own thread
        ... point clients at proxy.url ...
        assert proxy.down_bytes <= 1.1 * blob_size

`down_bytes` flowed from the target to clients (responses), `up_bytes` the other way. `rate` may be changed
while it runs. Also runnable: ``python -m bench.throttle --target 127.0.0.1:5000 --rate 80e6``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from p2p.ratelimit import TokenBucket

_CHUNK = 64 * 1024
_LOOPBACK = "127.0.0.1"


class _Direction:
    """One direction of the link: its bucket and byte count."""

    def __init__(self, rate: float | None) -> None:
        self.bucket = None if rate is None else TokenBucket(rate, max(rate / 20, _CHUNK), time.monotonic())
        self.bytes = 0

    def set_rate(self, rate: float | None) -> None:
        self.bucket = None if rate is None else TokenBucket(rate, max(rate / 20, _CHUNK), time.monotonic())

    async def pace(self, n: int) -> None:
        self.bytes += n
        if self.bucket is not None:
            delay = self.bucket.reserve(n, time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)


class ThrottleProxy:
    """Relays 127.0.0.1:`port` to `target_host`:`target_port` at most `rate` bytes/s each way (None: unlimited)."""

    def __init__(self, target_host: str, target_port: int, rate: float | None, port: int = 0) -> None:
        if target_host not in (_LOOPBACK, "localhost"):
            raise ValueError("the throttling proxy only relays to loopback")
        self.target_host = target_host
        self.target_port = target_port
        self.port = port
        self._down = _Direction(rate)
        self._up = _Direction(rate)
        self._rate = rate
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return f"{_LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def down_bytes(self) -> int:
        """Bytes relayed from the target to clients."""
        return self._down.bytes

    @property
    def up_bytes(self) -> int:
        """Bytes relayed from clients to the target."""
        return self._up.bytes

    @property
    def rate(self) -> float | None:
        return self._rate

    @rate.setter
    def rate(self, rate: float | None) -> None:
        def apply() -> None:
            self._rate = rate
            self._down.set_rate(rate)
            self._up.set_rate(rate)

        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(apply)
        else:
            apply()

    def reset_counts(self) -> None:
        self._down.bytes = self._up.bytes = 0

    # -- in an event loop ----------------------------------------------------------------------------------------

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Relay until cancelled (or `stop()` from another thread); `ready()` is called once listening."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._relay, _LOOPBACK, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if ready is not None:
            ready()
        try:
            await self._stopped.wait()
        finally:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            self._connections.discard(task)
            return
        try:
            await asyncio.gather(
                _pump(reader, up_writer, self._up),
                _pump(up_reader, writer, self._down),
            )
        finally:
            for w in (writer, up_writer):
                w.close()
            self._connections.discard(task)

    # -- in a thread ---------------------------------------------------------------------------------------------

    def start(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self.serve(ready.set),), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("throttling proxy did not start")
        return self

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and loop.is_running():
            loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: _Direction) -> None:
    """Copy until EOF or a connection error, pacing every chunk; half-closes the far side at EOF."""
    try:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                break
            await direction.pace(len(data))
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Throttling TCP proxy on 127.0.0.1")
    parser.add_argument("--target", required=True, help="127.0.0.1:PORT to relay to")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any)")
    parser.add_argument("--rate", type=float, help="bytes per second each way (default: unlimited)")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    proxy = ThrottleProxy(host, int(port), args.rate, args.port)

    def announce() -> None:
        print(f"relaying {proxy.url} -> {args.target} at {args.rate or 'unlimited'} B/s", flush=True)

    async def run() -> None:
        try:
            await proxy.serve(announce)
        finally:
            print(f"down {proxy.down_bytes} bytes, up {proxy.up_bytes} bytes", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
