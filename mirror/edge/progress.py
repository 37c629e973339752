"""How prefetch shows itself: a redrawn bar (bytes, layers) on a terminal, plain lines otherwise, a summary.

Plain lines are for logs and CronJobs: one line per manifest, blob and image, failures prefixed ``FAILED``.
On a terminal only images and failures get a line; the bar below them is redrawn at most ten times a second.
"""

from __future__ import annotations

import time
from typing import TextIO

from mirror.edge.prefetch import ImageResult, Progress


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class PlainReporter:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def event(self, progress: Progress, message: str) -> None:
        print(message, file=self.out, flush=True)

    def tick(self, progress: Progress) -> None:
        pass

    def finish(self) -> None:
        pass


class TerminalReporter:
    WIDTH = 30

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._drawn = 0.0
        self._line = ""

    def _bar(self, p: Progress) -> str:
        fraction = p.bytes_done / p.bytes_total if p.bytes_total else 0.0
        filled = int(self.WIDTH * min(1.0, fraction))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        return (
            f"[{bar}] {fraction * 100:5.1f}%  {human(p.bytes_done)} / {human(p.bytes_total)}"
            f"  layers {p.blobs_done}/{p.blobs}  images {p.images_done}/{p.images}"
        )

    def _draw(self, text: str) -> None:
        pad = max(0, len(self._line) - len(text))
        self.out.write("\r" + text + " " * pad)
        self.out.flush()
        self._line = text

    def event(self, progress: Progress, message: str) -> None:
        if message.startswith(("FAILED", "done")):
            self._draw(message)
            self.out.write("\n")
            self._line = ""
        self._draw(self._bar(progress))

    def tick(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._drawn >= 0.1:
            self._drawn = now
            self._draw(self._bar(progress))

    def finish(self) -> None:
        if self._line:
            self.out.write("\n")
            self.out.flush()
            self._line = ""


def summary(progress: Progress, results: list[ImageResult]) -> str:
    failed = [r for r in results if r.failures]
    elapsed = time.monotonic() - progress.started
    rate = progress.bytes_done / elapsed if elapsed > 0 else 0.0
    text = (
        f"prefetched {len(results) - len(failed)}/{len(results)} images: {progress.manifests} manifests, "
        f"{progress.blobs_done - progress.blobs_failed}/{progress.blobs} blobs, {human(progress.bytes_done)} "
        f"in {elapsed:.1f}s ({human(rate)}/s)"
    )
    if failed:
        text += f"; {len(progress.failures)} failures"
    return text
