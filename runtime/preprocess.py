"""Input handling in one place: raw pixels, values or floats of any accepted shape -> the model input."""
from __future__ import annotations

import numpy as np

from runtime.artifacts.manifest import InputSpec
from runtime.errors import InputError

# Floats may exceed the declared range by rounding; beyond this slack they are a mistake
# (typically raw 0..255 pixels passed as float).
_RANGE_SLACK = 1e-3


def to_batch(images, spec: InputSpec, check_values: bool = True) -> np.ndarray:
    """Return images (or any samples: signals, volumes, clips) as a batch [N, *sample] ready for the model.

    Accepts raw integer pixels (0..255, preprocessed as the manifest declares) or floats
    already preprocessed, shaped [*sample] or [N, *sample], without the channel axis when there
    is one channel ([H,W], [N,H,W] for a grayscale image). An empty batch gives [0, *sample].
    Inputs that are not pictures (raw_dtype "float32") take floats as given, and integers as
    their values; integer model inputs take integers as declared. check_values=False skips the
    NaN/inf/range scan of floats.

    Raises:
        InputError: wrong shape, dtype or value range, or NaN/inf.
    """
    x = as_nhwc(images, spec)
    if spec.dtype != "float32":
        return _declared_integers(x, spec)
    if x.dtype.kind in "ui":
        return _from_pixels(x, spec)
    if not check_values:
        return np.ascontiguousarray(x, dtype=np.float32)
    return _checked_floats(x, spec)


def as_nhwc(images, spec: InputSpec) -> np.ndarray:
    """images as a batch [N, *sample] ([N, H, W, C] for images) of the dtype given (a view where possible),
    values unchecked.

    Raises:
        InputError: wrong shape or a dtype that is neither integer nor float.
    """
    sample = spec.image_shape
    try:
        x = np.asarray(images)
    except (ValueError, TypeError) as exc:
        mixed = " (a batch holds samples of one size: pass other sizes in separate calls)" if None in sample else ""
        raise InputError(f"images must be an array {_accepted_shapes(spec)}; could not convert: {exc}{mixed}") from None
    if x.dtype == object or x.dtype.kind not in "uif":
        raise InputError(f"images must be uint8 pixels (0..255) or preprocessed floats; got dtype {x.dtype}")
    one = sample[-1] == 1  # one channel: the channel axis may be left out
    if x.ndim == 1 and x.size == 0:
        x = x.reshape(0, *(d or 0 for d in sample))  # [] or an empty array: an empty batch
    elif one and x.ndim == len(sample) - 1:
        x = x[None, ..., None]
    elif x.ndim == len(sample) and _fits(x.shape, sample) and not (one and _fits(x.shape[1:], sample[:-1])):
        x = x[None]
    elif one and x.ndim == len(sample):
        x = x[..., None]
    if x.ndim != len(sample) + 1 or not _fits(x.shape[1:], sample):
        raise InputError(f"images must be {_accepted_shapes(spec)}; got shape {list(np.shape(images))}")
    return x


def _fits(shape: tuple, sample: tuple) -> bool:
    """Whether an array shape is a sample's: equal where the sample's size is fixed, any size where free (None)."""
    return len(shape) == len(sample) and all(d is None or d == n for n, d in zip(shape, sample))


def is_batch(x: np.ndarray, spec: InputSpec) -> bool:
    """Whether an array of a shape to_batch accepts is a batch ([N,H,W] or [N,H,W,C]) rather than one image."""
    sample = spec.image_shape
    return x.ndim == len(sample) + 1 or (sample[-1] == 1 and x.ndim == len(sample) and _fits(x.shape[1:], sample[:-1]))


def _accepted_shapes(spec: InputSpec) -> str:
    sample = tuple("any" if d is None else d for d in spec.image_shape)
    axes = spec.layout[1:]
    if axes == "HWC":
        h, w, c = sample
        if c == 1:
            return f"[H,W], [H,W,1], [N,H,W] or [N,H,W,1] with H,W = {h},{w}"
        return f"[H,W,C] or [N,H,W,C] with H,W,C = {h},{w},{c}"
    shapes = f"[{','.join(axes)}] or [N,{','.join(axes)}]"
    if sample[-1] == 1:
        shapes = f"[{','.join(axes[:-1])}], [N,{','.join(axes[:-1])}], " + shapes
    return f"{shapes} with {','.join(axes)} = {','.join(map(str, sample))}"


def _declared_integers(x: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Integers in the model's declared integer dtype, range-checked; floats refused."""
    dtype = np.dtype(spec.dtype)
    if x.dtype.kind == "f":
        raise InputError(f"the model takes {dtype} values as declared; got {x.dtype} (pass {dtype} values)")
    info = np.iinfo(dtype)
    if x.dtype != dtype and x.size and (x.min() < info.min or x.max() > info.max):
        raise InputError(f"the model takes {dtype} values ({info.min}..{info.max}); got {x.min()}..{x.max()}")
    return np.ascontiguousarray(x, dtype=dtype)


def _from_pixels(x: np.ndarray, spec: InputSpec) -> np.ndarray:
    if spec.preprocessing.raw_dtype != "uint8":  # not a picture: integers are values as given
        return x.astype(np.float32)
    if x.dtype != np.uint8 and x.size and (x.min() < 0 or x.max() > 255):  # uint8 is in range by type
        raise InputError(f"integer images are raw pixels and must lie in 0..255; got {x.min()}..{x.max()}")
    pre = spec.preprocessing
    out = x.astype(np.float32)
    out *= np.float32(pre.scale)
    if pre.offset:
        out += np.float32(pre.offset)
    return out


# The reductions themselves: ndarray.min/max add a Python-level wrapper, and on one image the
# per-call cost is most of the work (benchmarks/bench_backends.py measures the wrapper's overhead).
_MIN, _MAX = np.minimum.reduce, np.maximum.reduce


def _checked_floats(x: np.ndarray, spec: InputSpec) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size == 0:
        return x
    flat = x.reshape(-1)
    # min and max also catch NaN (it propagates into both) and +-inf (outside any range), so the
    # separate isfinite pass is needed only to word the error.
    xmin, xmax = float(_MIN(flat)), float(_MAX(flat))
    lo, hi = spec.preprocessing.value_range
    slack = _RANGE_SLACK * max(1.0, hi - lo)
    if not (lo - slack <= xmin and xmax <= hi + slack):  # also true when xmin or xmax is NaN
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise InputError(f"images contain {bad} NaN or infinite values; expected finite floats")
        raise InputError(
            f"float images must already be preprocessed into [{lo:g}, {hi:g}]; got values in "
            f"[{xmin:g}, {xmax:g}] (pass raw 0..255 pixels as uint8 instead)"
        )
    return x
