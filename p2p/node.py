"""A mirror process as a member of the cluster: the `MirrorPlugin` and `PeerSource` that `shoal serve` plugs in.

- `attach` adds the peer endpoint (`p2p.peer_server`), makes this the blob service's peer source, and hooks
  start-up (session, tracker client, heartbeats, announcing what the cache already holds) and shutdown (withdraw
  everything, close the session).
- `open` asks the tracker where a blob is. Elected to fetch it from upstream, or the tracker unreachable: None,
  and the mirror's own upstream download is the cluster's one back-to-source fetch. Otherwise a
  `SwarmDownload` streams it from peers (and upstream per piece where they cannot help).
- `progress` turns this node's own download progress (upstream or peers) into partial announces, at most one
  per `announce_interval` per blob, so followers can fetch its pieces while it is still downloading; `holding`
  announces the verified blob complete and publishes its piece hashes; `dropped` withdraws it.

Every tracker call is best effort: failures are counted, logged at debug level and never reach the mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from mirror.oci.reference import Digest
from mirror.proxy.blobs import BlobService
from mirror.server.app import Services
from mirror.store.files import FileStore
from p2p import metrics
from p2p.config import NodeConfig
from p2p.download import Swarm, SwarmDownload
from p2p.peer_server import PieceServer
from p2p.pieces import Bitfield, PieceHasher, PieceLayout
from p2p.ratelimit import TokenBucket
from p2p.scheduler import COMPLETE, Plan
from p2p.swarm import BanList
from p2p.tracker_client import TrackerClient, TrackerUnavailable

log = logging.getLogger("shoal.p2p")

_LAYOUT_POLL = 0.2
_HASH_CHUNK = 1 << 20
_PUBLISH_GRACE = 3.0


@dataclass(slots=True)
class _Share:
    """A blob this node announces: downloading (pieces so far) or complete."""

    digest: str
    size: int | None = None
    layout: PieceLayout | None = None
    received: int = 0
    announced: int = 0
    complete: bool = False
    dropped: bool = False
    from_peers: bool = False
    """Downloaded from peers: the node that fetched it from upstream normally publishes its piece hashes."""
    from_cache: bool = False
    """Found in the cache at start-up: announced without hashing it (other nodes may have the hashes)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def pieces_on_disk(self) -> int:
        if self.layout is None:
            return 0
        if self.received >= self.layout.size:
            return self.layout.count
        return self.received // self.layout.piece_size


