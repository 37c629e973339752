"""``shoal`` command line: parses flags, loads config once, builds the object graph, runs it.

This is the only module that knows both ``mirror`` and ``p2p``. Errors an operator can fix are printed as one
line on stderr with exit status 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from mirror.config import ConfigError, MirrorConfig, apply_flags, load_yaml, mirror_config_from
from mirror.containerd import write_hosts_toml
from mirror.oci.errors import RegistryError
from mirror.server.run import MirrorPlugin

log = logging.getLogger("shoal")


class CLIError(Exception):
    """A one-line message for the operator."""


class Extension(Protocol):
    """A group of subcommands in its own module (``shoal.edge_cli``, ``shoal.p2p_cli``).

    ``register`` adds commands to the subparsers and sets ``func`` on each; ``func(args) -> int`` may raise
    CLIError, ConfigError or OSError for a one-line error. ``add_serve_flags`` and ``serve_plugins`` extend
    ``shoal serve``: flags, then plugins built from the parsed args and the loaded config.
    """

    def register(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...

    def add_serve_flags(self, serve: argparse.ArgumentParser) -> None: ...

    def serve_plugins(self, args: argparse.Namespace, config: dict[str, Any]) -> list[MirrorPlugin]: ...


EXTENSIONS: list[Extension] = []
EXTENSION_SECTIONS = ("p2p", "edge")  # top-level YAML keys that belong to extensions, not the mirror


def _load_extensions() -> None:
    from shoal import edge_cli, p2p_cli

    EXTENSIONS.extend([edge_cli, p2p_cli])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal", description="Pull-through caching registry mirror.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the mirror")
    serve.add_argument("--config", help="YAML config file")
    serve.add_argument("--listen", help="HOST:PORT (default 0.0.0.0:5000)")
    serve.add_argument("--cache-dir", help="cache directory")
    serve.add_argument(
        "--upstream",
        action="append",
        metavar="REGISTRY=URL",
        help="upstream for a registry; repeat to list several in priority order",
    )
    serve.add_argument("--default-registry", help="registry for requests without ?ns= (default docker.io)")
    serve.add_argument("--tag-ttl", type=float, help="seconds a tag resolution is trusted (default 300)")
    serve.add_argument("--loop", choices=("asyncio", "uvloop"), help="event loop (default asyncio: zero-copy)")
    serve.add_argument("--workers", type=int, help="processes sharing the port (default 1)")
    serve.add_argument("--max-cache-size", metavar="SIZE", help="evict least recently used blobs beyond this (20G)")
    serve.add_argument("--offline", action="store_true", help="serve only from cache; never contact upstreams")
    serve.add_argument("--log-level", default="INFO")

    cc = sub.add_parser("containerd-config", help="write containerd hosts.toml files pointing at a mirror")
    cc.add_argument("--mirror", required=True, help="mirror URL, e.g. http://shoal.kube-system:5000")
    cc.add_argument("--registry", action="append", help="registry to mirror (repeatable; default: allowlist)")
    cc.add_argument("--output-dir", default="/etc/containerd/certs.d")
    cc.set_defaults(func=cmd_containerd_config)
    serve.set_defaults(func=cmd_serve)
    for extension in EXTENSIONS:
        extension.add_serve_flags(serve)
        extension.register(sub)
    return parser


def load_config(args: argparse.Namespace) -> tuple[MirrorConfig, dict[str, Any]]:
    """The mirror's typed config, and the raw YAML mapping for extensions' own sections (e.g. ``p2p:``)."""
    data = load_yaml(Path(args.config)) if args.config else {}
    cfg = mirror_config_from({k: v for k, v in data.items() if k not in EXTENSION_SECTIONS})
    return apply_flags(
        cfg,
        listen=args.listen,
        cache_dir=args.cache_dir,
        upstreams=args.upstream,
        default_registry=args.default_registry,
        tag_ttl=args.tag_ttl,
        loop=args.loop,
        workers=args.workers,
        max_cache_size=args.max_cache_size,
    ), data


def cmd_serve(args: argparse.Namespace) -> int:
    from mirror.server.run import serve

    cfg, raw = load_config(args)
    plugins = [plugin for ext in EXTENSIONS for plugin in ext.serve_plugins(args, raw)]
    try:
        cfg.cache_dir.mkdir(parents=True, exist_ok=True)
        probe = cfg.cache_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CLIError(f"cache dir {cfg.cache_dir} is not writable: {exc.strerror}") from None
    try:
        sock = bind(cfg.listen_host, cfg.listen_port, reuse_port=cfg.workers > 1)
    except OSError as exc:
        raise CLIError(f"cannot listen on {cfg.listen_host}:{cfg.listen_port}: {exc.strerror}") from None
    return serve(cfg, sock, offline=args.offline, plugins=plugins)


def bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def cmd_containerd_config(args: argparse.Namespace) -> int:
    from mirror.config import DEFAULT_ALLOWLIST

    registries = args.registry or list(DEFAULT_ALLOWLIST)
    for registry in registries:
        path = write_hosts_toml(Path(args.output_dir), registry, args.mirror)
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    if not EXTENSIONS:
        _load_extensions()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except (CLIError, ConfigError, RegistryError, OSError) as exc:
        message = exc.message if isinstance(exc, RegistryError) else str(exc)
        print(f"shoal {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
