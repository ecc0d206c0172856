"""The benchmark framework behind `make bench`, and the FQDN matching benchmark in it.

These check that the benchmarks run and record correctly, never how fast anything is.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from benchmarks.record import Record, make_record
from benchmarks.report import load_records, render_markdown, write_reports
from benchmarks.runner import check_record, discover, main
from benchmarks.timing import percentile, time_batches


def test_every_benchmark_module_is_discovered_with_a_quick_mode() -> None:
    found = discover()
    assert "fqdn_match" in found
    for name, run in found.items():
        assert "quick" in inspect.signature(run).parameters, name


def test_the_check_mode_runs_the_fqdn_benchmark_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--check", "--docs", str(tmp_path), "fqdn_match"]) == 0
    assert list(tmp_path.iterdir()) == []
    out = capsys.readouterr().out
    assert "lookup_hit_median_us" in out


def test_an_unknown_benchmark_name_is_refused_with_the_available_ones() -> None:
    with pytest.raises(SystemExit, match=r"available: .*fqdn_match"):
        main(["--check", "no_such_benchmark"])


def test_the_fqdn_benchmark_reports_lookups_compile_time_and_the_naive_ratio() -> None:
    run = discover()["fqdn_match"]
    record = run(quick=True)
    assert check_record(record, "fqdn_match") == []
    for key in (
        "lookup_hit_median_us",
        "lookup_hit_p99_us",
        "lookup_miss_median_us",
        "lookup_miss_p99_us",
        "naive_hit_median_us",
        "speedup_hit_x",
        "compile_median_ms",
    ):
        assert record.figures[key] > 0, key
    assert record.machine["nproc"] >= 1
    assert "python -m benchmarks fqdn_match" in record.command


def test_writing_reports_keeps_other_benchmarks_and_regenerates_the_markdown(
    tmp_path: Path,
) -> None:
    other = make_record("dns_proxy_qps", {"qps_count": 12000}, command="make bench")
    write_reports([other], tmp_path)
    first = make_record("fqdn_match", {"lookup_hit_median_us": 1.5}, command="make bench")
    write_reports([first], tmp_path)
    second = make_record("fqdn_match", {"lookup_hit_median_us": 1.25}, command="make bench")
    merged = write_reports([second], tmp_path)

    stored = json.loads((tmp_path / "benchmarks.json").read_text(encoding="utf-8"))
    assert sorted(stored) == ["dns_proxy_qps", "fqdn_match"]
    assert stored["fqdn_match"]["figures"] == {"lookup_hit_median_us": 1.25}
    assert load_records(tmp_path / "benchmarks.json") == merged
    markdown = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert markdown == render_markdown(merged)
    assert "## dns_proxy_qps" in markdown
    assert "| `lookup_hit_median_us` | 1.25 |" in markdown
    assert "| `qps_count` | 12,000 |" in markdown


def test_a_record_with_a_bad_figure_or_the_wrong_name_is_reported() -> None:
    record = Record(
        name="x", figures={"a_us": float("nan")}, command="", date="", machine={}, notes=""
    )
    problems = check_record(record, "y")
    assert any("named 'x'" in problem for problem in problems)
    assert any("'a_us'" in problem for problem in problems)
    assert any("command" in problem for problem in problems)


def test_percentile_is_nearest_rank() -> None:
    values = [float(value) for value in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7


def test_time_batches_gives_one_per_operation_sample_per_repeat() -> None:
    calls: list[int] = []
    distribution = time_batches(lambda: calls.append(1), operations=4, repeats=6, warmup=2)
    assert len(calls) == 8
    assert len(distribution.samples_ns) == 6
    assert len(distribution.cpu_samples_ns) == 6
    assert distribution.cpu_median_us >= 0
    assert distribution.min_us <= distribution.median_us <= distribution.p99_us
