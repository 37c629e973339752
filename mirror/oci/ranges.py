"""HTTP ``Range`` header parsing for blob requests (RFC 9110 §14, single byte range only).

Registry clients ask for one range to resume a layer; multi-range requests are answered with the whole blob,
which the RFC allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirror.oci.errors import RangeNotSatisfiable


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The satisfiable range for a blob of ``size`` bytes, or None for "send the whole blob".

    Raises RangeNotSatisfiable (416) for syntactically valid ranges outside the blob; malformed or
    multi-range headers are ignored, as RFC 9110 says a server may.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":  # suffix range: the last N bytes
            n = int(last)
            if n <= 0 or size == 0:
                raise RangeNotSatisfiable(size)
            return ByteRange(max(0, size - n), size - 1)
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    if start < 0 or end < start:
        return None
    return ByteRange(start, min(end, size - 1))
