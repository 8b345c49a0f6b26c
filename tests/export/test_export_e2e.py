"""python -m export on the shipped reference CNN: the artifacts honour the contract."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.artifacts.hashing import sha256_file
from runtime.artifacts.manifest import SCHEMA_VERSION, read_manifest

REFERENCE_OUTPUTS = {"dense_1": [None, 10], "conv2d": [None, 26, 26, 32], "conv2d_1": [None, 11, 11, 64]}


def run_cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "export", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_manifest_describes_the_artifacts(reference_artifacts, reference_model_path):
    manifest = read_manifest(reference_artifacts)  # checks schema version and every sha256
    data = json.loads((reference_artifacts / "manifest.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    preprocessing = data["input"].pop("preprocessing")
    assert data["input"] == {"name": "image", "dtype": "float32", "shape": [None, 28, 28, 1], "layout": "NHWC"}
    assert {k: preprocessing[k] for k in ("raw_dtype", "scale", "offset")} == {"raw_dtype": "uint8", "scale": 1 / 255,
                                                                               "offset": 0.0}
    assert "no Rescaling or Normalization" in preprocessing["reason"]
    assert {o["name"]: o["shape"] for o in data["outputs"]} == REFERENCE_OUTPUTS
    assert manifest.output_names == ["dense_1", "conv2d", "conv2d_1"]
    assert [o.role for o in manifest.outputs] == ["model_output", "feature_map", "feature_map"]
    assert [o.layer_class for o in manifest.outputs] == ["Dense", "Conv2D", "Conv2D"]
    assert manifest.labels == [str(i) for i in range(10)]
    assert manifest.source_model["sha256"] == sha256_file(reference_model_path)
    assert manifest.onnx == {"file": "model.onnx", "opset": 17}
    assert set(manifest.tools) >= {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"}
    assert "model.onnx" in manifest.files and "saved_model/saved_model.pb" in manifest.files
    for rel, meta in manifest.files.items():
        assert sha256_file(reference_artifacts / rel) == meta["sha256"]


def test_preview_of_first_conv_layer(reference_artifacts):
    from PIL import Image

    preview = read_manifest(reference_artifacts).preview
    assert preview == {"file": "preview_conv2d.png", "output": "conv2d", "image": "test image 0 (label 7)"}
    with Image.open(reference_artifacts / preview["file"]) as img:
        pixels = np.asarray(img.convert("L"))
    assert img.format == "PNG" and pixels.shape[1] >= 800 and pixels.shape[1] > pixels.shape[0]  # 4 x 8 maps
    header = pixels[:int(0.1 * pixels.shape[0])]  # a header: dark text on white above the grid
    assert np.median(header) == 255 and header.min() < 80
    assert pixels.std() > 20  # a digit's strokes, not a blank image


def test_verification_report(reference_artifacts, mnist_npz):
    v = read_manifest(reference_artifacts).verification
    assert v["passed"] and not v["problems"]
    assert v["images"] == 10000 and "MNIST test set" in v["source"]
    for name in REFERENCE_OUTPUTS:
        for backend in ("savedmodel", "onnx"):
            err = v["outputs"][name][backend]
            assert err["ok"] and 0 <= err["min_atol"] <= v["tolerance"]["atol"] and err["nan"] == 0
    # the shipped model is trained: ~98.8% on the test set, identical through every format
    assert v["accuracy"]["keras"] > 0.98 and v["accuracy_images"] == 10000  # the reference: its labels apply
    assert v["accuracy"]["keras"] == v["accuracy"]["savedmodel"] == v["accuracy"]["onnx"]


def test_onnx_graph_passes_checker_with_contract_names(reference_artifacts):
    import onnx
    import onnxruntime as ort

    model = onnx.load(reference_artifacts / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == list(REFERENCE_OUTPUTS)
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(reference_artifacts / "model.onnx", providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(REFERENCE_OUTPUTS)
    out = session.run(None, {"image": np.zeros((3, 28, 28, 1), np.float32)})
    assert [o.shape for o in out] == [(3, 10), (3, 26, 26, 32), (3, 11, 11, 64)]


def test_saved_model_signature(reference_artifacts):
    import tensorflow as tf

    sig = tf.saved_model.load(str(reference_artifacts / "saved_model")).signatures["serving_default"]
    assert list(sig.structured_input_signature[1]) == ["image"]
    assert sig.structured_input_signature[1]["image"].shape.as_list() == [None, 28, 28, 1]
    assert set(sig.structured_outputs) == set(REFERENCE_OUTPUTS)
    cli = shutil.which("saved_model_cli", path=str(Path(sys.executable).parent)) or shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli is not on PATH")
    shown = subprocess.run([cli, "show", "--dir", str(reference_artifacts / "saved_model"), "--all"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "inputs['image']" in shown.stdout
    for name in REFERENCE_OUTPUTS:
        assert f"outputs['{name}']" in shown.stdout


def test_cli_default_export_prints_summary(tmp_path, mnist_npz):
    result = run_cli("--out", str(tmp_path / "artifacts"))
    assert result.returncode == 0, result.stderr
    for name in REFERENCE_OUTPUTS:
        assert name in result.stdout
    assert "all outputs agree" in result.stdout and "10000 images" in result.stdout
    assert f"preview: {tmp_path / 'artifacts' / 'preview_conv2d.png'}" in result.stdout
    assert read_manifest(tmp_path / "artifacts").verification["passed"]


def test_cli_layers_and_opset(tmp_path, reference_model_path):
    result = run_cli("--model", str(reference_model_path), "--out", str(tmp_path / "a"),
                     "--layers", "max_pooling2d,dense", "--opset", "13")
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(tmp_path / "a")
    assert manifest.output_names == ["dense_1", "max_pooling2d", "dense"]
    assert manifest.output("max_pooling2d").shape == (None, 13, 13, 32)
    assert manifest.output("dense").layout == "NC"
    assert manifest.onnx["opset"] == 13


def test_h5_model_exports(tmp_path, reference_model_path):
    import keras

    h5 = tmp_path / "mnist_cnn.h5"
    keras.models.load_model(reference_model_path).save(h5)
    from export.pipeline import export_model

    manifest = export_model(h5, tmp_path / "a")
    assert manifest.output_names == ["dense_1", "conv2d", "conv2d_1"]
    assert manifest.verification["passed"]


def test_reference_training_path(tmp_path, mnist_npz):
    """The documented command reproduces a trained reference model (one epoch here, to stay fast)."""
    out = tmp_path / "cnn.keras"
    result = subprocess.run([sys.executable, "-m", "export.reference", "--epochs", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["epochs"] == 1 and record["test_accuracy"] > 0.95
    assert "test accuracy" in result.stdout
