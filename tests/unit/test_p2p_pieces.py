import hashlib

import pytest

from p2p.pieces import (
    MAX_PIECE_SIZE,
    MIN_PIECE_SIZE,
    Bitfield,
    MiB,
    PieceHasher,
    PieceLayout,
    check_piece_hashes,
    choose_piece_size,
    hash_piece,
    parse_byte_range,
    verify_piece,
)

GiB = 1024 * MiB


@pytest.mark.parametrize(
    ("blob_size", "piece_size"),
    [
        (0, 4 * MiB),
        (1, 4 * MiB),
        (256 * MiB, 4 * MiB),
        (256 * MiB + 1, 8 * MiB),
        (512 * MiB, 8 * MiB),
        (1 * GiB, 16 * MiB),
        (2 * GiB, 32 * MiB),
        (2 * GiB + 1, 64 * MiB),
        (100 * GiB, 64 * MiB),
    ],
)
def test_adaptive_piece_size(blob_size: int, piece_size: int) -> None:
    assert choose_piece_size(blob_size) == piece_size


def test_adaptive_piece_size_stays_within_bounds_and_powers_of_two() -> None:
    for exponent in range(0, 45):
        size = choose_piece_size(2**exponent)
        assert MIN_PIECE_SIZE <= size <= MAX_PIECE_SIZE
        assert size & (size - 1) == 0


def test_override_wins_and_is_validated() -> None:
    assert choose_piece_size(10 * GiB, override=1000) == 1000
    with pytest.raises(ValueError):
        choose_piece_size(10, override=0)
    with pytest.raises(ValueError):
        choose_piece_size(-1)


def test_layout_counts_and_ranges() -> None:
    layout = PieceLayout(size=10, piece_size=4)
    assert layout.count == 3
    assert [layout.piece_range(i) for i in range(3)] == [(0, 3), (4, 7), (8, 9)]
    assert [layout.piece_length(i) for i in range(3)] == [4, 4, 2]
    assert PieceLayout(8, 4).count == 2
    assert PieceLayout(8, 4).piece_range(1) == (4, 7)
    assert PieceLayout(0, 4).count == 0
    assert PieceLayout(1, 4).piece_range(0) == (0, 0)


def test_layout_ranges_tile_the_blob_exactly() -> None:
    for size in range(0, 40):
        for piece_size in range(1, 12):
            layout = PieceLayout(size, piece_size)
            covered = [byte for i in range(layout.count) for byte in range(*_half_open(layout.piece_range(i)))]
            assert covered == list(range(size))


def _half_open(span: tuple[int, int]) -> tuple[int, int]:
    return span[0], span[1] + 1


def test_layout_rejects_bad_values_and_indices() -> None:
    with pytest.raises(ValueError):
        PieceLayout(-1, 4)
    with pytest.raises(ValueError):
        PieceLayout(10, 0)
    layout = PieceLayout(10, 4)
    for index in (-1, 3):
        with pytest.raises(IndexError):
            layout.piece_range(index)


def test_for_blob_uses_the_chosen_size() -> None:
    assert PieceLayout.for_blob(300 * MiB) == PieceLayout(300 * MiB, 8 * MiB)
    assert PieceLayout.for_blob(300, override=100) == PieceLayout(300, 100)


def test_pieces_touching_a_byte_range() -> None:
    layout = PieceLayout(10, 4)
    assert list(layout.pieces_touching(0, 0)) == [0]
    assert list(layout.pieces_touching(0, 3)) == [0]
    assert list(layout.pieces_touching(3, 4)) == [0, 1]
    assert list(layout.pieces_touching(5, 9)) == [1, 2]
    assert list(layout.pieces_touching(0, 9)) == [0, 1, 2]
    assert list(layout.pieces_touching(9, 9)) == [2]
    for start, end in [(-1, 2), (3, 2), (0, 10), (10, 10)]:
        with pytest.raises(ValueError):
            layout.pieces_touching(start, end)


def test_pieces_touching_agrees_with_piece_ranges() -> None:
    layout = PieceLayout(23, 5)
    for start in range(23):
        for end in range(start, 23):
            expected = [
                i for i in range(layout.count) if layout.piece_range(i)[0] <= end and start <= layout.piece_range(i)[1]
            ]
            assert list(layout.pieces_touching(start, end)) == expected


