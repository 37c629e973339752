"""Prometheus metrics of the peer-to-peer layer, registered on the mirror's registry so /metrics shows them.

Labels are bounded: sources, reasons, tracker calls and results. Node ids and digests never become labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from mirror.metrics import REGISTRY

BYTES = Counter(
    "shoal_p2p_download_bytes_total",
    "Blob bytes fetched by peer downloads, by source (peer or upstream)",
    ["source"],
    registry=REGISTRY,
)
PIECES = Counter("shoal_p2p_pieces_total", "Pieces fetched by peer downloads, by source", ["source"], registry=REGISTRY)
PIECE_FAILURES = Counter(
    "shoal_p2p_piece_failures_total",
    "Piece fetches that failed, by reason (dead, timeout, refused, short, corrupt, upstream)",
    ["reason"],
    registry=REGISTRY,
)
DOWNLOADS = Counter(
    "shoal_p2p_downloads_total",
    "Blob downloads offered to P2P, by outcome (peers, back_to_source, no_tracker, no_layout)",
    ["outcome"],
    registry=REGISTRY,
)
PARENTS = Histogram(
    "shoal_p2p_download_parents",
    "Distinct peers that supplied pieces to one download",
    buckets=(0, 1, 2, 3, 4, 6, 8, 12, 16),
    registry=REGISTRY,
)
UPLOAD_BYTES = Counter("shoal_p2p_upload_bytes_total", "Piece bytes sent to peers", registry=REGISTRY)
UPLOADS = Counter("shoal_p2p_uploads_total", "Piece requests from peers, by HTTP status", ["status"], registry=REGISTRY)
UPLOADS_ACTIVE = Gauge("shoal_p2p_uploads_active", "Piece uploads in progress", registry=REGISTRY)
TRACKER_CALLS = Counter(
    "shoal_p2p_tracker_requests_total",
    "Calls to the tracker, by call (announce, lookup, heartbeat, withdraw, piece_hashes) and result",
    ["call", "result"],
    registry=REGISTRY,
)
BANNED = Counter("shoal_p2p_peers_banned_total", "Peers banned for sending bad data", registry=REGISTRY)
