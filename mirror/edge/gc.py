"""``shoal gc``: drop what no tag or manifest still references.

Mark and sweep. The roots are the manifests the tag store points at (every ``Accept`` variant); from them an
index keeps its child manifests, an image manifest its config and layers, a referrer its subject. Every
other manifest and blob is removed. A manifest that was only ever pulled by digest is not referenced by
anything, so it goes too, unless ``keep_untagged`` makes every cached manifest a root. Objects younger than
``min_age`` seconds are kept whatever they are: a serving mirror may be in the middle of caching an image
(its manifest first, then its blobs) or an import may not have written its tags yet.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mirror.edge.graph import reachable
from mirror.oci.errors import RegistryError
from mirror.oci.reference import Digest
from mirror.store.files import FileStore
from mirror.store.tags import TagStore


@dataclass(slots=True)
class GcReport:
    kept_manifests: int = 0
    kept_blobs: int = 0
    removed_manifests: list[Digest] = field(default_factory=list)
    removed_blobs: list[Digest] = field(default_factory=list)
    freed: int = 0
    dangling_tags: int = 0  # tags whose manifest is not cached (harmless: fetched again when online)


def collect(
    cache_dir: Path,
    dry_run: bool = False,
    keep_untagged: bool = False,
    min_age: float = 0.0,
    clock: Callable[[], float] = time.time,
) -> GcReport:
    if not (cache_dir / "manifests").is_dir():
        raise FileNotFoundError(f"{cache_dir} is not a Shoal cache (no manifests/ directory)")
    store, tags = FileStore(cache_dir), TagStore(cache_dir)
    report = GcReport()
    roots: set[Digest] = set()
    for _, entry in tags.items():
        with contextlib.suppress(RegistryError):
            digest = Digest.parse(entry.digest)
            if store.manifest_path(digest).exists():
                roots.add(digest)
            else:
                report.dangling_tags += 1
    cached_manifests = dict(store.iter_manifests())
    if keep_untagged:
        roots.update(cached_manifests)
    live_manifests, live_blobs = reachable(store, roots)
    cutoff = clock() - min_age

    def sweep(entries: dict[Digest, Path], live: set[Digest], removed: list[Digest]) -> int:
        kept = 0
        for digest, path in entries.items():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if digest in live or stat.st_mtime > cutoff:
                kept += 1
                continue
            if not dry_run:
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
            removed.append(digest)
            report.freed += stat.st_size
        return kept

    # Manifests first: from the moment a manifest is gone no client is sent to its blobs.
    report.kept_manifests = sweep(cached_manifests, live_manifests, report.removed_manifests)
    report.kept_blobs = sweep(dict(store.iter_blobs()), live_blobs, report.removed_blobs)
    return report
