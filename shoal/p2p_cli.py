"""``shoal`` command line for peer-to-peer sharing: ``shoal tracker`` and the P2P flags of ``shoal serve``.

Registered into the main parser by ``shoal.cli``. Settings come from flags and the ``p2p:`` section of the
config file (see ``p2p.config``); P2P is on when at least one tracker is configured.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from mirror.config import load_yaml, parse_listen
from mirror.server.run import MirrorPlugin


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tracker = sub.add_parser("tracker", help="run the P2P tracker that tells nodes where blobs are")
    tracker.add_argument("--listen", help="HOST:PORT to listen on (or p2p.tracker.listen)")
    tracker.add_argument("--peer-secret-file", metavar="FILE", help="cluster secret; requests must be signed")
    tracker.add_argument("--config", help="YAML config file (its p2p: section)")
    tracker.add_argument("--node-ttl", type=float, metavar="SECONDS", help="forget silent nodes after (30)")
    tracker.add_argument(
        "--stall-timeout", type=float, metavar="SECONDS", help="re-elect when a back-to-source node stalls (60)"
    )
    tracker.add_argument("--piece-size", metavar="BYTES", help="piece size of new blobs (default adapts to size)")
    tracker.add_argument("--log-level", default="INFO")
    tracker.set_defaults(func=cmd_tracker)


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("peer-to-peer (on when a tracker is given)")
    group.add_argument("--tracker", action="append", metavar="URL", help="tracker URL; repeat for fallbacks")
    group.add_argument("--advertise", metavar="URL", help="URL peers reach this node at (default http://LISTEN)")
    group.add_argument("--peer-secret-file", metavar="FILE", help="cluster secret shared by nodes and trackers")
    group.add_argument("--piece-size", metavar="BYTES", help="preferred piece size (default adapts to blob size)")
    group.add_argument("--upload-limit", metavar="BYTES/S", help="bytes per second served to peers (unlimited)")
    group.add_argument("--node-id", help="this node's id in the cluster (default HOSTNAME-PORT)")
    group.add_argument("--heartbeat", type=float, metavar="SECONDS", help="tracker heartbeat interval (10)")


def serve_plugins(args: argparse.Namespace, config: dict[str, Any]) -> list[MirrorPlugin]:
    from p2p import config as p2p_config

    section = p2p_config.section(config)
    listen = args.listen or config.get("listen") or "0.0.0.0:5000"
    host, port = parse_listen(str(listen))
    node = p2p_config.node_config(
        section,
        host,
        port,
        trackers=args.tracker,
        advertise=args.advertise,
        secret_file=args.peer_secret_file,
        piece_size=args.piece_size,
        upload_limit=args.upload_limit,
        node_id=args.node_id,
        heartbeat_interval=args.heartbeat,
    )
    if node is None:
        return []
    from p2p.node import P2PNode

    return [P2PNode(node)]


def cmd_tracker(args: argparse.Namespace) -> int:
    from p2p import config as p2p_config
    from p2p.tracker import run_tracker

    raw = load_yaml(Path(args.config)) if args.config else {}
    settings = p2p_config.tracker_config(
        p2p_config.section(raw),
        listen=args.listen,
        secret_file=args.peer_secret_file,
        node_ttl=args.node_ttl,
        stall_timeout=args.stall_timeout,
        piece_size=args.piece_size,
    )
    try:
        asyncio.run(run_tracker(settings.host, settings.port, settings.secret, settings.scheduler))
    except KeyboardInterrupt:
        return 130
    return 0
