"""benchmarks/gpu.py without a GPU: a one-line error, and its markdown from a recorded result."""
from __future__ import annotations

import pytest

from benchmarks import gpu
from runtime.backends import gpu_missing
from runtime.cli.process import run_cli

SPEED = {"bare onnxruntime session, CUDA (outputs to numpy)": {"1": {"median_s": 2e-4}, "256": {"median_s": 2e-3}},
         "bare session, IOBinding: input from host, outputs kept on GPU": {"1": {"median_s": 1e-4},
                                                                           "256": {"median_s": 2e-4}}}
DIFF = {"outputs": {"probs": {"max_rel": 7.7e-7, "mean_rel": 7e-9}, "conv": {"max_rel": 0.0, "mean_rel": 0.0}},
        "argmax_differs": 0}
RESULT = {"machine": {"gpu": "NVIDIA H100 80GB HBM3", "cpu": "Xeon", "cpu_cores": 16, "onnxruntime": "1.31.1",
                      "cuda": "CUDA 13.0 build", "python": "3.12.3", "numpy": "2.5.2", "when": "2026-11-26"},
          "images": 2000, "source": "MNIST test set", "speed": SPEED,
          "differences": {"reference": {name: DIFF for name in gpu.TF32}}}


def test_markdown_of_a_recorded_result():
    md = gpu.markdown(RESULT)
    assert "GPU: NVIDIA H100 80GB HBM3; CPU: Xeon, 16 cores; onnxruntime-gpu 1.31.1 (CUDA 13.0 build)" in md
    assert "| bare onnxruntime session, CUDA (outputs to numpy) | 5,000 | 128,000 |" in md
    assert "batch 1: 50%, batch 256: 90%." in md  # copy share = 1 - kept on GPU / to numpy
    assert "| reference | probs | 7.7e-07 (7e-09) | 7.7e-07 (7e-09) |" in md
    assert "| reference | predicted class | argmax differs on 0 | argmax differs on 0 |" in md


def test_measure_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    if gpu_missing("onnx") is None:
        pytest.skip("onnxruntime has CUDA here: no error to observe")
    assert run_cli(gpu.main, ["measure", str(tmp_path), "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: measure needs a GPU: the installed onnxruntime") and err.count("\n") == 1
    assert "featuremaps[gpu]" in err and list(tmp_path.iterdir()) == []
