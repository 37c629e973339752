"""Last-known tag resolutions, in memory and on disk.

A tag is the one mutable thing a mirror serves. Each resolution is kept per (registry, repository, tag,
accepted media types) so that clients with different ``Accept`` never get each other's variant, and is
persisted under ``tags/`` so an edge node that restarts while its upstream is gone still knows its tags.
Paths are built only from validated names and tags, so they cannot escape the cache root.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TagKey:
    registry: str
    repository: str
    tag: str
    accept_key: str


@dataclass(frozen=True, slots=True)
class TagEntry:
    digest: str
    media_type: str
    size: int
    fetched_at: float  # wall-clock seconds; compared against the TTL


class TagStore:
    def __init__(self, root: Path) -> None:
        self.root = root / "tags"
        self.root.mkdir(parents=True, exist_ok=True)
        self._memory: dict[TagKey, TagEntry] = {}

    def _path(self, key: TagKey) -> Path:
        return self.root / key.registry / key.repository / "_tags" / key.tag / f"{key.accept_key}.json"

    def cached(self, key: TagKey) -> TagEntry | None:
        """From memory only: the hot path, no disk."""
        return self._memory.get(key)

    def get(self, key: TagKey) -> TagEntry | None:
        entry = self._memory.get(key)
        if entry is None:
            try:
                entry = TagEntry(**json.loads(self._path(key).read_bytes()))
            except (FileNotFoundError, ValueError, TypeError):
                return None
            self._memory[key] = entry
        return entry

    def variants(self, registry: str, repository: str, tag: str) -> list[tuple[TagKey, TagEntry]]:
        """Every cached resolution of a tag, whatever the Accept it was made for; newest first."""
        found = []
        for path in (self.root / registry / repository / "_tags" / tag).glob("*.json"):
            key = TagKey(registry, repository, tag, path.stem)
            entry = self.get(key)
            if entry is not None:
                found.append((key, entry))
        return sorted(found, key=lambda kv: -kv[1].fetched_at)

    def put(self, key: TagKey, entry: TagEntry) -> None:
        """Remember a resolution (blocking write of a few hundred bytes; callers may use a thread)."""
        self._memory[key] = entry
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            tmp.write_text(json.dumps(asdict(entry)))
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def touch(self, key: TagKey, fetched_at: float) -> None:
        """Mark a resolution fresh again after a revalidation found it unchanged (memory only)."""
        entry = self._memory.get(key)
        if entry is not None:
            self._memory[key] = TagEntry(entry.digest, entry.media_type, entry.size, fetched_at)

    def items(self) -> Iterator[tuple[TagKey, TagEntry]]:
        """Every persisted resolution, for export and garbage collection."""
        for path in sorted(self.root.glob("**/_tags/*/*.json")):
            rel = path.relative_to(self.root).parts
            cut = rel.index("_tags")
            key = TagKey(rel[0], "/".join(rel[1:cut]), rel[cut + 1], path.stem)
            with contextlib.suppress(ValueError, TypeError, OSError):
                yield key, TagEntry(**json.loads(path.read_bytes()))
