"""Blobs through the mirror: the local cache, then peers, then upstreams — each digest fetched once.

Digests are immutable, so a cached blob is served without asking anyone. A miss starts one detached
download that writes (and hashes) into a temp file; every client that wants the blob follows that file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp

from mirror import metrics
from mirror.oci.errors import BlobUnknown, Unavailable
from mirror.oci.reference import Digest
from mirror.proxy.crossproc import DigestLock, ForeignDownload
from mirror.proxy.inflight import Download, Followable, InflightTable
from mirror.proxy.peers import PeerSource
from mirror.store.files import BlobWriter, FileStore, IntegrityError
from mirror.store.quota import CacheQuota
from mirror.upstream.client import UpstreamClient

log = logging.getLogger("shoal.blobs")
_BLOB_HIT = metrics.CACHE.labels("blob", "hit")
_AHEAD = 8 << 20  # bytes received but not yet written before receiving waits for the disk


@dataclass(slots=True)
class CachedBlob:
    fd: int
    size: int

    def readable(self) -> int:
        return self.size


@dataclass(slots=True)
class FollowedBlob:
    """A blob still downloading; ``fd`` reads its temp file, the download says how far it may be read."""

    fd: int
    download: Followable
    on_close: Callable[[], None] | None = None  # when the response is done with it

    def readable(self) -> int:
        """Bytes on disk from offset 0, verified or not (peers check pieces against piece hashes)."""
        return self.download.received


@dataclass(slots=True)
class _Source:
    """Where one download's bytes come from."""

    size: int | None
    stream: AsyncIterator[bytes]
    kind: str  # "upstream" or "peer"
    name: str  # the upstream's host, or "peers"
    release: Callable[[], None]


