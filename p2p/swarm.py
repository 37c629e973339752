"""Which piece to fetch next, and from whom: the pure core of one node's peer download. No IO, no clock.

A `PieceBoard` tracks the pieces of one blob as this node downloads it from peers and streams it, in order, to
the mirror. The asyncio shell (`p2p.download`) feeds it the tracker's plans (`offer`), asks it for work
(`assign`), and reports each fetch's outcome (`done`, `failed`, `streamed`); every call that cares about time
takes `now`.

Rules `assign` applies:
- Only pieces inside a window ahead of the stream head are fetched, so memory stays bounded however slow the
  head piece is; at most `concurrency` fetches run at once, at most `per_parent` from one parent, and at
  most `upstream_concurrency` from upstream.
- A piece goes to the usable candidate (not banned, not cooling down after a failure in this download) with
  the fewest fetches from us in flight, ties in the tracker's order, so fetches spread over parents.
- A piece whose holders are all busy with our other fetches waits for them. A piece nobody can serve (no
  holder, or all banned or cooling down) goes to upstream ("back to source" for that piece): at once when this
  node is the elected one; after `orphan_wait` when no node is elected; and, while following an elected node,
  once that node has shown no new piece for the stall limit (`follow_stall`, or three times the usual gap
  between its new pieces if that is longer, so a slow but live source is not duplicated).
- A parent that sent bad data is banned node-wide (`BanList`); one that failed otherwise (dead, slow, refused)
  cools down for this download only. A failed piece is retried from where it stopped (the shell keeps the
  bytes); a corrupt one from scratch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from p2p.pieces import PieceLayout
from p2p.scheduler import Plan

MiB: Final = 1024 * 1024

CORRUPT: Final = "corrupt"
"""The failure reason that bans a parent; the others (e.g. "dead", "timeout", "refused") only cool it down."""


@dataclass(frozen=True, slots=True)
class SwarmConfig:
    concurrency: int = 4
    """Piece fetches in flight at once, peers and upstream together."""
    per_parent: int = 2
    """Piece fetches in flight at once from one parent."""
    upstream_concurrency: int = 2
    """Piece fetches in flight at once from upstream."""
    window_bytes: int = 64 * MiB
    """Bytes of pieces, from the stream head on, that may be fetched or buffered (at least `concurrency` pieces)."""
    orphan_wait: float = 1.0
    """Seconds a piece with no usable candidate waits for a new holder when no node is elected."""
    follow_stall: float = 5.0
    """Seconds without a new piece from anyone before pieces are fetched from upstream while following."""
    cooldown: float = 10.0
    """Seconds a parent that failed (other than corrupt data) is not asked again in this download."""

    def __post_init__(self) -> None:
        if min(self.concurrency, self.per_parent, self.upstream_concurrency) < 1:
            raise ValueError("concurrency limits must be at least 1")
        if self.window_bytes <= 0:
            raise ValueError("window_bytes must be positive")
        if min(self.orphan_wait, self.follow_stall, self.cooldown) < 0:
            raise ValueError("waits must not be negative")

    def window(self, layout: PieceLayout) -> int:
        """How many pieces the window holds for `layout`."""
        return max(self.concurrency, self.window_bytes // layout.piece_size)


class BanList:
    """Nodes that sent bad data, each banned for `duration` seconds from its latest offence. Node-wide."""

    def __init__(self, duration: float = 300.0) -> None:
        if duration <= 0:
            raise ValueError("ban duration must be positive")
        self.duration = duration
        self._until: dict[str, float] = {}

    def ban(self, node_id: str, now: float) -> bool:
        """Ban `node_id`; True when it was not banned already."""
        fresh = not self.banned(node_id, now)
        self._until[node_id] = now + self.duration
        return fresh

    def banned(self, node_id: str, now: float) -> bool:
        until = self._until.get(node_id)
        if until is None:
            return False
        if now >= until:
            del self._until[node_id]
            return False
        return True

    def active(self, now: float) -> list[str]:
        return sorted(node_id for node_id in list(self._until) if self.banned(node_id, now))


@dataclass(frozen=True, slots=True)
class Assignment:
    """Fetch piece `index` from node `parent`, or from upstream when `parent` is None."""

    index: int
    parent: str | None


class PieceState(Enum):
    WAITING = "waiting"
    FETCHING = "fetching"
    READY = "ready"
    """Fetched (and verified when hashes are known), waiting for its turn in the stream."""
    STREAMED = "streamed"


class PieceBoard:
    """One download's pieces; see the module docstring for the rules."""

    def __init__(self, layout: PieceLayout, config: SwarmConfig, bans: BanList, now: float) -> None:
        self.layout = layout
        self.config = config
        self.bans = bans
        self.states = [PieceState.WAITING] * layout.count
        self.head = 0
        """The next piece to stream."""
        self.elected = False
        self.source: str | None = None
        self.piece_hashes: tuple[str, ...] | None = None
        self.parents_used: set[str] = set()
        self.upstream_pieces = 0
        self._window = config.window(layout)
        self._candidates: list[tuple[str, ...]] = [()] * layout.count
        self._fetching: dict[int, str | None] = {}
        self._per_parent: dict[str, int] = {}
        self._cooling: dict[str, float] = {}
        self._stuck_since: dict[int, float] = {}
        self._available = 0
        self._last_news = now
        self._news_gap: float | None = None

    # -- what the tracker says ----------------------------------------------------------------------------------

    def offer(self, plan: Plan, now: float) -> None:
        """Take in a fresh plan for this blob (same layout) from the tracker."""
        if plan.layout != self.layout:
            raise ValueError(f"plan layout {plan.layout} is not the board's {self.layout}")
        if plan.source != self.source or plan.back_to_source != self.elected:
            self._last_news = now  # a new source gets a fresh chance to deliver
        self.source, self.elected = plan.source, plan.back_to_source
        if plan.piece_hashes is not None:
            self.piece_hashes = plan.piece_hashes
        self._candidates = list(plan.candidates)
        available = sum(1 for row in self._candidates if row)
        if available > self._available:
            if self._available:  # the wait for the very first piece is start-up, not the source's pace
                gap = now - self._last_news
                self._news_gap = gap if self._news_gap is None else 0.7 * self._news_gap + 0.3 * gap
            self._last_news = now
        self._available = available

    def tracker_lost(self, now: float) -> None:
        """The tracker stopped answering: nobody's new pieces will be seen, so stop following."""
        if self.source is not None:
            self.source = None
            self._last_news = now

    # -- work -------------------------------------------------------------------------------------------------

    def assign(self, now: float) -> list[Assignment]:
        """Start as many fetches as the limits allow, nearest the stream head first."""
        out: list[Assignment] = []
        slots = self.config.concurrency - len(self._fetching)
        upstream_slots = self.config.upstream_concurrency - sum(1 for p in self._fetching.values() if p is None)
        for index in range(self.head, min(self.layout.count, self.head + self._window)):
            if slots <= 0:
                break
            if self.states[index] is not PieceState.WAITING:
                continue
            parent, busy = self._pick_parent(index, now)
            if parent is None and busy:  # its holders are busy with our other fetches: wait for them
                self._stuck_since.pop(index, None)
                continue
            if parent is None:
                self._stuck_since.setdefault(index, now)
                if upstream_slots <= 0 or not self._give_up_on_peers(index, now):
                    continue
                upstream_slots -= 1
            else:
                self._per_parent[parent] = self._per_parent.get(parent, 0) + 1
            self._stuck_since.pop(index, None)
            self.states[index] = PieceState.FETCHING
            self._fetching[index] = parent
            slots -= 1
            out.append(Assignment(index, parent))
        return out

    def done(self, index: int, contributors: Iterable[str] = ()) -> None:
        """Piece `index` is fetched in full (and verified if it could be); `contributors` sent its bytes."""
        parent = self._finish(index)
        self.states[index] = PieceState.READY
        self.parents_used.update(contributors)
        if parent is None:
            self.upstream_pieces += 1

    def failed(self, index: int, reason: str, now: float, contributors: Iterable[str] = ()) -> list[str]:
        """The fetch of `index` failed for `reason`; returns the parents this newly banned.

        A `CORRUPT` piece bans its parent and every other peer in `contributors` (its bytes may have come from
        several after resumes); any other reason cools the parent down for this download.
        """
        parent = self._finish(index)
        self.states[index] = PieceState.WAITING
        if reason == CORRUPT:
            return self._ban([*([] if parent is None else [parent]), *contributors], now)
        if parent is not None:
            self._cooling[parent] = now + self.config.cooldown
        return []

    def corrupt(self, index: int, contributors: Iterable[str], now: float) -> list[str]:
        """Piece `index`, already READY, failed verification once hashes became known: ban everyone who sent
        its bytes and fetch it again. Returns the parents newly banned."""
        if self.states[index] is not PieceState.READY:
            raise ValueError(f"piece {index} is not ready")
        self.states[index] = PieceState.WAITING
        return self._ban(contributors, now)

    def ready(self) -> bool:
        """Whether the head piece can be streamed now."""
        return self.head < self.layout.count and self.states[self.head] is PieceState.READY

    def streamed(self) -> int:
        """The head piece was handed to the stream; returns its index."""
        index = self.head
        if not self.ready():
            raise ValueError(f"piece {index} is not ready to stream")
        self.states[index] = PieceState.STREAMED
        self.head += 1
        return index

    @property
    def complete(self) -> bool:
        return self.head == self.layout.count

    @property
    def in_flight(self) -> int:
        return len(self._fetching)

    def waiting_without_parent(self, now: float) -> bool:
        """Whether some piece in the window is waiting for a holder: worth asking the tracker again soon."""
        end = min(self.layout.count, self.head + self._window)
        return any(
            self.states[index] is PieceState.WAITING and self._pick_parent(index, now) == (None, False)
            for index in range(self.head, end)
        )

    # -- internals --------------------------------------------------------------------------------------------

    def _ban(self, parents: Iterable[str], now: float) -> list[str]:
        return [parent for parent in dict.fromkeys(parents) if self.bans.ban(parent, now)]

    def _finish(self, index: int) -> str | None:
        if index not in self._fetching:
            raise ValueError(f"piece {index} is not being fetched")
        parent = self._fetching.pop(index)
        if parent is not None:
            self._per_parent[parent] -= 1
        return parent

    def _usable(self, parent: str, now: float) -> bool:
        until = self._cooling.get(parent)
        if until is not None and now >= until:
            del self._cooling[parent]
            until = None
        return until is None and not self.bans.banned(parent, now)

    def _pick_parent(self, index: int, now: float) -> tuple[str | None, bool]:
        """The best usable candidate for `index`, or None and whether some usable candidate is merely busy."""
        best: tuple[int, int, str] | None = None
        busy_only = False
        for rank, parent in enumerate(self._candidates[index]):
            if not self._usable(parent, now):
                continue
            busy = self._per_parent.get(parent, 0)
            if busy >= self.config.per_parent:
                busy_only = True
            elif best is None or (busy, rank) < best[:2]:
                best = (busy, rank, parent)
        return (None, busy_only) if best is None else (best[2], False)

    def _give_up_on_peers(self, index: int, now: float) -> bool:
        if self.elected:
            return True
        waited = now - self._stuck_since[index]
        if self.source is None:
            return waited >= self.config.orphan_wait
        limit = self.stall_limit()
        return waited >= limit and now - self._last_news >= limit

    def source_quiet(self, now: float) -> bool:
        """Whether the followed source is quieter than usual (twice its usual gap, at least a second) while we
        wait for its pieces: worth checking that it is still there before the stall limit."""
        if self.source is None or self.elected:
            return False
        usual = max(1.0, 2 * (self._news_gap or 0.0))
        return now - self._last_news >= usual and self.waiting_without_parent(now)

    def source_stalled(self, now: float) -> bool:
        """Whether the followed source has shown nothing new for the stall limit while we wait for its pieces."""
        if self.source is None or self.elected:
            return False
        return now - self._last_news >= self.stall_limit() and self.waiting_without_parent(now)

    def stall_limit(self) -> float:
        """Seconds without news from the followed source before its missing pieces come from upstream."""
        gap = 0.0 if self._news_gap is None else 3 * self._news_gap
        return max(self.config.follow_stall, gap)
