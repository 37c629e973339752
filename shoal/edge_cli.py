"""``shoal`` subcommands for edge: registered into the main parser by ``shoal.cli``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this group's subcommands (none yet)."""