def test_bitfield_set_has_count_complete() -> None:
    field = Bitfield(10)
    assert len(field) == 10
    assert field.count() == 0 and not field.complete()
    field.set(0)
    field.set(9)
    field.set(9)
    assert field.has(0) and field.has(9) and not field.has(5)
    assert field.count() == 2
    assert list(field.present()) == [0, 9]
    assert list(field.missing()) == [1, 2, 3, 4, 5, 6, 7, 8]
    for index in range(10):
        field.set(index)
    assert field.complete() and field.count() == 10


def test_bitfield_bounds() -> None:
    field = Bitfield(3)
    for index in (-1, 3):
        with pytest.raises(IndexError):
            field.set(index)
        with pytest.raises(IndexError):
            field.has(index)
    with pytest.raises(ValueError):
        Bitfield(-1)
    assert Bitfield(0).complete()


def test_bitfield_bytes_are_msb_first_and_round_trip() -> None:
    field = Bitfield.from_indices(10, [0, 7, 8])
    assert field.to_bytes() == bytes([0b1000_0001, 0b1000_0000])
    assert Bitfield.from_bytes(10, field.to_bytes()) == field
    assert Bitfield.from_base64(10, field.to_base64()) == field
    assert Bitfield.from_bytes(10, field.to_bytes()).count() == 3
    assert Bitfield.full(10).to_bytes() == bytes([0xFF, 0b1100_0000])
    assert Bitfield(0).to_bytes() == b""


def test_bitfield_decoding_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="bytes"):
        Bitfield.from_bytes(10, b"\x00")
    with pytest.raises(ValueError, match="past its last piece"):
        Bitfield.from_bytes(10, bytes([0, 0b0010_0000]))
    with pytest.raises(ValueError, match="base64"):
        Bitfield.from_base64(10, "not base64!")
    with pytest.raises(ValueError, match="base64"):
        Bitfield.from_base64(10, "é")


def test_bitfield_copy_is_independent_and_equality() -> None:
    field = Bitfield.from_indices(4, [1])
    copy = field.copy()
    copy.set(2)
    assert not field.has(2)
    assert field != copy
    assert field == Bitfield.from_indices(4, [1])
    assert Bitfield(4) != Bitfield(5)
    assert field != "0100"
    assert repr(field) == "Bitfield(4, '0100')"


def test_piece_hasher_matches_direct_hashes_for_any_chunking() -> None:
    data = bytes(range(256)) * 4 + b"tail"
    layout = PieceLayout(len(data), 100)
    expected = tuple(hash_piece(data[s : e + 1]) for s, e in map(layout.piece_range, range(layout.count)))
    for chunk in (1, 7, 100, 333, len(data)):
        hasher = PieceHasher(layout)
        for offset in range(0, len(data), chunk):
            hasher.update(data[offset : offset + chunk])
        assert hasher.finish() == expected
    assert expected[0] == "sha256:" + hashlib.sha256(data[:100]).hexdigest()


def test_piece_hasher_checks_the_length() -> None:
    hasher = PieceHasher(PieceLayout(10, 4))
    hasher.update(b"12345")
    with pytest.raises(ValueError, match="5 of 10"):
        hasher.finish()
    with pytest.raises(ValueError, match="more than 10"):
        hasher.update(b"123456")
    assert PieceHasher(PieceLayout(0, 4)).finish() == ()


def test_check_and_verify_piece_hashes() -> None:
    layout = PieceLayout(8, 4)
    hashes = check_piece_hashes(layout, [hash_piece(b"abcd"), hash_piece(b"efgh")])
    assert verify_piece(hashes, 0, b"abcd")
    assert verify_piece(hashes, 1, memoryview(b"efgh"))
    assert not verify_piece(hashes, 1, b"abcd")
    with pytest.raises(ValueError, match="expected 2"):
        check_piece_hashes(layout, hashes[:1])
    for bad in ("sha256:" + "A" * 64, "sha512:" + "a" * 64, "sha256:abc", 7):
        with pytest.raises(ValueError, match="not a sha256"):
            check_piece_hashes(layout, [hashes[0], bad])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        (" bytes=4194304-8388607 ", (4194304, 8388607)),
        ("bytes=5-5", (5, 5)),
        ("bytes=9-0", None),
        ("bytes=0-", None),
        ("bytes=-10", None),
        ("bytes=0-1,4-5", None),
        ("items=0-9", None),
        ("bytes=a-b", None),
        ("", None),
        (None, None),
    ],
)
def test_peers_ask_for_explicit_byte_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_byte_range(header) == expected
