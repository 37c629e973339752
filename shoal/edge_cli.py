"""``shoal`` subcommands for edge: registered into the main parser by ``shoal.cli``."""

from __future__ import annotations

import argparse
from typing import Any

from mirror.server.run import MirrorPlugin


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this group's subcommands (none yet)."""


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    """Add this group's ``shoal serve`` flags (none yet)."""


def serve_plugins(args: argparse.Namespace, config: dict[str, Any]) -> list[MirrorPlugin]:
    """Plugins for ``shoal serve`` built from its args and the raw config file (none yet)."""
    return []
