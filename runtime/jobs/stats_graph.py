"""The stats graph: the artifact's ONNX model with reduction nodes appended, so that per-channel statistics are
computed inside onnxruntime and the feature maps never leave it.

    graph = StatsGraph(model, ["conv2d"], bins=64)   # checked against the numpy path here
    partials = graph.run(images)                                    # {name: Partial}, a few numbers per channel

Per output [N, H, W, C] and batch, a Partial holds per-image per-channel sums and sums of squares (float64:
the maps are cast before summing), maxima, minima and zero counts ([N, C] each), and the batch's histogram
exactly as runtime.jobs.histogram computes it (range 2**exp, signed or not; counts [C, bins]). The
histogram's exponent is counted against the power-of-two edges (no Log), its scale is looked up in a table
of powers of two (exact), and its bins are counted by ScatterElements(reduction="add").

The graph is built in memory from the verified model.onnx bytes: onnxruntime cannot build graphs and the
[onnx] deployment has no `onnx` package, so the new nodes are encoded as protobuf here and appended as a
second `graph` field, which protobuf merges into the first (repeated fields append). The verified files
are never changed. Needs opset 16 or later (ScatterElements' reduction). Float16Graph, the model with its
outputs cast to float16, serves `run --dtype float16` the same way.
"""
from __future__ import annotations

import struct
import warnings
from typing import NamedTuple

import numpy as np

from runtime.errors import BackendError, InputError
from runtime.jobs.histogram import MIN_EXP, Histogram
from runtime.preprocess import to_batch

PREFIX = "featuremaps_stats/"
MAX_EXP = 128  # float32 values are below 2**128
FLOAT, INT32, INT64, FLOAT16, DOUBLE = 1, 6, 7, 10, 11  # TensorProto data types
_NUMPY = {FLOAT: np.float32, INT32: np.int32, INT64: np.int64, DOUBLE: np.float64}


class Partial(NamedTuple):
    """One batch's statistics of one output ([N, C] per image and channel; the histogram of the whole batch)."""

    sum: np.ndarray  # float64
    sumsq: np.ndarray  # float64
    max: np.ndarray  # float32: the spatial maxima (top-k, "dead")
    min: np.ndarray  # float32
    zeros: np.ndarray  # int64
    histogram: Histogram


# --- protobuf wire format: just what ONNX nodes, tensors and value infos need ---------------------------------

