"""Node status: what ``GET /admin/status`` reports and how ``shoal status`` prints it.

The numbers come from where they already live: cache size from the cache directory, hit ratios from the
``shoal_cache_lookups_total`` counter, upstream health from the upstream client. The server side builds the
document (``mirror.server.admin``); this module holds the pieces that need no server: disk usage, the ratio
arithmetic, and the text rendering.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mirror.edge.progress import human

# Which lookup results count as served from the cache, per kind (see mirror.metrics.CACHE).
_HITS = {"hit"}
_LOOKUPS = {"hit", "miss", "joined", "revalidate"}


@dataclass(frozen=True, slots=True)
class CacheUsage:
    bytes: int = 0
    blobs: int = 0
    manifests: int = 0
    tags: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _walk(base: Path, suffix: str = "") -> tuple[int, int]:
    count = size = 0
    stack = [base]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.name.endswith(suffix):
                    count += 1
                    size += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    return count, size


def cache_usage(root: Path) -> CacheUsage:
    """Bytes and entries under a cache directory (blocking: a directory walk; call from a thread)."""
    blobs, blob_bytes = _walk(root / "blobs")
    manifests, manifest_bytes = _walk(root / "manifests")
    tags, _ = _walk(root / "tags", ".json")
    return CacheUsage(blob_bytes + manifest_bytes, blobs, manifests, tags)


def hit_ratios(lookups: dict[tuple[str, str], float]) -> dict[str, Any]:
    """``{"overall": r, "blob": r, ..., "lookups": {...}}`` from (kind, result) -> count; None where no lookups."""
    out: dict[str, Any] = {}
    total_hits = total = 0.0
    for kind in sorted({k for k, _ in lookups}):
        hits = sum(v for (k, r), v in lookups.items() if k == kind and r in _HITS)
        count = sum(v for (k, r), v in lookups.items() if k == kind and r in _LOOKUPS)
        out[kind] = round(hits / count, 4) if count else None
        total_hits, total = total_hits + hits, total + count
    out["overall"] = round(total_hits / total, 4) if total else None
    out["lookups"] = {f"{k}:{r}": int(v) for (k, r), v in sorted(lookups.items())}
    return out


def fetch_status(server: str, timeout: float = 10.0) -> dict[str, Any]:
    url = f"{server.rstrip('/')}/admin/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            doc = json.loads(resp.read(4 * 1024 * 1024))
    except urllib.error.HTTPError as exc:
        raise OSError(f"{url} answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise OSError(f"cannot reach {server}: {exc.reason}") from None
    except (TimeoutError, ValueError) as exc:
        raise OSError(f"{url}: {exc or type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise OSError(f"{url} did not answer a JSON object")
    return doc


def _percent(value: object) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, int | float) else "n/a"


def format_status(doc: dict[str, Any]) -> list[str]:
    """The status document as a few aligned lines for a person."""
    cache = doc.get("cache", {})
    hits = doc.get("hit_ratio", {})
    lines = [
        f"mode        {'offline' if doc.get('offline') else 'online'}",
        f"cache       {human(cache.get('bytes', 0))} in {cache.get('blobs', 0)} blobs, "
        f"{cache.get('manifests', 0)} manifests, {cache.get('tags', 0)} tag entries ({cache.get('dir', '?')})",
        f"hit ratio   {_percent(hits.get('overall'))} (blobs {_percent(hits.get('blob'))}, "
        f"manifests {_percent(hits.get('manifest'))}, tags {_percent(hits.get('tag'))})",
    ]
    quota = doc.get("quota")
    if isinstance(quota, dict):
        lines.append(
            f"quota       {human(quota.get('used_bytes', 0))} of {human(quota.get('max_bytes', 0))} used, "
            f"{quota.get('evicted', 0)} blobs evicted"
        )
    for registry in doc.get("upstreams", []):
        state = "reachable" if registry.get("reachable") else "UNREACHABLE"
        parts = [
            f"{u.get('name')}: {u.get('requests', 0)} requests, {u.get('errors', 0)} errors"
            for u in registry.get("upstreams", [])
        ]
        detail = f" ({'; '.join(parts)})" if parts else ""
        lines.append(f"upstream    {registry.get('registry')}: {state}{detail}")
    inflight = doc.get("inflight", {})
    prefetch = doc.get("prefetch", {})
    lines.append(
        f"in flight   {inflight.get('downloads', 0)} downloads, {prefetch.get('running', 0)} prefetch jobs running"
    )
    if doc.get("stale_serves"):
        lines.append(f"stale       {doc['stale_serves']} tags served stale since start")
    return lines
