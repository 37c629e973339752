"""The CI load gate: minimum ratios from ``bench/floors.toml``, and the coalescing rule.

Floors compare ratios measured in the same run, never absolute times, so a slow or noisy machine moves
Shoal and its references together. The file looks like::

    [vs_nginx]                    # section = reference: vs_cncf, vs_nginx or vs_upstream
    "blob-8m-c16" = 0.55          # workload = minimum ratio (>1: Shoal ahead)

    [coalescing]
    max_upstream_gets = 1         # per blob, for N concurrent cold clients

    [zerocopy]
    min_sendfile_share = 0.9      # of warm blob bytes, counted with strace

A floor whose workload was not measured in this run (``--quick`` runs fewer) is skipped, not failed.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from bench.results import REFERENCES, SHOAL, Report


class FloorsError(ValueError):
    """floors.toml is malformed."""


@dataclass(frozen=True)
class Floors:
    ratios: dict[tuple[str, str], float] = field(default_factory=dict)  # (section, workload) -> minimum
    max_upstream_gets: int | None = None
    min_sendfile_share: float | None = None


def parse_floors(text: str) -> Floors:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FloorsError(f"floors file is not valid TOML: {exc}") from None
    ratios: dict[tuple[str, str], float] = {}
    max_gets = None
    min_share = None
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise FloorsError(f"{section!r} must be a table")
        if section == "zerocopy":
            unknown = set(table) - {"min_sendfile_share"}
            if unknown:
                raise FloorsError(f"unknown key(s) in [zerocopy]: {', '.join(sorted(unknown))}")
            share = table.get("min_sendfile_share")
            if share is not None and (
                not isinstance(share, int | float) or isinstance(share, bool) or not 0 <= share <= 1
            ):
                raise FloorsError("zerocopy.min_sendfile_share must be a number from 0 to 1")
            min_share = None if share is None else float(share)
            continue
        if section == "coalescing":
            unknown = set(table) - {"max_upstream_gets"}
            if unknown:
                raise FloorsError(f"unknown key(s) in [coalescing]: {', '.join(sorted(unknown))}")
            value = table.get("max_upstream_gets")
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise FloorsError("coalescing.max_upstream_gets must be an integer >= 1")
            max_gets = value
            continue
        if section not in REFERENCES:
            raise FloorsError(f"unknown section [{section}]; use {', '.join(REFERENCES)}, coalescing or zerocopy")
        for workload, floor in table.items():
            if not isinstance(floor, int | float) or isinstance(floor, bool) or floor <= 0:
                raise FloorsError(f"[{section}] {workload!r}: floor must be a positive number")
            ratios[(section, workload)] = float(floor)
    return Floors(ratios, max_gets, min_share)


def check_floors(report: Report, floors: Floors, server: str = SHOAL) -> tuple[list[str], list[str]]:
    """``(violations, notes)``: one line per violated floor; notes say which floors were not measured."""
    violations: list[str] = []
    notes: list[str] = []
    for (section, workload), floor in sorted(floors.ratios.items()):
        row = report.row(workload)
        if row is None or server not in row.values:
            notes.append(f"{workload} {section}: not measured in this run")
            continue
        value = row.ratio(server, REFERENCES[section])
        if value is None:
            violations.append(f"{workload} {section}: no ratio (a server failed or was not measured)")
        elif value < floor:
            violations.append(f"{workload} {section}: ratio {value:.2f} is below the floor {floor:.2f}")
    for row in report.rows:
        failed = row.failures.get(server, 0)
        if failed:
            violations.append(f"{row.workload}: {failed} failed request(s) to {server}")
        if row.group == "zerocopy" and floors.min_sendfile_share is not None and server in row.values:
            share = row.values[server]
            if share is None:
                violations.append(f"{row.workload}: no blob bytes were seen in the strace output")
            elif share < floors.min_sendfile_share:
                violations.append(
                    f"{row.workload}: only {share:.0%} of blob bytes went out through sendfile"
                    f" (min {floors.min_sendfile_share:.0%}): the blob path lost zero-copy"
                )
        if row.group != "coalescing" or floors.max_upstream_gets is None or server not in row.values:
            continue
        gets = row.values[server]
        clients = row.details.get(server, {}).get("clients", "N")
        if gets is None:
            violations.append(f"{row.workload}: upstream GETs could not be counted")
        elif gets > floors.max_upstream_gets:
            violations.append(
                f"{row.workload}: {gets:g} upstream GETs for {clients} concurrent cold clients"
                f" (max {floors.max_upstream_gets}): coalescing is broken"
            )
    return violations, notes
