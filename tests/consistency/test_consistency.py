"""Every output agrees between the original Keras model, the SavedModel (runtime tf backend) and the
ONNX graph (runtime onnx backend), on real digits; alone and in a batch; on GPU and CPU.

Tolerances live in runtime/compare.py (DEFAULT_TOLERANCE, GPU_TOLERANCE), nowhere else.
"""
from __future__ import annotations

import numpy as np
import pytest

from runtime.backends import gpu_missing
from runtime.compare import DEFAULT_TOLERANCE, GPU_TOLERANCE, Diff, compare_outputs, failures

MODELS = ["reference", "functional_bn", "rgb_small"]
# (actual, reference) pairs: each runtime backend against Keras, and the two backends against each other.
PAIRS = [("tf", "keras"), ("onnx", "keras"), ("onnx", "tf")]
BATCH_OF = 256
KERAS_STRIDE = 8  # Keras is called image by image on every 8th image of the batch (32 calls)


def error_table(diffs: dict[str, Diff], tol) -> str:
    """Markdown table of per-output errors against a tolerance (printed by a failing assertion)."""
    rows = ["| output | max abs | mean abs | max rel | mean rel | ok |", "|---|---|---|---|---|---|"]
    for name, d in diffs.items():
        rows.append(f"| {name} | {d.max_abs:.3g} | {d.mean_abs:.3g} | {d.max_rel:.3g} | {d.mean_rel:.3g} | "
                    f"{'yes' if d.ok(tol) else 'NO'} |")
    return "\n".join(rows)


@pytest.fixture(scope="module")
def runner():
    """(case, backend, device) -> callable batch -> dict of all outputs; runtime models loaded once."""
    import runtime

    loaded = {}

    def get(case, backend: str, device: str = "cpu"):
        if backend == "keras":
            return case.keras
        key = (case.name, backend, device)
        if key not in loaded:
            loaded[key] = runtime.load(case.artifacts, backend=backend, device=device)
        return loaded[key].run

    yield get
    for model in loaded.values():
        model.close()


@pytest.fixture(scope="module")
def agreement(consistency_case, runner):
    """name -> (diffs per (actual, reference) pair, argmax per backend, top-2 probability gaps), computed once."""
    cache = {}

    def get(name: str):
        if name not in cache:
            case = consistency_case(name)
            run = {b: runner(case, b) for b in ("keras", "tf", "onnx")}
            diffs = {pair: {} for pair in PAIRS}
            argmax = {b: [] for b in run}
            gaps = []
            for batch in case.batches():
                out = {b: fn(batch) for b, fn in run.items()}
                for actual, reference in PAIRS:
                    compare_outputs(out[actual], out[reference], diffs[(actual, reference)])
                for b in run:
                    argmax[b].append(out[b][case.probabilities].argmax(axis=1))
                top2 = np.sort(out["keras"][case.probabilities], axis=1)[:, -2:]
                gaps.append(top2[:, 1] - top2[:, 0])
            cache[name] = diffs, {b: np.concatenate(a) for b, a in argmax.items()}, np.concatenate(gaps)
        return cache[name]

    return get


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}-vs-{r}" for a, r in PAIRS])
@pytest.mark.parametrize("model", MODELS)
def test_outputs_agree(model, pair, consistency_case, agreement, consistency_report, record_property):
    case = consistency_case(model)
    diffs = agreement(model)[0][pair]
    tol = DEFAULT_TOLERANCE
    table = error_table(diffs, tol)
    title = f"{model}: {pair[0]} vs {pair[1]} on {len(case.images)} images ({case.source}); " \
            f"tolerance atol {tol.atol:g} + rtol {tol.rtol:g} * max|ref|"
    consistency_report(model, f"{pair[0]} vs {pair[1]}", f"{len(case.images)} images", diffs, tol)
    record_property("errors", {name: d.report(tol) for name, d in diffs.items()})
    print(f"{title}\n{table}")
    assert set(diffs) == set(case.manifest.output_names)
    assert not failures(diffs, tol), f"{title}\n{table}\n" + "\n".join(failures(diffs, tol))


@pytest.mark.parametrize("model", MODELS)
def test_argmax_agrees_on_every_image(model, consistency_case, agreement, record_property):
    case = consistency_case(model)
    _, argmax, gaps = agreement(model)
    record_property("images", len(case.images))
    record_property("smallest_top2_gap", float(gaps.min()))
    for backend in ("tf", "onnx"):
        differ = np.flatnonzero(argmax[backend] != argmax["keras"])
        assert differ.size == 0, (
            f"{model}: argmax of {case.probabilities!r} differs between {backend} and keras on "
            f"{differ.size} of {len(case.images)} images, e.g. image {differ[:10].tolist()} "
            f"(keras top-2 gaps there: {gaps[differ[:10]].tolist()})"
        )


BATCH_BACKENDS = [("keras", "cpu"), ("tf", "cpu"), ("onnx", "cpu"), ("tf", "gpu"), ("onnx", "gpu")]


@pytest.mark.parametrize("backend,device", BATCH_BACKENDS, ids=[f"{b}-{d}" for b, d in BATCH_BACKENDS])
@pytest.mark.parametrize("model", MODELS)
def test_image_alone_equals_image_in_batch(model, backend, device, consistency_case, runner, consistency_report):
    if device == "gpu" and (reason := gpu_missing(backend)):
        pytest.skip(reason)
    case = consistency_case(model)
    images = np.resize(case.images, (BATCH_OF, *case.images.shape[1:]))  # real digits, repeated if too few
    run = runner(case, backend, device)
    in_batch = run(images)
    stride = KERAS_STRIDE if backend == "keras" else 1
    diffs: dict[str, Diff] = {}
    for i in range(0, BATCH_OF, stride):
        compare_outputs(run(images[i:i + 1]), {k: v[i:i + 1] for k, v in in_batch.items()}, diffs)
    tol = GPU_TOLERANCE if device == "gpu" else DEFAULT_TOLERANCE
    table = error_table(diffs, tol)
    alone = len(range(0, BATCH_OF, stride))
    title = f"{model}: {backend} on {device}, {alone} images alone vs inside a batch of {BATCH_OF}"
    consistency_report(model, f"{backend}-{device} alone vs in batch", f"{alone} of {BATCH_OF} images", diffs, tol)
    assert not failures(diffs, tol), f"{title}\n{table}"


@pytest.mark.parametrize("backend", ["tf", "onnx"])
@pytest.mark.parametrize("model", MODELS)
def test_gpu_matches_cpu(model, backend, consistency_case, runner, consistency_report):
    if reason := gpu_missing(backend):
        pytest.skip(reason)
    case = consistency_case(model)
    cpu, gpu = runner(case, backend, "cpu"), runner(case, backend, "gpu")
    diffs: dict[str, Diff] = {}
    differ = 0
    for batch in case.batches():
        on_cpu, on_gpu = cpu(batch), gpu(batch)
        compare_outputs(on_gpu, on_cpu, diffs)
        p = case.probabilities
        differ += int((on_gpu[p].argmax(axis=1) != on_cpu[p].argmax(axis=1)).sum())
    tol = GPU_TOLERANCE
    table = error_table(diffs, tol)
    title = (f"{model}: {backend} gpu vs cpu on {len(case.images)} images; "
             f"tolerance atol {tol.atol:g} + rtol {tol.rtol:g}")
    consistency_report(model, f"{backend} gpu vs cpu", f"{len(case.images)} images", diffs, tol)
    assert not failures(diffs, tol), f"{title}\n{table}"
    assert differ == 0, f"{model}: argmax differs between {backend} gpu and cpu on {differ} images"
