"""Writing the two model artifacts: the SavedModel signature and the ONNX graph."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

from runtime.errors import ExportError
from runtime.manifest import INPUT_NAME, SIGNATURE, InputSpec

# Opset 17 runs on every onnxruntime since 1.14 and on TensorRT 8.6+; a plain CNN gains
# nothing from newer opsets, so the broadest deployment target wins. Overridable.
DEFAULT_OPSET = 17
BATCH_DIM = "batch"


def serving_function(feature_model, spec: InputSpec):
    """tf.function: `image` float32 [batch, H, W, C] -> dict of named outputs."""
    import tensorflow as tf

    signature = [tf.TensorSpec([None, *spec.image_shape], tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=signature)
    def serve(image):
        return feature_model(image, training=False)

    return serve


def write_saved_model(feature_model, serve, path: Path) -> None:
    """SavedModel whose `serving_default` signature is serve, with the model's variables."""
    import keras
    import tensorflow as tf

    try:
        archive = keras.export.ExportArchive()
        archive.track(feature_model)
        archive.add_endpoint(name=SIGNATURE, fn=serve)
        archive.write_out(os.fspath(path), verbose=False)
    except (ValueError, TypeError) as exc:  # Keras' ways of saying a graph cannot be saved
        raise ExportError(f"TensorFlow could not save the SavedModel: {str(exc).splitlines()[0]}") from None
    except tf.errors.OpError as exc:  # e.g. a full disk while writing the variables
        reason = exc.message.split("; ")[-1].split(" [Op:")[0]  # the OS reason, not the temporary path
        raise ExportError(f"TensorFlow could not write the SavedModel ({reason}); nothing published") from None


def write_onnx(serve, output_names: list[str], path: Path, opset: int = DEFAULT_OPSET):
    """ONNX graph of serve with the same input/output names, outputs in manifest order.

    Returns the checked ModelProto.

    Raises:
        ExportError: tf2onnx cannot convert the graph, or the result fails onnx.checker.
    """
    import onnx
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        with _lean_tf2onnx():
            proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=opset)
    except Exception as exc:  # tf2onnx raises bare Exceptions for unsupported ops/opsets
        raise ExportError(f"tf2onnx could not convert the model at opset {opset}: {str(exc).splitlines()[0]}") from None
    graph = proto.graph
    by_name = {o.name: o for o in graph.output}
    if set(by_name) != set(output_names):
        raise ExportError(f"ONNX outputs {sorted(by_name)} differ from the expected {output_names}")
    ordered = [by_name[n] for n in output_names]
    del graph.output[:]
    graph.output.extend(ordered)
    for value in (*graph.input, *graph.output):  # one readable name for the dynamic batch dimension
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    proto.doc_string = "featuremaps export: Keras feature maps as named outputs"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the converted ONNX graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
    onnx.save(proto, os.fspath(path))
    return proto


@contextmanager
def _lean_tf2onnx():
    """tf2onnx without its two memory sinks, which took ResNet50 past 8 GB and VGG16 past 20 GB.

    1. Each of its ~24 optimizer passes rewrites every node's attributes into the node's
       NodeProto; with protobuf's upb backend the replaced attributes stay in that message's
       arena, so every pass kept another copy of all weights (measured +100 MB per pass on
       ResNet50). A fresh NodeProto per rewrite lets the old one go.
    2. Before each pass it deep-copies the whole graph to roll back a failing optimizer; setting
       TF2ONNX_CATCH_ERRORS (tf2onnx reads any value as "off") skips the copies: a failing
       optimizer then fails the conversion, reported like any other conversion error.
    """
    from onnx import NodeProto
    from tf2onnx import constants
    from tf2onnx.graph import Node

    original = Node.update_proto

    def update_proto(self, external_tensor_storage=None):
        old = self._op
        self._op = NodeProto(name=old.name, op_type=old.op_type, domain=old.domain, doc_string=old.doc_string)
        return original(self, external_tensor_storage)

    saved = os.environ.get(constants.ENV_TF2ONNX_CATCH_ERRORS)
    Node.update_proto = update_proto
    os.environ[constants.ENV_TF2ONNX_CATCH_ERRORS] = "FALSE"
    try:
        yield
    finally:
        Node.update_proto = original
        if saved is None:
            del os.environ[constants.ENV_TF2ONNX_CATCH_ERRORS]
        else:
            os.environ[constants.ENV_TF2ONNX_CATCH_ERRORS] = saved
