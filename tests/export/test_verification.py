"""The verification criterion on real exported models: float32 noise passes, real defects fail, also
in a chaotic model judged against its own noise floor; batches sized by output bytes with nothing
kept; accuracy only where labels apply; progress output."""
from __future__ import annotations

import io
import re
import time
import weakref

import numpy as np
import pytest

import runtime
from runtime.compare import DEFAULT_TOLERANCE, Diff, Tolerance, compare_outputs, failures
from runtime.errors import ExportError
from runtime.preprocess import to_batch

SIZE = 24


@pytest.fixture(scope="session")
def two_convs(tmp_path_factory):
    """(model path, artifacts, keras feature model, preprocessed images) of a small exported CNN
    whose two conv outputs have the same shape, so that swapping them keeps every shape."""
    import keras
    from keras import layers

    from export.graph import feature_model, select_layers, trace
    from export.model_io import load_keras_model
    from export.pipeline import export_model
    from export.verify import verification_images

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    a = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_a")(inp)
    b = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_b")(a)
    out = layers.Dense(4, activation="softmax", name="probs")(layers.GlobalAveragePooling2D()(b))
    folder = tmp_path_factory.mktemp("two_convs")
    path = folder / "two_convs.keras"
    keras.Model(inp, out).save(path)
    manifest = export_model(path, folder / "artifacts")
    model = load_keras_model(path)
    traced = trace(model)
    fmodel, _ = feature_model(traced, select_layers(traced.layers))
    images, _, _ = verification_images(manifest.input)
    return path, folder / "artifacts", fmodel, to_batch(images, manifest.input)


@pytest.fixture(scope="session")
def keras_outputs(two_convs):
    _, _, fmodel, x = two_convs
    return {k: np.asarray(v) for k, v in fmodel(x, training=False).items()}


def onnx_run(proto, x) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": x})))


def onnx_graph(artifacts):
    import onnx

    return onnx.load(artifacts / "model.onnx")


def conv_kernels(proto) -> list:
    """The kernel initializers of the Conv nodes, in graph order."""
    inits = {t.name: t for t in proto.graph.initializer}
    return [inits[n.input[1]] for n in proto.graph.node if n.op_type == "Conv"]


def scale_channel(tensor, channel: int, factor: float) -> None:
    from onnx import numpy_helper

    w = numpy_helper.to_array(tensor).copy()
    w[channel] *= factor  # ONNX Conv kernels are [out, in, kh, kw]
    tensor.CopyFrom(numpy_helper.from_array(w, tensor.name))


def scale_written_kernel(monkeypatch, kernel: int, channel: int, factor: float) -> None:
    """Make the exporter write an ONNX graph whose kernel-th Conv has one output channel scaled."""
    import onnx

    import export.pipeline as pipeline

    real = pipeline.write_onnx

    def tampered(serve, names, target, opset, **options):
        real(serve, names, target, opset, **options)
        proto = onnx.load(target)
        scale_channel(conv_kernels(proto)[kernel], channel, factor)
        onnx.save(proto, target)

    monkeypatch.setattr(pipeline, "write_onnx", tampered)


def rename_tensors(proto, mapping: dict[str, str]) -> None:
    for node in proto.graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]


def judged(actual, reference) -> list[str]:
    return failures(compare_outputs(actual, reference), DEFAULT_TOLERANCE)


def test_float32_noise_passes(two_convs, keras_outputs):
    """ONNX (optimised or not: other kernels, other summation orders) and the SavedModel agree."""
    _, artifacts, _, x = two_convs
    for options in ({"optimization": "all"}, {"optimization": "disable"}):
        with runtime.load(artifacts, backend="onnx", **options) as model:
            assert not judged(model.run(x), keras_outputs), options
    with runtime.load(artifacts, backend="tf") as model:
        assert not judged(model.run(x), keras_outputs)


