"""The tracker's rules, driven with `now` as plain numbers."""

import pytest

from p2p.pieces import Bitfield, PieceLayout, hash_piece
from p2p.scheduler import COMPLETE, Conflict, Scheduler, SchedulerConfig, UnknownBlob

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
SIZE = 40
PIECE = 10  # SIZE / PIECE = 4 pieces
TTL = 30.0
STALL = 60.0


def url(node: str) -> str:
    return f"http://{node}:5000"


@pytest.fixture
def sched() -> Scheduler:
    return Scheduler(SchedulerConfig(node_ttl=TTL, stall_timeout=STALL, max_candidates=3, piece_size=PIECE))


def partial(*indices: int, count: int = 4) -> Bitfield:
    return Bitfield.from_indices(count, indices)


def announce(sched: Scheduler, node: str, pieces: Bitfield | str, now: float, load: float = 0.0) -> None:
    sched.announce(node, url(node), DIGEST, SIZE, pieces, load, now, piece_size=PIECE)  # type: ignore[arg-type]


# --- election -------------------------------------------------------------------------------------------------


def test_first_asker_of_an_unknown_blob_is_sent_to_the_source(sched: Scheduler) -> None:
    plan = sched.lookup("a", DIGEST, SIZE, now=0)
    assert plan.back_to_source
    assert plan.source is None
    assert plan.layout == PieceLayout(SIZE, PIECE)
    assert plan.candidates == ((), (), (), ())
    assert plan.missing() == (0, 1, 2, 3)
    assert plan.peers == {}
    assert sched.elections == 1


def test_concurrent_askers_follow_the_one_elected_node(sched: Scheduler) -> None:
    first = sched.lookup("a", DIGEST, SIZE, now=0)
    others = [sched.lookup(node, DIGEST, SIZE, now=0.1) for node in "bcdefgh"]
    assert first.back_to_source
    assert all(not plan.back_to_source and plan.source == "a" for plan in others)
    assert sched.elections == 1


