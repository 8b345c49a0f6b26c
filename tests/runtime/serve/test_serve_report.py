"""benchmarks/serve_report.py: the serving section of the benchmark report, from bench_serve's extra_info."""
from __future__ import annotations

from benchmarks.report import markdown
from benchmarks.serve_report import serve_section

LOAD = {"kind": "serve_load", "clients": 32, "images_per_request": 1, "images_per_s": 900.0,
        "inprocess_images_per_s": 1000.0, "inprocess_batch": 12, "ratio": 0.9, "ratio_target": 0.6,
        "mean_batch": 11.6, "p50_s": 0.03, "p99_s": 0.2, "errors": 0, "rss_start_bytes": 100 * 2 ** 20,
        "rss_end_bytes": 101 * 2 ** 20, "rss_max_bytes": 102 * 2 ** 20, "server_cpu_s_per_image": 5e-4,
        "client_cpu_s_per_image": 6e-4, "inprocess_cpu_s_per_image": 2e-4, "load_average": 3.5}
SINGLE = {"kind": "serve_single", "calls": 600, "served_p50_s": 1.5e-3, "served_p99_s": 4e-3,
          "inprocess_p50_s": 2e-4, "overhead_s": 1.3e-3, "overhead_best_block_s": 8e-4, "overhead_target_s": 1e-3,
          "load_average": 3.5}


def test_section_shows_targets():
    lines = serve_section({"benchmarks": [{"extra_info": LOAD}, {"extra_info": SINGLE}]})
    text = "\n".join(lines)
    assert "| 32 x 1 | 900 | 1,000 (batch 12) | **0.90x** (met) | 11.6 | 30.00 ms / 200.00 ms | 0 |" in text
    assert "100.0 -> 101.0 (102.0) MB" in text and "500 us / 600 us / 200 us" in text
    assert "overhead **1.30 ms** (target <= 1.00 ms: NOT met; 0.80 ms between the quietest blocks" in text
    slow = {**LOAD, "ratio": 0.5}
    assert "**0.50x** (NOT met)" in "\n".join(serve_section({"benchmarks": [{"extra_info": slow}]}))


def test_absent_without_serve_results_and_part_of_the_report(tmp_path):
    assert serve_section({"benchmarks": [{"extra_info": {"approach": "bare_ort"}}]}) == []
    report = markdown({"benchmarks": [{"extra_info": LOAD, "group": "serve: load", "name": "test_serve_load",
                                       "stats": {"median": 10.0, "mean": 10.0, "rounds": 1}}]}, tmp_path / "x.json")
    assert "## Serving: Open Inference Protocol" in report and "Other benchmarks" not in report


def test_command_writes_the_section_alone(tmp_path, capsys):
    import json

    from benchmarks.serve_report import main
    from runtime.cli.process import run_cli

    source = tmp_path / "run.json"
    source.write_text(json.dumps({"datetime": "2026-11-26T17:00:00", "benchmarks": [{"extra_info": LOAD}],
                                  "machine_info": {"cpu": {"brand_raw": "Test CPU"}}}))
    assert run_cli(main, [str(source), "--out", str(tmp_path / "out" / "serve.md")]) == 0
    text = (tmp_path / "out" / "serve.md").read_text()
    assert text.startswith("# Serving benchmarks") and "Test CPU" in text and "**0.90x** (met)" in text
    assert run_cli(main, [str(source)]) == 0  # without --write or --out: printed, nothing written
    assert ("**0.90x** (met)" in capsys.readouterr().out
            and sorted(p.name for p in tmp_path.iterdir()) == ["out", "run.json"])
    source.write_text(json.dumps({"benchmarks": []}))
    assert run_cli(main, [str(source), "--out", str(tmp_path / "other.md")]) == 2
    assert "holds no serving results" in capsys.readouterr().err and not (tmp_path / "other.md").exists()
