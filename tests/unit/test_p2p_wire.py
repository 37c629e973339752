import json
from typing import Any

import pytest

from p2p import wire
from p2p.pieces import Bitfield, PieceLayout, hash_piece
from p2p.scheduler import COMPLETE, Plan

DIGEST = "sha256:" + "a" * 64


def plan(**changes: Any) -> Plan:
    values: dict[str, Any] = {
        "digest": DIGEST,
        "layout": PieceLayout(25, 10),
        "back_to_source": False,
        "source": "node-a",
        "candidates": (("node-b", "node-c"), ("node-c",), ()),
        "peers": {"node-b": "http://10.0.0.2:5000", "node-c": "https://c.example:5443/"},
        "piece_hashes": tuple(hash_piece(bytes([i])) for i in range(3)),
    }
    return Plan(**(values | changes))


@pytest.mark.parametrize(
    "original",
    [
        plan(),
        plan(source=None, back_to_source=True, piece_hashes=None),
        plan(layout=None, candidates=(), peers={}, piece_hashes=None),
    ],
)
def test_plan_round_trips_through_json(original: Plan) -> None:
    assert wire.decode_plan(json.loads(json.dumps(wire.encode_plan(original)))) == original


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": -1}, "size"),
        ({"piece_size": 0}, "piece_size"),
        ({"back_to_source": "yes"}, "back_to_source"),
        ({"source": ""}, "source"),
        ({"peers": []}, "peers"),
        ({"peers": {"node-b": "ftp://x"}}, "node-b"),
        ({"peers": {"bad id!": "http://x"}}, "id"),
        ({"candidates": [[], []]}, "3 lists"),
        ({"candidates": [["node-z"], [], []]}, "listed in 'peers'"),
        ({"piece_hashes": ["sha256:00"] * 3}, "piece_hashes"),
        ({"piece_hashes": "none"}, "piece_hashes"),
        ({"digest": "latest"}, "digest"),
    ],
)
def test_bad_plans_are_refused(change: dict[str, Any], message: str) -> None:
    body = wire.encode_plan(plan()) | change
    with pytest.raises(wire.WireError, match=message):
        wire.decode_plan(body)


def test_holdings() -> None:
    field = Bitfield.from_indices(3, [2])
    assert wire.encode_holding(COMPLETE) == "complete"
    assert wire.decode_holding("complete", 25, None) == COMPLETE
    assert wire.decode_holding(wire.encode_holding(field), 25, 10) == field
    with pytest.raises(wire.WireError, match="piece_size"):
        wire.decode_holding(field.to_base64(), 25, None)
    with pytest.raises(wire.WireError, match="pieces"):
        wire.decode_holding(field.to_base64(), 250, 10)
    with pytest.raises(wire.WireError):
        wire.decode_holding(7, 25, 10)


def test_field_validation() -> None:
    assert wire.node_id({"node": "node-1.example:5000"}) == "node-1.example:5000"
    assert wire.digest({"digest": DIGEST}) == DIGEST
    assert wire.load({}) is None
    assert wire.load({"load": 3}) == 3.0
    assert wire.optional_piece_size({"piece_size": None}) is None
    for bad in ({"node": ""}, {"node": "-x"}, {"node": "a" * 129}, {"node": 5}):
        with pytest.raises(wire.WireError):
            wire.node_id(bad)
    for bad_size in (True, 1.5, -1, "1"):
        with pytest.raises(wire.WireError):
            wire.size({"size": bad_size}, "size")
    for bad_load in (-1, float("inf"), float("nan"), True):
        with pytest.raises(wire.WireError):
            wire.load({"load": bad_load})
    with pytest.raises(wire.WireError):
        wire.url({"url": "http://a b"})


def test_node_id_lists() -> None:
    assert wire.node_ids({}, "unreachable") == ()
    assert wire.node_ids({"unreachable": ["a", "node-b"]}, "unreachable") == ("a", "node-b")
    for bad in ("a", ["has space"], [1], ["a"] * 65):
        with pytest.raises(wire.WireError):
            wire.node_ids({"unreachable": bad}, "unreachable")
