"""The tracker's state: who holds which pieces of which blob, and who fetches a blob from upstream.

Pure and single-threaded: no IO, no clock. Every method that cares about time takes `now` (seconds on any
monotonic clock), so tests drive expiry by passing numbers and the aiohttp shell in `p2p.tracker` stays thin.

Rules, in the order `lookup` applies them:
- A node is alive while it has been heard from (announce, heartbeat or lookup) within `node_ttl`; dead nodes
  are never offered as parents and `expire` forgets them with everything they announced.
- Candidates for each piece: live complete holders first, then live partial holders that have the piece;
  within each group less load first, ties broken by a hash of (asker, node) so askers spread over equal
  parents. The asker is never its own candidate.
- If some live node holds the whole blob, nobody fetches it from upstream.
- Otherwise, if a node was elected to fetch it from upstream ("back to source") and that election is live,
  the asker follows it: `Plan.source` names it and the asker looks up again to see its pieces as they are
  announced. The elected node itself is told `back_to_source` again.
- Otherwise, if live partial holders together cover every piece, the asker downloads from them.
- Otherwise the asker is elected. An election ends when the elected node announces the blob complete,
  withdraws it, dies, or announces no new piece for `stall_timeout`, or when an asker reports it unreachable
  or stalled; the next asker is then elected.

A blob's `PieceLayout` is fixed when the tracker first hears its size (from an asker, with its preferred piece
size if it gave one, or an announcer, with the announcer's piece size for a partial announce); a later announce
that disagrees raises `Conflict`. An asker
that does not know the size yet (a client asked for a digest, nothing more) still takes part in the election.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from p2p.pieces import Bitfield, PieceLayout, check_piece_hashes, choose_piece_size

COMPLETE: Final = "complete"
Holding = Bitfield | Literal["complete"]
"""What a node announces for a blob: the pieces it has so far, or `COMPLETE`."""


class SchedulerError(Exception):
    """Base of the errors the scheduler raises for requests it cannot accept."""


class Conflict(SchedulerError):
    """The request disagrees with what the tracker already knows about the blob (size, piece size, hashes)."""


class UnknownBlob(SchedulerError):
    """The tracker knows nothing about the blob."""


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    node_ttl: float = 30.0
    """A node that has not been heard from for this long is dead."""
    stall_timeout: float = 60.0
    """An elected node that has announced no new piece for this long loses its election."""
    max_candidates: int = 4
    """At most this many parents are offered per piece."""
    piece_size: int | None = None
    """Override of the adaptive piece size, for blobs first heard of by lookup or complete announce."""

    def __post_init__(self) -> None:
        if self.node_ttl <= 0 or self.stall_timeout <= 0:
            raise ValueError("node_ttl and stall_timeout must be positive")
        if self.max_candidates < 1:
            raise ValueError("max_candidates must be at least 1")


@dataclass(frozen=True, slots=True)
class Plan:
    """The tracker's answer to "where do I get this blob?"."""

    digest: str
    layout: PieceLayout | None
    """How the blob is cut; None only while nobody has told the tracker the blob's size (the asker did not
    know it either): then there are no candidates, and the asker either fetches from upstream or follows
    `source`, looking up again with the size once it knows it."""
    back_to_source: bool
    """The asker is elected: fetch from upstream the pieces that have no candidates (or the whole blob)."""
    source: str | None
    """The node elected to fetch from upstream when it is not the asker and no node holds the whole blob yet:
    pieces without candidates will appear as it announces them, so look up again."""
    candidates: tuple[tuple[str, ...], ...]
    """Per piece, node ids to try in order; empty when no live peer has the piece yet."""
    peers: Mapping[str, str]
    """URL of every node named in `candidates`."""
    piece_hashes: tuple[str, ...] | None = None
    """sha256 of every piece, when a node that verified the whole blob has published them."""

    def missing(self) -> tuple[int, ...]:
        """Pieces that no peer can serve yet."""
        return tuple(index for index, row in enumerate(self.candidates) if not row)


@dataclass(slots=True)
class _Node:
    url: str | None
    load: float
    last_seen: float
    digests: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Election:
    node_id: str
    progress_at: float


@dataclass(slots=True)
class _Blob:
    layout: PieceLayout | None
    complete: set[str] = field(default_factory=set)
    partial: dict[str, Bitfield] = field(default_factory=dict)
    hashes: tuple[str, ...] | None = None
    election: _Election | None = None

    def unused(self) -> bool:
        return not self.complete and not self.partial and self.election is None


