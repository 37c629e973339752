"""Running the mirror: event loop choice, worker processes sharing one socket, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Sequence
from typing import Protocol

from aiohttp import web

from mirror.config import MirrorConfig
from mirror.server.app import Services, make_app
from mirror.store.files import FileStore

log = logging.getLogger("shoal")


class MirrorPlugin(Protocol):
    """Something the CLI plugs into a mirror process (P2P, for one): it may add routes, start-up and cleanup
    hooks, and set ``services.blobs.peers``. Called in each worker process before the app starts."""

    def attach(self, services: Services, app: web.Application) -> None: ...


async def run_app(
    cfg: MirrorConfig, sock: socket.socket, offline: bool = False, plugins: Sequence[MirrorPlugin] = ()
) -> None:
    services = Services(cfg, offline=offline)
    app = make_app(services)
    for plugin in plugins:
        plugin.attach(services, app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock, shutdown_timeout=5).start()
    registries = ", ".join(f"{r} -> {' | '.join(u.url for u in ups)}" for r, ups in cfg.registries.items())
    log.info(
        "shoal mirror pid %d listening on %s:%d, cache %s, default registry %s, upstreams: %s%s",
        os.getpid(),
        cfg.listen_host,
        cfg.listen_port,
        cfg.cache_dir,
        cfg.default_registry,
        registries or "public allowlist",
        " (offline)" if offline else "",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()


def _run_one(cfg: MirrorConfig, sock: socket.socket, offline: bool, plugins: Sequence[MirrorPlugin]) -> None:
    if cfg.loop == "uvloop":
        import uvloop

        uvloop.run(run_app(cfg, sock, offline, plugins))
    else:
        asyncio.run(run_app(cfg, sock, offline, plugins))


def serve(cfg: MirrorConfig, sock: socket.socket, offline: bool = False, plugins: Sequence[MirrorPlugin] = ()) -> int:
    """Serve until SIGTERM/SIGINT; with ``workers > 1`` forked processes accept on the same socket."""
    # Once, before any worker runs: a worker cleaning later could delete another's download in progress.
    removed = FileStore(cfg.cache_dir).clean_temp()
    if removed:
        log.info("removed %d leftovers of interrupted downloads from %s", removed, cfg.cache_dir / "tmp")
    if cfg.workers == 1:
        _run_one(cfg, sock, offline, plugins)
        return 0
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_run_one, args=(cfg, sock, offline, plugins), daemon=True) for _ in range(cfg.workers)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid:
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
    return max((proc.exitcode or 0) for proc in procs)
