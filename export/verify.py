"""Verification before publishing: Keras vs SavedModel vs ONNX on the same real images."""
from __future__ import annotations

from math import prod
from pathlib import Path

import numpy as np

from runtime.api import load
from runtime.artifacts.manifest import ONNX_FILE, InputSpec, Manifest, belongs_to
from runtime.compare import Diff, Tolerance, compare_outputs, failures, tolerance_dict
from runtime.data.mnist import MNIST_SHAPE, mnist_test_set, resize_digits, shipped_digits
from runtime.preprocess import to_batch

from .graph import compute_dtype
from .progress import Progress

BACKENDS = {"savedmodel": "tf", "onnx": "onnx"}
# Output bytes one engine may produce per batch: ResNet50 at 224x224 exposes ~36 MB of maps per
# image, so its batches hold a few images, while the MNIST CNN's hold hundreds.
BATCH_BYTES = 64 << 20
MAX_BATCH = 500
# ONNX graphs up to this size are verified with both engines loaded at once (they take ~4x its size).
ENGINES_TOGETHER_BELOW = 256 << 20
# From this many Keras batches on, the reference runs traced into one graph (tf.function, as
# model.predict runs it): bit for bit the same outputs on ResNet50, EfficientNetB0, InceptionV3 and
# ConvNeXtTiny, without eager's op-by-op cost (ResNet50 at 224x224: 0.46 -> 0.11 s an image), for a
# trace that costs about one or two eager passes over 80 small images (NASNetMobile at 64x64: 3 s).
TRACED_FROM_BATCHES = 8
SEED = 0
# Free input dimensions are verified at these sizes, then the first one at 1.5x: multiples of 32, as
# U-Nets and other encoder-decoders with five halvings need.
FREE_SIZES = {"H": 64, "W": 64, "D": 8, "T": 4, "1-D": 1024}


def verification_images(spec: InputSpec, data: str | None = None, labelled: bool = False):
    """Real samples for the model's input shape: (raw [N, *sample], labels or None, description).

    MNIST-shaped models get the MNIST test set (the shipped digits when it is absent); other
    image shapes get the shipped digits resized and repeated over channels (over depth or time
    too, shifted a pixel per frame), plus seeded noise, so that every layer sees both natural
    strokes and dense texture. 1-D inputs get seeded sines and chirps plus noise. Inputs that are
    not pictures get floats, integer inputs integers of their dtype. The MNIST labels are
    returned only when they apply: the user gave the data (--data), or labelled says the model
    is the reference MNIST CNN; any other 28x28x1 model may have learnt something else.
    """
    if spec.image_shape == MNIST_SHAPE and spec.preprocessing.raw_dtype == "uint8":
        x, y, source = mnist_test_set(data)
        return x[..., None], (y if data is not None or labelled else None), source
    rng = np.random.default_rng(SEED)
    sample = spec.image_shape
    if spec.layout.endswith("HWC"):
        x, _ = shipped_digits()  # the full set would only be thrown away here
        h, w, c = sample[-3:]
        frames = sample[:-3]
        digits = resize_digits(x, (h, w, 1))[..., 0]  # as `python -m viz --index` draws them
        steps = np.arange(prod(frames)).reshape(frames) if frames else np.zeros(())
        # one frame per depth/time step, the digit moved one pixel right per step
        clips = np.stack([np.roll(digits, int(k), axis=2) for k in steps.ravel()], axis=1)
        clips = clips.reshape(len(digits), *frames, h, w)
        real = np.repeat(clips[..., None], c, axis=-1).astype(np.float32) / 255
        source = f"{len(digits)} shipped digits resized to {'x'.join(map(str, sample))}"
    else:
        t = np.linspace(0, 1, sample[-2], dtype=np.float32)[:, None]
        freq = rng.uniform(1, sample[-2] / 8, size=(32, 1, sample[-1])).astype(np.float32)
        waves = np.sin(2 * np.pi * (freq * t + freq * t * t * (np.arange(32) % 2)[:, None, None]))
        real = np.broadcast_to((waves + 1) / 2, (32, *sample)).astype(np.float32)
        source = f"32 seeded sines and chirps of {'x'.join(map(str, sample))}"
    samples = np.concatenate([real, rng.uniform(size=(16, *sample)).astype(np.float32)])
    source += " + 16 noise samples"
    if spec.preprocessing.raw_dtype == "float32":  # values as given: centred, within +-1
        return samples * 2 - 1, None, source
    dtype = np.dtype(spec.preprocessing.raw_dtype)  # uint8 pixels, or the integers a model declares
    return np.rint(samples * min(255, np.iinfo(dtype).max)).astype(dtype), None, source


