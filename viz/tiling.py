"""Feature maps -> one 2D mosaic: pure numpy, no matplotlib, so it is testable and fast.

Rules (the tests pin them):
- Accepted layouts: "HWC", "CHW" (one sample) and "NHWC", "NCHW" (a batch holding exactly
  one sample). Non-spatial outputs ("NC", dense layers) are rejected with an InputError:
  a 1-pixel strip says nothing a bar chart would not say better.
- 1-D maps ("WC", "NWC") are a heat strip: one row per channel, position left to right (one
  column; rows stretched to at most STRIP_ROWS pixels). 3-D maps and frames ("DHWC", "THWC",
  with N) are a grid of depth (time) slices: one row per channel, one column per slice.
  Frames of 1-D maps ("TWC", "NTWC") are a map per channel: time down, position across.
- Default column count: 8 when there are 16 maps or more (32 maps -> 4x8, 64 -> 8x8),
  else ceil(sqrt(C)); never more columns than maps. The last row may be partly empty
  (30 maps in 8 columns -> 4 rows, the last one holding 6 maps).
- Tiles are separated by `pad` pixels (no outer border); padding and empty cells take
  `pad_value`.
- Normalisation "map": each map to [0, 1] by its own min..max; "layer": all maps by the
  layer's min..max; "none": raw values. A constant map (dead ReLU) becomes 0, never NaN.
"""
from __future__ import annotations

import math

import numpy as np

from runtime.errors import InputError

NORMALIZATIONS = ("map", "layer", "none")
SPATIAL_LAYOUTS = ("HWC", "CHW", "NHWC", "NCHW")
STRIP_LAYOUTS = ("WC", "NWC")
SLICE_LAYOUTS = ("DHWC", "NDHWC", "THWC", "NTHWC")
DRAWABLE_LAYOUTS = (*SPATIAL_LAYOUTS, *STRIP_LAYOUTS, *SLICE_LAYOUTS, "TWC", "NTWC")
STRIP_ROWS = 16  # most pixel rows per channel of a heat strip: a channel of W positions gets W // (4 C), 1..16
WIDE_COLS = 8  # column count once there are at least WIDE_FROM maps
WIDE_FROM = 16


def default_cols(channels: int) -> int:
    """Columns for a grid of `channels` maps: 8 from 16 maps on (4x8 for 32, 8x8 for 64), else ceil(sqrt)."""
    if channels >= WIDE_FROM:
        return WIDE_COLS
    return max(1, math.ceil(math.sqrt(channels)))


def grid_shape(channels: int, cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) of the grid holding `channels` maps.

    Raises:
        InputError: no maps, or cols below 1.
    """
    if channels < 1:
        raise InputError("feature maps have 0 channels; expected at least one map to draw")
    if cols is None:
        cols = default_cols(channels)
    elif isinstance(cols, bool) or not isinstance(cols, (int, np.integer)) or cols < 1:
        raise InputError(f"cols must be a positive integer; got {cols!r}")
    cols = min(int(cols), channels)
    return math.ceil(channels / cols), cols


def check_layout(layout: str) -> str:
    """Return the layout if tile() can draw it.

    Raises:
        InputError: a layout without two spatial dimensions and a channel axis.
    """
    if layout not in DRAWABLE_LAYOUTS:
        raise InputError(
            f"cannot draw layout {layout!r} as feature maps; expected one of {list(DRAWABLE_LAYOUTS)} "
            "(dense outputs such as 'NC' have no spatial maps)"
        )
    return layout


def as_hwc(maps, layout: str = "HWC") -> np.ndarray:
    """Return one sample's maps as a float32 [H, W, C] array, whatever the accepted layout.

    A heat strip (1-D) is [rows, W, C], each channel's row repeated; 3-D maps are [H, W, C * D], channel-major.

    Raises:
        InputError: unknown layout, rank not matching it, a batch of more than one sample,
            non-numeric values, or NaN/inf.
    """
    check_layout(layout)
    x = np.asarray(maps)
    if x.dtype == object or x.dtype.kind not in "biuf":
        raise InputError(f"feature maps must be numeric; got dtype {x.dtype}")
    if x.ndim != len(layout):
        raise InputError(f"feature maps with layout {layout} must have rank {len(layout)}; got shape {list(x.shape)}")
    if layout.startswith("N"):
        if x.shape[0] != 1:
            raise InputError(
                f"tile draws one sample; got a batch of {x.shape[0]} ({layout} {list(x.shape)}): pass maps[i]"
            )
        x, layout = x[0], layout[1:]
    if layout == "CHW":
        x = np.moveaxis(x, 0, -1)
    elif layout == "WC":
        w, c = x.shape
        x = np.repeat(x[None], max(1, min(STRIP_ROWS, w // (4 * c))), axis=0)
    elif layout in ("DHWC", "THWC"):
        d, h, w, c = x.shape
        x = x.transpose(1, 2, 3, 0).reshape(h, w, c * d)
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise InputError(f"feature maps contain {int(np.count_nonzero(~np.isfinite(x)))} NaN or infinite values")
    return x


def layout_cols(shape: tuple, layout: str, cols: int | None = None) -> int | None:
    """cols when given, else the layout's own: 1 for a heat strip, the slice count for 3-D maps (None: default_cols)."""
    if cols is not None:
        return cols
    if layout in STRIP_LAYOUTS:
        return 1
    if layout in SLICE_LAYOUTS and len(shape) == len(layout):
        return int(shape[layout.index(layout.lstrip("N")[0])])
    return None


