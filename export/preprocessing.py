"""Which raw-pixel preprocessing the model expects: many models rescale or normalize their own input.

Keras Applications (EfficientNet, MobileNetV3, ConvNeXt, RegNet) and many fine-tuned models start
with Rescaling or Normalization, sometimes inside a nested base model. Feeding them pixels / 255
would scale twice, and verification could not notice: every backend gets the same wrong input.
"""
from __future__ import annotations

import warnings

import numpy as np

from runtime.artifacts.manifest import InputSpec, Preprocessing
from runtime.errors import FeatureMapsWarning

# Layers that leave pixel values as they are at inference, so a Rescaling/Normalization after them
# still sees raw pixels (augmentation layers are identities outside training).
PASS_THROUGH = {
    "InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "Resizing", "CenterCrop", "RandomFlip", "RandomRotation", "RandomZoom",
    "RandomTranslation", "RandomContrast", "RandomBrightness", "RandomCrop", "Functional", "Sequential",
}
RAW = Preprocessing(scale=1.0, offset=0.0)


class PreprocessingWarning(FeatureMapsWarning):  # run_cli prints it as one line
    """An explicit preprocessing (`scale`, `offset`) that scales pixels the model scales itself."""


def model_preprocessing(nodes: list) -> Preprocessing:
    """The preprocessing that feeds raw uint8 pixels to the model the way it expects, with the reason.

    Args:
        nodes: the model's layers at any depth in execution order (graph.Traced.layers).
    """
    for node in nodes:
        kind = type(node.layer).__name__
        if kind == "Rescaling":
            return _raw(f"the model rescales its own input (Rescaling {node.path!r}: x * {_num(node.layer.scale)} "
                        f"+ {_num(node.layer.offset)}), so it gets raw pixel values 0..255")
        if kind == "Normalization":
            mean = np.asarray(node.layer.mean, dtype=np.float64)
            if mean.size and float(np.abs(mean).max()) > 1.5:
                return _raw(f"the model normalizes its own input (Normalization {node.path!r}, mean up to "
                            f"{float(np.abs(mean).max()):.4g}, i.e. of 0..255 pixels), so it gets raw pixel values")
            return Preprocessing(reason=f"the model normalizes its own input (Normalization {node.path!r}) with "
                                        "statistics of 0..1 values, so it gets pixels / 255")
        if kind not in PASS_THROUGH:
            break
    return Preprocessing(reason="no Rescaling or Normalization at the model's start: pixels / 255, the usual "
                                "training range (pass `scale`/`offset` if the model was trained on another)")


def is_picture(spec: InputSpec) -> bool:
    """Whether the input holds pictures (images, volumes, frames: 1, 3 or 4 channels over two spatial axes or
    more), whose raw values are 0..255 pixels; signals and other inputs carry no pixel range."""
    return spec.layout.endswith("HWC") and spec.image_shape[-1] in (1, 3, 4)


def choose_preprocessing(nodes: list, given: Preprocessing | None, spec: InputSpec | None = None) -> Preprocessing:
    """The given preprocessing (warning when it scales again what the model scales), else the model's own.

    An integer model input takes its integers as declared; an input that is not a picture (is_picture) takes
    values as given unless `scale`/`offset` declare a preprocessing of raw uint8 values.
    """
    if spec is not None and spec.dtype != "float32":
        return Preprocessing(spec.dtype, 1.0, 0.0, reason=f"the model takes {spec.dtype} input as declared")
    expected = model_preprocessing(nodes)
    if given is None and spec is not None and not is_picture(spec):
        return Preprocessing("float32", 1.0, 0.0, reason=f"{spec.layout} input, not a picture: values are taken as "
                             "given (pass `scale`/`offset` to declare raw uint8 values)")
    if given is None:
        return expected
    if (expected.scale, expected.offset) == (1.0, 0.0) and (given.scale, given.offset) != (1.0, 0.0):
        warnings.warn(f"`scale` {given.scale:g} `offset` {given.offset:g} scales the pixels twice: {expected.reason}"
                      "; drop `scale`/`offset` (or pass `scale` 1 `offset` 0) unless that is intended",
                      PreprocessingWarning, stacklevel=2)
    return Preprocessing(given.raw_dtype, given.scale, given.offset, reason="given with `scale`/`offset`")


def _raw(reason: str) -> Preprocessing:
    return Preprocessing(scale=RAW.scale, offset=RAW.offset, reason=reason)


def _num(value) -> str:
    array = np.asarray(value, dtype=np.float64).ravel()
    return f"{array[0]:.6g}" if array.size == 1 else "[" + ", ".join(f"{v:.4g}" for v in array) + "]"
