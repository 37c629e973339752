"""What a handler tells the access log and metrics about a request: its route group and where bytes came from."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass(slots=True)
class RequestInfo:
    route: str = "other"
    source: str = "-"  # cache | upstream | peer
    upstream: str = "-"
    outcome: str = ""  # "client-gone" or "aborted" when a body was cut short


INFO = web.RequestKey("shoal_request_info", RequestInfo)
