"""Images per second of every way to get the reference CNN's feature maps, at batch sizes 1, 32 and 256.

Approaches (all return every output: the two conv feature maps and the probabilities, as numpy):
    seed_predict      keras.Model.predict on a sub-model, as the seed script did
    keras_call        the same Keras sub-model called directly, outputs converted to numpy
    runtime_tf        runtime.load(..., backend="tf").run
    runtime_onnx      runtime.load(..., backend="onnx").run
    bare_ort          onnxruntime.InferenceSession.run on the same model.onnx, same SessionOptions as the runtime
    bare_ort_default  the same with onnxruntime's default SessionOptions
    *_gpu             the same on the GPU (skipped with the reason when there is none)
plus the float32 numpy matmul peak of this machine, measured in the same run, and an interleaved
A/B measurement of the onnx runtime wrapper against a bare session at batch 1 (group "onnx wrapper A/B"):
sequential benchmarks a second apart differ by more than the wrapper's few microseconds on a noisy
machine, alternating short blocks of calls does not.

Each benchmark records extra_info: approach, device, images per call, model FLOPs per image;
`python -m benchmarks.report` turns the saved JSON into a table, the ratios and a chart.
"""
from __future__ import annotations

import numpy as np
import pytest

from runtime.backends import gpu_missing

CPU_APPROACHES = ["seed_predict", "keras_call", "runtime_tf", "runtime_onnx", "bare_ort", "bare_ort_default"]
GPU_APPROACHES = ["keras_call_gpu", "runtime_tf_gpu", "runtime_onnx_gpu", "bare_ort_gpu"]
SLOW = {"seed_predict": 12}  # rounds for approaches too slow for pytest-benchmark's calibration (~80 ms per call)
MATMUL_SIZES = [512, 1024, 2048]
AB_BLOCKS, AB_CALLS = 300, 10  # A/B: rounds of one block of AB_CALLS calls per variant, variants alternating
BATCH_SIZES = [1, 32, 256]  # benchmarks/conftest.py provides 256 real digits


def _keras_on(device: str, fn):
    import tensorflow as tf

    def run(x):
        with tf.device(device):
            return fn(x)

    return run


@pytest.fixture(scope="module")
def approaches(bench_artifacts, request):
    """approach name -> callable(float32 batch) -> outputs; sessions and models created once, lazily."""
    import onnxruntime as ort

    import runtime
    from runtime.backends.onnx import CUDA_DEFAULTS, preload_cuda_libraries, session_options

    def keras_models():  # (seed, features); only the Keras approaches need TensorFlow, so asked for then
        return request.getfixturevalue("keras_models")

    onnx_path = str(bench_artifacts / "model.onnx")
    opened = []

    def load(backend, device):
        model = runtime.load(bench_artifacts, backend=backend, device=device)
        opened.append(model)
        return model.run

    def bare(options, providers):
        if providers[0] != "CPUExecutionProvider":
            preload_cuda_libraries()  # what runtime.load does for device="gpu"
        session = ort.InferenceSession(onnx_path, options, providers=providers)
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if wanted not in session.get_providers()[:1]:
            pytest.fail(f"onnxruntime took {session.get_providers()}, not {wanted}")
        return lambda x: session.run(None, {"image": x})

    def seed_predict(seed):
        return lambda x: seed.predict(x, verbose=0)

    def keras_call(features):
        return lambda x: {k: v.numpy() for k, v in features(x, training=False).items()}

    # float32 on the GPU as the runtime runs it (use_tf32=0), so the wrapper overhead compares like with like
    cuda = [("CUDAExecutionProvider", CUDA_DEFAULTS), "CPUExecutionProvider"]
    factories = {
        "seed_predict": lambda: _keras_on("/CPU:0", seed_predict(keras_models()[0])),
        "keras_call": lambda: _keras_on("/CPU:0", keras_call(keras_models()[1])),
        "runtime_tf": lambda: load("tf", "cpu"),
        "runtime_onnx": lambda: load("onnx", "cpu"),
        "bare_ort": lambda: bare(session_options(), ["CPUExecutionProvider"]),
        "bare_ort_default": lambda: bare(None, ["CPUExecutionProvider"]),
        "keras_call_gpu": lambda: _keras_on("/GPU:0", keras_call(keras_models()[1])),
        "runtime_tf_gpu": lambda: load("tf", "gpu"),
        "runtime_onnx_gpu": lambda: load("onnx", "gpu"),
        "bare_ort_gpu": lambda: bare(session_options(), cuda),
    }
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = factories[name]()
        return cache[name]

    yield get
    for model in opened:
        model.close()


