"""nginx serving a directory with sendfile on 127.0.0.1: the static-file ceiling for benchmarks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.lab.process import LabError, LoopbackServer, probe_http


class Nginx(LoopbackServer):
    name = "nginx"

    def __init__(self, workdir: Path, root_dir: Path, port: int | None = None, workers: int = 2) -> None:
        super().__init__(workdir, port)
        self.root_dir = Path(root_dir).resolve()
        self.workers = workers
        self.config_path = self.workdir / "nginx.conf"

    def prepare(self) -> None:
        if shutil.which("nginx") is None:
            raise LabError("nginx is not installed")
        temp = self.workdir / "temp"
        temp.mkdir(exist_ok=True)
        # As root nginx would drop its workers to "nobody", who cannot read a private tmp dir.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        temp_paths = "".join(
            f"  {kind}_temp_path {temp / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.config_path.write_text(
            f"""{user}daemon off;
master_process on;
worker_processes {self.workers};
pid {self.workdir / "nginx.pid"};
error_log {self.workdir / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  default_type application/octet-stream;
{temp_paths}  server {{
    listen {self.host};
    root {self.root_dir};
  }}
}}
"""
        )

    def command(self) -> list[str]:
        return [
            "nginx",
            "-p",
            f"{self.workdir}/",
            "-e",
            str(self.workdir / "error.log"),
            "-c",
            str(self.config_path),
        ]

    def is_ready(self) -> bool:
        return probe_http(self.host, "/", method="HEAD") is not None

    def log_text(self) -> str:
        """nginx's own error log (its stdout/stderr log is usually empty)."""
        error_log = self.workdir / "error.log"
        return super().log_text() + (error_log.read_text("utf-8", "replace") if error_log.exists() else "")
