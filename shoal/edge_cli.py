"""``shoal`` subcommands for edge sites: prefetch, export, import, verify, gc, status.

Registered into the main parser by ``shoal.cli``. Each command parses its flags, calls one function of
``mirror.edge`` and prints; every failure an operator can act on becomes a one-line ``CLIError``.
Exit status: 0 success, 1 when the work ran but something failed (a prefetch failure, corruption found and
not repaired), 2 for errors reported by ``shoal.cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from mirror.config import default_cache_dir
from mirror.edge.images import ImageError, ImageRef, PlatformFilter, parse_image, platform_filter
from mirror.server.run import MirrorPlugin
from shoal.cli import CLIError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this group's subcommands."""
    p = sub.add_parser("prefetch", help="warm a running mirror with images (all their platforms or some)")
    p.add_argument("--server", required=True, help="mirror URL, e.g. http://127.0.0.1:5000")
    _platform_flags(p)
    p.add_argument("--jobs", type=int, default=4, help="blobs fetched at once (default 4)")
    p.add_argument("--progress", choices=("auto", "bar", "plain"), default="auto", help="default: bar on a tty")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="name[:tag|@digest], optionally with a registry")
    p.set_defaults(func=cmd_prefetch)

    e = sub.add_parser("export", help="write cached images into a bundle (.tar.zst); no network")
    _cache_flag(e)
    e.add_argument("-o", "--output", required=True, metavar="FILE.tar.zst")
    _platform_flags(e, default_help="default: every platform that is completely cached")
    e.add_argument("--level", type=int, default=3, help="zstd level (default 3; layers are already compressed)")
    e.add_argument("images", nargs="+", metavar="IMAGE")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("import", help="verify a bundle and add its images and tags to a cache")
    _cache_flag(i)
    i.add_argument("bundle", metavar="FILE.tar.zst")
    i.set_defaults(func=cmd_import)

    v = sub.add_parser("verify", help="re-hash every cached blob and manifest; report (or drop) corrupt ones")
    _cache_flag(v)
    v.add_argument("--repair", action="store_true", help="delete corrupt entries so they are fetched again")
    v.add_argument("--jobs", type=int, default=None, help="hashing threads (default: up to 8)")
    v.set_defaults(func=cmd_verify)

    g = sub.add_parser("gc", help="drop manifests and blobs that no tag or manifest references")
    _cache_flag(g)
    g.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    g.add_argument("--keep-untagged", action="store_true", help="keep manifests pulled by digest only")
    g.add_argument(
        "--min-age", type=float, default=0.0, metavar="SECONDS", help="keep anything younger (use on a live cache)"
    )
    g.set_defaults(func=cmd_gc)

    s = sub.add_parser("status", help="cache size, hit ratio, upstream health, downloads in flight")
    s.add_argument("--server", required=True, help="mirror URL")
    s.add_argument("--json", action="store_true", help="print the raw /admin/status document")
    s.set_defaults(func=cmd_status)


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    """``shoal serve`` flags of this group: none (``--offline`` and ``--max-cache-size`` belong to the mirror)."""


def serve_plugins(args: argparse.Namespace, config: dict[str, Any]) -> list[MirrorPlugin]:
    """No plugins: the admin endpoints are part of every mirror (``mirror.server.admin``)."""
    return []


def _cache_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache directory (default: as shoal serve)")


def _platform_flags(parser: argparse.ArgumentParser, default_help: str = "default: this host's") -> None:
    parser.add_argument("--platform", action="append", metavar="OS/ARCH", help=f"repeatable; {default_help}")
    parser.add_argument("--all-platforms", action="store_true", help="every platform of an index")


def _images(args: argparse.Namespace) -> list[ImageRef]:
    try:
        return list(dict.fromkeys(parse_image(text) for text in args.images))
    except ImageError as exc:
        raise CLIError(str(exc)) from None


def _platforms(args: argparse.Namespace, default_all_cached: bool = False) -> PlatformFilter | None:
    if default_all_cached and not args.platform and not args.all_platforms:
        return None
    try:
        return platform_filter(args.platform, args.all_platforms)
    except ImageError as exc:
        raise CLIError(str(exc)) from None


def _cache_dir(args: argparse.Namespace) -> Path:
    return Path(args.cache_dir) if args.cache_dir else default_cache_dir()


