"""P2P settings: typed, frozen, built once at start-up from the `p2p:` YAML section and the command line.

    p2p:
      trackers: [http://10.0.0.1:7000]    # or `tracker: URL`; none means P2P is off
      advertise: http://10.0.0.5:5000     # default http://<listen address> when that is concrete
      node_id: node-a                     # default <hostname>-<port>
      peer_secret_file: /etc/shoal/peer-secret
      piece_size: 4MiB                    # default adapts to the blob size (the tracker's choice wins)
      upload_limit: 100M                  # bytes per second served to peers; default unlimited
      heartbeat_interval: 10
      follow_stall: 5                     # see p2p.swarm.SwarmConfig
      concurrency: 4
      tracker:                            # for `shoal tracker`
        listen: 0.0.0.0:7000
        node_ttl: 30
        stall_timeout: 60

Flags win over the file. Nothing here touches the network; reading the secret file is the only IO.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mirror.config import ConfigError, parse_listen, size_setting
from p2p.auth import read_secret_file
from p2p.scheduler import SchedulerConfig
from p2p.swarm import SwarmConfig

_NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")

_NODE_KEYS = {
    "trackers",
    "tracker",
    "advertise",
    "node_id",
    "peer_secret_file",
    "piece_size",
    "upload_limit",
    "heartbeat_interval",
    "follow_stall",
    "concurrency",
}
_TRACKER_KEYS = {"listen", "node_ttl", "stall_timeout", "piece_size"}


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """What `shoal serve` needs to take part in a cluster."""

    trackers: tuple[str, ...]
    advertise: str
    node_id: str
    secret: bytes | None = field(default=None, repr=False)
    piece_size: int | None = None
    upload_limit: int | None = None
    """Bytes per second served to peers by this node (each worker process when there are several)."""
    heartbeat_interval: float = 10.0
    announce_interval: float = 0.25
    """At least this many seconds between two partial announces of one blob."""
    lookup_interval: float = 0.5
    """How often a download asks the tracker again while pieces it needs have no holder."""
    layout_wait: float = 3.0
    """How long a follower waits for the elected node to report the blob's size before asking upstream."""
    peer_timeout: float = 3.0
    """Connect and idle-read timeout of a piece fetch from a peer."""
    min_piece_rate: float = 1 << 20
    """A peer slower than this (bytes/s) over a whole piece is dropped for it (with a floor of 4 s per piece)."""
    ban_time: float = 300.0
    swarm: SwarmConfig = SwarmConfig()


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """What `shoal tracker` needs."""

    host: str = "0.0.0.0"
    port: int = 7000
    secret: bytes | None = field(default=None, repr=False)
    scheduler: SchedulerConfig = SchedulerConfig()


