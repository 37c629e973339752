"""A real CNCF distribution registry (``docker-registry``) on 127.0.0.1, with its access log parsed.

Used as the upstream that Shoal mirrors, and (with ``proxy_remote_url``) as the pull-through
cache Shoal is benchmarked against. The registry prints one combined-format access line per
request once the response is complete::

    127.0.0.1 - - [22/Nov/2026:17:12:25 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"

Tests count those lines to assert how often the upstream was really asked for something.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench.lab.process import LabError, LoopbackServer, probe_http

_ACCESS_LINE = re.compile(
    r'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<target>\S+) [^"]*" (?P<status>\d{3}) (?P<size>\d+|-)'
)


@dataclass(frozen=True)
class AccessEntry:
    """One request the registry answered. ``path`` excludes the query string."""

    method: str
    path: str
    status: int
    size: int
    query: str = ""


def parse_access_log(text: str) -> list[AccessEntry]:
    """The access entries in a registry log, skipping its structured (``time=...``) lines."""
    entries = []
    for line in text.splitlines():
        match = _ACCESS_LINE.match(line)
        if match is None:
            continue
        path, _, query = match["target"].partition("?")
        size = match["size"]
        entries.append(AccessEntry(match["method"], path, int(match["status"]), 0 if size == "-" else int(size), query))
    return entries


class Registry(LoopbackServer):
    """``docker-registry serve`` with filesystem storage under ``workdir/data``.

    With ``proxy_remote_url`` it runs as a pull-through cache of that registry. ``htpasswd`` is
    the path of an existing htpasswd (bcrypt) file to require basic auth.
    """

    name = "registry"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        proxy_remote_url: str | None = None,
        htpasswd: Path | None = None,
        *,
        ready_timeout: float = 20.0,
    ) -> None:
        super().__init__(workdir, port, ready_timeout=ready_timeout)
        self.proxy_remote_url = proxy_remote_url
        self.htpasswd = htpasswd
        self.config_path = self.workdir / "config.yml"
        self.data_dir = self.workdir / "data"

    def prepare(self) -> None:
        if shutil.which("docker-registry") is None:
            raise LabError("docker-registry is not installed")
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.data_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": "shoal-lab-secret"},
        }
        if self.proxy_remote_url:
            config["proxy"] = {"remoteurl": self.proxy_remote_url}
        if self.htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "shoal-lab", "path": str(self.htpasswd)}}
        # JSON is a subset of YAML, so no YAML library is needed.
        self.config_path.write_text(json.dumps(config, indent=2))

    def command(self) -> list[str]:
        return ["docker-registry", "serve", str(self.config_path)]

    def is_ready(self) -> bool:
        return probe_http(self.host, "/v2/") in (200, 401)

    # -- access log ---------------------------------------------------------------------------
    def mark(self) -> int:
        """A position in the log; pass it as ``since`` to see only later requests."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def requests(self, since: int = 0) -> list[AccessEntry]:
        """Every request logged after ``since`` (a :meth:`mark`), oldest first."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(since)
                data = log.read()
        except FileNotFoundError:
            return []
        return parse_access_log(data.decode("utf-8", "replace"))

    def count(self, method: str, path_regex: str, since: int = 0) -> int:
        """How many ``method`` requests had a path (without query) fully matching ``path_regex``."""
        pattern = re.compile(path_regex)
        return sum(1 for e in self.requests(since) if e.method == method.upper() and pattern.fullmatch(e.path))

    def wait_quiet(self, idle: float = 0.3, timeout: float = 10.0) -> None:
        """Wait until the log has not grown for ``idle`` seconds, so in-flight requests are logged."""
        deadline = time.monotonic() + timeout
        last = self.mark()
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            size = self.mark()
            if size != last:
                last, quiet_since = size, time.monotonic()
            elif time.monotonic() - quiet_since >= idle:
                return
