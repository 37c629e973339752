"""One blob downloaded from peers, piece by piece, and streamed in order: the asyncio shell around `PieceBoard`.

`SwarmDownload.stream()` is what `P2PNode.open` hands the mirror. Several pieces are fetched at once (from
different parents where possible, see `p2p.swarm`), each into its own buffer; the stream yields them strictly in
order as the head piece completes. A fetch that fails keeps what it received and the piece resumes elsewhere
with `Range: bytes=<offset>-<end>`; a piece that fails its published hash is dropped and its senders banned.
Pieces no peer can supply in time come from upstream through `BlobService.fetch_range` (same client, auth and
fallback as the mirror's own downloads). Meanwhile the tracker is asked again every `lookup_interval` while
pieces lack holders, to see the elected node's (and other followers') new pieces, or to be elected ourselves.

Only upstream trouble ends a stream with an error (a missing blob, or three failed upstream pieces), exactly
as it would end a plain upstream download; peer trouble never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from mirror.oci.errors import BlobUnknown, RegistryError
from mirror.oci.reference import Digest
from mirror.proxy.blobs import BlobService
from p2p import metrics
from p2p.auth import sign_headers
from p2p.config import NodeConfig
from p2p.pieces import PieceLayout, verify_piece
from p2p.scheduler import Plan
from p2p.swarm import CORRUPT, Assignment, BanList, PieceBoard
from p2p.tracker_client import TrackerClient, TrackerUnavailable

log = logging.getLogger("shoal.p2p")

_MAX_UPSTREAM_FAILURES = 3
_INLINE_HASH = 256 * 1024  # pieces up to this size are verified on the event loop
_TICK = 0.25  # seconds between board checks while nothing happens (time-based decisions)


class PieceError(Exception):
    """A piece fetch failed for `reason` (dead, timeout, refused, short, corrupt, upstream)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Swarm:
    """What every download of a node shares."""

    session: aiohttp.ClientSession
    tracker: TrackerClient
    blobs: BlobService
    config: NodeConfig
    bans: BanList


