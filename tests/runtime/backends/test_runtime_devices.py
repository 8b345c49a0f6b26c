"""Devices and backends: "gpu" never falls back silently, "auto" takes a GPU when one works, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import runtime
import runtime.api
import runtime.backends
from runtime.artifacts.manifest import read_manifest
from runtime.backends import gpu_missing
from runtime.compare import GPU_TOLERANCE, compare_outputs, failures
from runtime.errors import BackendError, DeviceError


@pytest.fixture
def no_gpu(backend) -> None:
    reason = gpu_missing(backend)
    if reason is None:
        pytest.skip(f"a GPU is available to {backend}: the no-GPU behaviour cannot be observed here")


@pytest.fixture
def gpu(backend) -> None:
    reason = gpu_missing(backend)
    if reason:
        pytest.skip(f"no GPU for backend {backend!r}: {reason}")


# --- without a GPU --------------------------------------------------------------------------------

def test_gpu_asked_for_but_absent_is_an_error_naming_what_is_available(reference_artifacts, backend, no_gpu):
    with pytest.raises(DeviceError,
                       match=rf"device 'gpu' asked for backend '{backend}', but it has only \['cpu'\] here"):
        runtime.load(reference_artifacts, backend=backend, device="gpu")


@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")  # onnxruntime's, before our check
def test_runners_refuse_a_gpu_they_cannot_use(reference_artifacts, backend, no_gpu):
    # Below load()'s device check: onnxruntime would fall back to CPU silently; the runner must not.
    cls = runtime.backends.runner_class(backend)
    with pytest.raises(DeviceError, match="device 'gpu' asked for, but .*available"):
        cls(reference_artifacts, read_manifest(reference_artifacts), "gpu")


def test_auto_is_cpu_without_a_gpu(reference_artifacts, backend, no_gpu, digits):
    with runtime.load(reference_artifacts, backend=backend, device="auto") as model:
        assert model.device == "cpu"
        assert model.providers == (["CPUExecutionProvider"] if backend == "onnx" else ["/CPU:0"])
        assert model.run(digits[0][:1])["dense_1"].shape == (1, 10)


# --- with a GPU -----------------------------------------------------------------------------------

def test_gpu_results_match_cpu_results(reference_artifacts, backend, gpu, loaded, digits):
    x = digits[0]
    with runtime.load(reference_artifacts, backend=backend, device="gpu") as model:
        assert model.device == "gpu"
        assert model.providers[0] == ("CUDAExecutionProvider" if backend == "onnx" else "/GPU:0")
        got = model.run(x)
        streamed = {n: np.concatenate([p[n] for p in model.stream(x, batch_size=16)]) for n in got}
    cpu = loaded(reference_artifacts, backend).run(x)
    assert not failures(compare_outputs(got, cpu), GPU_TOLERANCE)
    assert not failures(compare_outputs(streamed, cpu), GPU_TOLERANCE)


def test_auto_takes_the_gpu(reference_artifacts, backend, gpu):
    with runtime.load(reference_artifacts, backend=backend, device="auto") as model:
        assert model.device == "gpu"


# --- names and fallbacks --------------------------------------------------------------------------

def test_unknown_device_is_an_error_before_anything_is_read(tmp_path):
    with pytest.raises(DeviceError, match=r"unknown device 'tpu'; expected one of \['cpu', 'gpu', 'auto'\]"):
        runtime.load(tmp_path / "nowhere", device="tpu")


def test_unknown_backend_lists_the_known_ones(reference_artifacts):
    with pytest.raises(BackendError, match=r"unknown backend 'torch'; available: \['onnx', 'tf'\]"):
        runtime.load(reference_artifacts, backend="torch")


def test_a_backend_whose_package_is_missing(reference_artifacts, monkeypatch):
    fake = runtime.backends.Backend("featuremaps_no_such_module", "Runner", "no_such_pkg")
    monkeypatch.setitem(runtime.backends.BACKENDS, "fake", fake)
    assert "fake" not in runtime.installed_backends()
    assert {"onnx", "tf"} <= set(runtime.installed_backends())
    with pytest.raises(BackendError, match="backend 'fake' needs the 'no_such_pkg' package, which is not importable"):
        runtime.load(reference_artifacts, backend="fake")


def test_resolve_device():
    assert runtime.resolve_device("auto", "onnx", ["cpu"]) == "cpu"
    assert runtime.resolve_device("auto", "onnx", ["cpu", "gpu"]) == "gpu"
    assert runtime.resolve_device("cpu", "onnx", ["cpu", "gpu"]) == "cpu"
    with pytest.raises(DeviceError, match=r"has only \['cpu'\]"):
        runtime.resolve_device("gpu", "tf", ["cpu"])


class FlakyGpuRunner:
    """Lists a GPU that then fails to start: what onnxruntime-gpu does on a machine without a driver."""

    name = "flaky"
    files = ("model.onnx",)
    made: list[str] = []

    def __init__(self, folder, manifest, device):
        if device == "gpu":
            raise DeviceError("the GPU listed would not start")
        self.device, self.providers = device, ["cpu"]
        FlakyGpuRunner.made.append(device)

    @staticmethod
    def devices():
        return ["cpu", "gpu"]

    def close(self):
        pass


def test_auto_falls_back_to_cpu_only_when_a_listed_gpu_fails_to_start(reference_artifacts, monkeypatch):
    monkeypatch.setattr(runtime.api, "runner_class", lambda backend: FlakyGpuRunner)
    assert runtime.load(reference_artifacts, backend="flaky", device="auto").device == "cpu"
    with pytest.raises(DeviceError, match="would not start"):
        runtime.load(reference_artifacts, backend="flaky", device="gpu")


# --- backend options ------------------------------------------------------------------------------

def test_onnx_session_options_are_overridable(reference_artifacts, loaded, digits):
    import onnxruntime as ort

    x = digits[0][:4]
    reference = loaded(reference_artifacts, "onnx").run(x)
    custom = ort.SessionOptions()
    custom.intra_op_num_threads = 1
    for options in ({"threads": 1}, {"optimization": "disable"}, {"optimization": "basic"},
                    {"session_options": custom}):
        with runtime.load(reference_artifacts, **options) as model:
            assert not failures(compare_outputs(model.run(x), reference)), options
    with pytest.raises(BackendError, match=r"unknown onnxruntime optimization 'fast'; expected one of \['disable'"):
        runtime.load(reference_artifacts, optimization="fast")


def test_bad_backend_options_are_backend_errors(reference_artifacts, backend):
    with pytest.raises(BackendError, match=rf"unknown option\(s\) \['bogus'\] for backend '{backend}'; accepted: "):
        runtime.load(reference_artifacts, backend=backend, bogus=1)
    for threads in ("2", 0, 1.5, True):
        with pytest.raises(BackendError, match="threads must be a positive integer"):
            runtime.load(reference_artifacts, backend=backend, threads=threads)


def test_onnx_session_options_exclude_threads_and_optimization(reference_artifacts):
    import onnxruntime as ort

    with pytest.raises(BackendError, match="either session_options or threads/optimization"):
        runtime.load(reference_artifacts, session_options=ort.SessionOptions(), threads=1)
