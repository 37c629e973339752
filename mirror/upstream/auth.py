"""Registry authentication: the bearer-token flow and basic auth, with tokens cached per scope.

A registry answers 401 with a challenge; for ``Bearer`` we ask its token service (the challenge's realm) for
a pull token for the repository, anonymously or with the upstream's credentials (robot accounts work the
same way), and reuse it until shortly before it expires.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from ssl import SSLContext

import aiohttp

from mirror.config import Credentials
from mirror.oci.challenge import Challenge

log = logging.getLogger("shoal.upstream")

_DEFAULT_TOKEN_TTL = 60.0
_EXPIRY_MARGIN = 10.0


def basic_header(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class AuthFailed(Exception):
    """The token service refused or could not be reached."""


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float


class TokenCache:
    """Bearer tokens per (upstream, scope), and which upstreams asked for basic auth."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[tuple[str, str], _Token] = {}
        self.basic_upstreams: set[str] = set()

    def header_for(self, upstream_url: str, scope: str, creds: Credentials | None) -> str | None:
        """The Authorization header to send pre-emptively, if we already know what the upstream wants."""
        token = self._tokens.get((upstream_url, scope))
        if token and token.expires_at > self._clock():
            return f"Bearer {token.value}"
        if creds and upstream_url in self.basic_upstreams:
            return basic_header(creds)
        return None

    async def fetch(
        self,
        session: aiohttp.ClientSession,
        upstream_url: str,
        challenge: Challenge,
        scope: str,
        creds: Credentials | None,
        ssl: SSLContext | bool,
        client_timeout: aiohttp.ClientTimeout,
    ) -> str:
        """Ask the challenge's realm for a token and cache it; returns the Authorization header value."""
        realm = challenge.realm
        if not realm or not realm.startswith(("http://", "https://")):
            raise AuthFailed(f"bearer challenge without a usable realm: {realm!r}")
        params = {"scope": challenge.params.get("scope") or scope}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        headers = {"Authorization": basic_header(creds)} if creds else {}
        try:
            async with session.get(realm, params=params, headers=headers, ssl=ssl, timeout=client_timeout) as resp:
                if resp.status != 200:
                    raise AuthFailed(f"token service {resp.url.host} answered {resp.status}")
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise AuthFailed(f"token service {realm}: {exc!r}") from None
        value = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value:
            raise AuthFailed("token service answered without a token")
        ttl = float(doc.get("expires_in") or _DEFAULT_TOKEN_TTL)
        self._tokens[(upstream_url, scope)] = _Token(value, self._clock() + max(1.0, ttl - _EXPIRY_MARGIN))
        return f"Bearer {value}"
