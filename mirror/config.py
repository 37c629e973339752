"""Mirror configuration: typed, frozen, loaded and validated once at start-up.

Sources, later wins: built-in defaults, the YAML file, command-line flags. Secrets may be given inline, in a
file (Kubernetes secret mounts) or in an environment variable; they are resolved here so nothing else reads
the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from mirror.oci.errors import RegistryError
from mirror.oci.reference import DOCKER_HUB, normalize_registry, parse_image

DEFAULT_ALLOWLIST: tuple[str, ...] = (
    "docker.io",
    "ghcr.io",
    "quay.io",
    "registry.k8s.io",
    "gcr.io",
    "mcr.microsoft.com",
    "public.ecr.aws",
    "nvcr.io",
)
ANY_REGISTRY = "*"
# Docker Hub's API does not live at https://docker.io.
WELL_KNOWN_ENDPOINTS = {DOCKER_HUB: "https://registry-1.docker.io"}


class ConfigError(Exception):
    """A configuration problem, reported to the operator as one line."""


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    url: str
    credentials: Credentials | None = None
    path_prefix: str = ""  # e.g. "dockerhub-proxy" for a Harbor proxy-cache project
    ca_file: str | None = None
    insecure: bool = False
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0  # between reads, not total: multi-GB layers must finish
    mirror: bool = False  # the upstream is itself a mirror (a central Shoal): tell it the registry with ?ns=

    @property
    def name(self) -> str:
        """Host[:port] used in logs and as the metric label."""
        return urlsplit(self.url).netloc


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    listen_host: str = "0.0.0.0"
    listen_port: int = 5000
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    default_registry: str = DOCKER_HUB
    tag_ttl: float = 300.0
    registries: dict[str, tuple[UpstreamConfig, ...]] = field(default_factory=dict)
    allowlist: tuple[str, ...] = DEFAULT_ALLOWLIST
    manifest_memory_bytes: int = 64 * 1024 * 1024
    access_log: bool = True
    loop: str = "asyncio"  # or "uvloop"; see PERF-NOTES: asyncio keeps sendfile zero-copy
    workers: int = 1
    max_cache_bytes: int | None = None  # blobs beyond this are evicted, least recently used first
    pins: tuple[str, ...] = ()  # images never evicted, e.g. "registry.k8s.io/pause:3.9"

    def upstreams_for(self, registry: str) -> tuple[UpstreamConfig, ...]:
        """Configured upstreams in priority order, else the ``*`` upstreams (an edge chained to a central
        mirror), else an allowlisted registry's public endpoint."""
        configured = self.registries.get(registry) or self.registries.get(ANY_REGISTRY)
        if configured:
            return configured
        if registry in self.allowlist:
            return (UpstreamConfig(WELL_KNOWN_ENDPOINTS.get(registry, f"https://{registry}")),)
        return ()


def default_cache_dir() -> Path:
    env = os.environ.get("SHOAL_CACHE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/shoal")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shoal"


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"listen address must be HOST:PORT, got {text!r}")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def _registry_key(name: str) -> str:
    return ANY_REGISTRY if name == ANY_REGISTRY else normalize_registry(name)


def parse_upstream_flag(text: str) -> tuple[str, str]:
    registry, sep, url = text.partition("=")
    if not sep or not registry or not url:
        raise ConfigError(f"--upstream takes REGISTRY=URL, got {text!r}")
    return _registry_key(registry), _check_url(url)


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"upstream URL must be http(s)://host[:port], got {url!r}")
    return url.rstrip("/")


def _secret(raw: dict[str, Any], where: str) -> str | None:
    if raw.get("password") is not None:
        return str(raw["password"])
    if raw.get("password_file"):
        try:
            return Path(raw["password_file"]).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read password_file: {exc.strerror}") from None
    if raw.get("password_env"):
        value = os.environ.get(raw["password_env"])
        if value is None:
            raise ConfigError(f"{where}: environment variable {raw['password_env']} is not set")
        return value
    return None


def _upstream(raw: Any, where: str, any_registry: bool = False) -> UpstreamConfig:
    if isinstance(raw, str):
        raw = {"url": raw}
    if not isinstance(raw, dict) or "url" not in raw:
        raise ConfigError(f"{where}: an upstream needs a url")
    known = {
        "url",
        "username",
        "password",
        "password_file",
        "password_env",
        "path_prefix",
        "ca_file",
        "insecure",
        "connect_timeout",
        "idle_timeout",
    }
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    creds = None
    if raw.get("username"):
        password = _secret(raw, where)
        if password is None:
            raise ConfigError(f"{where}: username given without password, password_file or password_env")
        creds = Credentials(str(raw["username"]), password)
    return UpstreamConfig(
        url=_check_url(str(raw["url"])),
        credentials=creds,
        path_prefix=str(raw.get("path_prefix", "")).strip("/"),
        ca_file=raw.get("ca_file"),
        insecure=bool(raw.get("insecure", False)),
        connect_timeout=float(raw.get("connect_timeout", 5.0)),
        idle_timeout=float(raw.get("idle_timeout", 60.0)),
        mirror=any_registry or bool(raw.get("mirror", False)),
    )


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping")
    return data