def verification_shapes(spec: InputSpec) -> list[tuple]:
    """The input shapes (without the batch) to verify at: the input's own, or for free dimensions two sizes,
    FREE_SIZES of each axis and then the first free axis half as large again (a non-square size)."""
    sample = spec.image_shape
    if None not in sample:
        return [sample]
    axes = spec.layout[1:]
    base = tuple(FREE_SIZES["1-D" if "H" not in axes and a == "W" else a] if d is None else d
                 for a, d in zip(axes, sample))
    first = sample.index(None)
    return [base, tuple(d * 3 // 2 if i == first else d for i, d in enumerate(base))]


def merge_reports(reports: list[dict], shapes: list[tuple]) -> dict:
    """One verification report from one per input size: every problem, each output's worst error."""
    if len(reports) == 1:
        return reports[0]
    merged = dict(reports[0])
    sizes = ["x".join(map(str, s)) for s in shapes]
    merged.update(
        sizes=[list(s) for s in shapes], images=sum(r["images"] for r in reports),
        source="; ".join(f"at {size}: {r['source']}" for size, r in zip(sizes, reports)),
        passed=all(r["passed"] for r in reports),
        problems=[f"at {size}: {p}" for size, r in zip(sizes, reports) for p in r["problems"]],
        outputs={out: {b: max((r["outputs"][out][b] for r in reports), key=lambda e: e["max_abs"])
                       for b in errors} for out, errors in reports[0]["outputs"].items()},
    )
    noisy = sorted({o for r in reports for o in r.get("within_noise_only", [])})
    merged.pop("within_noise_only", None)
    merged.update({"within_noise_only": noisy} if noisy else {})
    return merged


def batch_size(manifest: Manifest, budget: int | None = None, per_image: int | None = None) -> int:
    """Images per verification batch, so that one engine's outputs for a batch fit in budget bytes
    (per_image: the output bytes of one image, where the manifest's shapes have free dimensions)."""
    budget = BATCH_BYTES if budget is None else budget
    per_image = per_image or sum(4 * prod(o.shape[1:]) for o in manifest.outputs)
    return max(1, min(MAX_BATCH, budget // per_image))


def verify(feature_model, folder: Path, manifest: Manifest, images: np.ndarray, labels, source: str,
           tol: Tolerance, progress: Progress | None = None) -> dict:
    """Run images through Keras, the SavedModel and ONNX (via the runtime) and compare every output.

    Streams: each batch goes through Keras and the engines, statistics are accumulated and the
    outputs dropped, so memory holds one batch of outputs and reference. The engines run together
    (Keras computes each batch once) unless the graph is big: then one at a time, Keras computing
    each batch again for the second, rather than holding both (VGG16 at 224x224: 2.2 GB beyond Keras' own weights).
    Returns the verification report for the manifest; report["passed"] says whether all agree.
    """
    progress = progress or Progress(None)
    diffs: dict[str, dict[str, Diff]] = {name: {} for name in BACKENDS}
    probs = _probability_output(manifest, labels)
    correct = {name: 0 for name in ("keras", *BACKENDS)}
    free = any(None in o.shape[1:] for o in manifest.outputs)
    one = feature_model(to_batch(images[:1], manifest.input), training=False) if free else {}
    step = batch_size(manifest, per_image=sum(4 * prod(v.shape[1:]) for v in one.values()))
    graph_bytes = sum(f["bytes"] for rel, f in manifest.files.items() if belongs_to(rel, ONNX_FILE))
    turns = [list(BACKENDS)] if graph_bytes <= ENGINES_TOGETHER_BELOW else [[name] for name in BACKENDS]
    keras_outputs = keras_reference(feature_model, manifest.input, -(-len(images) // step) * len(turns))
    with progress.bar(len(images) * len(turns)) as bar:
        for turn, names in enumerate(turns):
            models = {name: load(folder, backend=BACKENDS[name]) for name in names}
            try:
                for start in range(0, len(images), step):
                    batch = to_batch(images[start:start + step], manifest.input)
                    truth = labels[start:start + step] if probs else None
                    reference = keras_outputs(batch)
                    if turn == 0:  # Keras' own accuracy: once, not per turn
                        correct["keras"] += _hits(reference, probs, truth)
                    for name, model in models.items():
                        out = model.run(batch)
                        compare_outputs(out, reference, diffs[name])
                        correct[name] += _hits(out, probs, truth)
                        del out
                    del reference
                    bar.update(len(batch))
            finally:
                for model in models.values():
                    model.close()
    problems, noise_dtype = _problems(diffs, tol), None
    if problems and tol.noise > 0:
        half = compute_dtype(feature_model.model)
        progress.say(f"export: {len(problems)} output(s) beyond tolerance; measuring the model's own {half} "
                     f"noise floor (Keras on inputs one {half} ulp away)")
        floors = noise_floors(keras_outputs, images, manifest.input, step, progress, half)
        for by_output in diffs.values():
            for out, diff in by_output.items():
                diff.noise_floor = floors[out]
        problems = _problems(diffs, tol)
        noise_dtype = half
    report = {
        "images": int(len(images)),
        "batch": step,
        "source": source,
        "reference": "keras",
        "tolerance": tolerance_dict(tol),
        "outputs": {out: {b: diffs[b][out].report(tol) for b in BACKENDS} for out in manifest.output_names},
        "passed": not problems,
        "problems": problems,
    }
    noisy = [out for out in manifest.output_names if any(diffs[b][out].within_noise_only(tol) for b in BACKENDS)]
    if noisy:
        report["within_noise_only"] = noisy
    if noise_dtype:
        report["noise_dtype"] = noise_dtype  # the floor was measured one ulp of this dtype away
    if probs:
        report["accuracy"] = {name: n / len(images) for name, n in correct.items()}
        report["accuracy_images"] = int(len(images))
    return report


def noise_floors(keras_outputs, images: np.ndarray, spec: InputSpec, step: int,
                 progress: Progress | None = None, dtype: str = "float32") -> dict[str, float]:
    """Each output's noise floor: max|Keras(x') - Keras(x)| over the images, x' = x moved one ulp up
    (keras_outputs: from keras_reference), an ulp of the model's compute dtype: a float16 model casts a
    float32 ulp away (measured: mixed_float16, 8 x Conv+BN+ReLU at 64x64, floor 0 at one float32 ulp).

    What an engine that rounds differently cannot be asked to beat (runtime/compare.py). Two more
    Keras passes, so it is measured only when some output misses the plain tolerance.
    """
    progress = progress or Progress(None)
    diffs: dict[str, Diff] = {}
    with progress.bar(len(images), desc="export: noise floor") as bar:
        for start in range(0, len(images), step):
            batch = to_batch(images[start:start + step], spec)
            reference = keras_outputs(batch)
            # integer inputs: one step up (where not at the top), the integer ulp
            if batch.dtype.kind != "f":
                moved = batch + (batch < 255)
            elif dtype == "float32":
                moved = np.nextafter(batch, np.float32(np.inf))
            else:  # one ulp of the compute dtype (bfloat16 has float16's 8 fewer mantissa bits: 2**3 float16 ulps)
                half = batch.astype(np.float16)
                moved = np.nextafter(half, np.float16(np.inf)).astype(np.float32)
                moved = moved if dtype == "float16" else batch + (moved - half.astype(np.float32)) * 8
            compare_outputs(keras_outputs(moved.astype(batch.dtype)), reference, diffs)
            del reference
            bar.update(len(batch))
    return {name: d.max_abs for name, d in diffs.items()}


def _problems(diffs: dict[str, dict[str, Diff]], tol: Tolerance) -> list[str]:
    return [f"{b}: {f}" for b, d in diffs.items() for f in failures(d, tol)]


def _hits(outputs: dict, probs: str | None, truth) -> int:
    return int((outputs[probs].argmax(axis=1) == truth).sum()) if probs else 0


def keras_reference(feature_model, spec: InputSpec, batches: int):
    """A function giving Keras' outputs for a float32 batch, as numpy arrays, computed on the CPU (a GPU
    would run convolutions in TF32, not float32); traced once when it will run TRACED_FROM_BATCHES batches."""
    import tensorflow as tf

    def outputs(batch):
        with tf.device("/CPU:0"):
            return feature_model(batch, training=False)

    if batches >= TRACED_FROM_BATCHES:
        outputs = tf.function(outputs, input_signature=[tf.TensorSpec((None, *spec.image_shape), spec.dtype)])
    return lambda batch: {name: np.asarray(value) for name, value in outputs(batch).items()}


def _probability_output(manifest: Manifest, labels) -> str | None:
    """The class-probability output to score accuracy on, when labels fit it."""
    if labels is None:
        return None
    for out in manifest.outputs:
        if out.role == "model_output" and len(out.shape) == 2 and out.shape[1] == len(manifest.labels):
            return out.name
    return None
