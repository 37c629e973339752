"""``WWW-Authenticate`` challenges (RFC 9110 §11.6.1) as registries send them.

Docker Hub, Harbor and the CNCF registry answer 401 with ``Bearer realm="…",service="…",scope="…"``; the
client then asks the realm for a token. Parsing is pure so the token flow can be tested without a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*,?')


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lower-case: "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge in a header; registries send exactly one."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if not m or m.end() == pos:
            break
        quoted, bare = m.group(2), m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        pos = m.end()
    return Challenge(scheme.lower(), params)


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"
