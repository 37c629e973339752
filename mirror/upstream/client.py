"""Talking to upstream registries: priority fallback, auth, redirects, back-off.

One ``aiohttp.ClientSession`` for the process, with idle (not total) timeouts so multi-GB layers finish.
For a request we try the registry's upstreams in priority order and move on after 404, 401/403, 429, 5xx,
timeouts and connection errors. An upstream that answers 429 is backed off for its Retry-After; one that
cannot be reached is skipped for a short, growing interval (a circuit breaker), so pulls of cached content on
an edge site with a dead link never wait on it.

Redirects are followed by hand: Docker Hub sends blobs to a CDN, and ``Authorization`` must never be
forwarded to another host.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from mirror import metrics
from mirror.config import UpstreamConfig
from mirror.oci.challenge import parse_challenge, pull_scope
from mirror.oci.errors import RegistryError, TooManyRequests, Unavailable
from mirror.upstream.auth import AuthFailed, TokenCache, basic_header

log = logging.getLogger("shoal.upstream")

_REDIRECTS = {301, 302, 303, 307, 308}
_MAX_REDIRECTS = 5
_BREAKER_MIN, _BREAKER_MAX = 2.0, 60.0


@dataclass(slots=True)
class UpstreamResponse:
    """An open upstream response; the caller reads or streams the body, then calls ``release``."""

    upstream: UpstreamConfig
    response: aiohttp.ClientResponse

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers

    def release(self) -> None:
        self.response.release()

    def close(self) -> None:
        self.response.close()


@dataclass(slots=True)
class _Health:
    backoff_until: float = 0.0
    retry_after: float = 0.0
    failures: int = 0
    down_until: float = 0.0


@dataclass(slots=True)
class _Attempt:
    """What went wrong with each upstream, to pick the error a client sees."""

    not_found: bool = False
    retry_after: float | None = None
    notes: list[str] = field(default_factory=list)


class UpstreamClient:
    def __init__(
        self,
        upstreams_for: Callable[[str], tuple[UpstreamConfig, ...]],
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstreams_for = upstreams_for
        self._own_session = session is None
        self._session = session
        self._clock = clock
        self._tokens = TokenCache(clock)
        self._health: dict[str, _Health] = {}
        self._ssl: dict[str, ssl.SSLContext | bool] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=64, ttl_dns_cache=300),
                auto_decompress=False,  # blobs are stored byte-exact
                read_bufsize=1 << 20,  # large batches: one hash+write thread hop per MiB, not per 64 KiB
                headers={"User-Agent": "shoal/0.1", "Accept-Encoding": "identity"},
            )
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()

    def has_upstreams(self, registry: str) -> bool:
        return bool(self._upstreams_for(registry))

    def reachable(self, registry: str) -> bool:
        """Whether any upstream of the registry may be tried now (not backed off, breaker closed)."""
        now = self._clock()
        return any(self._available(u, now) is None for u in self._upstreams_for(registry))

    async def request(
        self,
        registry: str,
        repository: str,
        suffix: str,
        *,
        not_found: type[RegistryError],
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        """Send ``METHOD /v2/<repository>/<suffix>`` to the first upstream that has it.

        Returns an open 2xx (or 206) response. Raises ``not_found`` when every upstream said 404/401/403,
        TooManyRequests when rate limits were all that stood in the way, Unavailable otherwise.
        """
        upstreams = self._upstreams_for(registry)
        if not upstreams:
            raise Unavailable(f"no upstream configured for {registry}")
        attempt = _Attempt()
        for up in upstreams:
            now = self._clock()
            blocked = self._available(up, now)
            if blocked is not None:
                attempt.notes.append(blocked)
                health = self._health[up.url]
                if health.backoff_until > now:
                    attempt.retry_after = min(attempt.retry_after or 1e9, health.backoff_until - now)
                continue
            resp = await self._try(up, registry, method, repository, suffix, headers or {}, attempt)
            if resp is not None:
                return resp
        if attempt.not_found and attempt.retry_after is None:
            raise not_found(detail={"upstreams": attempt.notes})
        if attempt.retry_after is not None:
            raise TooManyRequests(int(attempt.retry_after + 0.999), "upstream rate limit; retry later")
        raise Unavailable("no upstream could be reached", detail={"upstreams": attempt.notes})

    def _available(self, up: UpstreamConfig, now: float) -> str | None:
        health = self._health.setdefault(up.url, _Health())
        if health.backoff_until > now:
            return f"{up.name}: rate limited for {health.backoff_until - now:.0f}s"
        if health.down_until > now:
            return f"{up.name}: unreachable, retrying in {health.down_until - now:.0f}s"
        return None

    async def _try(
        self,
        up: UpstreamConfig,
        registry: str,
        method: str,
        repository: str,
        suffix: str,
        headers: Mapping[str, str],
        attempt: _Attempt,
    ) -> UpstreamResponse | None:
        remote_repo = f"{up.path_prefix}/{repository}" if up.path_prefix else repository
        url = f"{up.url}/v2/{remote_repo}/{suffix}"
        if up.mirror:  # a chained mirror learns the registry the way containerd tells us: ?ns=
            url += ("&" if "?" in suffix else "?") + urlencode({"ns": registry})
        scope = pull_scope(remote_repo)
        health = self._health[up.url]
        started = self._clock()
        try:
            resp = await self._send_authenticated(up, method, url, dict(headers), scope)
        except (aiohttp.ClientError, TimeoutError, OSError, AuthFailed) as exc:
            metrics.UPSTREAM_REQUESTS.labels(up.name, method, "error").inc()
            health.failures += 1
            if not isinstance(exc, AuthFailed):
                pause = min(_BREAKER_MAX, _BREAKER_MIN * 2 ** (health.failures - 1))
                health.down_until = self._clock() + pause
            attempt.notes.append(f"{up.name}: {type(exc).__name__}: {exc}"[:300])
            log.warning("upstream %s failed for %s %s: %r", up.name, method, url, exc)
            return None
        metrics.UPSTREAM_LATENCY.labels(up.name).observe(self._clock() - started)
        metrics.UPSTREAM_REQUESTS.labels(up.name, method, str(resp.status)).inc()
        health.failures = 0
        if resp.status in (200, 206):
            return UpstreamResponse(up, resp)
        resp.release()
        attempt.notes.append(f"{up.name}: HTTP {resp.status}")
        if resp.status == 429:
            retry = _retry_after(resp.headers.get("Retry-After"))
            health.backoff_until = self._clock() + retry
            attempt.retry_after = min(attempt.retry_after or 1e9, retry)
            log.warning("upstream %s rate limited us; backing off %.0fs", up.name, retry)
        elif resp.status in (401, 403, 404):
            # Docker Hub answers 401 for a repository that does not exist: to clients that is a 404.
            attempt.not_found = True
        return None

    async def _send_authenticated(
        self, up: UpstreamConfig, method: str, url: str, headers: dict[str, str], scope: str
    ) -> aiohttp.ClientResponse:
        auth = self._tokens.header_for(up.url, scope, up.credentials)
        if auth:
            headers["Authorization"] = auth
        resp = await self._send(up, method, url, headers)
        if resp.status != 401:
            return resp
        challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
        if challenge is None or "Authorization" in headers and challenge.scheme == "basic":
            return resp
        if challenge.scheme == "bearer":
            resp.release()
            headers["Authorization"] = await self._tokens.fetch(
                self.session, up.url, challenge, scope, up.credentials, self._ssl_for(up), self._timeout(up)
            )
        elif challenge.scheme == "basic" and up.credentials:
            resp.release()
            self._tokens.basic_upstreams.add(up.url)
            headers["Authorization"] = basic_header(up.credentials)
        else:
            return resp
        return await self._send(up, method, url, headers)

    async def _send(self, up: UpstreamConfig, method: str, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        origin = URL(url).origin()
        current = URL(url, encoded=True)
        for _ in range(_MAX_REDIRECTS + 1):
            resp = await self.session.request(
                method,
                current,
                headers=headers,
                allow_redirects=False,
                ssl=self._ssl_for(up),
                timeout=self._timeout(up),
            )
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location:
                return resp
            resp.release()
            current = current.join(URL(location, encoded=True))
            if current.origin() != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if resp.status == 303:
                method = "GET"
        raise aiohttp.TooManyRedirects(resp.request_info, resp.history)

    def _timeout(self, up: UpstreamConfig) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, connect=up.connect_timeout, sock_connect=up.connect_timeout, sock_read=up.idle_timeout
        )

    def _ssl_for(self, up: UpstreamConfig) -> ssl.SSLContext | bool:
        if up.url not in self._ssl:
            ctx: ssl.SSLContext | bool = True
            if up.insecure:
                ctx = False
            elif up.ca_file:
                ctx = ssl.create_default_context(cafile=up.ca_file)
            self._ssl[up.url] = ctx
        return self._ssl[up.url]


def _retry_after(value: str | None) -> float:
    try:
        return max(1.0, min(3600.0, float(value))) if value else 30.0
    except ValueError:
        return 30.0
