"""Operator endpoints under ``/admin/`` (status, preheat)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from mirror.server.app import Services


def register(app: web.Application, services: Services) -> None:
    """Add the admin routes (none yet)."""
