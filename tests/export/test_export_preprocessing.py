"""Preprocessing follows the model: raw pixels for a model that rescales or normalizes itself, else / 255."""
from __future__ import annotations

import numpy as np
import pytest

import runtime
from export.cli import main
from export.graph import trace
from export.preprocessing import PreprocessingWarning, choose_preprocessing, model_preprocessing
from runtime.artifacts.manifest import Preprocessing
from runtime.cli.process import run_cli


def chain(*first_layers, nested: bool = False):
    """Input(16x16x3) -> first_layers -> Conv2D -> GAP -> Dense; the first layers inside a nested base if asked."""
    import keras
    from keras import layers

    inp = keras.Input((16, 16, 3))
    body = [*first_layers, layers.Conv2D(4, 3, name="conv")]
    if nested:
        body = [keras.Sequential([keras.Input((16, 16, 3)), *body], name="base")]
    x = inp
    for layer in body:
        x = layer(x)
    return keras.Model(inp, layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x)))


def detected(model) -> Preprocessing:
    return model_preprocessing(trace(model).layers)


def test_model_that_rescales_itself_gets_raw_pixels():
    from keras import layers

    for model in (chain(layers.Rescaling(1 / 255)), chain(layers.Rescaling(1 / 127.5, offset=-1)),
                  chain(layers.RandomFlip(), layers.Rescaling(1 / 255), nested=True),
                  chain(layers.Normalization(mean=[124, 117, 104], variance=[3400, 3300, 3300]))):
        pre = detected(model)
        assert (pre.scale, pre.offset) == (1.0, 0.0)
        assert "its own input" in pre.reason and "raw pixel" in pre.reason


def test_model_without_rescaling_gets_pixels_over_255():
    from keras import layers

    for model in (chain(), chain(layers.Conv2D(3, 1), layers.Rescaling(1 / 255)),  # not at the start
                  chain(layers.Normalization(mean=[0.5, 0.4, 0.4], variance=[0.06, 0.06, 0.07]))):
        pre = detected(model)
        assert (pre.scale, pre.offset) == (1 / 255, 0.0) and pre.reason


def test_explicit_scale_that_scales_twice_warns():
    from keras import layers

    nodes = trace(chain(layers.Rescaling(1 / 255))).layers
    with pytest.warns(PreprocessingWarning, match="scales the pixels twice.*Rescaling"):
        pre = choose_preprocessing(nodes, Preprocessing(scale=1 / 255))
    assert pre.scale == 1 / 255 and pre.reason == "given with `scale`/`offset`"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        choose_preprocessing(trace(chain()).layers, Preprocessing(scale=2 / 255, offset=-1))
        choose_preprocessing(nodes, Preprocessing(scale=1.0))


def test_cli_says_why_and_warns_once(capsys, tmp_path):
    from keras import layers

    model_file = tmp_path / "rescaling.keras"
    chain(layers.Rescaling(1 / 255)).save(model_file)
    assert run_cli(main, ["--model", str(model_file), "--out", str(tmp_path / "a"), "--scale", "0.00392"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning: --scale 0.00392 --offset 0 scales the pixels twice") == 1
    assert "* 0.00392 + 0 (given with --scale/--offset)" in captured.out
    assert run_cli(main, ["--model", str(model_file), "--out", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "uint8 pixels * 1 + 0 (the model rescales its own input" in captured.out
    assert runtime.read_manifest(tmp_path / "b").input.preprocessing.scale == 1.0


@pytest.mark.parametrize("name, scale", [("efficientnet_style", 1.0), ("convnext_style", 1.0),
                                         ("resnet_mini", 1 / 255)])
def test_recorded_preprocessing_of_the_families(app_artifacts, name, scale):
    pre = runtime.read_manifest(app_artifacts(name)).input.preprocessing
    assert (pre.scale, pre.offset) == (scale, 0.0) and pre.reason


def test_raw_uint8_through_the_runtime_equals_keras_on_float_pixels(app_artifacts, app_model_file):
    import keras

    pixels = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    model = keras.models.load_model(app_model_file("efficientnet_style"), compile=False)
    expected = np.asarray(model(pixels.astype("float32"), training=False))  # the user's model on 0..255 floats
    with runtime.load(app_artifacts("efficientnet_style")) as served:
        got = served.run(pixels, outputs=["probs"])["probs"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
