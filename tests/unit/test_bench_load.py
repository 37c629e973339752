"""wrk report parsing and command lines, and the fallback load generator's percentile."""

import pytest

from bench.load import LoadError, LoadResult, parse_wrk, wrk_command
from bench.loadgen import percentile

WRK_REPORT = """\
Running 3s test @ http://127.0.0.1:39985/v2/library/bench/blobs/sha256:abc
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    13.61ms    2.05ms  30.32ms   80.12%
    Req/Sec     1.18k   102.44     1.35k    76.00%
  Latency Distribution
     50%   13.40ms
     75%   14.32ms
     90%   15.73ms
     99%  850.00us
  3541 requests in 3.00s, 3.46GB read
Requests/sec:   1180.21
Transfer/sec:      1.15GB
"""

WRK_WITH_ERRORS = """\
Running 2s test @ http://127.0.0.1:1/x
  1 threads and 64 connections
  Latency Distribution
     50%    1.20s
     75%    1.50s
     90%    1.90s
     99%    2.00s
  40 requests in 2.01s, 2.50GB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:     19.90
Transfer/sec:      1.24GB
"""


def test_parse_wrk_report() -> None:
    result = parse_wrk(WRK_REPORT)
    assert result.requests == 3541
    assert result.duration_s == pytest.approx(3.0)
    assert result.bytes_read == int(3.46 * (1 << 30))
    assert result.req_per_s == pytest.approx(1180.21)
    assert result.p50_ms == pytest.approx(13.40)
    assert result.p99_ms == pytest.approx(0.85)  # microseconds are converted
    assert (result.errors, result.non_2xx) == (0, 0)
    assert result.mb_per_s == pytest.approx(3.46 * (1 << 30) / 3.0 / 1e6, rel=1e-6)


def test_parse_wrk_counts_socket_errors_and_bad_statuses() -> None:
    result = parse_wrk(WRK_WITH_ERRORS)
    assert result.errors == 6
    assert result.non_2xx == 7
    assert result.p50_ms == pytest.approx(1200.0)
    assert result.p99_ms == pytest.approx(2000.0)
    assert result.duration_s == pytest.approx(2.01)


def test_parse_wrk_without_totals_fails_loudly() -> None:
    with pytest.raises(LoadError, match="unrecognised wrk output"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_parse_wrk_without_latency_section() -> None:
    text = "  10 requests in 1.00s, 1.00KB read\nRequests/sec:     10.00\n"
    result = parse_wrk(text)
    assert result.p50_ms is None and result.p99_ms is None
    assert result.bytes_read == 1024


def test_wrk_command_caps_threads_and_passes_headers() -> None:
    cmd = wrk_command("http://h/x", connections=1, duration=2.5, threads=2, headers={"Accept": "a/b"})
    assert cmd[:4] == ["wrk", "-t1", "-c1", "-d2.5s"]
    assert "--latency" in cmd and "--timeout=30s" in cmd
    assert cmd[cmd.index("-H") + 1] == "Accept: a/b"
    assert cmd[-1] == "http://h/x"
    assert wrk_command("http://h/x", connections=16, duration=3)[1] == "-t1"


def test_load_result_json_has_throughput() -> None:
    result = LoadResult(10, 2.0, 4_000_000, 5.0, 1.0, 2.0)
    assert result.as_json()["mb_per_s"] == 2.0
    assert LoadResult(0, 0.0, 0, 0.0, None, None).mb_per_s == 0.0


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None