def test_deep_network_reordering_noise_passes():
    """Noise as float32 leaves it 100+ layers deep: ~1e-6 of the output's scale, some channels near
    zero, a few elements far from their neighbours. It passes; one channel scaled by 1% does not."""
    rng = np.random.default_rng(0)
    scales = np.exp(rng.normal(0, 2, size=256)).astype(np.float32)  # channel magnitudes over 3 decades
    ref = np.maximum(rng.normal(size=(8, 7, 7, 256)).astype(np.float32), 0) * scales
    noisy = ref + rng.normal(size=ref.shape).astype(np.float32) * 1e-6 * float(ref.max())
    noisy[3, 2, 2, :] += 4e-6 * float(ref.max())  # a burst on one pixel
    assert not judged({"m": noisy}, {"m": ref})
    middle = int(np.argsort(scales)[128])  # a channel of median magnitude
    defect = ref.copy()
    defect[..., middle] *= 1.01
    assert judged({"m": defect}, {"m": ref})


def test_one_kernel_channel_scaled_by_one_percent_fails(two_convs, keras_outputs):
    _, artifacts, _, x = two_convs
    live = [c for c in range(16) if keras_outputs["conv_a"][..., c].max() > 0]
    assert len(live) >= 8
    for layer in (0, 1):
        for c in live:
            proto = onnx_graph(artifacts)
            scale_channel(conv_kernels(proto)[layer], c, 1.01)
            problems = judged(onnx_run(proto, x), keras_outputs)
            assert problems, (layer, c)
    assert any(f"channel {live[-1]}:" in p for p in problems)  # the report names the channel


def test_wrong_layer_swapped_outputs_and_double_scaled_input_fail(two_convs, keras_outputs):
    _, artifacts, _, x = two_convs
    assert not judged(onnx_run(onnx_graph(artifacts), x), keras_outputs)  # the untouched graph passes

    import onnx

    wrong = onnx_graph(artifacts)  # conv_b's output wired to conv_a's maps: same shape, wrong layer
    rename_tensors(wrong, {"conv_b": "conv_b_unused"})
    wrong.graph.node.append(onnx.helper.make_node("Identity", ["conv_a"], ["conv_b"]))
    assert any(p.startswith("conv_b:") for p in judged(onnx_run(wrong, x), keras_outputs))

    swapped = onnx_graph(artifacts)
    rename_tensors(swapped, {"conv_a": "conv_b", "conv_b": "conv_a"})
    problems = judged(onnx_run(swapped, x), keras_outputs)
    assert {p.split(":")[0] for p in problems} == {"conv_a", "conv_b"}

    double = judged(onnx_run(onnx_graph(artifacts), x / 255.0), keras_outputs)
    assert {p.split(":")[0] for p in double} >= {"conv_a", "conv_b", "probs"}