def section(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The `p2p:` section of a loaded config file, checked for unknown keys."""
    data = raw.get("p2p") or {}
    if not isinstance(data, dict):
        raise ConfigError("p2p: must be a mapping")
    unknown = set(data) - _NODE_KEYS
    if unknown:
        raise ConfigError(f"p2p: unknown keys {sorted(unknown)}")
    tracker = data.get("tracker")
    if isinstance(tracker, dict):
        unknown = set(tracker) - _TRACKER_KEYS
        if unknown:
            raise ConfigError(f"p2p.tracker: unknown keys {sorted(unknown)}")
    return data


def node_config(
    data: Mapping[str, Any],
    listen_host: str,
    listen_port: int,
    *,
    trackers: list[str] | None = None,
    advertise: str | None = None,
    secret_file: str | None = None,
    piece_size: str | None = None,
    upload_limit: str | None = None,
    node_id: str | None = None,
    heartbeat_interval: float | None = None,
) -> NodeConfig | None:
    """The node's P2P settings from the `p2p:` section `data` and flags, or None when no tracker is set."""
    urls = list(trackers or [])
    if not urls:
        listed = data.get("trackers")
        single = data.get("tracker")
        if isinstance(listed, list):
            urls = [str(url) for url in listed]
        elif isinstance(listed, str):
            urls = [listed]
        if isinstance(single, str):
            urls.append(single)
    if not urls:
        return None
    urls = [_http_url(url, "tracker") for url in urls]
    given = advertise or data.get("advertise")
    advertised = _http_url(str(given), "advertise") if given else default_advertise(listen_host, listen_port)
    chosen_id = node_id or data.get("node_id") or default_node_id(listen_port)
    if not _NODE_ID_RE.fullmatch(str(chosen_id)):
        raise ConfigError(f"node id must be letters, digits and ._:@- (at most 128), got {chosen_id!r}")
    config = NodeConfig(tuple(urls), advertised, str(chosen_id), secret=_secret(secret_file, data))
    pieces = piece_size if piece_size is not None else data.get("piece_size")
    limit = upload_limit if upload_limit is not None else data.get("upload_limit")
    heartbeat = heartbeat_interval if heartbeat_interval is not None else data.get("heartbeat_interval")
    swarm = config.swarm
    if data.get("follow_stall") is not None:
        swarm = replace(swarm, follow_stall=_positive(data["follow_stall"], "p2p.follow_stall"))
    if data.get("concurrency") is not None:
        swarm = replace(swarm, concurrency=int(_positive(data["concurrency"], "p2p.concurrency")))
    return replace(
        config,
        piece_size=None if pieces is None else size_setting(pieces, "piece size"),
        upload_limit=None if limit is None else size_setting(limit, "upload limit"),
        heartbeat_interval=config.heartbeat_interval if heartbeat is None else _positive(heartbeat, "heartbeat"),
        swarm=swarm,
    )


def tracker_config(
    data: Mapping[str, Any],
    *,
    listen: str | None = None,
    secret_file: str | None = None,
    node_ttl: float | None = None,
    stall_timeout: float | None = None,
    piece_size: str | None = None,
) -> TrackerConfig:
    """The tracker's settings from the `p2p:` section `data` (its `tracker:` part) and flags."""
    tracker = data.get("tracker")
    own: Mapping[str, Any] = tracker if isinstance(tracker, dict) else {}
    listen = listen or own.get("listen")
    if not listen:
        raise ConfigError("the tracker needs --listen HOST:PORT (or p2p.tracker.listen)")
    host, port = parse_listen(str(listen))
    ttl = node_ttl if node_ttl is not None else own.get("node_ttl")
    stall = stall_timeout if stall_timeout is not None else own.get("stall_timeout")
    pieces = piece_size if piece_size is not None else own.get("piece_size")
    defaults = SchedulerConfig()
    scheduler = SchedulerConfig(
        node_ttl=defaults.node_ttl if ttl is None else _positive(ttl, "node ttl"),
        stall_timeout=defaults.stall_timeout if stall is None else _positive(stall, "stall timeout"),
        piece_size=None if pieces is None else size_setting(pieces, "piece size"),
    )
    return TrackerConfig(host, port, _secret(secret_file, data), scheduler)


def default_advertise(host: str, port: int) -> str:
    """`http://<host>:<port>` when `host` is a concrete address peers can reach; else a ConfigError."""
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = host == ""
    if unspecified:
        raise ConfigError(
            f"listening on {host or '*'}:{port}, peers need to be told where to reach this node: "
            "give --advertise http://ADDRESS:PORT (or p2p.advertise)"
        )
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def default_node_id(port: int) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("-.") or "node"
    return f"{base[:100]}-{port}"


def _secret(flag: str | None, data: Mapping[str, Any]) -> bytes | None:
    path = flag or data.get("peer_secret_file")
    if not path:
        return None
    try:
        return read_secret_file(Path(str(path)))
    except OSError as exc:
        raise ConfigError(f"cannot read peer secret file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _http_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{what} URL must be http(s)://host[:port], got {url!r}")
    return url.rstrip("/")


def _positive(value: object, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not number > 0:
        raise ConfigError(f"{what} must be positive, got {value!r}")
    return number
