"""Fixtures of the benchmarks: the reference model, its artifacts and real digits, built once per session.

    pytest benchmarks/ --benchmark-only --benchmark-autosave     # measure (about 2 minutes on 2 cores)
    pytest benchmarks/ --benchmark-disable -q                     # CI: run every case once, no timing

Artifacts: exported from models/mnist_cnn.keras into a temporary folder, unless
FEATUREMAPS_BENCH_ARTIFACTS names an existing artifacts folder to reuse.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

# The environment (MNIST_NPZ, log levels, Agg) is set in the top-level conftest.py.

MAX_BATCH = 256


@pytest.fixture(scope="session")
def reference_model_file() -> Path:
    from export.reference import REFERENCE_MODEL

    return REFERENCE_MODEL


@pytest.fixture(scope="session")
def bench_artifacts(tmp_path_factory, reference_model_file) -> Path:
    """Artifacts of the reference CNN: $FEATUREMAPS_BENCH_ARTIFACTS, else exported once per session."""
    given = os.environ.get("FEATUREMAPS_BENCH_ARTIFACTS")
    if given:
        from runtime import read_manifest

        read_manifest(given)  # checks schema and sha256s
        return Path(given)
    from export.pipeline import export_model

    out = tmp_path_factory.mktemp("bench") / "artifacts"
    export_model(reference_model_file, out)
    return out


@pytest.fixture(scope="session")
def model_flops(bench_artifacts) -> int:
    """FLOPs per image of the benchmarked model, counted from its ONNX graph (see benchmarks/flops.py)."""
    from benchmarks.flops import onnx_flops

    return onnx_flops(bench_artifacts / "model.onnx").total


@pytest.fixture(scope="session")
def bench_images(bench_artifacts) -> np.ndarray:
    """256 real MNIST test digits as the model input (float32 [256,28,28,1], preprocessed)."""
    from runtime import read_manifest
    from runtime.data.mnist import mnist_test_set
    from runtime.preprocess import to_batch

    x, _, _ = mnist_test_set()
    x = np.resize(x[:MAX_BATCH], (MAX_BATCH, *x.shape[1:]))  # repeats the shipped digits if too few
    return to_batch(x, read_manifest(bench_artifacts).input)


@pytest.fixture(scope="session")
def keras_models(reference_model_file, bench_artifacts):
    """(seed sub-model with list outputs, as the seed script built it; feature model with dict outputs)."""
    import keras

    from runtime import read_manifest

    model = keras.models.load_model(reference_model_file, compile=False)
    conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    seed = keras.Model(model.inputs, [layer.output for layer in conv] + model.outputs)
    manifest = read_manifest(bench_artifacts)
    features = keras.Model(model.inputs[0], {o.name: model.get_layer(o.layer).output for o in manifest.outputs})
    return seed, features


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the numbers depend on beside the CPU: core count here, library versions, GPUs."""
    import numpy
    import onnxruntime

    from runtime.jobs.pipeline import usable_cores

    info = {
        "cpus_usable": usable_cores(),
        "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "platform": platform.platform(),
    }
    try:
        import keras
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["keras"] = keras.__version__
    except ImportError:
        pass
    info["gpu_names"] = _gpu_names()
    machine_info["featuremaps"] = info


def _gpu_names() -> list[str]:
    """The NVIDIA GPUs, as nvidia-smi names them: an [onnx]-only deployment has no TensorFlow to ask."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []
