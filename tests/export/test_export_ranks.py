"""Convolutions of every rank: 1-D audio, 3-D video, TimeDistributed frames and a uint8 input, exported,
run, served, drawn; and a U-Net of any input size (benchmarks/architectures.py builds them, random weights)."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from serving import Server

import runtime
import viz
from benchmarks.architectures import ARCHITECTURES
from runtime.errors import ExportError, InputError
from runtime.jobs.stats import Stats
from runtime.preprocess import to_batch
from runtime.serve.triton import config_text

TESTED = ("audio_1d", "video_3d", "time_distributed", "uint8_input", "unet_free")
BUILT = {a.name: a for a in ARCHITECTURES if a.name in TESTED}
EXPECTED = {  # name -> {output: (layer class, shape, layout)}, and the input's layout and dtype
    "audio_1d": ("NWC", "float32", {
        "a_probs": ("Dense", (None, 5), "NC"), "a_conv": ("Conv1D", (None, 998, 8), "NWC"),
        "a_sep": ("SeparableConv1D", (None, 249, 16), "NWC"), "a_dw": ("DepthwiseConv1D", (None, 249, 16), "NWC"),
        "a_up": ("Conv1DTranspose", (None, 500, 8), "NWC")}),
    "video_3d": ("NDHWC", "float32", {
        "v_probs": ("Dense", (None, 4), "NC"), "v_conv": ("Conv3D", (None, 8, 16, 16, 8), "NDHWC"),
        "v_conv_2": ("Conv3D", (None, 4, 8, 8, 16), "NDHWC"),
        "v_up": ("Conv3DTranspose", (None, 8, 16, 16, 4), "NDHWC")}),
    "time_distributed": ("NTHWC", "float32", {
        "td_probs": ("Dense", (None, 3), "NC"), "td_conv": ("TimeDistributed(Conv2D)", (None, 4, 15, 15, 8), "NTHWC"),
        "td_sep": ("TimeDistributed(SeparableConv2D)", (None, 4, 15, 15, 8), "NTHWC")}),
    "uint8_input": ("NHWC", "uint8", {
        "u_probs": ("Dense", (None, 4), "NC"), "u_conv": ("Conv2D", (None, 30, 30, 8), "NHWC"),
        "u_dw": ("DepthwiseConv2D", (None, 28, 28, 8), "NHWC")}),
}


@pytest.fixture(scope="session")
def ranked(tmp_path_factory):
    """name -> (Keras model file, artifacts folder), exported once for the session (about 15 s for the four)."""
    from export.pipeline import export_model

    folder = tmp_path_factory.mktemp("ranks")
    made = {}
    for name, arch in BUILT.items():
        path = folder / f"{name}.keras"
        arch.build().save(path)
        export_model(path, folder / name)
        made[name] = (path, folder / name)
    return made


def sample(spec, n: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if spec.dtype == "uint8" or spec.preprocessing.raw_dtype == "uint8":
        return rng.integers(0, 256, size=(n, *spec.shape[1:]), dtype=np.uint8)
    return rng.normal(0, 3, size=(n, *spec.shape[1:])).astype(np.float32)  # far outside 0..1: not pixels


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_conv_exposed_with_its_layout_and_matches_keras(ranked, name):
    import keras

    layout, dtype, outputs = EXPECTED[name]
    path, folder = ranked[name]
    manifest = runtime.read_manifest(folder)
    assert manifest.schema_version == 2 and (manifest.input.layout, manifest.input.dtype) == (layout, dtype)
    assert {o.name: (o.layer_class, o.shape, o.layout) for o in manifest.outputs} == outputs
    assert manifest.verification["passed"] and manifest.preview  # a heat strip / slices preview too
    x = sample(manifest.input)
    model = keras.models.load_model(path)
    want = np.asarray(model(to_batch(x, manifest.input) if dtype == "float32" else x))
    for backend in ("onnx", "tf"):
        with runtime.load(folder, backend=backend) as m:
            got = m.run(x)
        assert {k: v.shape[1:] for k, v in got.items()} == {k: v[1][1:] for k, v in outputs.items()}
        np.testing.assert_allclose(got[next(iter(outputs))], want, atol=1e-5)


def test_inputs_as_declared(ranked):
    with runtime.load(ranked["audio_1d"][1]) as m:
        assert m.manifest.input.preprocessing.raw_dtype == "float32"  # a signal: no pixel range
        wave = sample(m.manifest.input, 1)[0, :, 0]
        assert m.run(wave)["a_conv"].shape == (1, 998, 8)  # [W] of one channel is one sample
        with pytest.raises(InputError, match="NaN or infinite"):
            m.run(np.full((4000, 1), np.nan, np.float32))
    with runtime.load(ranked["uint8_input"][1]) as m:
        with pytest.raises(InputError, match="takes uint8 values as declared; got float32"):
            m.run(np.zeros((32, 32, 3), np.float32))
        with pytest.raises(InputError, match=r"uint8 values \(0..255\); got 0..300"):
            m.run(np.array([0, 300] * (32 * 32 * 3 // 2), np.int64).reshape(32, 32, 3))
    with runtime.load(ranked["video_3d"][1]) as m:
        with pytest.raises(InputError, match=r"\[D,H,W,C\] or \[N,D,H,W,C\] with D,H,W,C = 8,32,32,3"):
            m.run(np.zeros((32, 32, 3), np.uint8))


def test_figures_strips_and_slices(ranked, tmp_path, capsys):
    from PIL import Image

    strip = viz.tile(np.arange(2 * 40, dtype=np.float32).reshape(1, 40, 2), "NWC", pad=0)
    assert strip.shape == (2 * 5, 40)  # one row per channel, each stretched to W // (4 C) = 5 pixel rows
    assert np.allclose(strip[0], np.linspace(0, 1, 40)) and np.allclose(strip[5], strip[0])
    cube = np.zeros((1, 3, 4, 4, 2), np.float32)
    cube[0, 1, :, :, 1] = 1  # channel 1, depth slice 1
    mosaic = viz.tile(cube, "NDHWC", pad=0, normalize="none")
    assert mosaic.shape == (2 * 4, 3 * 4)  # rows: channels, columns: depth slices
    assert mosaic[4:, 4:8].all() and mosaic.sum() == 16
    for name in ("audio_1d", "video_3d", "time_distributed"):
        with runtime.load(ranked[name][1]) as m:
            written = viz.write_figures(m, sample(m.manifest.input, 1)[0], tmp_path / name)
        assert [p.name for p in written][-1] == "comparison.png"
        assert all(Image.open(p).size[0] > 200 for p in written)
    from runtime.cli.process import run_cli
    from viz.cli import main

    assert run_cli(main, [str(ranked["audio_1d"][1]), "--out", str(tmp_path / "cli")]) == 2
    assert "the model input is NWC [None, 4000, 1], not an image" in capsys.readouterr().err


def test_stats_and_triton_say_what_they_cover(ranked):
    manifest = runtime.read_manifest(ranked["audio_1d"][1])
    with pytest.raises(InputError, match=r"2-D feature maps of images.*a_conv \(NWC\), a_sep \(NWC\)"):
        Stats(manifest)
    config = config_text(runtime.read_manifest(ranked["uint8_input"][1]), "u8")
    assert 'name: "image"\n    data_type: TYPE_UINT8\n    dims: [ 32, 32, 3 ]' in config
    assert 'name: "u_dw"\n    data_type: TYPE_FP32\n    dims: [ 28, 28, 8 ]' in config


def test_serve_takes_a_signal(ranked):
    folder = ranked["audio_1d"][1]
    x = sample(runtime.read_manifest(folder).input, 2)
    srv = Server(folder)
    try:
        body = {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
                "outputs": [{"name": "a_up"}]}
        reply = httpx.post(f"{srv.url}/v2/models/{srv.name}/infer", content=json.dumps(body), timeout=60)
        wrong = httpx.post(f"{srv.url}/v2/models/{srv.name}/infer", timeout=60, content=json.dumps(
            {"inputs": [{**body["inputs"][0], "shape": [2, 4000], "data": x.ravel().tolist()}]}))
    finally:
        srv.stop()
    out = reply.json()["outputs"][0]
    with runtime.load(folder) as m:
        want = m.run(x, outputs=["a_up"])["a_up"]
    assert out["shape"] == [2, 500, 8] and np.allclose(np.reshape(out["data"], out["shape"]), want, atol=1e-6)
    assert wrong.status_code == 400 and "does not match the model's [N, 4000, 1]" in wrong.text


def test_free_size_exports_once_and_runs_at_any_size(ranked, tmp_path):
    import keras

    from export.pipeline import ExportOptions, export_model

    path, folder = ranked["unet_free"]
    manifest = runtime.read_manifest(folder)
    assert manifest.input.shape == (None, None, None, 3) and manifest.input.free_axes == "HW"
    assert manifest.output("mask").shape == (None, None, None, 2)
    assert manifest.verification["sizes"] == [[64, 64, 3], [96, 64, 3]] and manifest.verification["passed"]
    model = keras.models.load_model(path)
    with runtime.load(folder) as m:
        for h, w in [(32, 32), (48, 80)]:
            x = np.random.default_rng(h).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
            got = m.run(x)
            assert got["enc2_1"].shape == (2, h // 2, w // 2, 16)
            np.testing.assert_allclose(got["mask"], np.asarray(model(to_batch(x, manifest.input))), atol=1e-5)
        with pytest.raises(InputError, match="one size"):
            m.run([np.zeros((32, 32, 3), np.uint8), np.zeros((48, 32, 3), np.uint8)])
        with pytest.raises(InputError, match=r"one size; got \[32, 32, 3\] and then \[48, 32, 3\]"):
            list(m.stream([np.zeros((32, 32, 3), np.uint8), np.zeros((48, 32, 3), np.uint8)], batch_size=4))
    from PIL import Image

    from runtime.images import read_image

    Image.fromarray(np.zeros((24, 40, 3), np.uint8)).save(tmp_path / "wide.png")
    assert read_image(tmp_path / "wide.png", manifest.input).shape == (24, 40, 3)  # free H, W: its own size
    with pytest.raises(InputError, match="statistics need one input size.*along HW"):
        Stats(manifest)
    assert "dims: [ -1, -1, 3 ]" in config_text(manifest, "unet")
    fixed = export_model(path, tmp_path / "fixed", ExportOptions(input_shape=(96, 64, 3)))
    assert fixed.input.shape == (None, 96, 64, 3) and fixed.output("mask").shape == (None, 96, 64, 2)
    with pytest.raises(ExportError, match=r"`input_shape` \[96, 64, 4\] does not fit the model's input"):
        export_model(path, tmp_path / "bad", ExportOptions(input_shape=(96, 64, 4)))


def test_serve_groups_requests_by_size(ranked):
    folder = ranked["unet_free"][1]
    sizes = [(32, 32), (48, 64), (32, 32), (48, 64)]
    xs = [np.random.default_rng(i).integers(0, 256, (1, h, w, 3), dtype=np.uint8) for i, (h, w) in enumerate(sizes)]
    srv = Server(folder, "--max-delay-ms", "50")  # requests that arrive together are batched: by size

    def infer(x):
        body = {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "UINT8", "data": x.ravel().tolist()}],
                "outputs": [{"name": "mask"}]}
        return httpx.post(f"{srv.url}/v2/models/{srv.name}/infer", content=json.dumps(body), timeout=60).json()

    try:
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(infer, xs))
    finally:
        srv.stop()
    with runtime.load(folder) as m:
        for x, reply in zip(xs, replies):
            out = reply["outputs"][0]
            assert out["shape"] == [1, *x.shape[1:3], 2]
            np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), m.run(x)["mask"], atol=1e-6)


CUSTOM = "benchmarks/custom_layers.py"


def test_custom_code_shared_blocks_and_subclassed_models(tmp_path, capsys):
    """--import loads the user's classes; every conv inside a custom layer or a subclassed model is exposed by
    following the call; a block called twice gives one output per call site; the error line keeps its cause."""
    import keras

    from export.cli import main
    from export.pipeline import ExportOptions, export_model
    from runtime.cli.process import run_cli

    arch = {a.name: a for a in ARCHITECTURES}
    files = {}
    for name in ("custom_layer", "subclassed", "shared_block"):
        files[name] = tmp_path / f"{name}.keras"
        arch[name].build().save(files[name])
    keras.saving.get_custom_objects().clear()  # as in a fresh process: the classes are unknown again
    assert run_cli(main, ["--model", str(files["custom_layer"]), "--out", str(tmp_path / "x")],
                   flags={"imports": "--import"}) == 2
    err = capsys.readouterr().err
    assert "Could not locate class 'ConvBlock'" in err and "pass --import with the Python file" in err
    layouts = {}
    for name in files:
        m = export_model(files[name], tmp_path / name, ExportOptions(imports=(CUSTOM,)))
        layouts[name] = [(o.name, o.layer) for o in m.outputs]
    assert layouts["custom_layer"] == [("probs", "probs"), ("stem", "stem"), ("block.inner_conv", "block/inner_conv"),
                                       ("block.inner_conv2", "block/inner_conv2")]
    assert layouts["subclassed"] == [("subclassed", "subclassed"), ("c1", "c1"), ("c2", "c2")]
    assert [n for n, _ in layouts["shared_block"]] == ["probs", "block.bc1", "block.bc1-2", "block.bc2",
                                                       "block.bc2-2", "head"]
    assert dict(layouts["shared_block"])["block.bc2-2"] == "block/bc2@2"
    model = keras.models.load_model(files["shared_block"])
    block = model.get_layer("block")
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 8)).astype(np.float32)
    with runtime.load(tmp_path / "shared_block") as m:
        got = m.run(x)
    np.testing.assert_allclose(got["block.bc1-2"], np.asarray(block.get_layer("bc1")(block(x))), atol=1e-5)
    only = export_model(files["shared_block"], tmp_path / "only", ExportOptions(layers=["block/bc1@2"]))
    assert [o.name for o in only.outputs] == ["probs", "block.bc1-2"]


def test_mixed_float16_verifies_against_its_own_float16_floor(tmp_path):
    """The issue's case: one float32 ulp is lost in the cast to float16 (floor 0, export refused); one float16
    ulp measures the model's own rounding. Outputs are float32, as everywhere."""
    from export.pipeline import ExportOptions, export_model

    path = tmp_path / "mp.keras"
    from benchmarks.architectures import mixed_float16

    mixed_float16(8, size=32).save(path)  # 64x64 in the coverage table; the same failure at 32x32, 4x faster
    manifest = export_model(path, tmp_path / "a")
    v = manifest.verification
    assert v["passed"] and v["noise_dtype"] == "float16" and "mp_conv7" in v["within_noise_only"]
    with runtime.load(tmp_path / "a") as m:
        assert {a.dtype for a in m.run(np.zeros((32, 32, 3), np.uint8)).values()} == {np.dtype(np.float32)}
    with pytest.raises(ExportError, match="computes in float16, mixed precision"):
        export_model(path, tmp_path / "b", ExportOptions(tolerance=runtime.Tolerance(noise=0)))


def test_a_conv_used_through_its_weights_is_named_not_skipped():
    """A custom layer that holds a Conv2D but runs keras.ops.conv on its kernel: no call to follow, so the export
    names it in a warning."""
    import keras

    from export.graph import trace, unreached_convs

    class RawConv(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(4, 3, name="held_conv")

        def build(self, shape):
            self.conv.build(shape)

        def call(self, x):
            return keras.ops.conv(x, self.conv.kernel)

    inp = keras.Input((16, 16, 3))
    model = keras.Model(inp, RawConv(name="raw")(keras.layers.Conv2D(3, 1, name="called")(inp)))
    assert unreached_convs(trace(model)) == ["held_conv"]
