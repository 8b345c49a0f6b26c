"""The CI subset of Keras Applications coverage (benchmarks/applications.py runs the real families):
a nested transfer-learning model, EfficientNet-, ConvNeXt-, Inception- and ResNet-style models."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from zoo import APPLICATIONS

import runtime
from runtime.compare import compare_outputs, failures


def keras_reference(model_file, manifest, pixels: np.ndarray) -> dict:
    """The user's own Keras model, fed the pixels as floats the way the manifest says, at every exposed layer."""
    import keras

    from export.graph import feature_model, select_layers, trace

    traced = trace(keras.models.load_model(model_file, compile=False))
    exposed = [o.layer for o in manifest.outputs if o.role == "feature_map"]
    fmodel, _ = feature_model(traced, select_layers(traced.layers, exposed))
    pre = manifest.input.preprocessing
    floats = pixels.astype("float32") * np.float32(pre.scale) + np.float32(pre.offset)
    return {k: np.asarray(v) for k, v in fmodel(floats, training=False).items()}


@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_family_exports_verifies_and_serves_raw_pixels(app_artifacts, app_model_file, name):
    folder = app_artifacts(name)
    manifest = runtime.read_manifest(folder)
    assert manifest.verification["passed"], manifest.verification["problems"]
    assert [i.name for i in onnx.load(folder / "model.onnx").graph.input] == ["image"]  # no captured constants
    pixels = np.random.default_rng(7).integers(0, 256, (8, *manifest.input.image_shape), dtype=np.uint8)
    reference = keras_reference(app_model_file(name), manifest, pixels)
    for backend in ("onnx", "tf"):
        with runtime.load(folder, backend=backend) as model:
            got = model.run(pixels)  # raw uint8: the runtime applies the recorded preprocessing
            assert set(got) == set(reference)
            assert not failures(compare_outputs(got, reference)), backend


def test_every_convolution_kind_is_exposed(app_artifacts):
    classes = {o.layer_class for o in runtime.read_manifest(app_artifacts("convnext_style")).outputs}
    assert {"Conv2D", "DepthwiseConv2D"} <= classes  # the grouped conv too: 'grouped' is a Conv2D
    names = runtime.read_manifest(app_artifacts("convnext_style")).output_names
    assert names == ["probs", "stem", "block_dw", "grouped"]
