"""Which workloads a run measures: the full set, or the ``--quick`` subset the CI gate runs in < 2 minutes.

Workload names are stable keys (``floors.toml`` refers to them): ``blob-<size>-c<conns>``,
``manifest-digest-c<conns>``, ``manifest-tag-c<conns>``, ``cold-<size>-ttfb``, ``cold-<size>-total``,
``coalesce-<size>-n<clients>``, ``pull-cold``, ``pull-warm``, ``zerocopy-<size>``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

GROUPS = ("blob", "manifest", "zerocopy", "cold", "coalescing", "pull")


@dataclass(frozen=True)
class Plan:
    blob_sizes: tuple[str, ...] = ("1m", "8m", "64m")
    blob_connections: tuple[int, ...] = (1, 16, 64)
    manifest_connections: tuple[int, ...] = (1, 16)
    duration_s: float = 3.0
    rounds: int = 3  # each hot workload is run this many times per server, interleaved; the best run counts
    cold_blob: str = "64m"
    cold_trials: int = 3
    coalesce_blob: str = "64m"
    coalesce_clients: tuple[int, ...] = (8, 32)
    coalesce_references: tuple[int, ...] = (8, 32)  # client counts also run against the CNCF proxy
    pull_trials: int = 3
    zerocopy_blob: str = "8m"
    zerocopy_requests: int = 5
    groups: tuple[str, ...] = GROUPS

    def blob_workloads(self) -> list[tuple[str, str, int]]:
        """``(name, size key, connections)`` for every cache-hit blob workload."""
        return [(f"blob-{s}-c{c}", s, c) for s in self.blob_sizes for c in self.blob_connections]

    def manifest_workloads(self) -> list[tuple[str, str, int]]:
        """``(name, "digest" | "tag", connections)``."""
        return [(f"manifest-{k}-c{c}", k, c) for k in ("digest", "tag") for c in self.manifest_connections]

    def only(self, groups: tuple[str, ...]) -> Plan:
        unknown = set(groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
        return replace(self, groups=tuple(g for g in GROUPS if g in groups))


FULL = Plan()

QUICK = Plan(
    blob_sizes=("1m", "8m"),
    blob_connections=(16,),
    manifest_connections=(16,),
    duration_s=2.0,
    rounds=2,
    cold_trials=1,
    coalesce_clients=(8, 32),
    coalesce_references=(8,),
    pull_trials=1,
)
