"""The stats graph (reductions appended to model.onnx) gives today's numpy statistics: counts, extremes, histograms
and top-k exactly, sums to float64 rounding; over the 10,000 test digits and a model with large signed maps."""
from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort
import pytest

import runtime
from runtime.cli.main import main
from runtime.cli.process import run_cli
from runtime.errors import BackendError, InputError
from runtime.jobs.histogram import MIN_EXP, Histogram
from runtime.jobs.stats_graph import StatsGraph, _Graph, stats_graph, stats_nodes


def assert_same_stats(graph: runtime.Stats, numpy: runtime.Stats) -> None:
    """Counts, extremes, histograms, top-k (rows, values, images, maps) exactly; sums to float64 rounding."""
    assert graph.images == numpy.images and list(graph.outputs) == list(numpy.outputs)
    for name, a in graph.outputs.items():
        b = numpy.outputs[name]
        assert a.values == b.values
        for key in ("zeros", "active", "max", "min", "top_index", "top_value", "top_images", "top_maps"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=f"{name} {key}")
        assert (a.histogram.exp, a.histogram.signed) == (b.histogram.exp, b.histogram.signed)
        np.testing.assert_array_equal(a.histogram.counts, b.histogram.counts, err_msg=f"{name} histogram")
        # float64 sums of the same float32 values in another order: n x 2**-53 of the sum of magnitudes at most
        bound = a.values * 2.0 ** -53 * np.sqrt(a.values * b.sumsq)
        assert np.all(np.abs(a.sum - b.sum) <= bound), name
        assert np.all(np.abs(a.sumsq - b.sumsq) <= a.values * 2.0 ** -53 * b.sumsq), name
        assert np.allclose(a.sum, b.sum, rtol=1e-12, atol=0)  # in practice: far below the bound
    assert graph.to_json()["outputs"].keys() == numpy.to_json()["outputs"].keys()


def test_ten_thousand_test_digits_give_the_numpy_statistics(mnist_test, loaded, reference_artifacts):
    model = loaded(reference_artifacts, "onnx")
    x = mnist_test[0]
    assert len(x) == 10000
    graph = runtime.stats(model, x, k=4, threshold=0.5, engine="graph")
    assert_same_stats(graph, runtime.stats(model, x, k=4, threshold=0.5, engine="numpy"))
    assert not any(s.maps_pending for s in graph.outputs.values())  # winners' maps recomputed from their images


@pytest.fixture(scope="session")
def large_maps(tmp_path_factory):
    """An untrained model with large signed maps: 64x64x24 linear convolutions with weights of scale 40."""
    import keras
    from keras import layers

    from export.pipeline import export_model

    keras.utils.set_random_seed(1)
    inp = keras.Input((64, 64, 3), name="pixels")
    x = layers.Conv2D(24, 3, padding="same", name="wide",
                      kernel_initializer=keras.initializers.RandomNormal(stddev=40.0))(inp)
    y = layers.Conv2D(16, 3, strides=2, activation="relu", name="relu_half")(x)
    out = layers.Dense(3, name="head")(layers.GlobalAveragePooling2D()(y))
    folder = tmp_path_factory.mktemp("large_maps")
    keras.Model(inp, out, name="large_maps").save(folder / "large.keras")
    export_model(folder / "large.keras", folder / "artifacts")
    return folder / "artifacts"


def test_a_model_with_large_signed_maps_gives_the_numpy_statistics(large_maps, loaded):
    model = loaded(large_maps, "onnx")
    x = np.random.default_rng(0).integers(0, 256, (150, 64, 64, 3)).astype(np.uint8)
    x[:3] = 0  # blank images: ties in top-k
    graph = runtime.stats(model, x, k=3, batch_size=40, engine="graph")
    assert_same_stats(graph, runtime.stats(model, x, k=3, batch_size=40, engine="numpy"))
    wide = graph.outputs["wide"]
    assert wide.histogram.signed and wide.histogram.exp > 5  # the signed range, grown far past MIN_EXP


def run_nodes(values: np.ndarray, bins: int) -> dict:
    """The stats nodes of one [N, H, W, C] output on an identity model: what the graph computes for `values`."""
    import onnx
    from onnx import TensorProto, helper

    shape = list(values.shape[1:])
    identity = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["maps"])], "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, *shape])],
        [helper.make_tensor_value_info("maps", TensorProto.FLOAT, [None, *shape])]),
        opset_imports=[helper.make_opsetid("", 17)])
    graph = _Graph(17)
    fetch = stats_nodes(graph, "maps", tuple(shape), bins)
    derived = graph.appended_to(identity.SerializeToString())
    onnx.checker.check_model(onnx.load_from_string(derived))  # a valid model, not just one onnxruntime accepts
    session = ort.InferenceSession(derived, providers=["CPUExecutionProvider"])
    return dict(zip(fetch, session.run(list(fetch.values()), {"x": values})))


