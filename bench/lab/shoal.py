"""The Shoal server under test, run as a real process: ``python -m shoal serve``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.lab.process import LoopbackServer, probe_http, run

_REPO_ROOT = Path(__file__).resolve().parents[2]


def shoal_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment Shoal runs in: the repository root on ``PYTHONPATH``, unbuffered output."""
    path = os.environ.get("PYTHONPATH")
    pythonpath = f"{_REPO_ROOT}{os.pathsep}{path}" if path else str(_REPO_ROOT)
    return {**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1", **(extra or {})}


def shoal_cli(*args: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a one-shot ``python -m shoal ARGS`` command (e.g. ``containerd-config``)."""
    return run([sys.executable, "-m", "shoal", *args], timeout=timeout, env=shoal_environment(), check=check)


class ShoalServer(LoopbackServer):
    """``python -m shoal serve --listen 127.0.0.1:PORT --cache-dir WORKDIR/cache ARGS``.

    Ready when ``GET /healthz`` answers 200. The repository root is put on ``PYTHONPATH`` so an
    uninstalled checkout runs too.
    """

    name = "shoal"

    def __init__(
        self,
        workdir: Path,
        args: list[str] | None = None,
        port: int | None = None,
        *,
        env: dict[str, str] | None = None,
        ready_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(workdir, port, ready_timeout=ready_timeout, stop_timeout=stop_timeout)
        self.args = list(args or [])
        self.cache_dir = self.workdir / "cache"
        self.extra_env = dict(env or {})

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "shoal", "serve",
            "--listen", self.host,
            "--cache-dir", str(self.cache_dir),
            *self.args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        return shoal_environment(self.extra_env)

    def is_ready(self) -> bool:
        return probe_http(self.host, "/healthz") == 200