class SwarmDownload:
    def __init__(
        self,
        swarm: Swarm,
        registry: str,
        repository: str,
        digest: Digest,
        plan: Plan,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if plan.layout is None:
            raise ValueError("a swarm download needs the blob's layout")
        self._swarm = swarm
        self._registry = registry
        self._repository = repository
        self.digest = digest
        self.layout: PieceLayout = plan.layout
        self._clock = clock
        self.board = PieceBoard(self.layout, swarm.config.swarm, swarm.bans, clock())
        self.board.offer(plan, clock())
        self._peers = dict(plan.peers)
        self._buffers: dict[int, bytearray] = {}
        self._senders: dict[int, list[str]] = {}
        self._ready: dict[int, bytes] = {}
        self._ready_senders: dict[int, list[str]] = {}
        self._verified: set[int] = set()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._upstream_failures = 0
        self._dead: dict[str, float] = {}
        self._probed: dict[str, float] = {}
        self._fatal: BaseException | None = None
        self._distrust_hashes = False

    async def stream(self) -> AsyncIterator[bytes]:
        """The whole blob, in order. Cancels every fetch when closed early."""
        relooker = asyncio.create_task(self._relookup(), name=f"p2p lookups {self.digest.hex[:12]}")
        started = self._clock()
        try:
            while not self.board.complete:
                if self._fatal is not None:
                    raise self._fatal
                self._start(self.board.assign(self._clock()))
                if self.board.ready():
                    index = self.board.head
                    data = self._ready.pop(index)
                    if await self._late_check(index, data):
                        self.board.streamed()
                        yield data
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _TICK)
            metrics.PARENTS.observe(len(self.board.parents_used))
            log.info(
                "fetched %s (%d bytes, %d pieces) from %d peer(s) and upstream for %d piece(s) in %.2fs",
                self.digest,
                self.layout.size,
                self.layout.count,
                len(self.board.parents_used),
                self.board.upstream_pieces,
                self._clock() - started,
            )
        finally:
            relooker.cancel()
            tasks = [relooker, *self._tasks]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- fetching ---------------------------------------------------------------------------------------------

    def _start(self, assignments: list[Assignment]) -> None:
        for assignment in assignments:
            task = asyncio.create_task(self._fetch(assignment), name=f"p2p piece {assignment.index}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fetch(self, assignment: Assignment) -> None:
        try:
            await self._fetch_piece(assignment.index, assignment.parent)
        finally:
            self._wake.set()

    async def _fetch_piece(self, index: int, parent: str | None) -> None:
        start, end = self.layout.piece_range(index)
        buffer = self._buffers.setdefault(index, bytearray())
        senders = self._senders.setdefault(index, [])
        try:
            if parent is None:
                await self._from_upstream(start + len(buffer), end, buffer)
            else:
                await self._from_peer(parent, start + len(buffer), end, buffer, senders)
        except PieceError as exc:
            self._piece_failed(index, parent, exc)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unforeseen client error must not fail the pull
            log.exception("piece %d of %s from %s failed unexpectedly", index, self.digest, parent or "upstream")
            self._piece_failed(index, parent, PieceError("error", repr(exc)))
            return
        data = bytes(self._buffers.pop(index))
        contributors = self._senders.pop(index)
        hashes = self._hashes()
        if hashes is not None:
            if await _verify(hashes, index, data):
                self._verified.add(index)
            elif contributors:
                self._piece_failed(index, parent, PieceError(CORRUPT, "piece hash mismatch"), contributors)
                return
            else:  # upstream alone disagrees: the published hashes are wrong, not the upstream
                log.warning("upstream disagrees with the piece hashes of %s; not using them", self.digest)
                self._distrust_hashes = True
        self.board.done(index, contributors)
        self._ready[index] = data
        self._ready_senders[index] = contributors
        metrics.PIECES.labels("peer" if parent is not None else "upstream").inc()

    def _hashes(self) -> tuple[str, ...] | None:
        """The piece hashes to check against, unless upstream proved them wrong (the digest check remains)."""
        return None if self._distrust_hashes else self.board.piece_hashes

    def _piece_failed(
        self, index: int, parent: str | None, exc: PieceError, contributors: list[str] | None = None
    ) -> None:
        metrics.PIECE_FAILURES.labels(exc.reason).inc()
        if exc.reason == "dead" and parent is not None:
            self._dead[parent] = self._clock()
        if exc.reason == CORRUPT:
            contributors = contributors if contributors is not None else self._senders.get(index, [])
            self._buffers.pop(index, None)
            self._senders.pop(index, None)
        banned = self.board.failed(index, exc.reason, self._clock(), contributors or ())
        self._report_bans(banned)
        log.log(
            logging.WARNING if exc.reason == CORRUPT else logging.INFO,
            "piece %d of %s from %s: %s",
            index,
            self.digest,
            parent or "upstream",
            exc,
        )

    def _report_bans(self, banned: list[str]) -> None:
        for node_id in banned:
            metrics.BANNED.inc()
            log.warning(
                "banned peer %s for %.0fs: it sent bad data for %s", node_id, self._swarm.bans.duration, self.digest
            )

    async def _late_check(self, index: int, data: bytes) -> bool:
        """Verify a piece fetched before the hashes were known, if they are known now."""
        senders = self._ready_senders.pop(index, [])
        hashes = self._hashes()
        if index in self._verified or hashes is None or await _verify(hashes, index, data):
            return True
        if not senders:
            log.warning("upstream disagrees with the piece hashes of %s; not using them", self.digest)
            self._distrust_hashes = True
            return True
        metrics.PIECE_FAILURES.labels(CORRUPT).inc()
        log.warning("piece %d of %s from %s failed its hash", index, self.digest, ", ".join(senders) or "upstream")
        self._report_bans(self.board.corrupt(index, senders, self._clock()))
        return False

    async def _from_peer(self, parent: str, offset: int, end: int, buffer: bytearray, senders: list[str]) -> None:
        config = self._swarm.config
        base = URL(self._peers[parent])
        url = base.with_path(base.path.rstrip("/") + f"/p2p/blobs/{self.digest}")
        headers = {"Range": f"bytes={offset}-{end}"}
        secret = config.secret
        if secret is not None:
            headers |= sign_headers(secret, "GET", url.raw_path_qs, b"", time.time())
        length = end - offset + 1
        timeout = aiohttp.ClientTimeout(
            total=max(4.0, length / config.min_piece_rate),
            sock_connect=config.peer_timeout,
            sock_read=config.peer_timeout,
        )
        got = 0
        try:
            async with self._swarm.session.get(url, headers=headers, timeout=timeout, allow_redirects=False) as resp:
                if resp.status != 206:
                    raise PieceError("refused", f"HTTP {resp.status}")
                if not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-{end}/"):
                    raise PieceError(CORRUPT, f"wrong Content-Range {resp.headers.get('Content-Range')!r}")
                async for chunk in resp.content.iter_any():
                    if got + len(chunk) > length:
                        raise PieceError(CORRUPT, "more bytes than asked for")
                    if not got and parent not in senders:
                        senders.append(parent)
                    buffer += chunk
                    got += len(chunk)
                    metrics.BYTES.labels("peer").inc(len(chunk))
        except TimeoutError:
            raise PieceError("timeout", f"after {got} of {length} bytes") from None
        except aiohttp.ClientError as exc:
            raise PieceError("dead", f"{type(exc).__name__} after {got} of {length} bytes") from None
        if got != length:
            raise PieceError("short", f"{got} of {length} bytes")

    async def _from_upstream(self, offset: int, end: int, buffer: bytearray) -> None:
        try:
            async for chunk in self._swarm.blobs.fetch_range(
                self._registry, self._repository, self.digest, offset, end
            ):
                buffer += chunk
                metrics.BYTES.labels("upstream").inc(len(chunk))
        except (RegistryError, aiohttp.ClientError, TimeoutError) as exc:
            self._upstream_failures += 1
            if isinstance(exc, BlobUnknown) or self._upstream_failures >= _MAX_UPSTREAM_FAILURES:
                self._fatal = exc
            detail = exc.message if isinstance(exc, RegistryError) else repr(exc)
            raise PieceError("upstream", detail) from None

    # -- tracker ----------------------------------------------------------------------------------------------

    def _unreachable(self) -> list[str]:
        """Peers to report to the tracker: refused connections lately, and the followed source if it stalled."""
        now = self._clock()
        recent = now - self._swarm.config.swarm.cooldown
        for node_id, when in list(self._dead.items()):
            if when < recent:
                del self._dead[node_id]
        reported = set(self._dead)
        if self.board.source is not None and self.board.source_stalled(now):
            reported.add(self.board.source)
        return sorted(reported)

    async def _relookup(self) -> None:
        config = self._swarm.config
        while True:
            now = self._clock()
            if self.board.source is not None:  # following a download in progress: see its pieces soon
                interval = config.lookup_interval / 2
            elif self.board.waiting_without_parent(now) or self.board.piece_hashes is None:
                interval = config.lookup_interval
            else:
                interval = 4 * config.lookup_interval
            await asyncio.sleep(interval)
            try:
                plan = await self._swarm.tracker.lookup(
                    str(self.digest), self.layout.size, unreachable=self._unreachable()
                )
                metrics.TRACKER_CALLS.labels("lookup", "ok").inc()
            except TrackerUnavailable as exc:
                metrics.TRACKER_CALLS.labels("lookup", "unavailable").inc()
                log.debug("lookup of %s during download failed: %s", self.digest, exc)
                self.board.tracker_lost(self._clock())
                continue
            if plan.layout != self.layout:
                log.warning("tracker now cuts %s as %s, not %s; ignoring it", self.digest, plan.layout, self.layout)
                self.board.tracker_lost(self._clock())
                continue
            if plan.back_to_source and not self.board.elected:
                log.info("elected to fetch the rest of %s from upstream", self.digest)
            self._peers.update(plan.peers)
            self.board.offer(plan, self._clock())
            self._wake.set()
            await self._probe_source()

    async def _probe_source(self) -> None:
        """Ask a quiet source's /healthz (no secret needed): a refused connection means it died, and the next
        lookup reports it, so the tracker elects a new source at once instead of after its node TTL."""
        source, now = self.board.source, self._clock()
        if source is None or source not in self._peers or not self.board.source_quiet(now):
            return
        if now - self._probed.get(source, -1e9) < 1.0:
            return
        self._probed[source] = now
        timeout = aiohttp.ClientTimeout(total=1.0, sock_connect=0.5)
        try:
            async with self._swarm.session.get(URL(self._peers[source]) / "healthz", timeout=timeout) as resp:
                await resp.read()
        except TimeoutError:
            return  # slow is not dead
        except aiohttp.ClientError as exc:
            log.info("source %s of %s looks dead (%s); reporting it", source, self.digest, type(exc).__name__)
            self._dead[source] = self._clock()


async def _verify(hashes: tuple[str, ...], index: int, data: bytes) -> bool:
    """`verify_piece`, in a thread for big pieces: hashing 64 MiB must not stall the event loop."""
    if len(data) <= _INLINE_HASH:
        return verify_piece(hashes, index, data)
    return await asyncio.to_thread(verify_piece, hashes, index, data)
