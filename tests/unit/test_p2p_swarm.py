"""Which piece to fetch next and from whom (`p2p.swarm`), driven with `now` as plain numbers."""

import pytest

from p2p.pieces import PieceLayout, hash_piece
from p2p.scheduler import Plan
from p2p.swarm import CORRUPT, Assignment, BanList, PieceBoard, PieceState, SwarmConfig

DIGEST = "sha256:" + "a" * 64
LAYOUT = PieceLayout(80, 10)  # 8 pieces
CONFIG = SwarmConfig(
    concurrency=4, per_parent=2, upstream_concurrency=2, window_bytes=60, orphan_wait=1, follow_stall=5, cooldown=10
)


def plan(
    rows: list[tuple[str, ...]] | None = None,
    *,
    source: str | None = None,
    elected: bool = False,
    hashes: tuple[str, ...] | None = None,
) -> Plan:
    candidates = tuple(rows if rows is not None else [()] * LAYOUT.count)
    peers = {node: f"http://{node}:5000" for row in candidates for node in row}
    return Plan(DIGEST, LAYOUT, elected, source, candidates, peers, hashes)


def everywhere(*nodes: str) -> list[tuple[str, ...]]:
    return [tuple(nodes)] * LAYOUT.count


def board(offered: Plan | None = None, now: float = 0.0, bans: BanList | None = None) -> PieceBoard:
    b = PieceBoard(LAYOUT, CONFIG, bans or BanList(300), now)
    if offered is not None:
        b.offer(offered, now)
    return b


# --- spreading fetches ------------------------------------------------------------------------------------------


def test_fetches_spread_over_parents_nearest_the_head_first() -> None:
    b = board(plan(everywhere("a", "b", "c")))
    assert b.assign(0) == [Assignment(0, "a"), Assignment(1, "b"), Assignment(2, "c"), Assignment(3, "a")]
    assert b.in_flight == 4
    assert b.assign(0) == []  # concurrency reached


def test_a_parent_gets_at_most_per_parent_fetches() -> None:
    b = board(plan(everywhere("a")))
    assert b.assign(0) == [Assignment(0, "a"), Assignment(1, "a")]
    b.done(0, ["a"])
    assert b.assign(0) == [Assignment(2, "a")]


def test_window_bounds_how_far_ahead_pieces_are_fetched() -> None:
    b = board(plan(everywhere("a", "b", "c", "d")))  # window: 60 bytes = 6 pieces
    first = b.assign(0)
    for assignment in first:
        b.done(assignment.index, [assignment.parent or ""])
    assert [a.index for a in b.assign(0)] == [4, 5]  # pieces 6 and 7 wait for the head to move
    assert b.ready() and b.streamed() == 0
    assert [a.index for a in b.assign(0)] == [6]


def test_pieces_stream_strictly_in_order() -> None:
    b = board(plan(everywhere("a", "b")))
    b.assign(0)
    b.done(1, ["b"])
    assert not b.ready()
    with pytest.raises(ValueError):
        b.streamed()
    b.done(0, ["a"])
    assert [b.streamed(), b.streamed()] == [0, 1]
    assert b.head == 2 and not b.complete


def test_the_whole_blob_completes() -> None:
    b = board(plan(everywhere("a", "b", "c", "d")))
    now = 0.0
    while not b.complete:
        for assignment in b.assign(now):
            b.done(assignment.index, [assignment.parent or ""])
        while b.ready():
            b.streamed()
    assert b.parents_used == {"a", "b", "c", "d"} and b.upstream_pieces == 0


# --- failures ---------------------------------------------------------------------------------------------------


def test_a_failed_parent_cools_down_and_the_piece_goes_elsewhere() -> None:
    b = board(plan(everywhere("a", "b")))
    assert b.assign(0) == [Assignment(0, "a"), Assignment(1, "b"), Assignment(2, "a"), Assignment(3, "b")]
    assert b.failed(0, "dead", now=1) == []
    assert b.states[0] is PieceState.WAITING
    assert b.assign(1) == []  # "a" cools down, "b" is busy: wait for "b" rather than go upstream
    assert not b.waiting_without_parent(1)
    b.done(1, ["b"])
    assert b.assign(5) == [Assignment(0, "b")]
    b.done(0, ["b"])
    assert b.assign(11) == [Assignment(4, "a"), Assignment(5, "b")]  # "a" cooled down


def test_a_cooled_down_parent_is_used_again_after_the_cooldown() -> None:
    b = board(plan(everywhere("a")))
    b.assign(0)
    b.failed(0, "timeout", now=0)
    b.failed(1, "timeout", now=0)
    assert b.assign(5) == []
    assert b.assign(10) == [Assignment(0, "a"), Assignment(1, "a")]


def test_corrupt_data_bans_the_parent_and_every_contributor() -> None:
    bans = BanList(300)
    b = board(plan(everywhere("a", "b", "c")), bans=bans)
    b.assign(0)
    assert b.failed(0, CORRUPT, now=1, contributors=["c", "a"]) == ["a", "c"]
    assert bans.active(2) == ["a", "c"]
    assert b.assign(2) == [Assignment(0, "b")]  # "b" already fetches piece 1


