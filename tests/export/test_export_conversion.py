"""Conversion repairs and failures: unsupported ops named once with their layers; external data for big graphs."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import runtime
from export.pipeline import export_model
from runtime.errors import ArtifactError, ExportError


def tiny(activation="relu", second="relu", filters=4):
    import keras
    from keras import layers

    inp = keras.Input((12, 12, 3))
    x = layers.Conv2D(4, 3, activation=activation, name="first")(inp)
    x = layers.Conv2D(filters, 3, activation=second, name="second")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="probs")(x), name="tiny")


def test_unsupported_ops_are_named_once_with_their_layers(tmp_path):
    model_file = tmp_path / "celu.keras"
    tiny("celu", "celu").save(model_file)  # celu lowers to Expm1, which tf2onnx cannot convert
    proc = subprocess.run([sys.executable, "-m", "export", "--model", str(model_file), "--out", str(tmp_path / "a")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    problems = [line for line in proc.stderr.splitlines() if not line.startswith("export: ")]  # not the stage lines
    assert len(problems) == 1, proc.stderr  # one line: no tf2onnx log, no traceback
    assert "tf2onnx has no conversion for the TensorFlow op(s) Expm1 (in layer first, layer second)" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["celu.keras"]  # no temporary folder left, none named


def test_weights_over_the_limit_go_to_hashed_external_data(tmp_path, monkeypatch):
    import export.artifacts

    model_file = tmp_path / "tiny.keras"
    tiny(filters=64).save(model_file)  # 9 KB of kernel: over onnx's 1 KB external-data threshold
    monkeypatch.setattr(export.artifacts, "EXTERNAL_DATA_ABOVE", 100)  # the 2 GB route, on a small model
    out = tmp_path / "a"
    manifest = export_model(model_file, out)
    assert manifest.verification["passed"]
    assert {"model.onnx", "model.onnx.data"} <= set(manifest.files)
    assert (out / "model.onnx.data").stat().st_size > (out / "model.onnx").stat().st_size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing written beside the folder
    pixels = np.random.default_rng(0).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    with runtime.load(out, backend="onnx") as onnx_model, runtime.load(out, backend="tf") as tf_model:
        np.testing.assert_allclose(onnx_model.run(pixels)["first"], tf_model.run(pixels)["first"], atol=1e-5)
    data = out / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactError, match="model.onnx.data"):
        runtime.load(out, backend="onnx")


def test_extra_graph_inputs_are_reported_as_such():
    # A hand-made function with a second input stands for any graph that gained inputs in conversion.
    import tensorflow as tf

    from export.artifacts import write_onnx

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="image"),
                                  tf.TensorSpec([None, 4], tf.float32, name="extra")])
    def serve(image, extra):
        return {"out": image + extra}

    with pytest.raises(ExportError, match=r"the ONNX graph has inputs \['image', 'extra'\], expected only 'image'"):
        write_onnx(serve, ["out"], "unused.onnx")


def _converted(serve, image):
    """serve converted to ONNX and run by onnxruntime on image: outputs by name."""
    import onnxruntime

    from export.convert import to_onnx

    session = onnxruntime.InferenceSession(to_onnx(serve, 17).SerializeToString())
    return dict(zip((o.name for o in session.get_outputs()), session.run(None, {"image": image})))


def test_weights_and_captured_constants_become_initializers_with_their_values():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    kernel = tf.Variable(rng.normal(size=(3, 3, 2, 8)).astype(np.float32))  # kept aside while grappler runs
    scale = tf.constant(rng.normal(size=8).astype(np.float32))  # a captured constant, as Normalization has

    @tf.function(input_signature=[tf.TensorSpec([None, 6, 6, 2], tf.float32, name="image")])
    def serve(image):
        return {"maps": tf.nn.relu(tf.nn.conv2d(image, kernel, 1, "VALID") * scale)}

    image = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(_converted(serve, image)["maps"], serve(image)["maps"].numpy(), rtol=1e-5, atol=1e-6)


def test_variables_read_other_than_by_readvariableop_are_frozen_by_tensorflow():
    import tensorflow as tf

    table = tf.Variable(np.arange(400, dtype=np.float32).reshape(100, 4))  # 1.6 KB: kept out of the graph

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="image")])
    def serve(image):
        return {"out": image * tf.gather(table, [3, 7])[:1]}  # a ResourceGather reads the variable itself

    assert "ResourceGather" in {n.op for n in serve.get_concrete_function().graph.as_graph_def().node}
    image = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(_converted(serve, image)["out"], serve(image)["out"].numpy())
