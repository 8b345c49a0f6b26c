"""A traced tf.function -> ONNX, with the repairs that Keras 3 graphs need from tf2onnx.

tf2onnx's `from_function` trips over three things Keras 3 produces:
- constants captured by the function (Normalization's mean and variance, given or adapted)
  are listed as function inputs, so they became extra ONNX graph inputs: only the signature's
  own inputs are inputs here, the captured values are frozen into Const nodes;
- `Conv2D(groups>1)` runs inside a nested `tf.function(jit_compile=True)` that grappler will not
  inline, leaving a StatefulPartitionedCall: the XLA marks are dropped so it inlines into a plain
  (grouped) Conv2D, which tf2onnx converts;
- exact `gelu` uses `Erfc`, which tf2onnx has no handler for: Erfc(x) = 1 - Erf(x).

And its freezing holds several copies of the weights at once (VGG16 at 224x224 went past 9 GB):
here grappler runs before the weights become constants, and tf2onnx reads them from one dict.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import re

from runtime.errors import ExportError

_XLA_ATTRS = ("_XlaMustCompile", "_noinline")
# Captured values up to this size stay inside the graph (tf2onnx's own large-model threshold):
# shape-like constants that shape inference needs to see.
_INLINE_BYTES = 1000


def to_onnx(serve, opset: int, layer_names: list[str] = ()):
    """ONNX ModelProto of serve, named like its signature.

    Args:
        layer_names: Keras layer names (nested ones included), to say which layers hold an
            unsupported op.

    Raises:
        ExportError: ops that have no ONNX equivalent, named with the layers they come from.
    """
    import tensorflow as tf
    from tensorflow.python.util import deprecation
    from tf2onnx import optimizer
    from tf2onnx.tfonnx import process_tf_graph

    concrete = serve.get_concrete_function()
    signature = [s for s in tf.nest.flatten(concrete.structured_input_signature) if isinstance(s, tf.TensorSpec)]
    inputs = [t.name for t in concrete.inputs[:len(signature)]]  # the captured values follow: not inputs
    outputs = [t.name for t in concrete.outputs]
    rename = dict(zip(inputs, (s.name for s in signature)))
    rename.update({t.name: key for key, t in concrete.structured_outputs.items()})
    with tf.device("/cpu:0"), _quiet_tf2onnx(), deprecation.silence():  # tf2onnx calls TF1 graph APIs
        graph_def, weights = _frozen(concrete, inputs, outputs)
        with tf.Graph().as_default() as tf_graph:
            tf.import_graph_def(graph_def, name="")
            del graph_def
            graph = process_tf_graph(tf_graph, continue_on_error=True, opset=opset, input_names=inputs,
                                     output_names=outputs, const_node_values=weights, tensors_to_rename=rename,
                                     custom_op_handlers={"Erfc": (_erfc, [])})
            del weights
            # catch_errors=False: no deep copy of the graph, weights included, before each optimizer of each
            # pass (so that a failing one could be skipped): 40% of the time on MobileNet, and memory.
            proto = optimizer.optimize_graph(graph, catch_errors=False).make_model(f"converted from {concrete.name}")
            del graph
    gc.collect()  # tf2onnx's graph is cyclic: its copy of the weights would outlive the proto's serialisation
    _check_supported(proto, layer_names)
    return proto


def _frozen(concrete, inputs: list[str], outputs: list[str]):
    """concrete's graph optimized by grappler with its captured values as Const nodes, and the
    weight bytes by Const node name.

    The weights stay out of the graph (Const nodes with shape and type only; tf2onnx reads their
    bytes from the dict, as in its large-model mode) and out of grappler, which runs before they
    become constants (tf2onnx folds constants itself). That keeps TensorFlow's own freezing
    (convert_variables_to_constants_v2: a copy of the weights per step, VGG16 past 9 GB) out of the
    export, except for graphs that use a variable other than through ReadVariableOp.
    """
    import tensorflow as tf

    graph_def = _optimized(concrete.graph.as_graph_def(), inputs, outputs)
    variables = {id(v.handle): v for v in concrete.graph.variables}
    captured = {internal.op.name: external for external, internal in concrete.graph.captures}
    handles = {name for name, external in captured.items() if external.dtype == tf.resource}
    readers = {n.op for n in graph_def.node for i in n.input if i.lstrip("^").split(":")[0] in handles}
    if readers - {"ReadVariableOp"} or any(id(captured[h]) not in variables for h in handles):
        return _frozen_by_tensorflow(concrete, inputs, outputs)
    captured.update({h: variables[id(captured[h])] for h in handles})
    weights, nodes = {}, []
    for node in graph_def.node:
        if node.name in handles:
            continue  # a variable's handle: its readers become the constants
        source = captured.get(node.input[0] if node.op == "ReadVariableOp" else node.name)
        nodes.append(node if source is None else _constant(node, source.numpy(), weights))
    del graph_def.node[:]
    graph_def.node.extend(nodes)
    return graph_def, weights


def _constant(node, value, weights: dict):
    """Const NodeDef named like node, holding value: in the graph if small, else in weights."""
    import tensorflow as tf

    const = tf.compat.v1.NodeDef(name=node.name, op="Const", device=node.device)
    const.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
    tensor = const.attr["value"].tensor
    if value.nbytes <= _INLINE_BYTES:
        tensor.CopyFrom(tf.make_tensor_proto(value))
    else:
        tensor.dtype = const.attr["dtype"].type
        tensor.tensor_shape.CopyFrom(tf.TensorShape(value.shape).as_proto())
        weights[node.name] = value.tobytes()
    return const


def _frozen_by_tensorflow(concrete, inputs: list[str], outputs: list[str]):
    """_frozen's result by TensorFlow's own freezing, for graphs the lean route cannot read."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tf2onnx.tf_utils import compress_graph_def

    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    graph_def = _optimized(frozen.graph.as_graph_def(), inputs, outputs)
    return graph_def, compress_graph_def(graph_def)


def _optimized(graph_def, inputs: list[str], outputs: list[str]):
    """graph_def after tf2onnx's grappler passes (function inlining, constant folding), without XLA marks."""
    import tensorflow as tf
    from tf2onnx import tf_loader

    with tf.Graph().as_default():  # grappler's meta-graph export needs graph mode
        return tf_loader.tf_optimize(inputs, outputs, _without_xla_marks(graph_def))


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
    """tf2onnx without its log: it logs every op it cannot convert at ERROR level, and the one-line
    ExportError says it all."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


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
