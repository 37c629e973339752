"""Swarm measurement: N Shoal nodes pull one big blob at once through a throttled upstream.

    python -m bench.p2p_swarm --nodes 4 --size-mib 256 --upstream-mbps 80

Runs everything on 127.0.0.1: a docker-registry holding one image with a single layer of about `--size-mib` MiB,
a `bench.throttle` proxy limiting it to `--upstream-mbps` megabytes (10^6 bytes) per second, a `shoal tracker`
and the nodes. First one node pulls the blob alone (the baseline), then `--nodes` fresh nodes pull it at the
same moment. Reports the bytes that crossed the throttled link and every node's completion time.

Also home of the lab pieces the P2P integration tests share: `TrackerServer`, `start_nodes`, `fetch_blob`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import http.client
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.lab import Registry, ShoalServer, make_image, push
from bench.lab.process import LoopbackServer, probe_http
from bench.lab.shoal import shoal_environment
from bench.throttle import ThrottleProxy

MiB = 1 << 20
REPO = "library/swarm"


class TrackerServer(LoopbackServer):
    """``python -m shoal tracker --listen 127.0.0.1:PORT ARGS``; ready when ``/healthz`` answers 200."""

    name = "tracker"

    def __init__(self, workdir: Path, args: list[str] | None = None, port: int | None = None) -> None:
        super().__init__(workdir, port, ready_timeout=20.0, stop_timeout=5.0)
        self.args = list(args or [])

    def command(self) -> list[str]:
        return [sys.executable, "-m", "shoal", "tracker", "--listen", self.host, *self.args]

    def environment(self) -> dict[str, str]:
        return shoal_environment()

    def is_ready(self) -> bool:
        return probe_http(self.host, "/healthz") == 200


def start_nodes(root: Path, count: int, args: list[str], prefix: str = "node") -> list[ShoalServer]:
    """Start `count` fresh nodes (empty caches) in parallel; each gets `args` plus its own `--node-id`."""
    servers = [ShoalServer(root / f"{prefix}{i}", [*args, "--node-id", f"{prefix}{i}"]) for i in range(count)]
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(server.start) for server in servers]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        for server in servers:
            server.stop()
        raise errors[0]  # type: ignore[misc]
    return servers


@dataclass(frozen=True)
class Fetched:
    status: int
    size: int
    digest: str
    seconds: float
    error: str = ""


def fetch_blob(host: str, repo: str, digest: str, timeout: float = 120.0) -> Fetched:
    """GET a blob through a mirror at `host`, hashing the body; never raises for connection trouble."""
    address, _, port = host.rpartition(":")
    started = time.monotonic()
    conn = http.client.HTTPConnection(address, int(port), timeout=timeout)
    sha, size, status = hashlib.sha256(), 0, 0
    try:
        conn.request("GET", f"/v2/{repo}/blobs/{digest}")
        response = conn.getresponse()
        status = response.status
        while chunk := response.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    except (OSError, http.client.HTTPException) as exc:
        return Fetched(status, size, "", time.monotonic() - started, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
    return Fetched(status, size, "sha256:" + sha.hexdigest(), time.monotonic() - started)


def fetch_all(hosts: list[str], repo: str, digest: str, timeout: float = 300.0) -> list[Fetched]:
    """The same blob through every mirror in `hosts`, all at once."""
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        return list(pool.map(lambda host: fetch_blob(host, repo, digest, timeout), hosts))


def curl_blob(host: str, repo: str, digest: str, timeout: float = 300.0) -> Fetched:
    """`fetch_blob` with `curl | sha256sum` in their own processes, so the measuring process stays idle and a
    many-node run on a small machine measures the nodes, not the client."""
    started = time.monotonic()
    script = 'set -o pipefail; curl -sS -f --max-time "$3" "http://$1/v2/$2/blobs/$4" | sha256sum'
    try:
        done = subprocess.run(
            ["bash", "-c", script, "curl-blob", host, repo, str(int(timeout)), digest],
            capture_output=True,
            timeout=timeout + 10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Fetched(0, 0, "", time.monotonic() - started, "timed out")
    seconds = time.monotonic() - started
    if done.returncode != 0:
        return Fetched(0, 0, "", seconds, done.stderr.decode(errors="replace").strip())
    return Fetched(200, -1, "sha256:" + done.stdout.split()[0].decode(), seconds)


# -- the measurement ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    label: str
    nodes: int
    upstream_bytes: int
    times: list[float]
    ok: bool
    cpu_busy: float
    """Share of all CPUs busy during the pulls (0..1): near 1 means the machine, not the link, set the pace."""
    node_cpu: float
    """CPU seconds the Shoal nodes used, start-up included."""


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (zeros where it does not exist)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used, from /proc (0 where unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _round(
    root: Path, label: str, count: int, proxy: ThrottleProxy, digest: str, tracker_args: list[str] | None
) -> Round:
    """`count` fresh nodes pull the blob at once; with `tracker_args` None they do not know each other."""
    with contextlib.ExitStack() as stack:
        args = ["--upstream", f"docker.io={proxy.url}"]
        if tracker_args is not None:
            tracker = stack.enter_context(TrackerServer(root / "tracker", tracker_args))
            args += ["--tracker", tracker.url, "--heartbeat", "2"]
        nodes = start_nodes(root, count, args)
        try:
            proxy.reset_counts()
            busy0, total0 = _cpu_ticks()
            with concurrent.futures.ThreadPoolExecutor(count) as pool:
                results = list(pool.map(lambda node: curl_blob(node.host, REPO, digest), nodes))
            busy1, total1 = _cpu_ticks()
            node_cpu = sum(_process_cpu(node.pid) for node in nodes)
        finally:
            for node in nodes:
                node.stop()
    ok = all(r.status == 200 and r.digest == digest for r in results)
    for node, r in zip(nodes, results, strict=True):
        if r.status != 200 or r.digest != digest:
            print(f"  {node.host}: status {r.status} {r.error} -- log tail:\n{node.log_tail(20)}", file=sys.stderr)
    busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
    result = Round(label, count, proxy.down_bytes, [r.seconds for r in results], ok, busy, node_cpu)
    print(f"  {label}: last done after {max(result.times):.2f} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, action="append", help="nodes pulling at once (repeatable; 4)")
    parser.add_argument("--size-mib", type=int, default=256, help="layer size in MiB (256)")
    parser.add_argument("--upstream-mbps", type=float, default=80.0, help="upstream limit in MB/s, 10^6 B/s (80)")
    parser.add_argument("--piece-size", help="tracker piece size (default adapts: 4 MiB up to 256 MiB)")
    parser.add_argument("--workdir", type=Path, help="work here and keep the logs (default: a temp dir, removed)")
    parser.add_argument("--no-p2p", action="store_true", help="also time the same pulls without a tracker")
    args = parser.parse_args(argv)
    counts = args.nodes or [4]
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="p2p-swarm-")))
        else:
            root = args.workdir
            root.mkdir(parents=True, exist_ok=True)
        print(f"building a {args.size_mib} MiB layer ...", flush=True)
        # The lab draws a layer's payload with one randbytes() call, which tops out just under 256 MiB; tar and
        # gzip headers put the blob back at about the size asked for.
        payload = min(args.size_mib * MiB, 256 * MiB - 64 * 1024)
        info = make_image(root / "image", "v1", [payload], seed=f"swarm-{args.size_mib}")
        layer = max(info.layers, key=lambda d: d.size)
        tracker_args = ["--node-ttl", "10"] + (["--piece-size", args.piece_size] if args.piece_size else [])
        with Registry(root / "registry") as registry:
            push(info.layout_dir, "v1", f"{registry.host}/{REPO}:v1", timeout=600)
            with ThrottleProxy("127.0.0.1", registry.port, rate=args.upstream_mbps * 1e6) as proxy:
                print(f"upstream limited to {args.upstream_mbps} MB/s; blob {layer.size} bytes", flush=True)
                rounds = [_round(root / "alone", "1 (alone)", 1, proxy, layer.digest, tracker_args)]
                for count in counts:
                    rounds.append(_round(root / f"p2p{count}", str(count), count, proxy, layer.digest, tracker_args))
                    if args.no_p2p:
                        label = f"{count} (no P2P)"
                        rounds.append(_round(root / f"plain{count}", label, count, proxy, layer.digest, None))
        _report(rounds, layer.size, args.upstream_mbps)
        return 0 if all(r.ok for r in rounds) else 1


def _report(rounds: list[Round], size: int, mbps: float) -> None:
    alone = rounds[0].times[0]
    print()
    print(f"blob {size / MiB:.1f} MiB, upstream {mbps:g} MB/s (ideal single fetch {size / (mbps * 1e6):.2f} s)")
    print(
        "| nodes | upstream bytes | × blob | first done | median | last done | last ÷ alone | CPU busy | node CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rounds:
        times = sorted(r.times)
        median = times[len(times) // 2]
        print(
            f"| {r.label} | {r.upstream_bytes:,} | {r.upstream_bytes / size:.3f} | {times[0]:.2f} s"
            f" | {median:.2f} s | {times[-1]:.2f} s | {times[-1] / alone:.2f} | {r.cpu_busy:.0%} | {r.node_cpu:.1f} |"
            + ("" if r.ok else " **FAILED**")
        )
    for r in rounds[1:]:
        print(f"{r.label}, each: " + ", ".join(f"{t:.2f}" for t in r.times) + " s")


if __name__ == "__main__":
    sys.exit(main())
