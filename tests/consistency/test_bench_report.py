"""benchmarks/report.py on a small, valid pytest-benchmark JSON: the table, the batch-1 targets, the chart."""
from __future__ import annotations

import json
import os

import pytest

from benchmarks import report, report_json

FLOPS = 5_056_000
# (approach, batch) -> median seconds per call; other stats derived from it.
MEDIANS = {
    ("seed_predict", 1): 0.080, ("seed_predict", 32): 0.100, ("seed_predict", 256): 0.200,
    ("keras_call", 1): 0.004, ("keras_call", 32): 0.010, ("keras_call", 256): 0.050,
    ("runtime_tf", 1): 0.001, ("runtime_tf", 32): 0.004, ("runtime_tf", 256): 0.030,
    ("runtime_onnx", 1): 105e-6, ("runtime_onnx", 32): 0.002, ("runtime_onnx", 256): 0.016,
    ("bare_ort", 1): 100e-6, ("bare_ort", 32): 0.002, ("bare_ort", 256): 0.016,
    ("bare_ort_default", 1): 125e-6, ("bare_ort_default", 32): 0.0021, ("bare_ort_default", 256): 0.0165,
}


def bench(name, group, median, extra, rounds=10):
    return {"group": group, "name": name, "fullname": f"benchmarks/x.py::{name}", "params": None, "param": None,
            "extra_info": extra, "options": {},
            "stats": {"min": median * 0.9, "max": median * 2, "mean": median * 1.1, "stddev": 0, "rounds": rounds,
                      "median": median, "iqr": 0, "q1": median, "q3": median, "iqr_outliers": 0,
                      "stddev_outliers": 0, "outliers": "0;0", "ld15iqr": median, "hd15iqr": median,
                      "ops": 1 / (median * 1.1), "total": median * rounds, "iterations": 1}}


def synthetic() -> dict:
    benchmarks = [bench(f"test_backend[{a}-{n}]", f"batch {n}", t,
                        {"approach": a, "device": "cpu", "images": n, "model_flops_per_image": FLOPS})
                  for (a, n), t in MEDIANS.items()]
    n = 1024
    benchmarks.append(bench(f"test_matmul_peak[{n}]", "matmul peak", 2 * n**3 / 200e9 / 0.9,
                            {"approach": "numpy_matmul_f32", "n": n, "flops": 2 * n**3}))  # best round: 200 GFLOP/s
    variants = {"runtime_float": 108e-6, "bare_float": 100e-6, "runtime_pixels": 104e-6, "bare_pixels": 100e-6}
    benchmarks.append(bench("test_onnx_wrapper_overhead_ab", "onnx wrapper A/B (batch 1)", 4e-3,
                            {"kind": "ab_overhead", "images": 1, "calls_per_block": 10,
                             "variants": {k: {"median_s": v, "min_s": v, "blocks": 300} for k, v in variants.items()}}))
    benchmarks.append(bench("test_seed_subplot_loop", "grid-png-conv2d", 0.3, {"maps_from": "keras model"}))
    benchmarks.append(bench("test_viz_save_grid", "grid-png-conv2d", 0.006, {"maps_from": "keras model"}))
    return {"machine_info": {"node": "ci", "machine": "x86_64", "python_version": "3.11.7", "system": "Linux",
                             "release": "6", "cpu": {"brand_raw": "Test CPU", "count": 2},
                             "featuremaps": {"cpus_usable": 2, "onnxruntime": "1.32.0", "numpy": "2.4.0", "gpus": []}},
            "commit_info": {}, "benchmarks": benchmarks, "datetime": "2026-01-02T03:04:05.000000+00:00",
            "version": "5.3.1"}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit" / "0001_run.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(synthetic()))
    return path


