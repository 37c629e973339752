"""Ratios, the floors file and the CI gate's verdicts, on hand-made reports."""

from pathlib import Path

import pytest

from bench.floors import Floors, FloorsError, check_floors, parse_floors
from bench.results import CNCF, NGINX, SHOAL, UPSTREAM, Report, Row, ratio

REPO_FLOORS = Path(__file__).resolve().parents[2] / "bench" / "floors.toml"


def test_ratio_is_times_better_whatever_the_unit() -> None:
    assert ratio(200.0, 100.0, higher_is_better=True) == 2.0  # req/s
    assert ratio(0.5, 1.0, higher_is_better=False) == 2.0  # seconds
    assert ratio(1, 9, higher_is_better=False) == 9.0  # upstream GETs
    assert ratio(None, 1.0, True) is None
    assert ratio(1.0, 0.0, True) is None
    assert ratio(0.0, 1.0, False) is None


def _report() -> Report:
    report = Report()
    blob = report.add(Row("blob-8m-c16", "blob", "req/s", True))
    blob.set(SHOAL, 180.0)
    blob.set(CNCF, 150.0)
    blob.set(NGINX, 250.0)
    cold = report.add(Row("cold-64m-total", "cold", "s", False))
    cold.set(SHOAL, 0.2)
    cold.set(UPSTREAM, 0.1)
    gets = report.add(Row("coalesce-64m-n8", "coalescing", "GETs", False))
    gets.set(SHOAL, 1, clients=8)
    gets.set(CNCF, 9, clients=8)
    return report


def test_row_ratios_only_for_present_references() -> None:
    report = _report()
    blob = report.row("blob-8m-c16")
    assert blob is not None
    assert blob.ratios() == {"vs_cncf": pytest.approx(1.2), "vs_nginx": pytest.approx(0.72)}
    cold = report.row("cold-64m-total")
    assert cold is not None and cold.ratios() == {"vs_upstream": pytest.approx(0.5)}


def test_parse_floors() -> None:
    floors = parse_floors(
        """
        [vs_nginx]
        "blob-8m-c16" = 0.5
        [vs_cncf]
        "blob-8m-c16" = 1
        [coalescing]
        max_upstream_gets = 1
        """
    )
    assert floors.ratios == {("vs_nginx", "blob-8m-c16"): 0.5, ("vs_cncf", "blob-8m-c16"): 1.0}
    assert floors.max_upstream_gets == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[vs_apache]\nx = 1\n", "unknown section"),
        ('[vs_nginx]\n"x" = -1\n', "positive number"),
        ('[vs_nginx]\n"x" = "high"\n', "positive number"),
        ("[coalescing]\nmax_upstream_gets = 0\n", ">= 1"),
        ("[coalescing]\nmax_gets = 1\n", "unknown key"),
        ("vs_nginx = 1\n", "must be a table"),
        ("[vs_nginx\n", "not valid TOML"),
    ],
)
def test_parse_floors_rejects_mistakes(text: str, message: str) -> None:
    with pytest.raises(FloorsError, match=message):
        parse_floors(text)


def test_check_floors_passes_and_skips_unmeasured() -> None:
    floors = Floors({("vs_nginx", "blob-8m-c16"): 0.7, ("vs_cncf", "manifest-tag-c16"): 30.0}, 1)
    violations, notes = check_floors(_report(), floors)
    assert violations == []
    assert notes == ["manifest-tag-c16 vs_cncf: not measured in this run"]


def test_check_floors_reports_one_line_per_violation() -> None:
    floors = Floors({("vs_nginx", "blob-8m-c16"): 0.9, ("vs_upstream", "cold-64m-total"): 0.4}, 1)
    violations, _ = check_floors(_report(), floors)
    assert violations == ["blob-8m-c16 vs_nginx: ratio 0.72 is below the floor 0.90"]


def test_check_floors_fails_broken_coalescing_even_without_ratio_floors() -> None:
    report = _report()
    row = report.row("coalesce-64m-n8")
    assert row is not None
    row.set(SHOAL, 3, clients=8)
    violations, _ = check_floors(report, Floors({}, 1))
    assert len(violations) == 1
    assert "3 upstream GETs for 8 concurrent cold clients (max 1)" in violations[0]


def test_check_floors_fails_on_shoal_errors_and_missing_ratios() -> None:
    report = _report()
    blob = report.row("blob-8m-c16")
    assert blob is not None
    blob.set(SHOAL, 100.0, failures=12)
    blob.set(NGINX, None, failures=1)
    violations, _ = check_floors(report, Floors({("vs_nginx", "blob-8m-c16"): 0.5}, None))
    assert "blob-8m-c16 vs_nginx: no ratio (a server failed or was not measured)" in violations
    assert "blob-8m-c16: 12 failed request(s) to shoal" in violations
    assert len(violations) == 2  # a failing reference is not Shoal's fault, but it leaves no ratio


def test_repository_floors_file_is_valid() -> None:
    floors = parse_floors(REPO_FLOORS.read_text())
    assert floors.max_upstream_gets == 1
    assert floors.min_sendfile_share == 0.9
    assert all(floor < 100 for floor in floors.ratios.values())
    assert ("vs_nginx", "blob-1m-c16") in floors.ratios  # measured by --quick, which CI runs