@pytest.mark.parametrize("engines_together_below", [256 << 20, 0], ids=["engines together", "one at a time"])
def test_a_defect_stops_the_export(two_convs, tmp_path, monkeypatch, engines_together_below):
    """End to end: an ONNX graph with one kernel channel off by 1% is reported and not published,
    whether the engines are verified together or (big graphs) one after the other."""
    import export.pipeline as pipeline
    import export.verify

    monkeypatch.setattr(export.verify, "ENGINES_TOGETHER_BELOW", engines_together_below)

    path = two_convs[0]
    scale_written_kernel(monkeypatch, 1, 5, 1.01)
    with pytest.raises(ExportError, match=r"onnx: conv_b: channel 5: .*would pass with atol"):
        pipeline.export_model(path, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_the_noise_floor_is_a_bound_only_where_measured():
    ref = np.linspace(-1, 1, 40, dtype=np.float32).reshape(2, 2, 10)
    d = compare_outputs({"m": ref + 0.3}, {"m": ref})["m"]
    assert d.problem() and not d.within_noise_only()
    d.noise_floor = 0.05  # 0.3 <= 10 x 0.05
    assert d.ok() and d.within_noise_only() and d.report()["within_noise_only"]
    assert not d.ok(Tolerance(noise=4)) and "nor 4x its noise floor 0.05" in d.problem(Tolerance(noise=4))
    assert not d.ok(Tolerance(noise=0))


@pytest.fixture(scope="session")
def chaotic_model(tmp_path_factory):
    from zoo import chaotic

    path = tmp_path_factory.mktemp("chaotic") / "chaotic.keras"
    chaotic().save(path)
    return path


def test_a_chaotic_model_passes_within_its_own_noise_floor_and_says_so(chaotic_model, tmp_path, capsys):
    """Keras itself moves the last layers by their whole range when the input moves one ulp: ONNX
    cannot match it closer. The export passes on that floor and says which outputs needed it; the
    plain criterion (--noise 0) refuses it, so the floor is what decides."""
    from export.cli import main
    from runtime.cli.process import run_cli

    assert run_cli(main, ["--model", str(chaotic_model), "--out", str(tmp_path / "plain"), "--noise", "0"]) == 2
    assert "outputs disagree beyond tolerance" in capsys.readouterr().err
    assert not (tmp_path / "plain").exists()

    assert run_cli(main, ["--model", str(chaotic_model), "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "beyond tolerance; measuring the model's own float32 noise floor" in captured.err
    assert re.search(r"note: \d+ output\(s\) agree only within 10x their own float32 noise floor", captured.out)
    v = runtime.read_manifest(tmp_path / "a").verification
    assert v["passed"] and v["tolerance"]["noise"] == 10
    assert {"c28", "c29"} <= set(v["within_noise_only"]) and "first" not in v["within_noise_only"]
    last, first = v["outputs"]["c29"]["onnx"], v["outputs"]["first"]["onnx"]
    assert last["within_noise_only"] and last["noise_floor"] > 0.1 * last["scale"]  # chaos: a whole range
    assert not first["within_noise_only"] and first["noise_floor"] < 1e-5 * first["scale"]  # the input layer is calm


@pytest.mark.parametrize("kernel", [0, 3], ids=["first", "c2"])
def test_a_defect_in_a_chaotic_model_still_fails(chaotic_model, tmp_path, monkeypatch, kernel):
    """The floor is per output: where the defect happens the model is not chaotic yet."""
    import export.pipeline as pipeline

    scale_written_kernel(monkeypatch, kernel, 5, 1.01)
    layer = ["first", "c0", "c1", "c2"][kernel]
    with pytest.raises(ExportError, match=rf"onnx: {layer}: channel 5: .*, nor 10x its noise floor"):
        pipeline.export_model(chaotic_model, tmp_path / "out")
    assert not list(tmp_path.iterdir())


def test_report_statistics(two_convs):
    from runtime.artifacts.manifest import read_manifest

    v = read_manifest(two_convs[1]).verification
    r = v["outputs"]["conv_a"]["onnx"]
    assert {"max_abs", "mean_abs", "median_abs", "p99_abs", "worst_index", "max_rel", "mean_rel", "median_rel",
            "p99_rel", "nan", "inf", "min_atol", "min_rtol", "ok"} <= set(r)
    assert r["median_abs"] <= r["p99_abs"] <= r["max_abs"] * 1.125 and r["nan"] == r["inf"] == 0
    assert len(r["worst_index"]) == 4 and 0 <= r["worst_index"][0] < v["images"]
    assert v["outputs"]["probs"]["onnx"]["argmax_agree"] == v["images"]
    assert "argmax_agree" not in r and "accuracy" not in v  # random weights: no labels apply


def test_statistics_count_nan_and_find_the_worst_element():
    ref = np.zeros((3, 4, 5, 2), np.float32)
    got = ref.copy()
    got[2, 1, 3, 1] = 0.5
    got[0, 0, 0, 0] = np.nan
    d = Diff()
    d.update(got[:1], ref[:1])
    d.update(got[1:], ref[1:])  # indices count images across batches
    assert d.worst_index == (2, 1, 3, 1) and d.max_abs == 0.5
    assert d.nan == 1 and d.nonfinite_mismatch == 1 and not d.ok()


def test_batches_are_sized_by_output_bytes_and_nothing_is_kept(two_convs, monkeypatch):
    import export.verify as verify
    from runtime.artifacts.manifest import read_manifest

    _, artifacts, fmodel, _ = two_convs
    manifest = read_manifest(artifacts)
    per_image = 4 * (2 * SIZE * SIZE * 16 + 4)
    assert verify.batch_size(manifest) == verify.MAX_BATCH  # small maps: the cap
    assert verify.batch_size(manifest, budget=3 * per_image) == 3
    assert verify.batch_size(manifest, budget=1) == 1
    monkeypatch.setattr(verify, "BATCH_BYTES", 3 * per_image)

    seen, alive_from_earlier = [], []
    update = Diff.update

    def watched(self, actual, reference):
        start = self.images
        alive_from_earlier.append(sum(1 for s, ref in seen if s < start and ref() is not None))
        seen.extend((start, weakref.ref(a)) for a in (actual, reference))
        return update(self, actual, reference)

    monkeypatch.setattr(Diff, "update", watched)
    images, _, source = verify.verification_images(manifest.input)
    report = verify.verify(fmodel, artifacts, manifest, images, None, source, DEFAULT_TOLERANCE)
    assert report["passed"] and report["batch"] == 3
    assert len(seen) == 2 * 2 * 3 * -(-len(images) // 3)  # 2 engines x 3 outputs x (actual, reference) per batch
    assert max(alive_from_earlier) == 0  # no output of an earlier batch is still held


def test_the_traced_keras_reference_gives_eagers_numbers(two_convs, keras_outputs):
    """Many batches run Keras traced into one graph (faster on big inputs): the same numbers, bit for bit."""
    from export.verify import TRACED_FROM_BATCHES, keras_reference
    from runtime.artifacts.manifest import read_manifest

    _, artifacts, fmodel, x = two_convs
    spec = read_manifest(artifacts).input
    eager, traced = (keras_reference(fmodel, spec, n) for n in (1, TRACED_FROM_BATCHES))
    for batch in (x[:1], x[1:6], x):  # any batch size, one trace
        assert all(np.array_equal(traced(batch)[k], eager(batch)[k]) for k in keras_outputs)
    assert all(np.array_equal(traced(x)[k], v) for k, v in keras_outputs.items())


def test_accuracy_only_where_labels_apply(zoo_artifacts):
    from export.verify import verification_images
    from runtime.artifacts.manifest import read_manifest

    spec = read_manifest(zoo_artifacts("functional_bn")).input  # 28x28x1, 10 classes, not the reference
    assert verification_images(spec)[1] is None
    assert verification_images(spec, labelled=True)[1] is not None
    v = read_manifest(zoo_artifacts("functional_bn")).verification
    assert "accuracy" not in v and v["images"] > 0
    assert "label" not in read_manifest(zoo_artifacts("functional_bn")).preview.get("image", "")


def test_export_progress_and_true_wall_time(two_convs, tmp_path, capsys):
    """In a log (stderr not a terminal): one line per stage, no bar; the summary's time is the
    process' wall time (since export.cli was imported), at least the stages' sum."""
    import export.cli

    assert export.cli.main(["--model", str(two_convs[0]), "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    stages = re.findall(r"^export: (\w+) done in ([\d.]+) s$", err, re.M)
    assert [s for s, _ in stages] == ["load", "SavedModel", "ONNX", "verification"]
    assert "\r" not in err and "%|" not in err
    reported = float(re.search(r"-> \S+ in ([\d.]+) s", out).group(1))
    assert sum(float(t) for _, t in stages) <= reported + 0.1 <= time.perf_counter() - export.cli.STARTED + 0.2
    assert "accuracy not scored" in out and "verified on 80 images" in out


def test_progress_bar_on_a_terminal():
    from export.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    progress = Progress(out)
    with progress.stage("verification"):
        with progress.bar(10) as bar:
            bar.update(10)
    text = out.getvalue()
    assert "export: verification ..." in text and "/10 [" in text and "export: verification done in" in text
    assert set(progress.seconds) == {"verification"} and progress.peak_rss["verification"] > 0