def mirror_config_from(data: dict[str, Any]) -> MirrorConfig:
    """Build the mirror part of the config from a parsed YAML mapping (the ``mirror:`` keys at top level)."""
    cfg = MirrorConfig()
    changes: dict[str, Any] = {}
    if "listen" in data:
        changes["listen_host"], changes["listen_port"] = parse_listen(str(data["listen"]))
    if "cache_dir" in data:
        changes["cache_dir"] = Path(data["cache_dir"])
    if "default_registry" in data:
        changes["default_registry"] = normalize_registry(str(data["default_registry"]))
    if "tag_ttl" in data:
        changes["tag_ttl"] = float(data["tag_ttl"])
    if "allow_registries" in data:
        changes["allowlist"] = tuple(normalize_registry(str(r)) for r in data["allow_registries"] or ())
    for key in ("manifest_memory_bytes", "workers"):
        if key in data:
            changes[key] = int(data[key])
    for key in ("access_log",):
        if key in data:
            changes[key] = bool(data[key])
    if "loop" in data:
        changes["loop"] = str(data["loop"])
    if data.get("max_cache_size") is not None:
        changes["max_cache_bytes"] = size_setting(data["max_cache_size"], "max_cache_size")
    if "pins" in data:
        changes["pins"] = tuple(_pin(str(p)) for p in data["pins"] or ())
    registries: dict[str, tuple[UpstreamConfig, ...]] = {}
    for name, spec in (data.get("registries") or {}).items():
        reg = _registry_key(str(name))
        ups = spec.get("upstreams") if isinstance(spec, dict) else spec
        if not isinstance(ups, list) or not ups:
            raise ConfigError(f"registries.{name}: give a list of upstreams")
        registries[reg] = tuple(
            _upstream(u, f"registries.{name}.upstreams[{i}]", reg == ANY_REGISTRY) for i, u in enumerate(ups)
        )
    changes["registries"] = registries
    return validate(replace(cfg, **changes))


def apply_flags(
    cfg: MirrorConfig,
    *,
    listen: str | None = None,
    cache_dir: str | None = None,
    upstreams: list[str] | None = None,
    default_registry: str | None = None,
    tag_ttl: float | None = None,
    loop: str | None = None,
    workers: int | None = None,
    max_cache_size: str | None = None,
) -> MirrorConfig:
    """Flags override the file; ``--upstream`` for a registry replaces that registry's file-given list."""
    changes: dict[str, Any] = {}
    if listen:
        changes["listen_host"], changes["listen_port"] = parse_listen(listen)
    if cache_dir:
        changes["cache_dir"] = Path(cache_dir)
    if default_registry:
        changes["default_registry"] = normalize_registry(default_registry)
    if tag_ttl is not None:
        changes["tag_ttl"] = float(tag_ttl)
    if loop:
        changes["loop"] = loop
    if workers:
        changes["workers"] = workers
    if max_cache_size:
        changes["max_cache_bytes"] = size_setting(max_cache_size, "max_cache_size")
    if upstreams:
        flagged: dict[str, list[UpstreamConfig]] = {}
        for item in upstreams:
            registry, url = parse_upstream_flag(item)
            previous = {u.url: u for u in cfg.registries.get(registry, ())}
            # Keep credentials and options the file gave for the same URL.
            default = UpstreamConfig(url, mirror=registry == ANY_REGISTRY)
            flagged.setdefault(registry, []).append(previous.get(url, default))
        changes["registries"] = {**cfg.registries, **{k: tuple(v) for k, v in flagged.items()}}
    return validate(replace(cfg, **changes))


def parse_size(text: object) -> int:
    """``1048576``, ``500M``, ``20GiB``, ``1.5TB`` -> bytes (binary multiples: operators mean GiB by G)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value: float = text
    else:
        units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
        t = str(text).strip().upper().removesuffix("B").removesuffix("I")
        unit = t[-1] if t and t[-1] in units else ""
        try:
            value = float(t[:-1] if unit else t) * units[unit]
        except ValueError:
            raise ValueError(f"not a size: {text!r} (use e.g. 500M, 20G)") from None
    if value < 1:
        raise ValueError(f"size must be positive: {text!r}")
    return int(value)


def size_setting(text: object, what: str) -> int:
    """A size from a flag or the config file, as a one-line ConfigError naming the setting."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _pin(text: str) -> str:
    try:
        return str(parse_image(text))
    except RegistryError as exc:
        raise ConfigError(f"pins: {text!r}: {exc.message}") from None


def validate(cfg: MirrorConfig) -> MirrorConfig:
    if cfg.tag_ttl < 0:
        raise ConfigError("tag_ttl must be >= 0")
    if cfg.loop not in ("asyncio", "uvloop"):
        raise ConfigError(f"loop must be asyncio or uvloop, got {cfg.loop!r}")
    if cfg.workers < 1:
        raise ConfigError("workers must be >= 1")
    return cfg
