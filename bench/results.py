"""What a benchmark run measured, and the ratios the gate and the reader compare.

Every workload is one :class:`Row`: a headline value per server (``shoal``, ``cncf``, ``nginx``, ``upstream``,
and ``shoal:<variant>`` for extra Shoal configurations) plus every other figure in ``details``. Ratios are
always "how many times better Shoal is": value/reference for throughputs, reference/value for times and
counts. So > 1 means Shoal is ahead, whatever the unit, and a floor is always a minimum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SHOAL = "shoal"
CNCF = "cncf"
NGINX = "nginx"
UPSTREAM = "upstream"
REFERENCES = {"vs_cncf": CNCF, "vs_nginx": NGINX, "vs_upstream": UPSTREAM}


def ratio(value: float | None, reference: float | None, higher_is_better: bool) -> float | None:
    """How many times better ``value`` is than ``reference``; None when either is missing or zero."""
    if value is None or reference is None or value <= 0 or reference <= 0:
        return None
    return value / reference if higher_is_better else reference / value


@dataclass
class Row:
    """One workload across servers. ``failures[server]`` counts failed requests (errors, non-2xx, exits)."""

    workload: str
    group: str  # blob | manifest | cold | coalescing | pull
    metric: str  # unit of the headline value: "req/s", "s", "ms", "GETs"
    higher_is_better: bool
    values: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    description: str = ""

    def set(self, server: str, value: float | None, failures: int = 0, **details: Any) -> None:
        self.values[server] = value
        self.failures[server] = failures
        self.details[server] = details

    def ratio(self, server: str, reference: str) -> float | None:
        return ratio(self.values.get(server), self.values.get(reference), self.higher_is_better)

    def ratios(self, server: str = SHOAL) -> dict[str, float | None]:
        """``{"vs_cncf": r, ...}`` for the references this row has."""
        return {key: self.ratio(server, ref) for key, ref in REFERENCES.items() if ref in self.values}

    def shoal_servers(self) -> list[str]:
        return [s for s in self.values if s == SHOAL or s.startswith(SHOAL + ":")]

    def as_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "group": self.group,
            "description": self.description,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "values": self.values,
            "ratios": {s: _rounded(self.ratios(s)) for s in self.shoal_servers()},
            "failures": self.failures,
            "details": self.details,
        }


def _rounded(ratios: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 3) for k, v in ratios.items()}


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def row(self, workload: str) -> Row | None:
        return next((r for r in self.rows if r.workload == workload), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "ratio_convention": "times better than the reference: >1 means Shoal is ahead",
            "duration_s": round(self.duration_s, 1),
            "settings": self.settings,
            "machine": self.machine,
            "workloads": [r.as_json() for r in self.rows],
        }
