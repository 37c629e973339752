"""The plan's workload names, the terminal tables and the JSON layout."""

import json
from pathlib import Path

import pytest

from bench.plan import FULL, QUICK
from bench.report import fmt_ratio, fmt_value, main_table, summary, variants_table, write_json
from bench.results import CNCF, NGINX, SHOAL, Report, Row


def test_plan_names_match_the_floors_vocabulary() -> None:
    assert [w[0] for w in QUICK.blob_workloads()] == ["blob-1m-c16", "blob-8m-c16"]
    assert [w[0] for w in QUICK.manifest_workloads()] == ["manifest-digest-c16", "manifest-tag-c16"]
    assert len(FULL.blob_workloads()) == 9
    assert FULL.only(("cold",)).groups == ("cold",)
    with pytest.raises(ValueError, match="unknown group"):
        FULL.only(("bogus",))


def test_number_formats() -> None:
    assert fmt_value(None) == "-"
    assert fmt_value(1234.5) == "1,234"
    assert fmt_value(12.34) == "12.3"
    assert fmt_value(0.01234) == "0.0123"
    assert fmt_ratio(None) == "-"
    assert fmt_ratio(0.456) == "0.46"


def _report() -> Report:
    report = Report(machine={"nproc": 2})
    row = report.add(Row("blob-1m-c16", "blob", "req/s", True))
    row.set(SHOAL, 1500.0, p50_ms=9.0, p99_ms=20.0, mb_per_s=1570.0)
    row.set("shoal:w2", 2000.0, failures=3, p50_ms=7.0, p99_ms=15.0, mb_per_s=2090.0)
    row.set(CNCF, 300.0, p50_ms=50.0, p99_ms=200.0, mb_per_s=314.0)
    row.set(NGINX, 2000.0, p50_ms=6.0, p99_ms=12.0, mb_per_s=2090.0)
    return report


def test_main_table_shows_values_and_ratios() -> None:
    lines = main_table(_report()).splitlines()
    assert lines[0].split()[:2] == ["workload", "unit"]
    assert lines[2].split() == ["blob-1m-c16", "req/s", "1,500", "300", "2,000", "5.00", "0.75"]


def test_variants_table_marks_failures() -> None:
    text = variants_table(_report())
    assert "shoal:w2" in text.splitlines()[0]
    assert "2,000! (1.00x nginx)" in text


def test_summary_and_json(tmp_path: Path) -> None:
    report = _report()
    assert "times better than the reference" in summary(report)
    path = tmp_path / "r.json"
    write_json(report, path)
    doc = json.loads(path.read_text())
    workload = doc["workloads"][0]
    assert workload["ratios"]["shoal"] == {"vs_cncf": 5.0, "vs_nginx": 0.75}
    assert workload["ratios"]["shoal:w2"]["vs_nginx"] == 1.0
    assert workload["details"]["nginx"]["p99_ms"] == 12.0
    assert doc["machine"] == {"nproc": 2}
