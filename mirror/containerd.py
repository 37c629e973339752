"""containerd ``hosts.toml`` files that send a registry's pulls through the mirror.

containerd (1.5+, ``config_path``) reads ``<certs.d>/<registry>/hosts.toml``; the mirror is tried first for
pull and resolve, and the registry itself stays the fallback ``server`` so a node still pulls if the mirror
is down. containerd adds ``?ns=<registry>`` to mirror requests, which is how Shoal routes them.
"""

from __future__ import annotations

import os
from pathlib import Path

from mirror.config import WELL_KNOWN_ENDPOINTS
from mirror.oci.reference import normalize_registry


def hosts_toml(registry: str, mirror_url: str) -> str:
    lines = []
    if registry != "_default":
        server = WELL_KNOWN_ENDPOINTS.get(registry, f"https://{registry}")
        lines.append(f'server = "{server}"\n')
    lines.append(f'[host."{mirror_url.rstrip("/")}"]')
    lines.append('  capabilities = ["pull", "resolve"]')
    return "\n".join(lines) + "\n"


def write_hosts_toml(certs_dir: Path, registry: str, mirror_url: str) -> Path:
    name = registry if registry == "_default" else normalize_registry(registry)
    path = certs_dir / name / "hosts.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(hosts_toml(name, mirror_url))
    os.replace(tmp, path)
    return path