class BlobService:
    def __init__(
        self,
        store: FileStore,
        upstream: UpstreamClient,
        peers: PeerSource | None = None,
        quota: CacheQuota | None = None,
        offline: bool = False,
    ) -> None:
        self.store = store
        self.offline = offline
        self.upstream = upstream
        self.peers = peers
        self.quota = quota
        self.inflight = InflightTable()

    def cached(self, digest: Digest) -> CachedBlob | None:
        opened = self.store.open_blob(digest)
        return CachedBlob(*opened) if opened else None

    async def open(self, registry: str, repository: str, digest: Digest) -> CachedBlob | FollowedBlob:
        """The blob from cache, or a handle on its (possibly new) download once its size is known."""
        hit = self.cached(digest)
        if hit:
            _BLOB_HIT.inc()
            if self.quota is not None:
                self.quota.touch(str(digest))
            return hit
        key = str(digest)
        download = self.inflight.get(key)
        if download is None:
            metrics.CACHE.labels("blob", "miss").inc()
            self._refuse_if_offline()
            claim = DigestLock.try_acquire(self.store.tmp_dir, digest.hex)
            if isinstance(claim, ForeignDownload):  # another worker process is fetching it
                return await self._follow_foreign(claim, digest)
            hit = self.cached(digest)  # committed by another worker just before we took the lock
            if hit:
                claim.release()
                return hit
            download = self.inflight.start(key, lambda d: self._fetch(d, registry, repository, digest, claim))
        else:
            metrics.CACHE.labels("blob", "joined").inc()
        await download.started  # raises the fetch's error for every waiter when nothing could be fetched
        if download.attachable:
            return FollowedBlob(download.attach(), download)
        if download.error is not None:
            raise download.error
        hit = self.cached(digest)  # finished and committed while we were waiting
        if hit is None:
            raise Unavailable("blob vanished from the cache right after download")
        return hit

    async def _follow_foreign(self, foreign: ForeignDownload, digest: Digest) -> CachedBlob | FollowedBlob:
        metrics.CACHE.labels("blob", "joined").inc()
        foreign.final_path = self.store.blob_path(digest)
        try:
            await foreign.begun()
            return FollowedBlob(foreign.attach(), foreign, foreign.close)
        except BaseException:
            foreign.close()
            raise

    def open_local(self, digest: Digest) -> CachedBlob | FollowedBlob | None:
        """The blob if this node has it, committed or still downloading; never starts a fetch (peer serving)."""
        hit = self.cached(digest)
        if hit:
            return hit
        download = self.inflight.get(str(digest))
        if download is not None and download.attachable:
            return FollowedBlob(download.attach(), download)
        return None

    async def fetch_range(
        self, registry: str, repository: str, digest: Digest, start: int, end: int
    ) -> AsyncIterator[bytes]:
        """Exactly bytes ``start..end`` (inclusive) of a blob from upstream, with the usual auth and fallback.

        For peer downloads topping up pieces no peer has; raises Unavailable on a short or non-206 answer.
        """
        resp = await self.upstream.request(
            registry, repository, f"blobs/{digest}", not_found=BlobUnknown, headers={"Range": f"bytes={start}-{end}"}
        )
        try:
            if resp.status != 206 and start != 0:
                raise Unavailable(f"upstream {resp.upstream.name} ignored the Range request")
            want, got = end - start + 1, 0
            async for chunk in _chunks(resp.response.content):
                chunk = chunk[: want - got]
                got += len(chunk)
                yield chunk
                if got == want:
                    return
            raise Unavailable(f"upstream {resp.upstream.name} sent {got} of {want} bytes")
        finally:
            resp.release()

    async def size(self, registry: str, repository: str, digest: Digest) -> tuple[int, str]:
        """Blob size for HEAD, and where it came from; an uncached blob is asked about with HEAD only."""
        local = self.store.blob_size(digest)
        if local is not None:
            return local, "cache"
        download = self.inflight.get(str(digest))
        if download is not None and download.size is not None:
            return download.size, "upstream"
        self._refuse_if_offline()
        resp = await self.upstream.request(
            registry, repository, f"blobs/{digest}", method="HEAD", not_found=BlobUnknown
        )
        resp.release()
        length = resp.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise Unavailable("upstream did not report the blob size")
        return int(length), resp.upstream.name

    def _refuse_if_offline(self) -> None:
        if self.offline:
            raise BlobUnknown("not cached, and this mirror is offline")

    async def _fetch(
        self, download: Download, registry: str, repository: str, digest: Digest, claim: DigestLock
    ) -> None:
        metrics.INFLIGHT.inc()
        writer = None
        try:
            started = time.perf_counter()
            source = await self._source(registry, repository, digest)
            headers_at = time.perf_counter()
            try:
                writer = self.store.blob_writer(digest, source.size)
                download.begin(writer.path, source.size, source.name, source.kind)
                claim.publish(writer.path, source.size)
                await self._ingest(source, writer, download, digest)
                received_at = time.perf_counter()
                await writer.verify()
            finally:
                source.release()
            await download.finish()  # verified: clients get their last bytes now, not after the fsync
            verified_at = time.perf_counter()
            await writer.persist()  # still in the in-flight table, so nobody starts a second download
            if self.peers is not None:
                self.peers.holding(digest, writer.size)
            if self.quota is not None:
                try:
                    await self.quota.added(str(digest), writer.size)
                except Exception:
                    log.exception("cache eviction failed")
            log.info(
                "cached %s (%d bytes) from %s: headers %.3fs, body %.3fs, verify %.3fs, fsync %.3fs",
                digest,
                writer.size,
                source.name,
                headers_at - started,
                received_at - headers_at,
                verified_at - received_at,
                time.perf_counter() - verified_at,
            )
        except BaseException as exc:
            if writer is not None:
                writer.discard()
            if self.peers is not None:
                self.peers.dropped(digest)
            if isinstance(exc, IntegrityError):
                metrics.INTEGRITY_FAILURES.inc()
                log.error("discarded %s: %s", digest, exc)
                exc = Unavailable("upstream sent corrupt data; try again")
            elif isinstance(exc, aiohttp.ClientError | TimeoutError):
                log.warning("download of %s failed: %r", digest, exc)
                exc = Unavailable(f"upstream transfer failed: {type(exc).__name__}")
            claim.fail(exc)
            await download.finish(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            claim.release()
            metrics.INFLIGHT.dec()

    async def _ingest(self, source: _Source, writer: BlobWriter, download: Download, digest: Digest) -> None:
        """Receive into the writer with one hash+write batch in threads while the next chunks arrive.

        Waiting for each thread hop before reading on would leave the socket idle half the time; instead the
        loop keeps reading and only waits once ``_AHEAD`` bytes are queued behind the batch being written.
        Progress is reported the moment a batch is on disk, so clients get bytes even while upstream stalls.
        """
        upstream_bytes = metrics.UPSTREAM_BYTES.labels(source.name)

        def written(future: asyncio.Future[int]) -> None:
            if future.cancelled() or future.exception() is not None:
                return  # raised where the future is awaited
            n = future.result()
            upstream_bytes.inc(n)
            download.advance(n)
            if self.peers is not None:
                self.peers.progress(digest, source.size, download.received)

        def submit(chunks: list[bytes]) -> asyncio.Future[int]:
            future = writer.submit(chunks)
            future.add_done_callback(written)
            return future

        pending: asyncio.Future[int] | None = None
        batch: list[bytes] = []
        queued = 0
        try:
            async for chunk in source.stream:
                batch.append(chunk)
                queued += len(chunk)
                if pending is not None and (pending.done() or queued >= _AHEAD):
                    await pending
                    pending = None
                if pending is None:
                    pending, batch, queued = submit(batch), [], 0
            if pending is not None:
                await pending
                pending = None
            if batch:
                await submit(batch)
        finally:
            if pending is not None:  # failed midway: let the threads finish before the file is discarded
                await asyncio.gather(pending, return_exceptions=True)

    async def _source(self, registry: str, repository: str, digest: Digest) -> _Source:
        if self.peers is not None:
            try:
                found = await self.peers.open(registry, repository, digest, None)
            except Exception as exc:  # P2P must never fail a pull
                log.warning("peer lookup for %s failed, going upstream: %r", digest, exc)
                found = None
            if found is not None:
                return _Source(found[0], found[1], "peer", "peers", lambda: None)
        resp = await self.upstream.request(registry, repository, f"blobs/{digest}", not_found=BlobUnknown)
        length = resp.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else None
        return _Source(size, _chunks(resp.response.content), "upstream", resp.upstream.name, resp.release)


async def _chunks(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Chunks as they arrive, uncopied (the ingest pipeline batches them)."""
    while chunk := await content.readany():
        yield chunk
