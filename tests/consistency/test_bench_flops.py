"""benchmarks/flops.py: model FLOPs per image from the ONNX graph, checked against counts done by hand."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.flops import main, onnx_flops
from runtime.cli.process import run_cli
from runtime.errors import ArtifactError

ROOT = Path(__file__).resolve().parents[2]

# Multiply-adds x 2 of Conv (2*Hout*Wout*Cout*Kh*Kw*Cin) and Dense (2*in*out) layers, per image.
REFERENCE = {
    "conv2d": 2 * 26 * 26 * 32 * 3 * 3 * 1,  # 389,376
    "conv2d_1": 2 * 11 * 11 * 64 * 3 * 3 * 32,  # 4,460,544
    "dense": 2 * 1600 * 64,  # 204,800
    "dense_1": 2 * 64 * 10,  # 1,280
}
ZOO = {
    "functional_bn": [2 * 28 * 28 * 16 * 9 * 1, 2 * 14 * 14 * 24 * 9 * 16, 2 * 12 * 12 * 32 * 9 * 24, 2 * 32 * 10],
    "rgb_small": [2 * 14 * 14 * 8 * 25 * 3, 2 * 7 * 7 * 12 * 9 * 8, 2 * 588 * 5],
}


def test_reference_model_costs_5_056_mflop_per_image(reference_artifacts):
    count = onnx_flops(reference_artifacts / "model.onnx")
    assert sum(REFERENCE.values()) == 5_056_000
    assert [flops for _, _, flops in count.by_node] == list(REFERENCE.values())
    assert [op for _, op, _ in count.by_node] == ["Conv", "Conv", "MatMul", "MatMul"]
    assert [layer for layer, _, _ in count.by_node] == list(REFERENCE)  # Keras layers, not TF-internal nodes
    assert count.total == 5_056_000


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models(name, zoo_artifacts):
    count = onnx_flops(zoo_artifacts(name) / "model.onnx")
    assert sorted(f for _, _, f in count.by_node) == sorted(ZOO[name])
    exposed = {o.name for o in count_manifest(zoo_artifacts(name))}
    names = [layer for layer, _, _ in count.by_node]
    assert all("/" not in n for n in names) and exposed & set(names), names


def count_manifest(folder):
    from runtime import read_manifest

    return [o for o in read_manifest(folder).outputs if o.role == "feature_map"]


def test_grouped_conv_and_gemm_with_transposed_weight():
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((6, 1, 3, 3), np.float32), "w")  # depthwise x2: group 3, 6 outputs
    g = numpy_helper.from_array(np.zeros((10, 384), np.float32), "g")  # [out, in], transB=1
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], group=3, pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
         helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], [w, g])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    count = onnx_flops(model)
    assert [f for _, _, f in count.by_node] == [2 * 8 * 8 * 6 * 9 * 1, 2 * 384 * 10]


def test_main_prints_every_counted_node_and_the_total(capsys, reference_artifacts):
    for target in (reference_artifacts / "model.onnx", reference_artifacts):  # the file, or its artifacts folder
        assert run_cli(main, [str(target)]) == 0
        out, err = capsys.readouterr()
        assert err == "" and len(out.splitlines()) == 5
        assert out.splitlines()[-1].split()[:2] == ["total", "5,056,000"] and "(5.056 MFLOP)" in out
        assert [line.split()[-1] for line in out.splitlines()[:-1]] == list(REFERENCE)


def write_garbage(folder: Path) -> Path:
    (folder / "notes.onnx").write_text("not a protobuf, just text\n")
    return folder / "notes.onnx"


def write_empty(folder: Path) -> Path:
    (folder / "empty.onnx").write_bytes(b"")  # parses as an empty protobuf message
    return folder / "empty.onnx"


# name: (make the argument in a folder -> path, expected part of the one-line message)
MAIN_ERRORS = {
    "missing file": (lambda d: d / "nowhere.onnx", "ONNX file '"),
    "text file": (write_garbage, "is not an ONNX model (Error parsing message"),
    "empty file": (write_empty, "is not an ONNX model (no IR version or no graph)"),
    "folder without model.onnx": (lambda d: d, "is a folder without model.onnx"),
}


@pytest.mark.parametrize("case", MAIN_ERRORS, ids=str)
def test_main_errors_are_one_line(case, capsys, tmp_path):
    make, message = MAIN_ERRORS[case]
    code = run_cli(main, [str(make(tmp_path))])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_main_usage_errors_are_one_line(capsys):
    for argv, message in (([], "the following arguments are required: onnx"),
                          (["a.onnx", "--bogus"], "unrecognized arguments: --bogus")):
        assert run_cli(main, argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_onnx_flops_on_a_missing_path_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        onnx_flops(tmp_path / "missing.onnx")


def test_python_m_benchmarks_flops_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.flops", str(tmp_path / "nonexist.onnx")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: ONNX file '{tmp_path / 'nonexist.onnx'}' not found\n", proc.stderr
