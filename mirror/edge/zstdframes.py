"""Follows the frame structure of a zstd stream as it passes by, to tell a complete stream from a cut one.

``zstandard``'s streaming reader returns what it could decode and then plain end-of-file when its input
stops in the middle of a frame, so a truncated bundle would look like a short one. :class:`FrameTracker`
reads only the frame and block headers (RFC 8878), never the compressed data, and says whether the stream
ended exactly at the end of a frame. Pure: it is fed bytes and keeps a few integers of state.
"""

from __future__ import annotations

ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK, _SKIPPABLE_MAGIC = 0xFFFFFFF0, 0x184D2A50


class FrameError(ValueError):
    """The bytes are not a zstd stream."""


class FrameTracker:
    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4  # bytes of the current header field still to collect, or of a body still to skip
        self._buf = bytearray()
        self._checksum = False
        self._last_block = False
        self.frames = 0
        self.consumed = 0

    @property
    def complete(self) -> bool:
        """At least one frame, and the stream so far ends exactly where a frame ends."""
        return self.frames > 0 and self._state == "magic" and not self._buf

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        self.consumed += len(view)
        while view:
            if self._state in ("skip", "block_body"):
                n = min(self._need, len(view))
                self._need -= n
                view = view[n:]
                if self._need == 0:
                    self._after_body()
                continue
            n = min(self._need - len(self._buf), len(view))
            self._buf += view[:n]
            view = view[n:]
            if len(self._buf) == self._need:
                field, self._buf = bytes(self._buf), bytearray()
                self._field(field)

    def _field(self, field: bytes) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(field, "little")
            if magic == ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
                self._state, self._need = "skip_size", 4
            else:
                raise FrameError(f"not a zstd frame at byte {self.consumed - len(field)}")
        elif state == "skip_size":
            self._body("skip", int.from_bytes(field, "little"))
        elif state == "descriptor":
            fhd = field[0]
            if fhd & 0x08:
                raise FrameError("reserved bit set in a zstd frame header")
            single_segment = bool(fhd & 0x20)
            self._checksum = bool(fhd & 0x04)
            fcs = (1 if single_segment else 0, 2, 4, 8)[fhd >> 6]
            rest = (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 0x03] + fcs
            self._state, self._need = "header_rest", rest
            if rest == 0:
                self._start_block()
        elif state == "header_rest":
            self._start_block()
        elif state == "block_header":
            header = int.from_bytes(field, "little")
            self._last_block = bool(header & 1)
            block_type, size = (header >> 1) & 3, header >> 3
            if block_type == 3:
                raise FrameError("reserved zstd block type")
            self._body("block_body", 1 if block_type == 1 else size)
        elif state == "checksum":
            self._end_frame()

    def _start_block(self) -> None:
        self._state, self._need = "block_header", 3

    def _body(self, state: str, size: int) -> None:
        self._state, self._need = state, size
        if size == 0:
            self._after_body()

    def _after_body(self) -> None:
        if self._state == "skip":
            self._state, self._need = "magic", 4
        elif not self._last_block:
            self._start_block()
        elif self._checksum:
            self._state, self._need = "checksum", 4
        else:
            self._end_frame()

    def _end_frame(self) -> None:
        self.frames += 1
        self._state, self._need = "magic", 4
