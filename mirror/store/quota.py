"""Keeping the cache under ``--max-cache-size``: least-recently-used blobs go first.

Access order lives in memory (a hit costs one ``move_to_end``) and is persisted to a diskcache index in a
thread, so a restart keeps it. Never evicted: a blob being read (``acquire``/``release``), a blob being
written (it is not in the index until committed), and anything a pinned image references. When a blob goes,
every manifest referencing it goes too (and every index referencing those), so the mirror never serves a
manifest whose blobs are gone: such a manifest is fetched again, with its blobs, on the next pull.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

import diskcache

from mirror.oci.errors import RegistryError
from mirror.oci.manifest import parse_refs
from mirror.oci.reference import Digest
from mirror.store.files import FileStore

log = logging.getLogger("shoal.quota")

_FLUSH_EVERY = 30.0


class CacheQuota:
    def __init__(
        self,
        store: FileStore,
        max_bytes: int,
        pinned: Callable[[], set[str]] = set,
        on_evict: Callable[[list[str]], None] = lambda digests: None,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self._pinned = pinned
        self._on_evict = on_evict
        self._index = diskcache.Cache(str(store.root / "index"), eviction_policy="none")
        self._lru: OrderedDict[str, int] = OrderedDict()
        self._in_use: Counter[str] = Counter()
        self._dirty: dict[str, float] = {}
        self._children: dict[str, frozenset[str]] = {}  # manifest -> referenced digests, only touched in _evict
        self.total = 0
        self.evicted = 0
        self._lock = asyncio.Lock()

    # start-up ------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Rebuild the LRU from disk, ordered by the persisted access times (blocking; call at start)."""
        seen: dict[str, tuple[float, int]] = {}
        for digest, path in self.store.iter_blobs():
            key = str(digest)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            atime = self._index.get(key)
            seen[key] = (float(atime) if atime is not None else path.stat().st_mtime, size)
        for key in list(self._index.iterkeys()):
            if key not in seen:
                self._index.delete(key)
        for key, (_, size) in sorted(seen.items(), key=lambda kv: kv[1][0]):
            self._lru[key] = size
            self.total += size

    # hot path ------------------------------------------------------------------------------------------

    def touch(self, digest: str) -> None:
        if digest in self._lru:
            self._lru.move_to_end(digest)
            self._dirty[digest] = time.time()

    def acquire(self, digest: str) -> None:
        self._in_use[digest] += 1

    def release(self, digest: str) -> None:
        self._in_use[digest] -= 1
        if self._in_use[digest] <= 0:
            del self._in_use[digest]

    # after a download ----------------------------------------------------------------------------------

    async def added(self, digest: str, size: int) -> None:
        """Account a committed blob and evict until the cache fits again."""
        if digest not in self._lru:
            self.total += size
        self._lru[digest] = size
        self._lru.move_to_end(digest)
        self._dirty[digest] = time.time()
        if self.total > self.max_bytes:
            async with self._lock:
                gone = await asyncio.to_thread(self._evict, digest)
            if gone:
                self._on_evict(gone)  # on the event loop: listeners touch loop-owned state

    def _evict(self, newest: str) -> list[str]:
        """Evict LRU-first until the cache fits; the blob that was just added is never the victim.

        Returns the evicted blob and manifest digests."""
        pinned = self._pinned()
        victims: list[str] = []
        for key, size in list(self._lru.items()):
            if self.total <= self.max_bytes:
                break
            if key in self._in_use or key in pinned or key == newest:
                continue
            victims.append(key)
            self.total -= size
            del self._lru[key]
        if not victims:
            if self.total > self.max_bytes:
                log.warning(
                    "cache is %d bytes over its limit but everything left is pinned or in use",
                    self.total - self.max_bytes,
                )
            return []
        gone_manifests = self._drop_referencing(set(victims))
        for key in victims:
            self.store.delete_blob(Digest.parse(key))
            self._index.delete(key)
            self._dirty.pop(key, None)
        self.evicted += len(victims)
        log.info(
            "evicted %d blobs and %d manifests; cache now %d of %d bytes",
            len(victims),
            len(gone_manifests),
            self.total,
            self.max_bytes,
        )
        return [*victims, *gone_manifests]

    def _drop_referencing(self, blobs: set[str]) -> list[str]:
        """Delete manifests that reference any of ``blobs``, transitively up through indexes."""
        children = self._manifest_children()
        doomed: set[str] = set()
        frontier = set(blobs)
        while frontier:
            hit = {m for m, kids in children.items() if m not in doomed and kids & frontier}
            doomed |= hit
            frontier = hit
        for key in doomed:
            self.store.delete_manifest(Digest.parse(key))
            self._children.pop(key, None)
        return sorted(doomed)

    def _manifest_children(self) -> dict[str, frozenset[str]]:
        """What each cached manifest references. A manifest never changes, so each is read and parsed once;
        a cache at its limit evicts on every download and must not re-read every manifest each time."""
        present = {str(digest) for digest, _ in self.store.iter_manifests()}
        for gone in self._children.keys() - present:
            del self._children[gone]
        for key in present - self._children.keys():
            stored = self.store.read_manifest(Digest.parse(key))
            kids: frozenset[str] = frozenset()
            if stored is not None:
                with contextlib.suppress(RegistryError):
                    refs = parse_refs(stored.body)
                    kids = frozenset(str(d.digest) for d in (*refs.manifests, *refs.blobs))
            self._children[key] = kids
        return self._children

    # persistence ---------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Persist access times (blocking; runs in a thread)."""
        dirty, self._dirty = self._dirty, {}
        for key, atime in dirty.items():
            self._index.set(key, atime)

    async def run_flusher(self) -> None:
        try:
            while True:
                await asyncio.sleep(_FLUSH_EVERY)
                await asyncio.to_thread(self.flush)
        finally:
            self.flush()
            self._index.close()