@pytest.mark.parametrize("batch", BATCH_SIZES)
@pytest.mark.parametrize("approach", CPU_APPROACHES + GPU_APPROACHES)
def test_backend(benchmark, approach, batch, approaches, bench_images, model_flops):
    device = "gpu" if approach.endswith("_gpu") else "cpu"
    if device == "gpu":
        reason = gpu_missing("onnx" if "ort" in approach or "onnx" in approach else "tf")
        if reason:
            pytest.skip(reason)
    fn = approaches(approach)
    x = np.ascontiguousarray(bench_images[:batch])
    out = fn(x)  # warm-up: first calls trace graphs and allocate
    assert len(out) == 3 and all(len(v) == batch for v in (out.values() if isinstance(out, dict) else out))
    benchmark.group = f"batch {batch}"
    benchmark.extra_info.update(approach=approach, device=device, images=batch, model_flops_per_image=model_flops)
    if approach in SLOW:
        benchmark.pedantic(fn, args=(x,), rounds=SLOW[approach], iterations=1, warmup_rounds=1)
    else:
        benchmark(fn, x)


@pytest.mark.parametrize("n", MATMUL_SIZES)
def test_matmul_peak(benchmark, n):
    """float32 numpy matmul n x n: this machine's practical compute peak (the report takes the best size)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    benchmark.group = "matmul peak"
    benchmark.extra_info.update(approach="numpy_matmul_f32", n=n, flops=2 * n**3)
    benchmark(np.matmul, a, b)


def test_onnx_wrapper_overhead_ab(benchmark, approaches, bench_artifacts, bench_images):
    """Batch 1, all outputs: runtime wrapper vs bare session (same SessionOptions), alternating blocks of calls.

    float: both get the same preprocessed float32 image (the wrapper validates it: shape, NaN/inf, range).
    float_unchecked: the same with runtime.load(..., check_values=False): shape and dtype checks only.
    pixels: both start from uint8 pixels; the bare caller scales them itself, the wrapper via the manifest.
    """
    import time

    import runtime
    from runtime import read_manifest
    from runtime.data.mnist import mnist_test_set

    runtime_onnx, bare_ort = approaches("runtime_onnx"), approaches("bare_ort")
    unchecked = runtime.load(bench_artifacts, check_values=False)
    x = np.ascontiguousarray(bench_images[:1])
    pixels = mnist_test_set()[0][:1]
    scale = np.float32(read_manifest(bench_artifacts).input.preprocessing.scale)
    variants = {
        "runtime_float": lambda: runtime_onnx(x),
        "bare_float": lambda: bare_ort(x),
        "runtime_float_unchecked": lambda: unchecked.run(x),
        "runtime_pixels": lambda: runtime_onnx(pixels),
        "bare_pixels": lambda: bare_ort(pixels[..., None] * scale),
    }
    np.testing.assert_allclose(variants["runtime_pixels"]()["conv2d_1"], variants["bare_pixels"]()[2], atol=1e-6)
    seconds = {name: [] for name in variants}
    clock = time.perf_counter

    def block():
        for name, fn in variants.items():
            start = clock()
            for _ in range(AB_CALLS):
                fn()
            seconds[name].append((clock() - start) / AB_CALLS)

    block()  # warm-up
    for times in seconds.values():
        times.clear()
    benchmark.group = "onnx wrapper A/B (batch 1)"
    benchmark.pedantic(block, rounds=AB_BLOCKS, iterations=1)
    unchecked.close()
    stats = {name: {"median_s": float(np.median(t)), "min_s": float(np.min(t)), "blocks": len(t)}
             for name, t in seconds.items()}
    benchmark.extra_info.update(kind="ab_overhead", images=1, calls_per_block=AB_CALLS, variants=stats)
