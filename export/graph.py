"""Which layers to expose, and the multi-output Keras model that exposes them."""
from __future__ import annotations

import re

from runtime.errors import ExportError
from runtime.manifest import INPUT_NAME, LAYOUTS, InputSpec, OutputSpec, Preprocessing

MODEL_OUTPUT = "model_output"
FEATURE_MAP = "feature_map"
# Output names must be valid TensorFlow scope names and plain ONNX value names alike.
VALID_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def conv_classes():
    from keras import layers

    return (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)


def input_spec(model, preprocessing: Preprocessing) -> InputSpec:
    """The model's image input as the artifact contract names it.

    Raises:
        ExportError: not exactly one float input shaped [batch, H, W, C] with static H, W, C.
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ExportError(f"model {model.name!r} has no defined input (a Sequential model never built or "
                          "called?); build it on a keras.Input before saving it")
    if len(inputs) != 1:
        raise ExportError(f"model has {len(inputs)} inputs; expected exactly one image input [batch, H, W, C]")
    shape = tuple(inputs[0].shape)
    dims = shape[1:]
    if len(shape) != 4 or any(d is None for d in dims) or "float" not in str(inputs[0].dtype):
        raise ExportError(
            f"model input must be a float image tensor [batch, H, W, C] with static H, W, C; "
            f"got shape {list(shape)} dtype {inputs[0].dtype}"
        )
    channels_first = [layer.name for layer in model.layers if getattr(layer, "data_format", "") == "channels_first"]
    if channels_first:
        raise ExportError(f"layers {channels_first} use data_format='channels_first'; the artifacts take NHWC "
                          "images, so rebuild the model channels_last (Keras' default) and copy the weights")
    return InputSpec(INPUT_NAME, "float32", (None, *dims), "NHWC", preprocessing)


def exposable_layers(model) -> list:
    """Layers whose output can be exposed: every top-level layer but the input."""
    from keras import layers

    return [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]


def select_layers(model, names: list[str] | None = None) -> list:
    """The layers to expose: the named ones, or by default every conv layer in model order.

    Raises:
        ExportError: an unknown name, or no conv layer and no names given.
    """
    candidates = exposable_layers(model)
    available = [layer.name for layer in candidates]
    if names is None:
        chosen = [layer for layer in candidates if isinstance(layer, conv_classes())]
        if not chosen:
            nested = [layer.name for layer in candidates if hasattr(layer, "layers")]
            hint = (f" (conv layers inside the sub-model(s) {nested} cannot be exposed one by one; "
                    "the sub-model's own output can)") if nested else ""
            raise ExportError(f"model {model.name!r} has no top-level Conv2D layer to expose{hint}; "
                              f"pass --layers with any of: {available}")
        return chosen
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ExportError(f"unknown layer name(s) {unknown or names}; model {model.name!r} has: {available}")
    by_name = {layer.name: layer for layer in candidates}
    return [by_name[n] for n in dict.fromkeys(names)]


def feature_model(model, layers: list):
    """A Keras model with dict outputs: the model's own output(s), then each exposed layer.

    Returns:
        (keras.Model, list[OutputSpec]) with outputs in manifest order.
    """
    import keras

    outputs, specs = {}, []
    for tensor in model.outputs:
        layer = tensor._keras_history.operation  # the layer that produced the model output
        _add(outputs, specs, layer.name, layer, tensor, MODEL_OUTPUT)
    for layer in layers:
        _add(outputs, specs, layer.name, layer, _layer_output(layer), FEATURE_MAP)
    return keras.Model(model.inputs[0], outputs, name=f"{model.name}_featuremaps"), specs


def _layer_output(layer):
    try:
        return layer.output
    except (AttributeError, ValueError) as exc:
        raise ExportError(f"layer {layer.name!r} has no single output in the model graph "
                          f"(shared or nested layer?): {exc}") from None


def _add(outputs: dict, specs: list, name: str, layer, tensor, role: str) -> None:
    if name in outputs:
        return
    if not VALID_NAME.fullmatch(name):
        raise ExportError(f"layer name {name!r} cannot name an output: use letters, digits, '_', '.' and '-' "
                          "only (rename the layer where the model is defined, then save it again)")
    shape = tuple(tensor.shape)
    if getattr(layer, "data_format", "channels_last") == "channels_first" and len(shape) == 4:
        layout = "NCHW"
    else:
        layout = LAYOUTS.get(len(shape), f"rank{len(shape)}")
    outputs[name] = tensor
    specs.append(OutputSpec(name, layer.name, type(layer).__name__, (None, *shape[1:]), layout, role))
