"""benchmarks/flops.py: model FLOPs per image from the ONNX graph, checked against counts done by hand."""
from __future__ import annotations

import pytest

from benchmarks.flops import onnx_flops

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
    assert count.total == 5_056_000


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models(name, zoo_artifacts):
    count = onnx_flops(zoo_artifacts(name) / "model.onnx")
    assert sorted(f for _, _, f in count.by_node) == sorted(ZOO[name])


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