@pytest.mark.parametrize("case", ["powers of two", "signed", "zeros", "tiny", "huge"])
def test_histogram_bins_found_in_onnx_equal_runtime_histogram(case):
    """The exponent (counted against power-of-two edges), the scale (a table of powers of two) and the bins
    (ScatterElements) equal Histogram.add's, at the edges where rounding would show: exact powers of two."""
    rng = np.random.default_rng(3)
    powers = np.ldexp(np.float32(1), np.arange(-20, 20)).astype(np.float32)
    values = {
        "powers of two": np.concatenate([powers, np.nextafter(powers, np.float32(0)), powers * 1.5]),
        "signed": np.concatenate([-powers, powers, rng.normal(0, 300, 200).astype(np.float32)]),
        "zeros": np.zeros(120, np.float32),
        "tiny": np.concatenate([powers[:3] * np.float32(2.0 ** -100), np.zeros(117, np.float32)]),
        "huge": np.concatenate([np.float32([3e38, -2e38, 2.0 ** 127]), rng.random(117).astype(np.float32)]),
    }[case]
    values = values[:len(values) // 6 * 6].reshape(1, -1, 2, 3)  # [N=1, H, W=2, C=3]
    bins = 16
    got = run_nodes(values, bins)
    expected = Histogram(3, bins)
    expected.add(values.reshape(-1, 3), float(values.min()), float(values.max()))
    magnitude = max(float(values.max()), -float(values.min()))
    assert int(got["exp"]) == expected.exp == (max(math.frexp(magnitude)[1], MIN_EXP) if magnitude else MIN_EXP)
    assert bool(got["signed"]) == expected.signed
    np.testing.assert_array_equal(got["counts"].reshape(3, bins), expected.counts)
    np.testing.assert_array_equal(got["zeros"][0], np.count_nonzero(values == 0, axis=(1, 2))[0])
    np.testing.assert_array_equal(got["max"], values.max(axis=(1, 2)))
    np.testing.assert_array_equal(got["min"], values.min(axis=(1, 2)))
    np.testing.assert_array_equal(got["sum"], np.add.reduce(values, axis=(1, 2), dtype=np.float64))


def test_engine_choice_and_refusals(loaded, reference_artifacts, digits):
    model = loaded(reference_artifacts, "onnx")
    assert stats_graph(model, ["conv2d"], 64, "auto") is None  # numpy on a CPU (measured faster there)
    assert isinstance(stats_graph(model, ["conv2d"], 64, "graph"), StatsGraph)
    with pytest.raises(InputError, match="`engine` must be one of"):
        stats_graph(model, ["conv2d"], 64, "fast")
    graph = StatsGraph(model, ["conv2d"], 64, check=False)
    graph.check(digits[0][:16])  # the model's maps of real digits agree too
    with pytest.raises(BackendError, match="needs the onnx backend"):
        StatsGraph(loaded(reference_artifacts, "tf"), ["conv2d"])


def test_stats_cli_engine_graph_writes_what_numpy_writes(capsys, tmp_path, digits, reference_artifacts):
    np.save(tmp_path / "x.npy", digits[0])
    for engine in ("graph", "numpy"):
        code = run_cli(main, ["stats", str(reference_artifacts), "--input", str(tmp_path / "x.npy"), "--out",
                              str(tmp_path / engine), "--k", "3", "--batch-size", "16", "--engine", engine])
        assert code == 0, capsys.readouterr().err
    a, b = (json.loads((tmp_path / e / "stats.json").read_text()) for e in ("graph", "numpy"))
    for name in ("conv2d", "conv2d_1"):
        assert a["outputs"][name]["histogram"] == b["outputs"][name]["histogram"]
        for x, y in zip(a["outputs"][name]["channels"], b["outputs"][name]["channels"]):
            assert x == pytest.approx(y, rel=1e-12)
        with np.load(tmp_path / "graph" / "topk" / f"{name}.npz") as f, \
                np.load(tmp_path / "numpy" / "topk" / f"{name}.npz") as g:
            for key in ("index", "value", "maps", "images"):
                np.testing.assert_array_equal(f[key], g[key])
