"""A private containerd (no CRI) on its own socket, and ``ctr`` pointed at it.

Root, state and socket live under the work dir, so it runs beside any system containerd. Pulls
should use the ``native`` snapshotter (``ctr images pull --snapshotter native``): it copies
instead of mounting, so nothing is left mounted when the daemon is killed. :meth:`stop` still
unmounts anything found under the work dir.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.lab.process import LabError, LabProcess, run

# sun_path is 108 bytes; leave room for containerd's ".ttrpc" suffix.
_MAX_SOCKET_PATH = 96


class Containerd(LabProcess):
    name = "containerd"

    def __init__(self, workdir: Path, namespace: str = "shoal-lab", *, ready_timeout: float = 30.0) -> None:
        super().__init__(workdir, ready_timeout=ready_timeout)
        self.namespace = namespace
        self.root = self.workdir / "root"
        self.state = self.workdir / "state"
        self.config_path = self.workdir / "config.toml"
        socket = self.workdir / "containerd.sock"
        self._socket_dir: str | None = None
        if len(str(socket)) > _MAX_SOCKET_PATH:
            self._socket_dir = tempfile.mkdtemp(prefix="ctrd-")
            socket = Path(self._socket_dir) / "sock"
        self.socket = socket

    def prepare(self) -> None:
        for tool in ("containerd", "ctr"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is not installed")
        self.config_path.write_text(
            f"""version = 2
root = "{self.root}"
state = "{self.state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.socket}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.workdir / "opt"}"
"""
        )

    def command(self) -> list[str]:
        return ["containerd", "--config", str(self.config_path)]

    def is_ready(self) -> bool:
        if not self.socket.exists():
            return False
        result = run(["ctr", "-a", str(self.socket), "version"], timeout=5, check=False)
        return result.returncode == 0

    def ctr(self, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """``ctr -a SOCKET -n NAMESPACE ARGS``; raises CommandError on failure if ``check``."""
        return run(["ctr", "-a", str(self.socket), "-n", self.namespace, *args], timeout=timeout, check=check)

    def kill(self) -> None:
        super().kill()
        self._unmount_leftovers()
        if self._socket_dir is not None and not self.running:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _unmount_leftovers(self) -> None:
        try:
            with open("/proc/self/mountinfo") as f:
                points = [line.split()[4] for line in f]
        except OSError:
            return
        prefix = str(self.workdir.resolve()) + "/"
        for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
            run(["umount", "-l", point], timeout=10, check=False)
