"""The JSON bodies exchanged by `p2p.tracker` and `p2p.tracker_client`, validated in one place.

Pure: values in, values out. Every parse error is a `WireError` (a ValueError) that the tracker renders as 400
and the client reports as an unusable tracker answer.

Holdings travel as the string "complete" or as the base64 of a `Bitfield`; a `Plan` travels as

    {"digest", "size" | null, "piece_size" | null, "back_to_source", "source": id | null,
     "peers": {id: url}, "candidates": [[id, ...] per piece], "piece_hashes": [...] | null}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from p2p.pieces import Bitfield, PieceLayout, check_piece_hashes
from p2p.scheduler import COMPLETE, Holding, Plan

# OCI digest grammar (algorithm ":" encoded), bounded in length.
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,256}")
_NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_URL_RE = re.compile(r"https?://[^\s]{1,2040}")


class WireError(ValueError):
    """A JSON body does not have the expected shape."""


def node_id(body: Mapping[str, Any], key: str = "node") -> str:
    return _matching(body, key, _NODE_ID_RE, "a node id")


def node_ids(body: Mapping[str, Any], key: str, limit: int = 64) -> tuple[str, ...]:
    """An optional list of node ids (absent: empty)."""
    value = body.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > limit:
        raise WireError(f"{key!r} must be a list of at most {limit} node ids")
    return tuple(node_id({"id": item}, "id") for item in value)


def digest(body: Mapping[str, Any], key: str = "digest") -> str:
    return _matching(body, key, _DIGEST_RE, "a digest")


def url(body: Mapping[str, Any], key: str = "url") -> str:
    return _matching(body, key, _URL_RE, "an http(s) URL")


def size(body: Mapping[str, Any], key: str = "size") -> int:
    value = body.get(key)
    if type(value) is not int or value < 0:
        raise WireError(f"{key!r} must be a non-negative integer")
    return value


def optional_size(body: Mapping[str, Any], key: str = "size") -> int | None:
    return None if body.get(key) is None else size(body, key)


def piece_size(body: Mapping[str, Any], key: str = "piece_size") -> int:
    value = body.get(key)
    if type(value) is not int or value <= 0:
        raise WireError(f"{key!r} must be a positive integer")
    return value


def optional_piece_size(body: Mapping[str, Any], key: str = "piece_size") -> int | None:
    return None if body.get(key) is None else piece_size(body, key)


def load(body: Mapping[str, Any], key: str = "load") -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) not in (int, float) or not 0 <= value < float("inf"):
        raise WireError(f"{key!r} must be a non-negative number")
    return float(value)


def encode_holding(pieces: Holding) -> str:
    return pieces.to_base64() if isinstance(pieces, Bitfield) else COMPLETE


def decode_holding(value: object, blob_size: int, cut: int | None) -> Holding:
    """A holding for a blob of `blob_size` bytes; a bitfield needs the piece size it was `cut` with."""
    if value == COMPLETE:
        return COMPLETE
    if not isinstance(value, str) or cut is None:
        raise WireError("'pieces' must be \"complete\" or a base64 bitfield with a 'piece_size'")
    try:
        return Bitfield.from_base64(PieceLayout(blob_size, cut).count, value)
    except ValueError as exc:
        raise WireError(f"'pieces': {exc}") from None


def piece_hashes(body: Mapping[str, Any], layout: PieceLayout, key: str = "piece_hashes") -> tuple[str, ...]:
    value = body.get(key)
    if not isinstance(value, list):
        raise WireError(f"{key!r} must be a list")
    try:
        return check_piece_hashes(layout, value)
    except ValueError as exc:
        raise WireError(f"{key!r}: {exc}") from None


def encode_plan(plan: Plan) -> dict[str, Any]:
    return {
        "digest": plan.digest,
        "size": None if plan.layout is None else plan.layout.size,
        "piece_size": None if plan.layout is None else plan.layout.piece_size,
        "back_to_source": plan.back_to_source,
        "source": plan.source,
        "peers": dict(plan.peers),
        "candidates": [list(row) for row in plan.candidates],
        "piece_hashes": None if plan.piece_hashes is None else list(plan.piece_hashes),
    }


def decode_plan(body: Mapping[str, Any]) -> Plan:
    layout = None if body.get("size") is None else PieceLayout(size(body, "size"), piece_size(body))
    back_to_source = body.get("back_to_source")
    if not isinstance(back_to_source, bool):
        raise WireError("'back_to_source' must be a boolean")
    source = None if body.get("source") is None else node_id(body, "source")
    peers_body = body.get("peers")
    if not isinstance(peers_body, dict):
        raise WireError("'peers' must be an object")
    peers = {node_id({"id": key}, "id"): url(peers_body, key) for key in peers_body}
    rows = body.get("candidates")
    count = 0 if layout is None else layout.count
    if not isinstance(rows, list) or len(rows) != count:
        raise WireError(f"'candidates' must be a list of {count} lists")
    candidates = []
    for row in rows:
        if not isinstance(row, list) or not all(isinstance(item, str) and item in peers for item in row):
            raise WireError("'candidates' must name nodes listed in 'peers'")
        candidates.append(tuple(row))
    hashes = None if layout is None or body.get("piece_hashes") is None else piece_hashes(body, layout)
    return Plan(digest(body), layout, back_to_source, source, tuple(candidates), peers, hashes)


def _matching(body: Mapping[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise WireError(f"{key!r} must be {what}")
    return value