def test_report_writes_table_ratios_and_chart(saved, tmp_path, capsys):
    out = tmp_path / "out"
    assert report.main([str(saved), "--out", str(out)]) == 0
    md = (out / "benchmarks.md").read_text()
    assert capsys.readouterr().out.startswith(md.rstrip("\n"))
    assert "Test CPU, 2 cores" in md and "GPU: none" in md
    assert "| runtime, onnx backend | 9,524 | 16,000 | 16,000 |" in md  # 1/105us, 32/2ms, 256/16ms
    assert "| seed: keras Model.predict on a sub-model | 12.5 | 320 | 1,280 |" in md
    assert "**+5.0%**" in md and "target <= 10%: met" in md  # 105 vs 100 us
    assert "default SessionOptions: **-16.0%**" in md  # 105 vs 125 us
    assert "same float32 input: **+8.0%**" in md and "both from uint8 pixels: **+4.0%**" in md
    assert "**762x faster**" in md and "target >= 300x: met" in md  # 80 ms / 105 us
    assert "**80x faster**" in md and "target >= 20x: met" in md  # 80 ms / 1 ms
    assert "5.056 MFLOP per image" in md and "Machine peak: 200.0 GFLOP/s" in md
    # batch 32: 16,000 images/s (runtime_onnx and bare_ort tie; the first listed wins) x 5.056 MFLOP = 80.9 GFLOP/s
    assert "| 32 | runtime_onnx | 16,000 | 80.90 | 40.4% |" in md
    assert "| grid-png-conv2d | test_seed_subplot_loop | 300.00 ms |" in md and "50.0x" in md
    png = (out / "benchmarks.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_targets_missed_are_said_so(tmp_path):
    data = synthetic()
    for b in data["benchmarks"]:
        if b["extra_info"].get("approach") == "runtime_onnx" and b["extra_info"]["images"] == 1:
            b["stats"]["median"] = 0.0004  # 4x the bare session; only 200x faster than the seed
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    _, _, text = report.write_report(path, tmp_path / "out")
    assert "**+300.0%**" in text and "target <= 10%: NOT met" in text
    assert "**200x faster**" in text and "target >= 300x: NOT met" in text


def test_newest_json_is_found_recursively(saved, tmp_path):
    older = saved.parent / "0000_old.json"
    older.write_text("{}")
    os.utime(older, (1, 1))
    assert report_json.find_latest(tmp_path / ".benchmarks") == saved


def test_missing_or_foreign_json_is_a_one_line_error(tmp_path, capsys):
    from runtime.cli.process import run_cli

    assert run_cli(report.main, [str(tmp_path / "none.json"), "--out", str(tmp_path)]) == 2
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"not": "benchmarks"}')
    assert run_cli(report.main, [str(foreign), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def set_stats(data: dict, approach: str, **stats) -> None:
    for b in data["benchmarks"]:
        if b["extra_info"].get("approach") == approach and b["extra_info"]["images"] == 1:
            b["stats"].update(stats)


def test_noise_is_flagged_not_reported_as_a_result(tmp_path):
    data = synthetic()
    # Median says the wrapper is faster than the bare session, best rounds say slower: noise.
    set_stats(data, "runtime_onnx", median=90e-6, min=95e-6)
    set_stats(data, "bare_ort", median=100e-6, min=90e-6)
    # Interquartile ranges that overlap: the 5% difference of the medians is within the spread.
    set_stats(data, "keras_call", q1=3.5e-3, q3=4.5e-3)
    set_stats(data, "runtime_tf", median=0.0038, min=0.0034, q1=3.4e-3, q3=4.4e-3)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    text = report.markdown(report_json.load(path), path)
    line = next(ln for ln in text.splitlines() if "runtime's SessionOptions: **-10.0%**" in ln)
    assert "**not meaningful**: median and best rounds disagree (-10.0% vs +5.6%)" in line
    assert "target <= 10%: not decided" in line and "met" not in line
    quiet = next(ln for ln in text.splitlines() if "default SessionOptions" in ln)
    assert "not meaningful" not in quiet and "target" not in quiet
    assert report.noise(1.05, 1.05, report.Result("a", 1, "cpu", 4.2e-3, 0, 4e-3, 9, None, 3.5e-3, 4.5e-3),
                        report.Result("b", 1, "cpu", 4e-3, 0, 3.8e-3, 9, None, 3.4e-3, 4.4e-3)).startswith(
        "the interquartile ranges overlap")
    assert "issue" not in text.lower()


def test_default_output_is_a_new_folder_never_the_tracked_results(saved, tmp_path, monkeypatch, capsys):
    tracked = report_json.RESULTS / "benchmarks.md"
    before = tracked.read_bytes()
    monkeypatch.chdir(tmp_path)
    assert report.main([str(saved)]) == 0
    assert (tmp_path / "benchmark-report-20260102-030405" / "benchmarks.md").is_file()
    assert "wrote benchmark-report-20260102-030405/benchmarks.md" in capsys.readouterr().out
    assert tracked.read_bytes() == before