def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64s: ten bytes, two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value) -> bytes:
    """One field: an int (varint), bytes or str (length-delimited)."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, array: np.ndarray) -> bytes:
    dtype = next(t for t, d in _NUMPY.items() if np.dtype(d) == array.dtype)
    return (b"".join(_field(1, int(d)) for d in array.shape) + _field(2, dtype) + _field(8, name)
            + _field(9, np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()))


def _attribute(name: str, value) -> bytes:
    if isinstance(value, float):
        return _field(1, name) + _varint(2 << 3 | 5) + struct.pack("<f", value) + _field(20, 1)
    if isinstance(value, int):
        return _field(1, name) + _field(3, value) + _field(20, 2)
    if isinstance(value, str):
        return _field(1, name) + _field(4, value) + _field(20, 3)
    if isinstance(value, np.ndarray):
        return _field(1, name) + _field(5, _tensor("", value)) + _field(20, 4)
    return _field(1, name) + b"".join(_field(8, int(v)) for v in value) + _field(20, 7)  # ints


class _Graph:
    """Nodes, initializers and outputs to append to a GraphProto."""

    def __init__(self, opset: int):
        self.opset, self.parts, self.count = opset, [], 0

    def const(self, array) -> str:
        name = f"{PREFIX}c{self.count}"
        self.count += 1
        self.parts.append(_field(5, _tensor(name, np.asarray(array))))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        out = f"{PREFIX}n{self.count}"
        self.count += 1
        self.parts.append(_field(1, b"".join(_field(1, i) for i in inputs) + _field(2, out) + _field(3, out)
                                 + _field(4, op) + b"".join(_field(5, _attribute(k, v))
                                                            for k, v in attributes.items())))
        return out

    def reduce(self, op: str, x: str, axes: list[int] | None) -> str:
        """op over axes (None: all) without keeping them: axes as an input from opset 18 (ReduceSum: 13)."""
        if axes is None:
            return self.node(op, [x], keepdims=0)
        if op == "ReduceSum" or self.opset >= 18:
            return self.node(op, [x, self.const(np.array(axes, np.int64))], keepdims=0)
        return self.node(op, [x], axes=axes, keepdims=0)

    def output(self, name: str, label: str, dtype: int, shape: tuple) -> str:
        """Expose name as the graph output `label` of TensorProto type dtype and shape (ints, or strings for
        symbolic dimensions) through an Identity: outputs need their own names."""
        self.parts.append(_field(1, _field(1, name) + _field(2, label) + _field(3, label) + _field(4, "Identity")))
        dims = b"".join(_field(1, _field(2 if isinstance(d, str) else 1, d)) for d in shape)
        self.parts.append(_field(12, _field(1, label) + _field(2, _field(1, _field(1, dtype) + _field(2, dims)))))
        return label

    def appended_to(self, model: bytes) -> bytes:
        return model + _field(7, b"".join(self.parts))  # ModelProto.graph again: merged into the first


def stats_nodes(graph: _Graph, name: str, shape: tuple, bins: int) -> dict[str, str]:
    """Append the reductions of output `name` ([N, H, W, C]); returns {Partial field or hist part: output}."""
    h, w, c = shape
    rows = graph.node("Reshape", [name, graph.const(np.array([-1, h * w, c], np.int64))])
    out = {"max": graph.reduce("ReduceMax", rows, [1]), "min": graph.reduce("ReduceMin", rows, [1])}
    wide = graph.node("Cast", [rows], to=DOUBLE)  # float64 sums, as numpy's path (dtype=np.float64)
    out["sum"] = graph.reduce("ReduceSum", wide, [1])
    out["sumsq"] = graph.reduce("ReduceSumSquare", wide, [1])
    zero = graph.node("Cast", [graph.node("Equal", [rows, graph.const(np.float32(0))])], to=FLOAT)
    out["zeros"] = graph.reduce("ReduceSum", zero, [1])  # at most H x W ones per image: exact in float32
    # The histogram's range, as Histogram._grow: exp = max(frexp(m)[1], MIN_EXP), m = max(hi, -lo), counted as
    # the powers 2**k (MIN_EXP <= k < MAX_EXP) that are <= m; signed when lo < 0.
    hi, lo = graph.reduce("ReduceMax", out["max"], None), graph.reduce("ReduceMin", out["min"], None)
    magnitude = graph.node("Max", [hi, graph.node("Neg", [lo])])
    powers = np.ldexp(np.float32(1), np.arange(MIN_EXP, MAX_EXP)).astype(np.float32)
    below = graph.node("Cast", [graph.node("GreaterOrEqual", [magnitude, graph.const(powers)])], to=INT64)
    exp = graph.node("Add", [graph.reduce("ReduceSum", below, None), graph.const(np.int64(MIN_EXP))])
    signed = graph.node("Cast", [graph.node("Less", [lo, graph.const(np.float32(0))])], to=INT64)
    # 1 / bin width = bins / 2**(exp + signed) = 2**(log2(bins) - exp - signed): a power of two, from a table.
    shift = int(bins).bit_length() - 1
    low = shift - MAX_EXP - 1
    table = np.ldexp(np.float32(1), np.arange(low, shift - MIN_EXP + 1)).astype(np.float32)
    power = graph.node("Sub", [graph.node("Sub", [graph.const(np.int64(shift - low)), exp]), signed])
    scale = graph.node("Gather", [graph.const(table), power])
    index = graph.node("Cast", [graph.node("Floor", [graph.node("Mul", [rows, scale])])], to=INT32)
    offset = graph.node("Mul", [signed, graph.const(np.int64(bins // 2))])
    base = graph.node("Add", [graph.const(np.arange(c, dtype=np.int64) * bins), offset])
    flat = graph.node("Reshape", [graph.node("Add", [index, graph.node("Cast", [base], to=INT32)]),
                                  graph.const(np.array([-1], np.int64))])
    ones = graph.node("ConstantOfShape", [graph.node("Shape", [flat])], value=np.array([1], np.int32))
    counts = graph.node("ScatterElements", [graph.const(np.zeros(c * bins, np.int32)), flat, ones], reduction="add")
    out.update(exp=exp, signed=signed, counts=counts)
    types = {"max": FLOAT, "min": FLOAT, "sum": DOUBLE, "sumsq": DOUBLE, "zeros": FLOAT, "exp": INT64,
             "signed": INT64, "counts": INT32}
    shapes = {"exp": (), "signed": (), "counts": (c * bins,)}
    return {k: graph.output(v, f"{PREFIX}{name}/{k}", types[k], shapes.get(k, ("N", c))) for k, v in out.items()}


class StatsGraph:
    """The model plus per-channel reductions of some of its feature-map outputs, in one onnxruntime session.

    Args:
        model: a loaded runtime.Model on the onnx backend (its folder's verified model.onnx is read again).
        outputs: feature-map outputs ([N, H, W, C]) to reduce.
        bins: histogram bins (a power of two, as Histogram takes it).
        session_options: onnxruntime's, as runtime.jobs.engine.load_model sets them (default: the backend's).
        check: compare with numpy on a probe batch now (see check).

    Raises:
        BackendError: not the onnx backend, an opset before 16, or results that differ from numpy's.
    """

    def __init__(self, model, outputs: list[str], bins: int = 64, session_options=None, check: bool = True):
        from runtime.backends.onnx import OnnxRunner

        if model.backend != "onnx":
            raise BackendError(f"the stats graph needs the onnx backend; got {model.backend!r}")
        opset = int(model.manifest.onnx.get("opset", 0))
        if opset < 16:
            raise BackendError(f"the stats graph needs ONNX opset 16 or later (ScatterElements' reduction); "
                               f"the model has {opset}")
        Histogram(1, bins)  # checks bins
        self.model, self.bins, self.names = model, bins, list(outputs)
        self.shapes = {n: tuple(model.manifest.output(n).shape[1:]) for n in self.names}
        graph = _Graph(opset)
        self.fetch = {n: stats_nodes(graph, n, self.shapes[n], bins) for n in self.names}
        self.labels = [label for parts in self.fetch.values() for label in parts.values()]
        self.runner = OnnxRunner(model.folder, model.manifest, model.device, session_options=session_options,
                                 derive=graph.appended_to)
        if check:
            self.check()

    def run(self, images) -> dict[str, Partial]:
        """Per-output partials of a batch (pixels or preprocessed floats, as Model.run takes them)."""
        batch = to_batch(images, self.model.manifest.input)
        got = self.runner.run(batch, self.labels)
        result = {}
        for name, parts in self.fetch.items():
            c = self.shapes[name][2]
            hist = Histogram(c, self.bins)
            hist.exp, hist.signed = int(got[parts["exp"]]), bool(got[parts["signed"]])
            hist.counts = got[parts["counts"]].reshape(c, self.bins).astype(np.int64)
            result[name] = Partial(got[parts["sum"]], got[parts["sumsq"]], got[parts["max"]], got[parts["min"]],
                                   got[parts["zeros"]].astype(np.int64), hist)
        return result

    def check(self, images=None) -> None:
        """Compare with numpy (float64 sums, runtime.jobs.histogram) on the model's own maps of `images` (default:
        a fixed batch of random pixels).

        Raises:
            BackendError: a count, extreme or histogram differs, or a sum beyond float64 rounding.
        """
        if images is None:
            shape = self.model.manifest.input.image_shape
            images = np.random.default_rng(0).integers(0, 256, (8, *shape)).astype(np.uint8)
        maps, partials = self.model.run(images, self.names), self.run(images)
        for name in self.names:
            x, ours = maps[name], partials[name]
            histogram = Histogram(x.shape[-1], self.bins)
            histogram.add(x.reshape(-1, x.shape[-1]), float(x.min()), float(x.max()))
            theirs = Partial(np.add.reduce(x, axis=(1, 2), dtype=np.float64),
                             np.einsum("nhwc,nhwc->nc", x, x, dtype=np.float64), x.max(axis=(1, 2)),
                             x.min(axis=(1, 2)), np.count_nonzero(x == 0, axis=(1, 2)), histogram)
            if problem := differences(ours, theirs, x.shape[1] * x.shape[2]):
                raise BackendError(f"the stats graph disagrees with numpy on output {name!r}: {problem}")


def differences(ours: Partial, theirs: Partial, values: int) -> str | None:
    """What differs between two partials over `values` positions per image and channel: counts, extremes and
    the histogram exactly, sums beyond float64 rounding (None: nothing)."""
    exact = {"zero counts": [(ours.zeros, theirs.zeros)], "maxima": [(ours.max, theirs.max)],
             "minima": [(ours.min, theirs.min)],
             "histogram range": [((ours.histogram.exp, ours.histogram.signed),
                                  (theirs.histogram.exp, theirs.histogram.signed))],
             "histogram counts": [(ours.histogram.counts, theirs.histogram.counts)]}
    for what, pairs in exact.items():
        if not all(np.array_equal(a, b) for a, b in pairs):
            return f"{what} differ"
    # float64 sums of n float32 values in another order differ by at most n x 2**-53 x the sum of magnitudes,
    # which is at most sqrt(n x the sum of squares) (Cauchy-Schwarz).
    magnitude = np.sqrt(values * np.maximum(ours.sumsq, theirs.sumsq))
    for what, a, b, scale in (("sums", ours.sum, theirs.sum, magnitude),
                              ("sums of squares", ours.sumsq, theirs.sumsq, np.maximum(ours.sumsq, theirs.sumsq))):
        if not np.all(np.abs(a - b) <= values * 2.0 ** -53 * scale):
            return f"{what} differ beyond float64 rounding (by up to {np.max(np.abs(a - b)):.3g})"
    return None


def recompute_top_maps(output, model, name: str, rows: int = 64) -> None:
    """The winners' maps of a runtime.jobs.stats.OutputStats whose maps stayed in onnxruntime, recomputed from
    their kept images (`model` computes output `name`), `rows` images a run."""
    c, k = output.top_index.shape
    output.top_maps = np.zeros((c, k, *output.shape[:2]), np.float32)
    if output.top_images is not None:
        flat = output.top_images.reshape(c * k, *output.top_images.shape[2:])
        kept = np.flatnonzero(output.top_index >= 0)
        for i in range(0, len(kept), rows):
            part = kept[i:i + rows]
            maps = model.run(flat[part], [name])[name]
            output.top_maps.reshape(c * k, *output.shape[:2])[part] = maps[np.arange(len(part)), :, :, part // k]
    output.maps_pending = False


class Float16Graph:
    """The model with outputs cast to float16 inside onnxruntime, for `run --dtype float16`: its vectorised Cast
    measured 10-15 us per image of the reference model's conv2d maps on one thread, numpy's astype 200-220 us
    (Intel Xeon, 2 cores)."""

    def __init__(self, model, outputs: list[str], session_options=None):
        from runtime.backends.onnx import OnnxRunner

        graph = _Graph(int(model.manifest.onnx.get("opset", 0)))
        self.model, self.labels = model, {}
        for name in outputs:
            shape = tuple(("N" if i == 0 else f"d{i}") if d is None else int(d)  # free sizes: names of their own
                          for i, d in enumerate(model.manifest.output(name).shape))
            half = graph.node("Cast", [name], to=FLOAT16)
            self.labels[name] = graph.output(half, f"featuremaps_float16/{name}", FLOAT16, shape)
        self.runner = OnnxRunner(model.folder, model.manifest, model.device, session_options=session_options,
                                 derive=graph.appended_to)

    def run(self, images) -> dict[str, np.ndarray]:
        got = self.runner.run(to_batch(images, self.model.manifest.input), list(self.labels.values()))
        return {name: got[label] for name, label in self.labels.items()}


ENGINES = ("auto", "graph", "numpy")


def stats_graph(model, outputs: list[str], bins: int, engine: str = "auto", session_options=None):
    """The checked StatsGraph that `engine` asks for, or None for the numpy path.

    engine: "graph" (an error where it cannot be built), "numpy", or "auto": the graph on a GPU, where the
    maps' copy to numpy dominates, else numpy. On 2 CPU cores the graph measured slower than numpy
    (benchmarks/results/dataset_scale.md): onnxruntime's elementwise kernels and ScatterElements cost more
    per value than numpy's reductions and bincount.

    Raises:
        InputError: an unknown engine.
        BackendError: engine "graph" where the graph cannot be built or disagrees with numpy.
    """
    if engine not in ENGINES:
        raise InputError(f"`engine` must be one of {list(ENGINES)}; got {engine!r}")
    if engine == "numpy" or (engine == "auto" and model.device != "gpu"):
        return None
    try:
        return StatsGraph(model, outputs, bins, session_options)
    except BackendError:
        if engine == "graph":
            raise
        warnings.warn("the stats graph cannot be used here; computing statistics with numpy", stacklevel=2)
        return None