def test_a_ready_piece_that_fails_late_verification_is_fetched_again() -> None:
    bans = BanList(300)
    b = board(plan(everywhere("a", "b")), bans=bans)
    b.assign(0)
    b.done(0, ["a"])
    assert b.corrupt(0, ["a"], now=1) == ["a"]
    assert not b.ready()
    b.done(1, ["b"])
    assert b.assign(1) == [Assignment(0, "b")]


def test_bans_are_node_wide_and_expire() -> None:
    bans = BanList(duration=60)
    assert bans.ban("x", now=0) and not bans.ban("x", now=10)  # renewed, not new
    other = board(plan(everywhere("x", "y")), bans=bans)
    assert other.assign(20)[0].parent == "y"
    assert bans.banned("x", 69) and not bans.banned("x", 70)
    assert bans.active(70) == []


# --- upstream fallback ------------------------------------------------------------------------------------------


def test_the_elected_node_fetches_pieces_nobody_has_from_upstream_at_once() -> None:
    rows = [("a",), (), (), ("a",), (), (), (), ()]
    b = board(plan(rows, elected=True))
    assert b.assign(0) == [Assignment(0, "a"), Assignment(1, None), Assignment(2, None), Assignment(3, "a")]
    b.done(1, [])
    assert b.upstream_pieces == 1


def test_orphan_pieces_wait_briefly_for_a_holder_when_nobody_is_elected() -> None:
    b = board(plan([("a",)] + [()] * 7))
    assert b.assign(0) == [Assignment(0, "a")]
    assert b.waiting_without_parent(0)
    assert b.assign(0.5) == []
    assert b.assign(1.0) == [Assignment(1, None), Assignment(2, None)]  # upstream_concurrency 2


def test_a_follower_waits_for_the_elected_node_while_it_makes_progress() -> None:
    b = board(plan(source="src"), now=0)
    assert b.assign(4) == []
    b.offer(plan([("src",)] + [()] * 7, source="src"), now=4)  # news: piece 0 appeared
    assert b.assign(4) == [Assignment(0, "src")]
    assert b.assign(8.9) == []
    assert [a.parent for a in b.assign(9)] == [None, None]  # 5 s without news


def test_the_stall_limit_grows_with_a_slow_but_steady_source() -> None:
    b = board(plan(source="src"), now=0)
    rows: list[tuple[str, ...]] = [()] * 8
    for step in range(1, 4):  # a new piece every 4 s
        rows[step - 1] = ("src",)
        b.offer(plan(list(rows), source="src"), now=4 * step)
    assert b.stall_limit() == pytest.approx(12)
    b.assign(12)
    assert all(a.parent == "src" for a in b.assign(20))
    assert b.assign(24)[0].parent is None


def test_losing_the_tracker_stops_following() -> None:
    b = board(plan(source="src"), now=0)
    b.tracker_lost(now=3)
    assert b.source is None
    assert b.assign(3) == []
    assert [a.parent for a in b.assign(4)] == [None, None]


def test_a_new_election_gives_the_new_source_a_fresh_chance() -> None:
    b = board(plan(source="old"), now=0)
    assert b.assign(0) == []
    b.offer(plan(source="new"), now=4.5)
    assert b.assign(5) == [] and b.assign(9.4) == []
    assert b.assign(9.5) == [Assignment(0, None), Assignment(1, None)]


def test_being_elected_mid_download_fetches_the_rest_from_upstream() -> None:
    b = board(plan([("src",)] * 2 + [()] * 6, source="src"), now=0)
    assert [a.parent for a in b.assign(0)] == ["src", "src"]
    b.offer(plan([("src",)] * 2 + [()] * 6, elected=True), now=1)
    assert [a.parent for a in b.assign(1)] == [None, None]


def test_hashes_from_a_plan_are_kept() -> None:
    hashes = tuple(hash_piece(bytes([i])) for i in range(8))
    b = board(plan(everywhere("a")))
    assert b.piece_hashes is None
    b.offer(plan(everywhere("a"), hashes=hashes), now=1)
    b.offer(plan(everywhere("a")), now=2)
    assert b.piece_hashes == hashes


def test_a_plan_for_another_layout_is_refused() -> None:
    other = Plan(DIGEST, PieceLayout(80, 20), False, None, ((),) * 4, {})
    with pytest.raises(ValueError):
        board().offer(other, now=0)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        SwarmConfig(concurrency=0)
    with pytest.raises(ValueError):
        SwarmConfig(window_bytes=0)
    assert SwarmConfig(concurrency=4, window_bytes=10).window(PieceLayout(100, 10)) == 4


def test_a_stalled_source_is_reported_only_while_pieces_wait_for_it() -> None:
    b = board(plan(source="src"), now=0)
    assert not b.source_stalled(4.9)
    assert b.source_stalled(5)
    b.offer(plan(everywhere("src"), source="src"), now=6)
    assert not b.source_stalled(20)  # it has every piece: nothing to wait for
    elected = board(plan(elected=True), now=0)
    assert not elected.source_stalled(100)


def test_a_quiet_source_is_worth_probing_before_it_counts_as_stalled() -> None:
    b = board(plan(source="src"), now=0)
    assert not b.source_quiet(0.9) and b.source_quiet(1.0) and not b.source_stalled(1.0)
    rows: list[tuple[str, ...]] = [()] * 8
    for step in range(1, 4):  # a new piece every 2 s
        rows[step - 1] = ("src",)
        b.offer(plan(list(rows), source="src"), now=2 * step)
    assert not b.source_quiet(9.9) and b.source_quiet(10)
