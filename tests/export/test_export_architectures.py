"""Models other than the reference: functional, same padding, strides, BatchNorm, separate ReLU, RGB inputs."""
from __future__ import annotations

import numpy as np
import pytest
from zoo import digits_as

import runtime
from export.pipeline import ExportOptions, export_model
from runtime.artifacts.manifest import Preprocessing
from runtime.compare import compare_outputs, failures


def keras_outputs(model_path, names, images):
    import keras

    model = keras.models.load_model(model_path)
    sub = keras.Model(model.inputs[0], {n: model.get_layer(n).output for n in names})
    return {k: np.asarray(v) for k, v in sub(images, training=False).items()}


@pytest.mark.parametrize("name, expected", [
    ("functional_bn", {"probs": (None, 10), "stem": (None, 28, 28, 16), "down": (None, 14, 14, 24),
                       "head_conv": (None, 12, 12, 32)}),
    ("rgb_small", {"rgb_probs": (None, 5), "rgb_conv": (None, 14, 14, 8), "rgb_conv_2": (None, 7, 7, 12)}),
])
def test_zoo_exports_every_conv_layer(zoo_artifacts, zoo_model_file, digits, name, expected):
    folder = zoo_artifacts(name)
    manifest = runtime.read_manifest(folder)
    assert {o.name: o.shape for o in manifest.outputs} == expected
    assert manifest.verification["passed"]
    # The artifacts give the Keras model's numbers (BatchNorm in inference mode, not batch statistics).
    images = digits_as(manifest.input.image_shape, digits[0][:16])
    reference = keras_outputs(zoo_model_file(name), list(expected), images)
    for backend in ("onnx", "tf"):
        with runtime.load(folder, backend=backend) as model:
            assert not failures(compare_outputs(model.run(images), reference))


def test_separate_activation_layers_can_be_exposed(tmp_path, zoo_model_file):
    manifest = export_model(zoo_model_file("functional_bn"), tmp_path / "a",
                            ExportOptions(layers=["stem_bn", "stem_relu", "down_relu", "gap"]))
    assert manifest.output_names == ["probs", "stem_bn", "stem_relu", "down_relu", "gap"]
    assert [o.layer_class for o in manifest.outputs[1:]] == ["BatchNormalization", "ReLU", "Activation",
                                                            "GlobalAveragePooling2D"]
    assert manifest.verification["passed"]


def test_input_preprocessing_and_labels_recorded(tmp_path, zoo_model_file):
    labels = ["a", "b", "c", "d", "e"]
    manifest = export_model(zoo_model_file("rgb_small"), tmp_path / "a",
                            ExportOptions(labels=labels, preprocessing=Preprocessing(scale=2 / 255,
                                                                                                     offset=-1.0)))
    assert manifest.labels == labels
    assert manifest.input.preprocessing.value_range == (-1.0, 1.0)
    assert manifest.input.shape == (None, 32, 32, 3)
    with runtime.load(tmp_path / "a") as model:
        pixels = np.full((1, 32, 32, 3), 255, np.uint8)
        assert np.allclose(model.run(pixels)["rgb_probs"], model.run(np.ones((1, 32, 32, 3), np.float32))["rgb_probs"])
