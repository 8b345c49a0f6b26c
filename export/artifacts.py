"""Writing the two model artifacts: the SavedModel signature and the ONNX graph."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from runtime.artifacts.manifest import INPUT_NAME, SIGNATURE, InputSpec
from runtime.artifacts.manifest import ONNX_DATA_FILE as EXTERNAL_DATA
from runtime.errors import ExportError

from .convert import to_onnx

# Opset 17 runs on every onnxruntime since 1.14 and on TensorRT 8.6+; a plain CNN gains
# nothing from newer opsets, so the broadest deployment target wins. Overridable.
DEFAULT_OPSET = 17
BATCH_DIM = "batch"
# Protobuf serialises at most 2 GiB; weights beyond this (with room for the graph) go to external data.
EXTERNAL_DATA_ABOVE = 1_800_000_000


def serving_function(feature_model, spec: InputSpec):
    """tf.function: `image` [batch, *sample] of the input's dtype (float32 [batch, H, W, C] for images) -> dict of
    named outputs."""
    import tensorflow as tf

    signature = [tf.TensorSpec([None, *spec.image_shape], spec.dtype, name=INPUT_NAME)]

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
        archive.track(feature_model.model)  # its variables: the weights
        archive.add_endpoint(name=SIGNATURE, fn=serve)
        archive.write_out(os.fspath(path), verbose=False)
    except (ValueError, TypeError) as exc:  # Keras' ways of saying a graph cannot be saved
        raise ExportError(f"TensorFlow could not save the SavedModel: {str(exc).splitlines()[0]}") from None
    except tf.errors.OpError as exc:  # e.g. a full disk while writing the variables
        reason = exc.message.split("; ")[-1].split(" [Op:")[0]  # the OS reason, not the temporary path
        raise ExportError(f"TensorFlow could not write the SavedModel ({reason}); nothing published") from None


def write_onnx(serve, output_names: list[str], path: Path, opset: int = DEFAULT_OPSET, layer_names=(),
               weight_bytes: int = 0):
    """ONNX graph of serve with the same input/output names, outputs in manifest order.

    A graph whose weights exceed EXTERNAL_DATA_ABOVE bytes (protobuf cannot hold 2 GB) keeps them in
    ONNX external data, EXTERNAL_DATA beside path: the manifest hashes it like every artifact.

    Args:
        layer_names: the Keras layers (nested ones too), to name where an unsupported op comes from.
        weight_bytes: the model's weight bytes: above EXTERNAL_DATA_ABOVE they go to external data.

    Raises:
        ExportError: tf2onnx cannot convert the graph, or the result is not the expected graph.
    """
    import onnx

    try:
        with _lean_tf2onnx():
            proto = to_onnx(serve, opset, layer_names=layer_names)
    except ExportError:
        raise
    except Exception as exc:  # tf2onnx raises bare Exceptions for unsupported ops/opsets
        raise ExportError(f"tf2onnx could not convert the model at opset {opset}: {_first_line(exc)}") from None
    _name_like_the_manifest(proto.graph, output_names)
    proto.doc_string = "featuremaps export: Keras feature maps as named outputs"
    if weight_bytes > EXTERNAL_DATA_ABOVE:
        onnx.save_model(proto, os.fspath(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=EXTERNAL_DATA, size_threshold=1024)
    else:
        onnx.save(proto, os.fspath(path))
    del proto  # the checker reads the file: no second copy of the weights in memory (VGG16: 550 MB)
    try:
        onnx.checker.check_model(os.fspath(path), full_check=True)  # by path: with any external data
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the converted ONNX graph fails onnx.checker: {_first_line(exc)}") from None


def _name_like_the_manifest(graph, output_names: list[str]) -> None:
    """Check graph's inputs and outputs, put the outputs in manifest order, name the batch dimension."""
    inputs = [i.name for i in graph.input]
    if inputs != [INPUT_NAME]:
        raise ExportError(f"the ONNX graph has inputs {inputs}, expected only {INPUT_NAME!r}: the extra ones are "
                          "values the model captured instead of holding them as weights")
    by_name = {o.name: o for o in graph.output}
    if set(by_name) != set(output_names):
        raise ExportError(f"ONNX outputs {sorted(by_name)} differ from the expected {output_names}")
    ordered = [by_name[n] for n in output_names]
    del graph.output[:]
    graph.output.extend(ordered)
    for value in (*graph.input, *graph.output):  # one readable name for the dynamic batch dimension
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM


@contextmanager
def _lean_tf2onnx():
    """tf2onnx without the memory sink that took ResNet50 past 8 GB and VGG16 past 20 GB.

    Each of its ~24 optimizer passes rewrites every node's attributes into the node's NodeProto;
    with protobuf's upb backend the replaced attributes stay in that message's arena, so every pass
    kept another copy of all weights (measured +100 MB per pass on ResNet50). A fresh NodeProto per
    rewrite lets the old one go. (Its other sink, a deep copy of the graph before each pass, is
    switched off in export/convert.py.)
    """
    from onnx import NodeProto
    from tf2onnx.graph import Node

    original = Node.update_proto

    def update_proto(self, external_tensor_storage=None):
        old = self._op
        self._op = NodeProto(name=old.name, op_type=old.op_type, domain=old.domain, doc_string=old.doc_string)
        return original(self, external_tensor_storage)

    Node.update_proto = update_proto
    try:
        yield
    finally:
        Node.update_proto = original


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
