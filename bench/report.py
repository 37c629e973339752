"""Presenting a :class:`Report`: terminal tables (pure string functions), the JSON file and the PNG chart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from bench.floors import Floors
from bench.results import CNCF, NGINX, REFERENCES, SHOAL, UPSTREAM, Report, Row

_SERVERS = (SHOAL, CNCF, NGINX, UPSTREAM)


def fmt_value(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(header: Sequence[str], lines: Sequence[Sequence[str]], left: int = 2) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])


def _cell(row: Row, server: str) -> str:
    if server not in row.values:
        return ""
    text = fmt_value(row.values[server])
    return text + "!" if row.failures.get(server) else text


def main_table(report: Report) -> str:
    """Headline value per server and Shoal's ratios; ``!`` marks a value with failed requests."""
    header = ["workload", "unit", *_SERVERS, "x cncf", "x nginx", "x upstream"]
    lines = []
    for row in report.rows:
        ratios = row.ratios(SHOAL)
        lines.append(
            [
                row.workload,
                row.metric,
                *(_cell(row, s) for s in _SERVERS),
                *(fmt_ratio(ratios[k]) if k in ratios else "" for k in REFERENCES),
            ]
        )
    return _table(header, lines)


def latency_table(report: Report) -> str:
    """MB/s and p50/p99 latency (ms) of the hot workloads, per server."""
    hot = [r for r in report.rows if r.group in ("blob", "manifest")]
    if not hot:
        return ""
    servers = [s for s in _server_order(hot) if not s.startswith(SHOAL + ":")]
    header = ["workload", *(f"{s} MB/s  p50/p99" for s in servers)]
    lines = []
    for row in hot:
        cells = [row.workload]
        for server in servers:
            d = row.details.get(server, {})
            if not d or d.get("p50_ms") is None:
                cells.append("-")
                continue
            cells.append(f"{fmt_value(d.get('mb_per_s'))}  {fmt_value(d['p50_ms'])}/{fmt_value(d.get('p99_ms'))}")
        lines.append(cells)
    return _table(header, lines, left=1)


def variants_table(report: Report) -> str:
    """Every Shoal configuration side by side, each with its ratio to nginx (or to CNCF where nginx is absent)."""
    rows = [r for r in report.rows if len(r.shoal_servers()) > 1]
    if not rows:
        return ""
    shoals = _server_order(rows, shoal_only=True)
    header = ["workload", "unit", *shoals]
    lines = []
    for row in rows:
        cells = [row.workload, row.metric]
        for server in shoals:
            if server not in row.values:
                cells.append("")
                continue
            ref = NGINX if NGINX in row.values else CNCF
            r = row.ratio(server, ref)
            suffix = f" ({fmt_ratio(r)}x {ref})" if r is not None and row.group != "coalescing" else ""
            cells.append(_cell(row, server) + suffix)
        lines.append(cells)
    return _table(header, lines)


def _server_order(rows: Sequence[Row], shoal_only: bool = False) -> list[str]:
    seen: list[str] = []
    for row in rows:
        for server in row.values:
            if server not in seen:
                seen.append(server)
    if shoal_only:
        return [s for s in seen if s == SHOAL or s.startswith(SHOAL + ":")]
    return sorted(seen, key=lambda s: (_SERVERS.index(s) if s in _SERVERS else 0.5, s))


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(report.as_json(), indent=2, default=str) + "\n")


def write_chart(report: Report, path: Path, floors: Floors | None = None) -> str | None:
    """A horizontal bar chart of Shoal's ratios (log scale, 1 = parity); returns an error text instead of
    raising when matplotlib is missing (it lives in the ``bench`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart written"
    rows = [r for r in report.rows if any(v is not None for v in r.ratios(SHOAL).values())]
    if not rows:
        return "no ratios to chart"
    colours = {"vs_cncf": "#4c72b0", "vs_nginx": "#55a868", "vs_upstream": "#c44e52"}
    height = 0.8 / len(REFERENCES)
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(rows) + 1.8))
    for j, key in enumerate(REFERENCES):
        ys, xs = [], []
        for i, row in enumerate(rows):
            value = row.ratios(SHOAL).get(key)
            if value is not None:
                ys.append(i + (j - 1) * height)
                xs.append(value)
        if xs:
            bars = ax.barh(ys, xs, height=height, color=colours[key], label=f"Shoal {key.replace('_', ' ')}")
            ax.bar_label(bars, labels=[f"{x:.2f}" for x in xs], fontsize=7, padding=2)
        if floors is not None:
            marks = [
                (i + (j - 1) * height, floors.ratios[(key, row.workload)])
                for i, row in enumerate(rows)
                if (key, row.workload) in floors.ratios
            ]
            if marks:
                ax.scatter([m[1] for m in marks], [m[0] for m in marks], marker="|", s=120, color="black", zorder=3)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    values = [v for r in rows for v in r.ratios(SHOAL).values() if v is not None]
    ax.set_xlim(min(0.5, min(values) / 1.5), max(2.0, max(values) * 2.5))
    ax.set_yticks(range(len(rows)), [r.workload for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("times better than the reference (log scale; >1: Shoal ahead; | = CI floor)")
    machine = report.machine
    ax.set_title(
        f"Shoal vs CNCF proxy, nginx and direct upstream — {machine.get('nproc')} CPUs, "
        f"kernel {machine.get('kernel')}, Python {machine.get('python')}",
        fontsize=9,
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def summary(report: Report) -> str:
    parts = [main_table(report)]
    for extra in (latency_table(report), variants_table(report)):
        if extra:
            parts.append(extra)
    parts.append("ratios: times better than the reference (>1: Shoal ahead); '!' marks failed requests")
    return "\n\n".join(parts)
