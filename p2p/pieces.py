"""Piece geometry for peer-to-peer blob transfer: pure arithmetic, no IO.

A blob is cut into fixed-size pieces so that nodes can fetch different parts from different peers and
serve the parts they already have while the rest is still arriving. Every node must cut a given blob the same
way, so the tracker fixes a blob's `PieceLayout` the first time it hears of it and hands it out with every
lookup.

- `choose_piece_size` picks a power-of-two piece size between 4 and 64 MiB that gives about `TARGET_PIECES`
  pieces (an override exists for tests and small clusters);
- `PieceLayout` maps piece indices to byte ranges (end inclusive, like HTTP `Range`) and back;
- `Bitfield` records which pieces a node holds, MSB-first like BitTorrent, and travels as base64 in JSON;
- `PieceHasher` computes the sha256 of every piece while a blob streams by, and `check_piece_hashes` /
  `verify_piece` validate a published hash list and a downloaded piece against it;
- `parse_byte_range` reads the one `Range: bytes=<start>-<end>` form peers send each other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

MiB = 1024 * 1024
MIN_PIECE_SIZE = 4 * MiB
MAX_PIECE_SIZE = 64 * MiB
TARGET_PIECES = 64
"""Adaptive sizing doubles the piece size from 4 MiB until a blob has at most this many pieces (or 64 MiB)."""

_PIECE_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
_BYTE_RANGE_RE = re.compile(r"bytes=(\d{1,19})-(\d{1,19})")


def choose_piece_size(blob_size: int, override: int | None = None) -> int:
    """The piece size for a blob of `blob_size` bytes: `override` when given, else adaptive.

    Adaptive sizes: up to 256 MiB -> 4 MiB, 512 MiB -> 8 MiB, 1 GiB -> 16 MiB, 2 GiB -> 32 MiB,
    larger -> 64 MiB.
    """
    if blob_size < 0:
        raise ValueError(f"blob size must not be negative: {blob_size}")
    if override is not None:
        if override <= 0:
            raise ValueError(f"piece size override must be positive: {override}")
        return override
    size = MIN_PIECE_SIZE
    while size < MAX_PIECE_SIZE and size * TARGET_PIECES < blob_size:
        size *= 2
    return size


@dataclass(frozen=True, slots=True)
class PieceLayout:
    """How one blob is cut: `size` bytes in pieces of `piece_size` bytes (the last one may be shorter)."""

    size: int
    piece_size: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"blob size must not be negative: {self.size}")
        if self.piece_size <= 0:
            raise ValueError(f"piece size must be positive: {self.piece_size}")

    @classmethod
    def for_blob(cls, size: int, override: int | None = None) -> PieceLayout:
        return cls(size, choose_piece_size(size, override))

    @property
    def count(self) -> int:
        """Number of pieces; 0 for an empty blob."""
        return -(-self.size // self.piece_size)

    def piece_range(self, index: int) -> tuple[int, int]:
        """Byte range `(start, end)` of piece `index`, end inclusive."""
        self._check_index(index)
        start = index * self.piece_size
        return start, min(start + self.piece_size, self.size) - 1

    def piece_length(self, index: int) -> int:
        start, end = self.piece_range(index)
        return end - start + 1

    def pieces_touching(self, start: int, end: int) -> range:
        """Indices of the pieces that hold any byte of `start..end` (inclusive, within the blob)."""
        if not 0 <= start <= end < self.size:
            raise ValueError(f"byte range {start}-{end} is not within a blob of {self.size} bytes")
        return range(start // self.piece_size, end // self.piece_size + 1)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.count:
            raise IndexError(f"piece {index} out of range for {self.count} pieces")


class Bitfield:
    """Which of `len(self)` pieces are present; bit i is the most significant-first bit of byte i // 8."""

    __slots__ = ("_bits", "_length", "_count")

    def __init__(self, length: int) -> None:
        if length < 0:
            raise ValueError(f"bitfield length must not be negative: {length}")
        self._length = length
        self._bits = bytearray(-(-length // 8))
        self._count = 0

    @classmethod
    def full(cls, length: int) -> Bitfield:
        field = cls(length)
        for index in range(length):
            field.set(index)
        return field

    @classmethod
    def from_indices(cls, length: int, indices: Iterable[int]) -> Bitfield:
        field = cls(length)
        for index in indices:
            field.set(index)
        return field

    @classmethod
    def from_bytes(cls, length: int, data: bytes) -> Bitfield:
        """Inverse of `to_bytes`; rejects a wrong byte count and set padding bits."""
        field = cls(length)
        if len(data) != len(field._bits):
            raise ValueError(f"bitfield of {length} pieces needs {len(field._bits)} bytes, got {len(data)}")
        padding = len(data) * 8 - length
        if padding and data[-1] & ((1 << padding) - 1):
            raise ValueError("bitfield has bits set past its last piece")
        field._bits[:] = data
        field._count = sum(byte.bit_count() for byte in data)
        return field

    @classmethod
    def from_base64(cls, length: int, text: str) -> Bitfield:
        try:
            data = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise ValueError(f"bitfield is not valid base64: {exc}") from None
        return cls.from_bytes(length, data)

    def to_bytes(self) -> bytes:
        return bytes(self._bits)

    def to_base64(self) -> str:
        return base64.b64encode(self._bits).decode("ascii")

    def __len__(self) -> int:
        return self._length

    def set(self, index: int) -> None:
        self._check(index)
        mask = 0x80 >> (index % 8)
        if not self._bits[index // 8] & mask:
            self._bits[index // 8] |= mask
            self._count += 1

    def has(self, index: int) -> bool:
        self._check(index)
        return bool(self._bits[index // 8] & (0x80 >> (index % 8)))

    def count(self) -> int:
        """Number of pieces present."""
        return self._count

    def complete(self) -> bool:
        return self._count == self._length

    def present(self) -> Iterator[int]:
        return (index for index in range(self._length) if self.has(index))

    def missing(self) -> Iterator[int]:
        return (index for index in range(self._length) if not self.has(index))

    def copy(self) -> Bitfield:
        return Bitfield.from_bytes(self._length, bytes(self._bits))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bitfield):
            return NotImplemented
        return self._length == other._length and self._bits == other._bits

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        bits = "".join("1" if self.has(index) else "0" for index in range(self._length))
        return f"Bitfield({self._length}, {bits!r})"

    def _check(self, index: int) -> None:
        if not 0 <= index < self._length:
            raise IndexError(f"piece {index} out of range for {self._length} pieces")


def hash_piece(data: bytes | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_piece_hashes(layout: PieceLayout, hashes: Sequence[str]) -> tuple[str, ...]:
    """Validate a published hash list for `layout`: one `sha256:<64 hex>` per piece."""
    if len(hashes) != layout.count:
        raise ValueError(f"expected {layout.count} piece hashes, got {len(hashes)}")
    for value in hashes:
        if not isinstance(value, str) or not _PIECE_HASH_RE.fullmatch(value):
            raise ValueError(f"not a sha256 piece hash: {value!r}")
    return tuple(hashes)


def verify_piece(hashes: Sequence[str], index: int, data: bytes | memoryview) -> bool:
    """Whether `data` is piece `index` according to `hashes` (a list that passed `check_piece_hashes`)."""
    return hmac.compare_digest(hashes[index], hash_piece(data))


class PieceHasher:
    """Hashes every piece of a blob as its bytes stream by in chunks of any size."""

    def __init__(self, layout: PieceLayout) -> None:
        self._layout = layout
        self._hashes: list[str] = []
        self._current = hashlib.sha256()
        self._filled = 0
        self._total = 0

    def update(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        if self._total + len(view) > self._layout.size:
            raise ValueError(f"more than {self._layout.size} bytes fed to the piece hasher")
        self._total += len(view)
        while view:
            take = min(len(view), self._layout.piece_size - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self._layout.piece_size:
                self._close_piece()

    def finish(self) -> tuple[str, ...]:
        """The hash of every piece; the whole blob must have been fed."""
        if self._total != self._layout.size:
            raise ValueError(f"piece hasher got {self._total} of {self._layout.size} bytes")
        if self._filled:
            self._close_piece()
        return tuple(self._hashes)

    def _close_piece(self) -> None:
        self._hashes.append("sha256:" + self._current.hexdigest())
        self._current = hashlib.sha256()
        self._filled = 0


def parse_byte_range(header: str | None) -> tuple[int, int] | None:
    """`(start, end)` (end inclusive) of a `bytes=<start>-<end>` header, or None for anything else.

    Peers always ask for an explicit, bounded range (a piece, or the rest of one when resuming), so open-ended,
    suffix and multi-range forms are refused rather than interpreted.
    """
    match = _BYTE_RANGE_RE.fullmatch((header or "").strip())
    if match is None:
        return None
    start, end = int(match[1]), int(match[2])
    return (start, end) if start <= end else None