def normalize_maps(x: np.ndarray, mode: str = "map") -> np.ndarray:
    """Scale [H, W, C] maps to [0, 1] per map ("map"), per layer ("layer"), or not ("none").

    A constant map (or layer) becomes all 0: no division by zero, no NaN, no warning.

    Raises:
        InputError: an unknown mode.
    """
    if mode not in NORMALIZATIONS:
        raise InputError(f"unknown normalisation {mode!r}; expected one of {list(NORMALIZATIONS)}")
    if mode == "none":
        return x
    axes = (0, 1) if mode == "map" else None
    lo = x.min(axis=axes, keepdims=True)
    span = x.max(axis=axes, keepdims=True) - lo
    # Dividing by 1 where the span is 0 keeps dead maps at exactly 0 without a warning.
    return ((x - lo) / np.where(span > 0, span, 1)).astype(np.float32, copy=False)


def tile(
    maps,
    layout: str = "HWC",
    cols: int | None = None,
    pad: int = 1,
    normalize: str = "map",
    pad_value: float | None = None,
) -> np.ndarray:
    """Arrange C feature maps into one 2D float32 mosaic, channel 0 top-left, row by row.

    Args:
        maps: one sample's maps, shaped as `layout` says (a batch of one is accepted).
        layout: one of DRAWABLE_LAYOUTS (the manifest's layout for runtime outputs).
        cols: columns of the grid; layout_cols when None (default_cols(C) for 2-D maps), capped at C.
        pad: pixels between tiles (0 for none).
        normalize: "map", "layer" or "none" (see normalize_maps).
        pad_value: value of padding and empty cells; None gives 1.0 (white) when normalised,
            else the maps' maximum.

    Returns:
        float32 array of shape [rows*H + (rows-1)*pad, cols*W + (cols-1)*pad], values in
        [0, 1] unless normalize is "none".

    Raises:
        InputError: bad layout, shape, values, cols, pad or normalisation.
    """
    cols = layout_cols(np.shape(maps), layout, cols)
    x = normalize_maps(as_hwc(maps, layout), normalize)
    h, w, c = x.shape
    rows, cols = grid_shape(c, cols)
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise InputError(f"pad must be a non-negative integer; got {pad!r}")
    if pad_value is None:
        pad_value = 1.0 if normalize != "none" else (float(x.max()) if x.size else 0.0)
    # One canvas of rows*cols cells, each a map plus its right/bottom padding, laid out by
    # reshape/transpose instead of a Python loop; the trailing padding is cropped at the end.
    cells = np.full((rows * cols, h + pad, w + pad), pad_value, dtype=np.float32)
    cells[:c, :h, :w] = np.moveaxis(x, -1, 0)
    mosaic = cells.reshape(rows, cols, h + pad, w + pad).transpose(0, 2, 1, 3)
    mosaic = mosaic.reshape(rows * (h + pad), cols * (w + pad))
    return np.ascontiguousarray(mosaic[: rows * (h + pad) - pad, : cols * (w + pad) - pad])


__all__ = [
    "NORMALIZATIONS", "SPATIAL_LAYOUTS", "STRIP_LAYOUTS", "SLICE_LAYOUTS", "DRAWABLE_LAYOUTS", "layout_cols",
    "default_cols", "grid_shape", "check_layout", "as_hwc",
    "normalize_maps", "tile",
]
