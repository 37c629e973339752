"""The zstd frame tracker tells a complete stream from a cut one, without decompressing."""

from __future__ import annotations

import io
import random

import pytest
import zstandard

from mirror.edge.zstdframes import FrameError, FrameTracker

DATA = random.Random(1).randbytes(40_000) + b"\0" * 400_000


def _fed(data: bytes, step: int) -> FrameTracker:
    tracker = FrameTracker()
    for i in range(0, len(data), step):
        tracker.feed(data[i : i + step])
    return tracker


@pytest.mark.parametrize(
    "options", [{}, {"write_checksum": True}, {"threads": -1, "write_checksum": True}, {"level": 19}]
)
@pytest.mark.parametrize("step", [1, 13, 65536])
def test_complete_streams(options: dict[str, object], step: int) -> None:
    data = zstandard.ZstdCompressor(**options).compress(DATA)  # type: ignore[arg-type]
    tracker = _fed(data, step)
    assert tracker.complete and tracker.frames == 1
    assert tracker.consumed == len(data)


def test_every_cut_is_seen() -> None:
    data = zstandard.ZstdCompressor(write_checksum=True).compress(DATA)
    for cut in [*range(1, 64), len(data) // 2, len(data) - 4, len(data) - 5]:
        assert not _fed(data[:-cut], 4096).complete, cut
    assert not FrameTracker().complete


def test_stream_writer_and_several_frames() -> None:
    out = io.BytesIO()
    with zstandard.ZstdCompressor(write_checksum=True).stream_writer(out, closefd=False) as writer:
        for _ in range(5):
            writer.write(DATA)
    two = out.getvalue() + zstandard.ZstdCompressor().compress(b"tail")
    tracker = _fed(two, 1000)
    assert tracker.complete and tracker.frames == 2


def test_skippable_frame() -> None:
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    tracker = _fed(skippable + zstandard.ZstdCompressor().compress(b"x"), 2)
    assert tracker.complete


def test_not_zstd() -> None:
    with pytest.raises(FrameError):
        FrameTracker().feed(b"PK\x03\x04 a zip file")