class P2PNode:
    def __init__(self, config: NodeConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.node_id = config.node_id
        self.bans = BanList(config.ban_time)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.tracker: TrackerClient | None = None
        self._blobs: BlobService | None = None
        self._store: FileStore | None = None
        self._server: PieceServer | None = None
        self._shares: dict[str, _Share] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._cache_count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    # -- MirrorPlugin -----------------------------------------------------------------------------------------

    def attach(self, services: Services, app: web.Application) -> None:
        if services.config.workers > 1:  # each worker process is its own node; they share the advertised URL
            self.node_id = f"{self.config.node_id}.{os.getpid()}"
        self._blobs = services.blobs
        self._store = services.store
        limit = self.config.upload_limit
        limiter = None if limit is None else TokenBucket(limit, max(limit / 4, 256 * 1024), self._clock())
        self._server = PieceServer(services.blobs, self.config.secret, limiter, on_missing=self._missing)
        self._server.register(app)
        services.blobs.peers = self
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)

    async def _on_startup(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self.tracker = TrackerClient(
            self._session, self.config.trackers, self.node_id, self.config.advertise, self.config.secret
        )
        log.info(
            "p2p node %s at %s, trackers %s, upload limit %s",
            self.node_id,
            self.config.advertise,
            ", ".join(self.config.trackers),
            "none" if self.config.upload_limit is None else f"{self.config.upload_limit} B/s",
        )
        if self.config.secret is None:
            log.warning(
                "p2p without a cluster secret: anyone who can reach %s can read cached blobs from /p2p/blobs; "
                "set --peer-secret-file",
                self.config.advertise,
            )
        self._spawn(self._heartbeats(), "p2p heartbeats")
        self._spawn(self._announce_cache(), "p2p cache announce")

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing = True
        if self.tracker is not None:
            with contextlib.suppress(TrackerUnavailable, TimeoutError):
                await asyncio.wait_for(self.tracker.withdraw(None), 1.5)
                log.info("withdrew node %s from the tracker", self.node_id)

    async def _on_cleanup(self, app: web.Application) -> None:
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- PeerSource -------------------------------------------------------------------------------------------

    async def open(
        self, registry: str, repository: str, digest: Digest, size: int | None
    ) -> tuple[int, AsyncIterator[bytes]] | None:
        tracker, blobs, session = self.tracker, self._blobs, self._session
        if tracker is None or blobs is None or session is None or self._closing:
            return None
        key = str(digest)
        plan = await self._lookup(key, size)
        if plan is None:
            metrics.DOWNLOADS.labels("no_tracker").inc()
            return None
        if not plan.back_to_source and plan.layout is None:
            plan = await self._await_layout(registry, repository, digest, plan)
            if plan is None:
                metrics.DOWNLOADS.labels("no_layout").inc()
                return None
        share = self._share(key)
        share.layout = share.layout or plan.layout
        if plan.back_to_source:
            metrics.DOWNLOADS.labels("back_to_source").inc()
            log.info("elected to fetch %s from upstream", digest)
            return None
        assert plan.layout is not None
        now = self._clock()
        usable = any(not self.bans.banned(node_id, now) for row in plan.candidates for node_id in row)
        if not usable and plan.source is None:
            metrics.DOWNLOADS.labels("no_peers").inc()
            return None
        metrics.DOWNLOADS.labels("peers").inc()
        share.from_peers = True
        swarm = Swarm(session, tracker, blobs, self.config, self.bans)
        download = SwarmDownload(swarm, registry, repository, digest, plan, self._clock)
        log.info(
            "fetching %s from peers (%d pieces, %s)",
            digest,
            plan.layout.count,
            f"following {plan.source}" if plan.source else f"{len(plan.peers)} holder(s)",
        )
        return plan.layout.size, download.stream()

    def progress(self, digest: Digest, size: int | None, received: int) -> None:
        if self.tracker is None or self._closing or size is None:
            return
        share = self._share(str(digest))
        share.size, share.received = size, received
        if share.layout is None or share.pieces_on_disk() > share.announced:
            self._wake(share)

    def holding(self, digest: Digest, size: int) -> None:
        if self.tracker is None or self._closing:
            return
        share = self._share(str(digest))
        share.size, share.received, share.complete = size, size, True
        self._wake(share)

    def dropped(self, digest: Digest) -> None:
        if self.tracker is None or self._closing:
            return
        if threading.get_ident() != self._loop_thread:  # e.g. cache eviction, which runs in a worker thread
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self.dropped, digest)
            return
        share = self._share(str(digest))
        share.dropped = True
        self._wake(share)

    def _missing(self, digest: Digest) -> None:
        """A peer asked for a blob we announced complete but no longer have (evicted): withdraw it."""
        share = self._shares.get(str(digest))
        if share is not None and share.complete and not share.dropped:
            log.info("%s is no longer cached here; withdrawing it", digest)
            self.dropped(digest)

    # -- announcing -------------------------------------------------------------------------------------------

    def _share(self, digest: str) -> _Share:
        share = self._shares.get(digest)
        if share is None or share.dropped:
            share = self._shares[digest] = _Share(digest)
        return share

    def _wake(self, share: _Share) -> None:
        share.wake.set()
        if share.task is None or share.task.done():
            share.task = self._spawn(self._announcer(share), f"p2p announce {share.digest[7:19]}")

    async def _announcer(self, share: _Share) -> None:
        """Tells the tracker about one blob, one call at a time, so a late partial never follows the complete."""
        while True:
            await share.wake.wait()
            share.wake.clear()
            if share.dropped:
                await self._call("withdraw", self._tracker().withdraw(share.digest))
                if self._shares.get(share.digest) is share:
                    del self._shares[share.digest]
                return
            if share.complete:
                await self._announce_complete(share)
                if not share.dropped:
                    return
                continue
            if share.layout is None and share.size is not None:
                plan = await self._lookup(share.digest, share.size)
                share.layout = None if plan is None else plan.layout
            pieces = share.pieces_on_disk()
            if share.layout is not None and share.size is not None and pieces > share.announced:
                bits = Bitfield.from_indices(share.layout.count, range(pieces))
                sent = await self._call(
                    "announce",
                    self._tracker().announce(
                        share.digest, share.size, bits, piece_size=share.layout.piece_size, load=self._load()
                    ),
                )
                if sent:
                    share.announced = pieces
            await asyncio.sleep(self.config.announce_interval)

    async def _announce_complete(self, share: _Share) -> None:
        assert share.size is not None
        tracker = self._tracker()
        try:
            layout = await tracker.announce(share.digest, share.size, COMPLETE, load=self._load())
            metrics.TRACKER_CALLS.labels("announce", "ok").inc()
            if layout is None or share.dropped or share.from_cache:
                return
            if share.from_peers:  # leave it to the node that fetched from upstream, unless it does not
                await asyncio.sleep(_PUBLISH_GRACE)
            published = await tracker.piece_hashes(share.digest)
            if published is not None and published[0] == layout:
                return
            hashes = await asyncio.to_thread(self._hash_pieces, share.digest, layout)
            if hashes is None or share.dropped:
                return
            await tracker.publish_piece_hashes(share.digest, layout.piece_size, hashes)
            metrics.TRACKER_CALLS.labels("piece_hashes", "ok").inc()
            log.info("published %d piece hashes of %s", len(hashes), share.digest)
        except TrackerUnavailable as exc:
            metrics.TRACKER_CALLS.labels("announce", "unavailable").inc()
            log.debug("could not announce %s complete: %s", share.digest, exc)

    def _hash_pieces(self, digest: str, layout: PieceLayout) -> tuple[str, ...] | None:
        """The piece hashes of the committed blob (in a thread), or None if it is gone or of another size."""
        assert self._store is not None
        opened = self._store.open_blob(Digest.parse(digest))
        if opened is None:
            return None
        fd, size = opened
        try:
            if size != layout.size:
                return None
            hasher = PieceHasher(layout)
            offset = 0
            while offset < size:
                chunk = os.pread(fd, min(_HASH_CHUNK, size - offset), offset)
                if not chunk:
                    return None
                hasher.update(chunk)
                offset += len(chunk)
            return hasher.finish()
        finally:
            os.close(fd)

    async def _announce_cache(self) -> None:
        """Announce every blob already in the cache (a restart), oldest directory order, one at a time."""
        assert self._store is not None
        root = self._store.root / "blobs"
        found = await asyncio.to_thread(_cached_blobs, root)
        self._cache_count = len(found)
        for digest, size in found:
            if self._closing:
                return
            share = self._shares.get(digest)
            if share is not None and not share.from_cache:
                continue
            if await self._call("announce", self._tracker().announce(digest, size, COMPLETE, load=self._load())):
                self._shares[digest] = share or _Share(digest, size, received=size, complete=True, from_cache=True)
        if found:
            log.info("announced %d cached blob(s) to the tracker", len(found))

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                known = await self._tracker().heartbeat(self._load())
                metrics.TRACKER_CALLS.labels("heartbeat", "ok").inc()
            except TrackerUnavailable as exc:
                metrics.TRACKER_CALLS.labels("heartbeat", "unavailable").inc()
                log.debug("heartbeat failed: %s", exc)
                continue
            if not known and (self._shares or self._cache_count):
                log.info("the tracker forgot node %s; announcing again", self.node_id)
                for share in list(self._shares.values()):
                    if not share.from_cache:
                        share.announced = 0
                        self._wake(share)
                self._spawn(self._announce_cache(), "p2p cache announce")

    # -- helpers ----------------------------------------------------------------------------------------------

    async def _lookup(self, digest: str, size: int | None) -> Plan | None:
        try:
            plan = await self._tracker().lookup(digest, size, piece_size=self.config.piece_size)
        except TrackerUnavailable as exc:
            metrics.TRACKER_CALLS.labels("lookup", "unavailable").inc()
            log.info("tracker unavailable for %s, going upstream: %s", digest, exc)
            return None
        metrics.TRACKER_CALLS.labels("lookup", "ok").inc()
        return plan

    async def _await_layout(self, registry: str, repository: str, digest: Digest, plan: Plan) -> Plan | None:
        """Wait for the elected node to tell the tracker the blob's size; ask upstream for it if it does not."""
        deadline = self._clock() + self.config.layout_wait
        while self._clock() < deadline:
            await asyncio.sleep(_LAYOUT_POLL)
            polled = await self._lookup(str(digest), None)
            if polled is None:
                return None
            if polled.layout is not None or polled.back_to_source:
                return polled
        assert self._blobs is not None
        try:
            size, _ = await self._blobs.size(registry, repository, digest)
        except Exception as exc:  # upstream trouble: let the mirror's own download report it
            log.info("size of %s unknown to the cluster and upstream: %r", digest, exc)
            return None
        return await self._lookup(str(digest), size)

    async def _call(self, call: str, request: Coroutine[Any, Any, object]) -> bool:
        try:
            await request
        except TrackerUnavailable as exc:
            metrics.TRACKER_CALLS.labels(call, "unavailable").inc()
            log.debug("tracker %s failed: %s", call, exc)
            return False
        metrics.TRACKER_CALLS.labels(call, "ok").inc()
        return True

    def _tracker(self) -> TrackerClient:
        assert self.tracker is not None
        return self.tracker

    def _load(self) -> float:
        return float(self._server.uploads) if self._server is not None else 0.0

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _cached_blobs(root: Path) -> list[tuple[str, int]]:
    """`(digest, size)` of every blob file under `root` (`<algorithm>/<ab>/<hex>`)."""
    found = []
    for algorithm in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for prefix in sorted(p for p in algorithm.iterdir() if p.is_dir()):
            for blob in prefix.iterdir():
                with contextlib.suppress(OSError):
                    found.append((f"{algorithm.name}:{blob.name}", blob.stat().st_size))
    return found
