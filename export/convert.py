"""A traced tf.function -> ONNX, with the repairs that Keras 3 graphs need from tf2onnx.

tf2onnx's `from_function` trips over three things Keras 3 produces:
- constants captured by the function (Normalization's mean and variance, given or adapted)
  are listed as function inputs, so they became extra ONNX graph inputs: only the signature's
  own inputs are inputs here, the captured values are frozen into Const nodes;
- `Conv2D(groups>1)` runs inside a nested `tf.function(jit_compile=True)` that grappler will not
  inline, leaving a StatefulPartitionedCall: the XLA marks are dropped so it inlines into a plain
  (grouped) Conv2D, which tf2onnx converts;
- exact `gelu` uses `Erfc`, which tf2onnx has no handler for: Erfc(x) = 1 - Erf(x).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re

from runtime.errors import ExportError

_XLA_ATTRS = ("_XlaMustCompile", "_noinline")
_CATCH_ERRORS = "TF2ONNX_CATCH_ERRORS"


def to_onnx(serve, opset: int, layer_names: list[str] = ()):
    """ONNX ModelProto of serve, named like its signature.

    Args:
        layer_names: Keras layer names (nested ones included), to say which layers hold an
            unsupported op.

    Raises:
        ExportError: ops that have no ONNX equivalent, named with the layers they come from.
    """
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.util import deprecation

    concrete = serve.get_concrete_function()
    signature = [s for s in tf.nest.flatten(concrete.structured_input_signature) if isinstance(s, tf.TensorSpec)]
    inputs = concrete.inputs[:len(signature)]  # the captured constants follow: they are not inputs
    outputs = concrete.outputs
    rename = {t.name: s.name for t, s in zip(inputs, signature)}
    rename.update({t.name: key for key, t in concrete.structured_outputs.items()})
    with tf.device("/cpu:0"):
        frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
        graph_def = _without_xla_marks(frozen.graph.as_graph_def(add_shapes=True))
        with _quiet_tf2onnx(), deprecation.silence():  # tf2onnx calls TF1 freezing APIs
            proto, _ = tf2onnx.convert.from_graph_def(
                graph_def, name=concrete.name, input_names=[t.name for t in inputs],
                output_names=[t.name for t in outputs], opset=opset,
                custom_op_handlers={"Erfc": (_erfc, [])}, tensors_to_rename=rename)
    _check_supported(proto, layer_names)
    return proto


def _without_xla_marks(graph_def):
    """graph_def whose functions and calls no longer ask for XLA, so grappler inlines them."""
    for function in graph_def.library.function:
        for attr in _XLA_ATTRS:
            function.attr.pop(attr, None)
    for node in (*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)):
        for attr in _XLA_ATTRS:
            node.attr.pop(attr, None)
    return graph_def


def _erfc(ctx, node, name, args):
    """tf2onnx handler: Erfc(x) -> 1 - Erf(x), in the node's dtype."""
    import numpy as np
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
    one = ctx.make_const(utils.make_name(f"{node.name}/one"), np.array(1, dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


@contextlib.contextmanager
def _quiet_tf2onnx():
    """tf2onnx without its log and without its safety copies.

    It logs every op it cannot convert at ERROR level: the one-line ExportError says it all. And
    by default it deep-copies the whole graph, weights included, before each optimizer of every
    pass, so that a failing optimizer can be skipped: about 40% of the conversion time (MobileNet)
    and a weight copy each time. Its environment switch turns that off (tf2onnx 1.17 reads only
    whether the variable is set); an optimizer error then fails the export instead.
    """
    logger = logging.getLogger("tf2onnx")
    level, previous = logger.level, os.environ.get(_CATCH_ERRORS)
    logger.setLevel(logging.CRITICAL + 1)
    os.environ[_CATCH_ERRORS] = "false"
    try:
        yield
    finally:
        logger.setLevel(level)
        if previous is None:
            os.environ.pop(_CATCH_ERRORS, None)
        else:
            os.environ[_CATCH_ERRORS] = previous


def _check_supported(proto, layer_names) -> None:
    """Raise one ExportError naming every op left unconverted and the Keras layers holding it."""
    import onnx

    found: dict[str, set[str]] = {}
    for node in proto.graph.node:
        if node.domain in ("", "ai.onnx") and onnx.defs.has(node.op_type):
            continue
        layer = source_layer(node.name, layer_names)
        found.setdefault(node.op_type, set()).add(f"layer {layer}" if layer else f"node {node.name}")
    if found:
        listed = "; ".join(f"{op} (in {', '.join(sorted(where))})" for op, where in sorted(found.items()))
        raise ExportError(f"ONNX conversion failed: tf2onnx has no conversion for the TensorFlow op(s) {listed}; "
                          "rebuild those layers from supported operations (e.g. another activation)")


def source_layer(node_name: str, layer_names) -> str | None:
    """The innermost Keras layer whose name scope holds a TF node, e.g. '.../conv2d_1_1/Gelu/Erfc' -> conv2d_1.

    TensorFlow makes scope names unique by appending '_1', '_2', ...: those are stripped.
    """
    names = set(layer_names)
    found = None
    for part in node_name.split("/"):
        while part and part not in names and re.search(r"_\d+$", part):
            part = re.sub(r"_\d+$", "", part)
        if part in names:
            found = part
    return found