def test_the_elected_node_asking_again_stays_elected(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    again = sched.lookup("a", DIGEST, SIZE, now=5)
    assert again.back_to_source and again.source is None
    assert sched.elections == 1


def test_followers_see_the_elected_nodes_pieces_as_they_appear(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    announce(sched, "a", partial(0, 1), now=1)
    plan = sched.lookup("b", DIGEST, SIZE, now=2)
    assert plan.source == "a" and not plan.back_to_source
    assert plan.candidates == (("a",), ("a",), (), ())
    assert plan.peers == {"a": url("a")}
    assert plan.missing() == (2, 3)


def test_complete_announce_ends_the_election(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    announce(sched, "a", COMPLETE, now=1)
    plan = sched.lookup("b", DIGEST, SIZE, now=2)
    assert not plan.back_to_source and plan.source is None
    assert plan.candidates == (("a",),) * 4
    # Long after the election would have stalled, a live complete holder still prevents a new one.
    sched.heartbeat("a", now=STALL * 3)
    assert not sched.lookup("c", DIGEST, SIZE, now=STALL * 3).back_to_source
    assert sched.elections == 1


def test_a_full_bitfield_counts_as_complete(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    announce(sched, "a", Bitfield.full(4), now=1)
    plan = sched.lookup("b", DIGEST, SIZE, now=2)
    assert plan.source is None and plan.candidates == (("a",),) * 4


def test_election_expires_when_the_elected_node_stops_heartbeating(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    assert sched.lookup("b", DIGEST, SIZE, now=TTL).source == "a"
    plan = sched.lookup("b", DIGEST, SIZE, now=TTL + 1)
    assert plan.back_to_source and plan.source is None
    assert sched.elections == 2 and sched.elections_expired == 1
    assert sched.lookup("c", DIGEST, SIZE, now=TTL + 2).source == "b"


def test_heartbeats_keep_the_elected_node_in_charge(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    for now in (20, 40):
        assert sched.heartbeat("a", now=now)
    assert sched.lookup("b", DIGEST, SIZE, now=50).source == "a"


def test_election_expires_when_the_elected_node_makes_no_progress(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    announce(sched, "a", partial(0), now=10)
    for now in (30, 50, 70):
        sched.heartbeat("a", now=now)
        announce(sched, "a", partial(0), now=now)  # same pieces again: alive, but not progressing
    assert sched.lookup("b", DIGEST, SIZE, now=STALL + 10).source == "a"
    plan = sched.lookup("b", DIGEST, SIZE, now=STALL + 10.5)
    assert plan.back_to_source
    assert plan.candidates[0] == ("a",)  # its piece is still offered


def test_progress_keeps_the_election_alive(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    announce(sched, "a", partial(0), now=50)
    announce(sched, "a", partial(0, 1), now=100)
    assert sched.lookup("b", DIGEST, SIZE, now=120).source == "a"


def test_withdrawing_the_blob_ends_the_election(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    announce(sched, "a", partial(0), now=1)
    sched.withdraw("a", DIGEST)
    plan = sched.lookup("b", DIGEST, SIZE, now=2)
    assert plan.back_to_source and plan.candidates == ((), (), (), ())


def test_partial_holders_covering_every_piece_avoid_an_election(sched: Scheduler) -> None:
    announce(sched, "a", partial(0, 1), now=0)
    announce(sched, "b", partial(2, 3), now=0)
    plan = sched.lookup("c", DIGEST, SIZE, now=1)
    assert not plan.back_to_source and plan.source is None
    assert plan.candidates == (("a",), ("a",), ("b",), ("b",))
    assert sched.elections == 0


def test_an_elected_asker_still_gets_the_pieces_peers_have(sched: Scheduler) -> None:
    announce(sched, "a", partial(1), now=0)
    plan = sched.lookup("c", DIGEST, SIZE, now=1)
    assert plan.back_to_source
    assert plan.candidates == ((), ("a",), (), ())


def test_askers_that_do_not_know_the_size_still_share_one_election(sched: Scheduler) -> None:
    first = sched.lookup("a", DIGEST, None, now=0)
    assert first.back_to_source and first.layout is None and first.candidates == ()
    follower = sched.lookup("b", DIGEST, None, now=1)
    assert follower.source == "a" and follower.layout is None
    with pytest.raises(UnknownBlob, match="size"):
        sched.publish_piece_hashes(DIGEST, PIECE, [])
    assert sched.piece_hashes(DIGEST) is None
    # The elected node learns the size from upstream's answer and asks again to learn the cut.
    again = sched.lookup("a", DIGEST, SIZE, now=2)
    assert again.back_to_source and again.layout == PieceLayout(SIZE, PIECE)
    announce(sched, "a", partial(0), now=3)
    plan = sched.lookup("b", DIGEST, None, now=4)
    assert plan.layout == PieceLayout(SIZE, PIECE) and plan.source == "a"
    assert plan.candidates == (("a",), (), (), ())
    assert sched.elections == 1


def test_a_size_less_election_expires_too(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, None, now=0)
    assert sched.lookup("b", DIGEST, None, now=TTL + 1).back_to_source
    assert sched.expire(now=3 * TTL) == ["a", "b"]
    assert sched.blob_count == 0


def test_empty_blob_needs_nobody(sched: Scheduler) -> None:
    plan = sched.lookup("a", DIGEST, 0, now=0)
    assert not plan.back_to_source and plan.candidates == ()


# --- candidates -----------------------------------------------------------------------------------------------


def test_complete_holders_first_then_partial_by_load_never_the_asker(sched: Scheduler) -> None:
    announce(sched, "full-busy", COMPLETE, now=0, load=5)
    announce(sched, "full-idle", COMPLETE, now=0, load=1)
    announce(sched, "part-idle", partial(0, 1), now=0, load=0)
    announce(sched, "part-busy", partial(0), now=0, load=9)
    announce(sched, "asker", partial(0, 1, 2), now=0)
    plan = sched.lookup("asker", DIGEST, SIZE, now=1)
    assert plan.candidates == (
        ("full-idle", "full-busy", "part-idle"),  # max_candidates=3 cuts part-busy
        ("full-idle", "full-busy", "part-idle"),
        ("full-idle", "full-busy"),
        ("full-idle", "full-busy"),
    )
    assert set(plan.peers) == {"full-idle", "full-busy", "part-idle"}
    assert plan.peers["part-idle"] == url("part-idle")


def test_max_candidates_limits_complete_holders(sched: Scheduler) -> None:
    for node in "abcde":
        announce(sched, node, COMPLETE, now=0)
    plan = sched.lookup("z", DIGEST, SIZE, now=1)
    assert all(len(row) == 3 for row in plan.candidates)
    assert len(plan.peers) == 3


def test_heartbeat_load_reorders_candidates(sched: Scheduler) -> None:
    announce(sched, "a", COMPLETE, now=0, load=0)
    announce(sched, "b", COMPLETE, now=0, load=1)
    assert sched.lookup("z", DIGEST, SIZE, now=1).candidates[0] == ("a", "b")
    sched.heartbeat("a", now=2, load=7)
    assert sched.lookup("z", DIGEST, SIZE, now=3).candidates[0] == ("b", "a")


def test_equal_parents_are_spread_over_askers(sched: Scheduler) -> None:
    for node in "abcdef":
        announce(sched, node, COMPLETE, now=0)
    firsts = {sched.lookup(f"asker-{i}", DIGEST, SIZE, now=1).candidates[0][0] for i in range(30)}
    assert len(firsts) >= 3
    # ...and deterministically so.
    assert sched.lookup("asker-1", DIGEST, SIZE, now=2) == sched.lookup("asker-1", DIGEST, SIZE, now=2)


def test_dead_holders_are_not_offered(sched: Scheduler) -> None:
    announce(sched, "a", COMPLETE, now=0)
    announce(sched, "b", COMPLETE, now=20)
    assert sched.lookup("z", DIGEST, SIZE, now=TTL + 1).candidates[0] == ("b",)


def test_a_node_that_only_looked_up_is_never_a_parent(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    announce(sched, "b", COMPLETE, now=0)
    sched.lookup("a", OTHER, SIZE, now=0)
    plan = sched.lookup("c", DIGEST, SIZE, now=1)
    assert plan.candidates[0] == ("b",)


def test_announce_replaces_the_previous_holding(sched: Scheduler) -> None:
    announce(sched, "a", COMPLETE, now=0)
    announce(sched, "a", partial(3), now=1)  # e.g. re-downloading after a failed verification
    plan = sched.lookup("z", DIGEST, SIZE, now=2)
    assert plan.candidates == ((), (), (), ("a",))


# --- membership and expiry ------------------------------------------------------------------------------------


def test_heartbeat_from_an_unknown_node_asks_for_a_new_announce(sched: Scheduler) -> None:
    assert not sched.heartbeat("ghost", now=0)
    announce(sched, "a", COMPLETE, now=0)
    assert sched.heartbeat("a", now=1)


def test_withdraw_everything_forgets_the_node(sched: Scheduler) -> None:
    announce(sched, "a", COMPLETE, now=0)
    sched.announce("a", url("a"), OTHER, SIZE, COMPLETE, 0, now=0)
    sched.withdraw("a")
    assert not sched.heartbeat("a", now=1)
    assert sched.node_count == 0 and sched.blob_count == 0
    sched.withdraw("a")  # idempotent
    sched.withdraw("never-seen", DIGEST)


def test_withdraw_one_blob_keeps_the_others(sched: Scheduler) -> None:
    announce(sched, "a", COMPLETE, now=0)
    sched.announce("a", url("a"), OTHER, SIZE, COMPLETE, 0, now=0)
    sched.withdraw("a", DIGEST)
    assert sched.blob_count == 1
    assert sched.lookup("z", OTHER, SIZE, now=1).candidates[0] == ("a",)
    sched.withdraw("a", "sha256:" + "c" * 64)  # a blob the tracker never heard of


def test_expire_forgets_silent_nodes_and_their_blobs(sched: Scheduler) -> None:
    announce(sched, "a", COMPLETE, now=0)
    announce(sched, "b", COMPLETE, now=0)
    sched.heartbeat("b", now=25)
    assert sched.expire(now=TTL) == []
    assert sched.expire(now=TTL + 1) == ["a"]
    assert sched.nodes_expired == 1
    assert not sched.heartbeat("a", now=TTL + 2)
    assert sched.lookup("z", DIGEST, SIZE, now=TTL + 2).candidates[0] == ("b",)
    assert sched.expire(now=100) == ["b", "z"]
    assert sched.node_count == 0 and sched.blob_count == 0


def test_expire_ends_stalled_elections_and_drops_unused_blobs(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    sched.heartbeat("a", now=STALL)
    assert sched.blob_count == 1
    assert sched.expire(now=STALL + 1) == []
    assert sched.elections_expired == 1
    assert sched.blob_count == 0


# --- layout conflicts -----------------------------------------------------------------------------------------


def test_layout_is_fixed_by_the_first_report(sched: Scheduler) -> None:
    sched.announce("a", url("a"), DIGEST, SIZE, partial(0, count=8), 0, now=0, piece_size=5)
    plan = sched.lookup("b", DIGEST, SIZE, now=1)
    assert plan.layout == PieceLayout(SIZE, 5)
    with pytest.raises(Conflict, match="pieces of 5"):
        announce(sched, "c", partial(0), now=1)
    announce(sched, "c", COMPLETE, now=1)  # a complete holding does not depend on the cut


def test_adaptive_piece_size_without_an_override() -> None:
    sched = Scheduler()
    size = 300 * 1024 * 1024
    assert sched.lookup("a", DIGEST, size, now=0).layout == PieceLayout(size, 8 * 1024 * 1024)


def test_conflicting_reports_are_refused(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    with pytest.raises(Conflict, match="40 bytes"):
        sched.lookup("b", DIGEST, SIZE + 1, now=0)
    with pytest.raises(Conflict, match="40 bytes"):
        sched.announce("b", url("b"), DIGEST, SIZE + 1, COMPLETE, 0, now=0)
    with pytest.raises(Conflict, match="4 pieces"):
        announce(sched, "b", partial(0, count=5), now=0)
    with pytest.raises(ValueError, match="piece size"):
        sched.announce("b", url("b"), DIGEST, SIZE, partial(0), 0, now=0)


def test_config_is_validated() -> None:
    for bad in ({"node_ttl": 0}, {"stall_timeout": -1}, {"max_candidates": 0}):
        with pytest.raises(ValueError):
            SchedulerConfig(**bad)


# --- piece hashes ---------------------------------------------------------------------------------------------

HASHES = [hash_piece(bytes([i]) * PIECE) for i in range(4)]


def test_published_piece_hashes_reach_lookups(sched: Scheduler) -> None:
    announce(sched, "a", COMPLETE, now=0)
    assert sched.piece_hashes(DIGEST) is None
    assert sched.lookup("b", DIGEST, SIZE, now=1).piece_hashes is None
    sched.publish_piece_hashes(DIGEST, PIECE, HASHES)
    sched.publish_piece_hashes(DIGEST, PIECE, HASHES)  # same list again is fine
    assert sched.lookup("b", DIGEST, SIZE, now=1).piece_hashes == tuple(HASHES)
    assert sched.piece_hashes(DIGEST) == (PieceLayout(SIZE, PIECE), tuple(HASHES))


def test_bad_piece_hashes_are_refused(sched: Scheduler) -> None:
    with pytest.raises(UnknownBlob):
        sched.publish_piece_hashes(DIGEST, PIECE, HASHES)
    announce(sched, "a", COMPLETE, now=0)
    with pytest.raises(Conflict, match="pieces of 10"):
        sched.publish_piece_hashes(DIGEST, 20, HASHES[:2])
    with pytest.raises(ValueError, match="expected 4"):
        sched.publish_piece_hashes(DIGEST, PIECE, HASHES[:3])
    sched.publish_piece_hashes(DIGEST, PIECE, HASHES)
    with pytest.raises(Conflict, match="different"):
        sched.publish_piece_hashes(DIGEST, PIECE, list(reversed(HASHES)))


def test_piece_hashes_go_when_the_last_holder_goes(sched: Scheduler) -> None:
    announce(sched, "a", COMPLETE, now=0)
    sched.publish_piece_hashes(DIGEST, PIECE, HASHES)
    sched.withdraw("a", DIGEST)
    assert sched.piece_hashes(DIGEST) is None


# --- layout preferences -----------------------------------------------------------------------------------------


def test_the_first_asker_with_a_size_may_choose_the_piece_size(sched: Scheduler) -> None:
    assert sched.lookup("a", DIGEST, SIZE, now=0, piece_size=20).layout == PieceLayout(SIZE, 20)
    assert sched.lookup("b", DIGEST, SIZE, now=0, piece_size=5).layout == PieceLayout(SIZE, 20)
    assert sched.layout(DIGEST) == PieceLayout(SIZE, 20)
    assert sched.layout(OTHER) is None


def test_a_piece_size_preference_without_a_size_fixes_nothing(sched: Scheduler) -> None:
    assert sched.lookup("a", DIGEST, None, now=0, piece_size=20).layout is None
    assert sched.lookup("b", DIGEST, SIZE, now=0).layout == PieceLayout(SIZE, PIECE)


# --- reports from followers -------------------------------------------------------------------------------------


def test_a_follower_reporting_the_elected_node_unreachable_takes_over(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    assert sched.lookup("b", DIGEST, SIZE, now=1).source == "a"
    taken = sched.lookup("b", DIGEST, SIZE, now=2, unreachable=["a"])
    assert taken.back_to_source and taken.source is None
    assert sched.elections == 2 and sched.elections_reported == 1
    assert sched.lookup("c", DIGEST, SIZE, now=3, unreachable=["a"]).source == "b"  # "a" no longer matters
    assert sched.elections == 2


def test_reports_about_other_nodes_or_oneself_change_nothing(sched: Scheduler) -> None:
    sched.lookup("a", DIGEST, SIZE, now=0)
    assert sched.lookup("b", DIGEST, SIZE, now=1, unreachable=["c"]).source == "a"
    assert sched.lookup("a", DIGEST, SIZE, now=1, unreachable=["a"]).back_to_source
    assert sched.elections_reported == 0
