"""The one thing the proxy knows about peer-to-peer sharing.

``mirror/`` never imports ``p2p/``: the CLI plugs a :class:`PeerSource` into the blob service. A peer source
either streams a whole blob, in order (assembled from peer pieces, topped up from upstream where needed), or
says it cannot help, and the proxy goes to the upstream itself. Whatever it streams is still verified against
the digest before it is committed or a client's response completes. It is told as the node's own downloads
progress, so other nodes can follow them piece by piece.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from mirror.oci.reference import Digest


class PeerSource(Protocol):
    async def open(
        self, registry: str, repository: str, digest: Digest, size: int | None
    ) -> tuple[int, AsyncIterator[bytes]] | None:
        """(size, byte stream) of the whole blob from peers, or None when peers cannot help.

        Called by the single download of a digest on this node; must return quickly when the tracker is
        down (the proxy then fetches from upstream) and must never raise for peer trouble.
        """
        ...

    def progress(self, digest: Digest, size: int | None, received: int) -> None:
        """This node's own download of ``digest`` has ``received`` bytes on disk (from offset 0)."""
        ...

    def holding(self, digest: Digest, size: int) -> None:
        """This node now holds a complete, verified copy."""
        ...

    def dropped(self, digest: Digest) -> None:
        """This node no longer holds ``digest`` (failed download, eviction)."""
        ...
