"""``shoal verify``: re-hash every object in a cache and find what has rotted.

Blobs and manifests are named by their digest, so each file is checked against its own name; tag files must
parse and name a valid digest. Files that cannot be a cache entry at all (a bad name) are reported too. With
``repair`` every bad entry is deleted, so the mirror fetches it again (or, offline, reports it missing)
instead of serving bytes that do not match their digest. Hashing runs on a few threads: hashlib releases
the GIL, so a disk's worth of layers is read at disk speed. Safe to run beside a serving mirror.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mirror.edge.graph import manifest_matches
from mirror.oci.errors import RegistryError
from mirror.oci.reference import Digest
from mirror.store.tags import TagEntry

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # "blob", "manifest", "tag" or "stray"
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.path}: {self.reason}"


@dataclass(slots=True)
class VerifyReport:
    blobs: int = 0
    manifests: int = 0
    tags: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    removed: int = 0


def _file_hex(path: Path, algorithm: str) -> tuple[str, int]:
    h = hashlib.new(algorithm)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _entries(base: Path) -> Iterator[tuple[Path, Digest | None]]:
    """Every file under ``blobs/`` or ``manifests/``, with the digest its path names (None: not a valid name)."""
    if not base.is_dir():
        return
    for dirpath, _, files in os.walk(base):
        for name in files:
            path = Path(dirpath) / name
            rel = path.relative_to(base).parts
            digest = None
            if len(rel) == 3 and rel[1] == rel[2][:2]:
                with contextlib.suppress(RegistryError):
                    digest = Digest.parse(f"{rel[0]}:{rel[2]}")
            yield path, digest


def check_blob(path: Path, digest: Digest) -> tuple[int, str | None]:
    actual, size = _file_hex(path, digest.algorithm)
    return size, None if actual == digest.hex else f"content hashes to {digest.algorithm}:{actual}"


def check_manifest(path: Path, digest: Digest) -> tuple[int, str | None]:
    raw = path.read_bytes()  # manifests are small (4 MiB at most)
    media_type, newline, body = raw.partition(b"\n")
    if not newline or not media_type.strip():
        return len(raw), "no media type line"
    if not manifest_matches(digest, media_type.decode("utf-8", "replace"), body):
        return len(raw), f"manifest does not hash to {digest}"
    return len(raw), None


def check_tag(path: Path) -> str | None:
    try:
        entry = TagEntry(**json.loads(path.read_bytes()))
        Digest.parse(entry.digest)
    except (ValueError, TypeError, RegistryError) as exc:
        return f"unreadable tag entry: {exc}"[:200]
    return None


def verify_cache(cache_dir: Path, repair: bool = False, workers: int | None = None) -> VerifyReport:
    if not (cache_dir / "blobs").is_dir() and not (cache_dir / "manifests").is_dir():
        raise FileNotFoundError(f"{cache_dir} is not a Shoal cache (no blobs/ or manifests/ directory)")
    report = VerifyReport()
    jobs: list[tuple[str, Path, Digest]] = []
    for kind in ("blobs", "manifests"):
        for path, digest in _entries(cache_dir / kind):
            if digest is None:
                report.problems.append(Problem("stray", path, "not named by a digest"))
            else:
                jobs.append((kind[:-1], path, digest))

    def run(job: tuple[str, Path, Digest]) -> tuple[str, Path, int, str | None]:
        kind, path, digest = job
        check = check_blob if kind == "blob" else check_manifest
        try:
            size, reason = check(path, digest)
        except FileNotFoundError:
            return kind, path, 0, None  # deleted meanwhile (gc, eviction): nothing to verify
        except OSError as exc:
            return kind, path, 0, f"unreadable: {exc.strerror}"
        return kind, path, size, reason

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        for kind, path, size, reason in pool.map(run, jobs):
            if kind == "blob":
                report.blobs += 1
            else:
                report.manifests += 1
            report.bytes += size
            if reason:
                report.problems.append(Problem(kind, path, reason))
    tags_dir = cache_dir / "tags"
    for path in sorted(tags_dir.glob("**/_tags/*/*.json")) if tags_dir.is_dir() else ():
        report.tags += 1
        reason = check_tag(path)
        if reason:
            report.problems.append(Problem("tag", path, reason))
    if repair:
        for problem in report.problems:
            with contextlib.suppress(FileNotFoundError):
                problem.path.unlink()
                report.removed += 1
    return report
