"""The one thing the proxy knows about peer-to-peer sharing.

``mirror/`` never imports ``p2p/``: the CLI plugs a :class:`PeerSource` into the blob service. A peer source
either streams a whole blob, in order (assembled from peer pieces, topped up from upstream where needed), or
says it cannot help, and the proxy goes to the upstream itself. Whatever it streams is still verified against
the digest before it is committed or a client's response completes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from mirror.oci.reference import Digest


class PeerSource(Protocol):
    async def open(
        self, registry: str, repository: str, digest: Digest, size: int | None
    ) -> tuple[int, AsyncIterator[bytes]] | None:
        """(size, byte stream) of the whole blob from peers, or None when no peer can serve it."""
        ...

    def holding(self, digest: Digest, size: int) -> None:
        """The node now holds a complete, verified copy (announce it)."""
        ...
