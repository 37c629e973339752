"""A node's client for the tracker; every failure ends in one quick `TrackerUnavailable`.

The tracker is an optimisation: when it cannot answer, the node fetches from upstream as if it were alone. So
each call has short timeouts, trackers are tried in the configured order (a tracker that just failed to answer
is skipped for `retry_after` seconds, so a dead one costs one timeout, not one per call), and any failure —
unreachable, timed out, 5xx, a refusal (4xx) or an unreadable answer — raises `TrackerUnavailable`. A refusal
is not retried on the next tracker: the same request would be refused for the same reason (bad secret, a size
that contradicts the cluster's), and trying it elsewhere would only split the cluster's state.

The session is the caller's and stays open. When `heartbeat` returns False the tracker has forgotten this node
(restart, expiry): the caller should announce everything it holds again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from yarl import URL

from p2p import wire
from p2p.auth import sign_headers
from p2p.pieces import PieceLayout
from p2p.scheduler import Holding, Plan


class TrackerUnavailable(Exception):
    """No tracker gave a usable answer; fall back to upstream."""


class TrackerClient:
    """Talks to `tracker_urls` for node `node_id`, which peers reach at `advertise_url`.

    Counters: `requests` (HTTP requests sent) and `failures` (calls that raised `TrackerUnavailable`).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tracker_urls: Sequence[str],
        node_id: str,
        advertise_url: str,
        secret: bytes | None,
        *,
        timeout: float = 2.0,
        connect_timeout: float = 0.5,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not tracker_urls:
            raise ValueError("at least one tracker URL is needed")
        self._session = session
        self._trackers = [URL(url) for url in tracker_urls]
        self._skip_until = [0.0] * len(self._trackers)
        self.node_id = node_id
        self.advertise_url = advertise_url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._retry_after = retry_after
        self._clock = clock
        self.requests = 0
        self.failures = 0

    async def announce(
        self, digest: str, size: int, pieces: Holding, *, piece_size: int | None = None, load: float = 0.0
    ) -> PieceLayout | None:
        """Tell the tracker this node holds `pieces` (a Bitfield cut with `piece_size`, or "complete").

        Returns how the tracker cuts the blob (None from an older tracker that does not say)."""
        body = {
            "node": self.node_id,
            "url": self.advertise_url,
            "digest": digest,
            "size": size,
            "pieces": wire.encode_holding(pieces),
            "piece_size": piece_size,
            "load": load,
        }
        answer = await self._call("POST", ("announce",), body)
        if answer.get("piece_size") is None:
            return None
        try:
            return PieceLayout(wire.size(answer, "size"), wire.piece_size(answer))
        except wire.WireError as exc:
            raise self._failed(f"unusable announce answer: {exc}") from None

    async def heartbeat(self, load: float | None = None) -> bool:
        """Keep this node alive; False means the tracker forgot it and everything must be announced again."""
        answer = await self._call("POST", ("heartbeat",), {"node": self.node_id, "load": load})
        known = answer.get("known")
        if not isinstance(known, bool):
            raise self._failed("heartbeat answer has no 'known' boolean")
        return known

    async def withdraw(self, digest: str | None = None) -> None:
        """Stop offering `digest` (evicted, or download abandoned), or leave the cluster when None."""
        await self._call("POST", ("withdraw",), {"node": self.node_id, "digest": digest})

    async def lookup(
        self, digest: str, size: int | None, *, piece_size: int | None = None, unreachable: Sequence[str] = ()
    ) -> Plan:
        """Where to get `digest`; give its `size` when known (see `Plan.layout` for when it is not).

        `piece_size` is this node's preferred cut, used if this lookup is the first to give the size;
        `unreachable` names peers that failed us (see `Scheduler.lookup`)."""
        body: dict[str, Any] = {"node": self.node_id, "digest": digest, "size": size, "piece_size": piece_size}
        if unreachable:
            body["unreachable"] = list(unreachable)
        answer = await self._call("POST", ("lookup",), body)
        try:
            return wire.decode_plan(answer)
        except wire.WireError as exc:
            raise self._failed(f"unusable plan: {exc}") from None

    async def publish_piece_hashes(self, digest: str, piece_size: int, hashes: Sequence[str]) -> None:
        body = {"node": self.node_id, "digest": digest, "piece_size": piece_size}
        await self._call("POST", ("piece-hashes",), body | {"piece_hashes": list(hashes)})

    async def piece_hashes(self, digest: str) -> tuple[PieceLayout, tuple[str, ...]] | None:
        """The published piece hashes of `digest`, or None when no node has published them."""
        answer = await self._call("GET", ("piece-hashes", digest), None, absent_ok=True)
        if not answer:
            return None
        try:
            layout = PieceLayout(wire.size(answer, "size"), wire.piece_size(answer))
            return layout, wire.piece_hashes(answer, layout)
        except wire.WireError as exc:
            raise self._failed(f"unusable piece hashes: {exc}") from None

    async def _call(
        self, method: str, path: tuple[str, ...], body: dict[str, Any] | None, *, absent_ok: bool = False
    ) -> dict[str, Any]:
        """The JSON object a tracker answers; {} for a 404 when `absent_ok`."""
        payload = b"" if body is None else json.dumps(body).encode()
        problems = []
        for index, base in enumerate(self._trackers):
            if self._skip_until[index] > self._clock():
                problems.append(f"{base}: skipped after a recent failure")
                continue
            url = base.joinpath(*path)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            if self._secret is not None:
                headers |= sign_headers(self._secret, method, url.raw_path_qs, payload, time.time())
            self.requests += 1
            try:
                async with self._session.request(
                    method, url, data=payload, headers=headers, timeout=self._timeout, raise_for_status=False
                ) as response:
                    data = await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                self._skip_until[index] = self._clock() + self._retry_after
                problems.append(f"{base}: {type(exc).__name__} {exc}".strip())
                continue
            if status >= 500:
                self._skip_until[index] = self._clock() + self._retry_after
                problems.append(f"{base}: HTTP {status}")
                continue
            if status == 404 and absent_ok:
                return {}
            if status >= 400:
                detail = data[:200].decode(errors="replace")
                raise self._failed(f"{url} refused {method}: HTTP {status} {detail}")
            try:
                answer = json.loads(data)
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                raise self._failed(f"{url} answered {method} with something other than a JSON object")
            return answer
        raise self._failed("; ".join(problems))

    def _failed(self, reason: str) -> TrackerUnavailable:
        self.failures += 1
        return TrackerUnavailable(reason)
