"""Lifecycle shared by the lab's processes: start, poll for readiness, stop, and keep a log file.

Every lab server (registry, containerd, nginx, Shoal) is a real program on 127.0.0.1. They all
need the same few things done carefully, so they live here once: the output goes to a log file in
the work dir, readiness is polled against a deadline, a process that never comes up raises an
error carrying the tail of its log, and stopping is SIGTERM, a bounded wait, then SIGKILL to the
whole process group so no worker or shim outlives a test.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from bench.lab.ports import free_port


class LabError(RuntimeError):
    """A lab process or command did not behave."""


class NotReadyError(LabError):
    """A process exited or missed its readiness deadline."""


class CommandError(LabError):
    """A one-shot command failed or timed out."""

    def __init__(self, message: str, result: subprocess.CompletedProcess[bytes] | None = None) -> None:
        super().__init__(message)
        self.result = result


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file, or a note that it is missing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def probe_http(url_host: str, path: str = "/", method: str = "GET", timeout: float = 1.0) -> int | None:
    """Status of one plain-HTTP request to ``host:port``, or None if it could not be made."""
    host, _, port = url_host.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _describe(what: str, cmd: Sequence[str], out: bytes | None, err: bytes | None) -> str:
    def text(data: bytes | None) -> str:
        return (data or b"").decode("utf-8", "replace")[-2000:]

    return f"{what}: {' '.join(cmd)}\nstdout: {text(out)}\nstderr: {text(err)}"


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion with a timeout; raise CommandError (with its output) on failure."""
    try:
        result = subprocess.run(
            list(cmd),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(_describe(f"timed out after {timeout}s", cmd, exc.stdout, exc.stderr)) from exc
    if check and result.returncode != 0:
        raise CommandError(_describe(f"exit {result.returncode}", cmd, result.stdout, result.stderr), result)
    return result


class LabProcess:
    """A long-running program with its output in ``workdir/<name>.log``.

    Subclasses write their configuration in :meth:`prepare`, give the command line in
    :meth:`command` and say when they are up in :meth:`is_ready`.
    """

    name = "process"

    def __init__(self, workdir: Path, *, ready_timeout: float = 20.0, stop_timeout: float = 10.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- to override ------------------------------------------------------------------------
    def prepare(self) -> None:
        """Write configuration files before each start."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    def is_ready(self) -> bool:
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> Self:
        if self.running:
            raise LabError(f"{self.name} is already running (pid {self.pid})")
        self._reap()
        self.prepare()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=self.environment(),
            start_new_session=True,
        )
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._reap()
                raise NotReadyError(
                    f"{self.name} exited with code {code} before it was ready; log {self.log_path}:\n"
                    + tail(self.log_path)
                )
            if self.is_ready():
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise NotReadyError(
                    f"{self.name} not ready after {self.ready_timeout}s; log {self.log_path}:\n" + tail(self.log_path)
                )
            time.sleep(0.05)

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, wait up to ``timeout`` (default ``stop_timeout``), then SIGKILL the group."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.stop_timeout if timeout is None else timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the process and everything in its process group, and reap it."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired as exc:  # pragma: no cover - a process stuck in the kernel
            raise LabError(f"{self.name} (pid {proc.pid}) survived SIGKILL") from exc
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if self._proc is None and self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LoopbackServer(LabProcess):
    """A lab process listening on 127.0.0.1 at ``port`` (a free one unless given)."""

    def __init__(self, workdir: Path, port: int | None = None, **timeouts: float) -> None:
        super().__init__(workdir, **timeouts)
        self.port = port or free_port()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"