# prefetch ----------------------------------------------------------------------------------------------


def cmd_prefetch(args: argparse.Namespace) -> int:
    from mirror.edge.http_source import HttpSource, check_server_url
    from mirror.edge.prefetch import Prefetcher, PrefetchError
    from mirror.edge.progress import PlainReporter, TerminalReporter, summary

    images = _images(args)
    platforms = _platforms(args)
    assert platforms is not None
    try:
        server = check_server_url(args.server)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    bar = args.progress == "bar" or (args.progress == "auto" and sys.stderr.isatty())
    reporter = TerminalReporter(sys.stderr) if bar else PlainReporter(sys.stderr)

    async def run() -> int:
        async with HttpSource.new_session() as session:
            source = HttpSource(server, session)
            try:
                await source.ping()
            except PrefetchError as exc:
                raise CLIError(str(exc)) from None
            prefetcher = Prefetcher(source, platforms, reporter, jobs=args.jobs)
            results = await prefetcher.run(images)
        reporter.finish()
        print(summary(prefetcher.progress, results))
        for failure in prefetcher.progress.failures:
            print(f"  failed: {failure}")
        return 1 if any(r.failures for r in results) else 0

    return asyncio.run(run())


# bundles -----------------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from mirror.edge.exporter import ExportError, export_images
    from mirror.edge.progress import human

    images = _images(args)
    platforms = _platforms(args, default_all_cached=True)
    output = Path(args.output)
    try:
        result = export_images(_cache_dir(args), images, output, platforms, level=args.level)
    except ExportError as exc:
        raise CLIError(str(exc)) from None
    print(
        f"exported {result.images} images to {output}: {result.tags} tag entries, {result.manifests} manifests, "
        f"{result.blobs} blobs, {human(result.bytes)} of content in {human(result.written)}"
    )
    if result.skipped_platforms:
        print(f"  not cached, left out: {', '.join(result.skipped_platforms)}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from mirror.edge.bundle import BundleError
    from mirror.edge.importer import import_bundle
    from mirror.edge.progress import human

    bundle = Path(args.bundle)
    if not bundle.is_file():
        raise CLIError(f"{bundle}: no such file")
    try:
        result = asyncio.run(import_bundle(_cache_dir(args), bundle))
    except BundleError as exc:
        raise CLIError(f"{bundle} refused: {exc}; the cache was not changed") from None
    print(
        f"imported {bundle}: {result.manifests} manifests ({result.new_manifests} new), {result.blobs} blobs "
        f"({result.new_blobs} new), {human(result.bytes)}, {result.tags} tags"
    )
    return 0


# cache lifecycle -------------------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from mirror.edge.progress import human
    from mirror.edge.verify import verify_cache

    report = verify_cache(_cache_dir(args), repair=args.repair, workers=args.jobs)
    for problem in report.problems:
        print(f"corrupt {problem}")
    state = "no problems"
    if report.problems:
        state = f"{len(report.problems)} corrupt" + (f", {report.removed} removed" if args.repair else "")
    print(
        f"verified {report.blobs} blobs, {report.manifests} manifests ({human(report.bytes)}), "
        f"{report.tags} tag entries: {state}"
    )
    return 1 if report.problems and not args.repair else 0


def cmd_gc(args: argparse.Namespace) -> int:
    from mirror.edge.gc import collect
    from mirror.edge.progress import human

    report = collect(_cache_dir(args), dry_run=args.dry_run, keep_untagged=args.keep_untagged, min_age=args.min_age)
    verb = "would remove" if args.dry_run else "removed"
    if args.dry_run:
        for digest in report.removed_manifests:
            print(f"manifest {digest}")
        for digest in report.removed_blobs:
            print(f"blob {digest}")
    print(
        f"gc: {verb} {len(report.removed_manifests)} manifests and {len(report.removed_blobs)} blobs "
        f"({human(report.freed)}); kept {report.kept_manifests} manifests and {report.kept_blobs} blobs"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mirror.edge.http_source import check_server_url
    from mirror.edge.status import fetch_status, format_status

    try:
        server = check_server_url(args.server)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    doc = fetch_status(server)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"server      {server}")
        for line in format_status(doc):
            print(line)
    return 0
