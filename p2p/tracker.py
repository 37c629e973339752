"""The tracker server: a thin aiohttp shell around `p2p.scheduler.Scheduler`.

Endpoints (JSON bodies, see `p2p.wire`; all but /healthz need the cluster secret when one is configured):

    POST /announce      {node, url, digest, size, pieces, piece_size?, load?} -> {"ok": true, size, piece_size}
    POST /heartbeat     {node, load?} -> {"known": bool}; false: the node must announce everything again
    POST /withdraw      {node, digest?} -> {"ok": true}; without a digest the node leaves
    POST /lookup        {node, digest, size?, piece_size?, unreachable?} -> a Plan
                        (piece_size: preferred cut of a new blob; unreachable: node ids, see Scheduler.lookup)
    POST /piece-hashes  {node, digest, piece_size, piece_hashes} -> {"ok": true}
    GET  /piece-hashes/{digest} -> {digest, size, piece_size, piece_hashes}, or 404
    GET  /healthz       -> {"status": "ok"}

Errors are rendered in one place as {"error": "..."}: 400 for a malformed body, 404 for an unknown blob, 409
when a request contradicts what the tracker knows, 401 (from `p2p.auth`) for a missing or bad signature.
State lives in memory only: after a restart, heartbeats answer "known": false and nodes announce again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from p2p import wire
from p2p.auth import signature_middleware
from p2p.scheduler import Conflict, Scheduler, SchedulerConfig, SchedulerError, UnknownBlob

log = logging.getLogger(__name__)

SCHEDULER = web.AppKey("scheduler", Scheduler)


class _Routes:
    def __init__(self, scheduler: Scheduler, clock: Callable[[], float]) -> None:
        self.scheduler = scheduler
        self.clock = clock

    def register(self, app: web.Application) -> None:
        app.router.add_post("/announce", self.announce)
        app.router.add_post("/heartbeat", self.heartbeat)
        app.router.add_post("/withdraw", self.withdraw)
        app.router.add_post("/lookup", self.lookup)
        app.router.add_post("/piece-hashes", self.publish_piece_hashes)
        app.router.add_get("/piece-hashes/{digest}", self.get_piece_hashes)
        app.router.add_get("/healthz", self.healthz)

    async def announce(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        size = wire.size(body, "size")
        piece_size = wire.optional_piece_size(body)
        digest = wire.digest(body)
        self.scheduler.announce(
            wire.node_id(body),
            wire.url(body),
            digest,
            size,
            wire.decode_holding(body.get("pieces"), size, piece_size),
            wire.load(body) or 0.0,
            self.clock(),
            piece_size=piece_size,
        )
        layout = self.scheduler.layout(digest)
        assert layout is not None  # an announce always fixes the layout
        return web.json_response({"ok": True, "size": layout.size, "piece_size": layout.piece_size})

    async def heartbeat(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        known = self.scheduler.heartbeat(wire.node_id(body), self.clock(), wire.load(body))
        return web.json_response({"known": known})

    async def withdraw(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        digest = None if body.get("digest") is None else wire.digest(body)
        self.scheduler.withdraw(wire.node_id(body), digest)
        return _ok()

    async def lookup(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        asker, digest, size = wire.node_id(body), wire.digest(body), wire.optional_size(body)
        plan = self.scheduler.lookup(
            asker,
            digest,
            size,
            self.clock(),
            piece_size=wire.optional_piece_size(body),
            unreachable=wire.node_ids(body, "unreachable"),
        )
        return web.json_response(wire.encode_plan(plan))

    async def publish_piece_hashes(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        wire.node_id(body)
        hashes = body.get("piece_hashes")
        if not isinstance(hashes, list):
            raise wire.WireError("'piece_hashes' must be a list")
        self.scheduler.publish_piece_hashes(wire.digest(body), wire.piece_size(body), hashes)
        return _ok()

    async def get_piece_hashes(self, request: web.Request) -> web.Response:
        digest = wire.digest(request.match_info)
        known = self.scheduler.piece_hashes(digest)
        if known is None:
            raise UnknownBlob(f"no piece hashes for {digest}")
        layout, hashes = known
        return web.json_response(
            {"digest": digest, "size": layout.size, "piece_size": layout.piece_size, "piece_hashes": hashes}
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


def _ok() -> web.Response:
    return web.json_response({"ok": True})


async def _json_body(request: web.Request) -> dict[str, Any]:
    body = json.loads(await request.read())
    if not isinstance(body, dict):
        raise wire.WireError("the body must be a JSON object")
    return body


@web.middleware
async def _render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (SchedulerError, ValueError) as exc:  # ValueError: WireError, json.JSONDecodeError, bad layouts
        status = 409 if isinstance(exc, Conflict) else 404 if isinstance(exc, UnknownBlob) else 400
        return web.json_response({"error": str(exc)}, status=status)


def make_tracker_app(
    secret: bytes | None,
    clock: Callable[[], float] = time.monotonic,
    config: SchedulerConfig | None = None,
) -> web.Application:
    """The tracker application; `clock` feeds the scheduler's `now`, a sweeper expires dead nodes."""
    middlewares: list[Middleware] = [_render_errors]
    if secret is not None:
        middlewares.insert(0, signature_middleware(secret))
    app = web.Application(middlewares=middlewares)
    scheduler = app[SCHEDULER] = Scheduler(config)
    _Routes(scheduler, clock).register(app)

    async def sweeper(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_sweep(scheduler, clock))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(sweeper)
    return app


async def _sweep(scheduler: Scheduler, clock: Callable[[], float]) -> None:
    while True:
        await asyncio.sleep(scheduler.config.node_ttl / 2)
        dead = scheduler.expire(clock())
        if dead:
            log.info("expired %d silent node(s): %s", len(dead), ", ".join(sorted(dead)))


async def run_tracker(host: str, port: int, secret: bytes | None, config: SchedulerConfig | None = None) -> None:
    """Serve the tracker on `host`:`port` until cancelled."""
    if secret is None:
        log.warning(
            "tracker on %s:%d has no cluster secret: anyone who can reach it can list and change "
            "which nodes serve which blobs; set --peer-secret-file",
            host,
            port,
        )
    runner = web.AppRunner(make_tracker_app(secret, config=config), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("tracker listening on %s", ", ".join(str(address) for address in runner.addresses))
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
