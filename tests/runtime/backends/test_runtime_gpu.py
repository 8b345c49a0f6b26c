"""The onnx backend's GPU path: errors that say why and how to fix it; on a GPU, CUDA runs it or it is an error.

The GPU tests skip where onnxruntime has no CUDA provider; see README "GPU" for the command that runs them.
"""
from __future__ import annotations

import pytest

import runtime
from runtime.backends import gpu_missing
from runtime.compare import GPU_TOLERANCE, TF32_TOLERANCE, compare_outputs, failures
from runtime.errors import BackendError, DeviceError


@pytest.fixture
def cuda():
    if reason := gpu_missing("onnx"):
        pytest.skip(f"no GPU for onnxruntime: {reason}")


def test_no_gpu_error_says_why_and_how_to_fix_it(reference_artifacts):
    if gpu_missing("onnx") is None:
        pytest.skip("onnxruntime has CUDA here: no error to observe")
    with pytest.raises(DeviceError) as error:
        runtime.load(reference_artifacts, device="gpu")
    message = str(error.value)
    assert "has only ['cpu'] here: the installed onnxruntime" in message
    assert "is a build without CUDAExecutionProvider (available providers: [" in message
    assert "install `featuremaps[gpu]` (onnxruntime-gpu) in place of `featuremaps[onnx]`" in message
    assert "NVIDIA driver (`nvidia-smi` must list the GPU)" in message and "cuDNN" in message


def test_cuda_options_must_be_a_dict(reference_artifacts):
    with pytest.raises(BackendError, match=r"cuda_options must be a dict of CUDAExecutionProvider options.*got 'tf32'"):
        runtime.load(reference_artifacts, cuda_options="tf32")


def test_cuda_options_are_unused_on_the_cpu(reference_artifacts, digits):
    # device="auto" with CUDA options must still work where there is no GPU.
    with runtime.load(reference_artifacts, device="cpu", cuda_options={"use_tf32": 0}) as model:
        assert model.providers == ["CPUExecutionProvider"]
        assert model.run(digits[0][:2])["dense_1"].shape == (2, 10)


# --- on a GPU -------------------------------------------------------------------------------------

def test_a_cuda_provider_that_cannot_start_is_an_error_not_a_cpu_session(reference_artifacts, cuda, capsys):
    # onnxruntime's own behaviour here is to print "EP Error" and quietly run on the CPU.
    with pytest.raises(DeviceError, match=r"device 'gpu' asked for, but onnxruntime could not start "
                                          r"CUDAExecutionProvider: .+; to use a GPU, install"):
        runtime.load(reference_artifacts, device="gpu", cuda_options={"device_id": 4096})
    assert "Falling back" not in capsys.readouterr().out


def test_auto_takes_the_cpu_when_cuda_cannot_start(reference_artifacts, cuda):
    with runtime.load(reference_artifacts, device="auto", cuda_options={"device_id": 4096}) as model:
        assert model.device == "cpu" and model.providers == ["CPUExecutionProvider"]


@pytest.mark.parametrize("options,tolerance",
                         [({}, GPU_TOLERANCE), ({"use_tf32": 0}, GPU_TOLERANCE), ({"use_tf32": 1}, TF32_TOLERANCE)],
                         ids=["default", "fp32", "tensorfloat32"])
def test_tensorfloat32_off_by_default_and_on_when_asked(reference_artifacts, cuda, loaded, digits, options, tolerance):
    x = digits[0]
    with runtime.load(reference_artifacts, device="gpu", cuda_options=options) as model:
        assert model.providers[0] == "CUDAExecutionProvider"
        got = model.run(x)
    diffs = compare_outputs(got, loaded(reference_artifacts, "onnx").run(x))
    assert not failures(diffs, tolerance)
    # TF32 rounds the operands to a 10-bit mantissa: visibly larger errors than float32 (measured 1e-3 vs 1e-6).
    assert (max(d.max_rel for d in diffs.values()) > 1e-5) == (("use_tf32", 1) in options.items())
