"""``python -m bench`` (or ``shoal-bench``): Shoal side by side with the CNCF proxy and nginx, in one run.

Everything runs on 127.0.0.1 and is started and stopped here: a ``docker-registry`` upstream holding a
generated image (1 MiB, 8 MiB and 64 MiB layers), Shoal, ``docker-registry`` in proxy mode, and nginx with
sendfile serving the same blob files. Prints a table of ratios, writes ``<output>/bench-<time>.json`` (every
figure, the machine facts) and ``.png`` (the ratios), plus ``latest.json``/``latest.png``.

Exit status: 0, 1 when ``--check-floors`` found a ratio below its floor or broken coalescing (one line per
reason on stderr), 2 when the harness itself could not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.floors import Floors, FloorsError, check_floors, parse_floors
from bench.lab.process import LabError
from bench.load import LoadGenerator
from bench.machine import machine_facts
from bench.plan import FULL, GROUPS, QUICK
from bench.report import summary, write_chart, write_json
from bench.results import SHOAL, Report
from bench.rig import Rig
from bench.runner import BenchError, Runner

REQUIRED_TOOLS = ("docker-registry", "nginx", "skopeo")
DEFAULT_SHOAL_ARGS = ["--tag-ttl", "3600"]  # every tag request of the run is within the TTL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="reduced set for CI, under 2 minutes")
    parser.add_argument("--check-floors", type=Path, metavar="TOML", help="exit 1 if a ratio is below its floor")
    parser.add_argument("--output", type=Path, default=Path("bench-results"), help="results dir (./bench-results)")
    parser.add_argument("--workdir", type=Path, help="where servers keep their files (default: a temp dir)")
    parser.add_argument("--keep-workdir", action="store_true", help="do not delete the work dir (logs)")
    parser.add_argument("--duration", type=float, help="seconds per load run (full 5, quick 3)")
    parser.add_argument("--only", help=f"comma-separated groups to run: {','.join(GROUPS)}")
    parser.add_argument("--shoal-args", default="", help="extra flags for every Shoal, e.g. '--workers 2'")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="also measure Shoal with these flags (hot path and coalescing), e.g. uvloop='--loop uvloop'",
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1 on a 2-core box)")
    parser.add_argument("--no-wrk", action="store_true", help="use the aiohttp load generator even if wrk exists")
    return parser


def _variants(specs: list[str]) -> dict[str, list[str]]:
    variants: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, flags = spec.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"python -m bench: --variant wants NAME=FLAGS, got {spec!r}")
        variants[f"{SHOAL}:{name.strip()}"] = shlex.split(flags)
    return variants


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"python -m bench: missing required tool(s): {', '.join(missing)}", file=sys.stderr)
        return 2
    floors: Floors | None = None
    if args.check_floors is not None:
        try:
            floors = parse_floors(args.check_floors.read_text())
        except (OSError, FloorsError) as exc:
            print(f"python -m bench: cannot use floors {args.check_floors}: {exc}", file=sys.stderr)
            return 2
    plan = QUICK if args.quick else FULL
    if args.duration:
        plan = dataclasses.replace(plan, duration_s=args.duration)
    if args.only:
        try:
            plan = plan.only(tuple(g.strip() for g in args.only.split(",") if g.strip()))
        except ValueError as exc:
            print(f"python -m bench: {exc}", file=sys.stderr)
            return 2
    load = LoadGenerator(prefer_wrk=not args.no_wrk, threads=args.wrk_threads)
    shoal_args = [*DEFAULT_SHOAL_ARGS, *shlex.split(args.shoal_args)]
    variants = _variants(args.variant)
    report = Report(
        machine=machine_facts(),
        settings={
            "mode": "quick" if args.quick else "full",
            "plan": dataclasses.asdict(plan),
            "load_generator": load.description,
            "shoal_args": shoal_args,
            "variants": variants,
            "nginx_workers": 2,
        },
    )
    print(f"shoal bench ({report.settings['mode']}), load: {load.description}", flush=True)
    started = time.monotonic()
    rig = Rig(args.workdir, shoal_args=shoal_args)
    try:
        Runner(rig, plan, load, variants, say=lambda line: print(line, flush=True)).run(report)
    except (LabError, BenchError) as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        rig.close(keep_workdir=args.keep_workdir)
        if args.keep_workdir:
            print(f"work dir kept: {rig.workdir}")
    report.duration_s = time.monotonic() - started
    report.machine["loadavg_at_end"] = list(os.getloadavg())
    print()
    print(summary(report))
    args.output.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = args.output / f"bench-{stamp}-{report.settings['mode']}.json"
    png_path = json_path.with_suffix(".png")
    write_json(report, json_path)
    chart_error = write_chart(report, png_path, floors)
    shutil.copyfile(json_path, args.output / "latest.json")
    if chart_error is None:
        shutil.copyfile(png_path, args.output / "latest.png")
    print(f"\nran in {report.duration_s:.0f}s; wrote {json_path}" + (f" and {png_path}" if not chart_error else ""))
    if chart_error:
        print(f"note: {chart_error}", file=sys.stderr)
    if floors is None:
        return 0
    violations, notes = check_floors(report, floors)
    for note in notes:
        print(f"floors: skipped {note}")
    if violations:
        for line in violations:
            print(f"FLOOR VIOLATED: {line}", file=sys.stderr)
        return 1
    print(f"floors: {len(floors.ratios) - len(notes)} ratio floors met; coalescing and zero-copy checks passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