class Scheduler:
    """Tracker state; see the module docstring for the rules. Counters are plain attributes."""

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self._nodes: dict[str, _Node] = {}
        self._blobs: dict[str, _Blob] = {}
        self.lookups = 0
        self.elections = 0
        self.elections_expired = 0
        self.elections_reported = 0
        self.nodes_expired = 0

    @property
    def node_count(self) -> int:
        return len(self._nodes)

    @property
    def blob_count(self) -> int:
        return len(self._blobs)

    def announce(
        self,
        node_id: str,
        url: str,
        digest: str,
        size: int,
        pieces: Holding,
        load: float,
        now: float,
        *,
        piece_size: int | None = None,
    ) -> None:
        """Record that `node_id`, reachable at `url`, holds `pieces` of `digest`, replacing its last word.

        A partial announce (a Bitfield) must give the `piece_size` the node cuts the blob with; a complete one
        does not depend on it.
        """
        if isinstance(pieces, Bitfield) and piece_size is None:
            raise ValueError("a partial announce must give its piece size")
        blob = self._blob(digest, size, piece_size if isinstance(pieces, Bitfield) else None)
        layout = blob.layout
        assert layout is not None  # _blob fixes the layout whenever it is given a size
        if isinstance(pieces, Bitfield) and len(pieces) != layout.count:
            raise Conflict(f"{digest} has {layout.count} pieces, announce has {len(pieces)}")
        node = self._touch(node_id, now)
        node.url = url
        node.load = load
        node.digests.add(digest)
        election = blob.election
        if not isinstance(pieces, Bitfield) or pieces.complete():
            blob.partial.pop(node_id, None)
            blob.complete.add(node_id)
            if election is not None and election.node_id == node_id:
                blob.election = None
            return
        before = blob.partial.get(node_id)
        blob.complete.discard(node_id)
        blob.partial[node_id] = pieces.copy()
        progressed = before is None or pieces.count() > before.count()
        if election is not None and election.node_id == node_id and progressed:
            election.progress_at = now

    def heartbeat(self, node_id: str, now: float, load: float | None = None) -> bool:
        """Keep `node_id` alive. False when the tracker does not know it: the node should announce again."""
        node = self._nodes.get(node_id)
        if node is None:
            return False
        node.last_seen = now
        if load is not None:
            node.load = load
        return True

    def withdraw(self, node_id: str, digest: str | None = None) -> None:
        """Forget that `node_id` holds `digest` (evicted or given up), or all about the node when None."""
        node = self._nodes.get(node_id)
        if node is None:
            return
        for held in [digest] if digest is not None else list(node.digests):
            node.digests.discard(held)
            blob = self._blobs.get(held)
            if blob is None:
                continue
            blob.complete.discard(node_id)
            blob.partial.pop(node_id, None)
            if blob.election is not None and blob.election.node_id == node_id:
                blob.election = None
            if blob.unused():
                del self._blobs[held]
        if digest is None:
            del self._nodes[node_id]

    def lookup(
        self,
        asker: str,
        digest: str,
        size: int | None,
        now: float,
        *,
        piece_size: int | None = None,
        unreachable: Collection[str] = (),
    ) -> Plan:
        """Where `asker` should get `digest` (of `size` bytes, None if unknown) from; may elect the asker.

        `piece_size` is the asker's preferred cut: used only when this lookup fixes the blob's layout, never a
        conflict with an existing one. `unreachable` names nodes the asker could not reach, or whose download it
        followed without seeing progress: if the elected node is among them its election ends at once (rather
        than after `node_ttl` or `stall_timeout`), so the asker is elected in its place.
        """
        self.lookups += 1
        self._touch(asker, now)
        known = self._blobs.get(digest)
        preferred = piece_size if known is None or known.layout is None else None
        blob = self._blob(digest, size, preferred)
        if blob.election is not None and blob.election.node_id in unreachable and blob.election.node_id != asker:
            blob.election = None
            self.elections_reported += 1
        election = self._live_election(blob, now)
        complete = self._ranked(blob.complete, asker, now)
        partial = self._ranked(blob.partial, asker, now)
        candidates = self._candidates(blob, complete, partial)

        source: str | None = None
        back_to_source = False
        if complete:
            pass
        elif election is not None:
            back_to_source = election.node_id == asker
            source = None if back_to_source else election.node_id
        elif blob.layout is None or not all(candidates):
            blob.election = _Election(asker, now)
            self.elections += 1
            back_to_source = True

        peers = {node_id: self._url(node_id) for row in candidates for node_id in row}
        return Plan(digest, blob.layout, back_to_source, source, tuple(candidates), peers, blob.hashes)

    def publish_piece_hashes(self, digest: str, piece_size: int, hashes: Sequence[str]) -> None:
        """Store the piece hashes of `digest`, computed with `piece_size` by a node that verified the blob.

        The first list wins; publishing a different one raises `Conflict`. A malformed list raises ValueError.
        """
        blob = self._blobs.get(digest)
        if blob is None:
            raise UnknownBlob(digest)
        if blob.layout is None:
            raise UnknownBlob(f"the size of {digest} is not known")
        if piece_size != blob.layout.piece_size:
            raise Conflict(f"{digest} is cut in pieces of {blob.layout.piece_size} bytes, not {piece_size}")
        checked = check_piece_hashes(blob.layout, hashes)
        if blob.hashes is not None and blob.hashes != checked:
            raise Conflict(f"{digest} already has different piece hashes")
        blob.hashes = checked

    def layout(self, digest: str) -> PieceLayout | None:
        """How `digest` is cut, if the tracker knows."""
        blob = self._blobs.get(digest)
        return None if blob is None else blob.layout

    def piece_hashes(self, digest: str) -> tuple[PieceLayout, tuple[str, ...]] | None:
        blob = self._blobs.get(digest)
        if blob is None or blob.layout is None or blob.hashes is None:
            return None
        return blob.layout, blob.hashes

    def expire(self, now: float) -> list[str]:
        """Forget nodes not heard from within `node_ttl`, end stalled elections; returns the dead ids."""
        dead = [node_id for node_id, node in self._nodes.items() if not self._alive(node, now)]
        for node_id in dead:
            self.withdraw(node_id)
        self.nodes_expired += len(dead)
        for digest, blob in list(self._blobs.items()):
            self._live_election(blob, now)
            if blob.unused():
                del self._blobs[digest]
        return dead

    def _touch(self, node_id: str, now: float) -> _Node:
        node = self._nodes.get(node_id)
        if node is None:
            node = self._nodes[node_id] = _Node(url=None, load=0.0, last_seen=now)
        node.last_seen = now
        return node

    def _alive(self, node: _Node, now: float) -> bool:
        return now - node.last_seen <= self.config.node_ttl

    def _blob(self, digest: str, size: int | None, piece_size: int | None) -> _Blob:
        """The blob's record, created if needed, with its layout fixed or checked when `size` is given."""
        blob = self._blobs.get(digest)
        layout = None if blob is None else blob.layout
        if layout is not None:
            if size is not None and size != layout.size:
                raise Conflict(f"{digest} is {layout.size} bytes, not {size}")
            if piece_size is not None and piece_size != layout.piece_size:
                raise Conflict(f"{digest} is cut in pieces of {layout.piece_size} bytes, not {piece_size}")
        elif size is not None:
            layout = PieceLayout(size, piece_size or choose_piece_size(size, self.config.piece_size))
        if blob is None:
            blob = self._blobs[digest] = _Blob(layout)
        blob.layout = layout
        return blob

    def _live_election(self, blob: _Blob, now: float) -> _Election | None:
        election = blob.election
        if election is None:
            return None
        node = self._nodes.get(election.node_id)
        stalled = now - election.progress_at > self.config.stall_timeout
        if node is None or not self._alive(node, now) or stalled:
            blob.election = None
            self.elections_expired += 1
            return None
        return election

    def _ranked(self, node_ids: Iterable[str], asker: str, now: float) -> list[str]:
        """Live nodes with a URL, other than the asker, least loaded first."""
        live = []
        for node_id in node_ids:
            node = self._nodes.get(node_id)
            if node_id != asker and node is not None and node.url is not None and self._alive(node, now):
                live.append((node.load, zlib.crc32(f"{asker}\0{node_id}".encode()), node_id))
        live.sort()
        return [node_id for _, _, node_id in live]

    def _candidates(self, blob: _Blob, complete: list[str], partial: list[str]) -> list[tuple[str, ...]]:
        if blob.layout is None:  # nobody has announced it
            return []
        limit = self.config.max_candidates
        head = tuple(complete[:limit])
        if len(head) == limit or not partial:
            return [head] * blob.layout.count
        rows = []
        for index in range(blob.layout.count):
            extra = [node_id for node_id in partial if blob.partial[node_id].has(index)]
            rows.append(head + tuple(extra[: limit - len(head)]))
        return rows

    def _url(self, node_id: str) -> str:
        url = self._nodes[node_id].url
        assert url is not None  # _ranked only returns nodes with a URL
        return url
