"""Mosaics -> grayscale PNGs and matplotlib Figures; never pyplot, never shown.

Figures are built from `matplotlib.figure.Figure` with an Agg canvas, so no global
pyplot state is touched: nothing to close, no window ever opens, whatever the backend.
matplotlib and Pillow are imported inside the functions that need them.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from runtime.atomic import atomic_write
from runtime.errors import InputError

from .tiling import as_hwc, grid_shape, tile

if TYPE_CHECKING:  # only for annotations: importing matplotlib here would defeat the lazy import
    from matplotlib.figure import Figure

TARGET_PIXELS = 800  # grids are upscaled (nearest) until their longest side reaches about this
DPI = 100


def upscale_factor(shape: tuple[int, ...], target: int = TARGET_PIXELS) -> int:
    """Integer factor that brings the longest side of `shape` to at least `target` pixels (>= 1)."""
    return max(1, math.ceil(target / max(1, *shape[:2])))


def to_uint8(mosaic: np.ndarray) -> np.ndarray:
    """Grayscale floats -> uint8: values in [0, 1] map as 0 black .. 1 white, others are min..max scaled.

    A constant array outside [0, 1] becomes black.
    """
    x = np.asarray(mosaic, dtype=np.float32)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    if lo < 0.0 or hi > 1.0:
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.rint(x * 255.0).astype(np.uint8)


def maps_shape_text(maps, layout: str = "HWC") -> str:
    """'C maps, HxW' for one sample's maps, for titles."""
    h, w, c = as_hwc(maps, layout).shape
    return f"{c} maps, {h}x{w}"


def grid_figure(
    maps,
    layout: str = "HWC",
    cols: int | None = None,
    normalize: str = "map",
    pad: int = 1,
    labels: bool = False,
    title: str | None = None,
    scale: int | None = None,
) -> "Figure":
    """A Figure showing the maps' mosaic as one grayscale image, optionally labelled.

    Args:
        maps, layout, cols, normalize, pad: as for viz.tiling.tile.
        labels: write each map's channel index in its top-left corner.
        title: text above the grid.
        scale: screen pixels per map pixel; upscale_factor(mosaic) when None.

    Raises:
        InputError: as tile does.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = as_hwc(maps, layout)
    mosaic = tile(x, "HWC", cols=cols, pad=pad, normalize=normalize)
    scale = scale or upscale_factor(mosaic.shape)
    mh, mw = mosaic.shape
    title_in = 0.45 if title else 0.0
    width_in, height_in = mw * scale / DPI, mh * scale / DPI
    fig = Figure(figsize=(width_in, height_in + title_in), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, height_in / (height_in + title_in)))
    if normalize == "none":  # raw values: shown min..max, as the PNG fast path does
        _show_gray(ax, to_uint8(mosaic), 0, 255)
    else:
        _show_gray(ax, mosaic, 0.0, 1.0)
    if title:
        fig.suptitle(title, y=1.0 - 0.08 * title_in / (height_in + title_in), va="top", fontsize=11)
    if labels:
        h, w, c = x.shape
        _, ncols = grid_shape(c, cols)
        font = max(5.0, min(9.0, 0.2 * w * scale * 72 / DPI))
        for i in range(c):
            r, k = divmod(i, ncols)
            ax.text(k * (w + pad) - 0.3, r * (h + pad) - 0.3, str(i), ha="left", va="top", fontsize=font,
                    color="white", bbox=dict(facecolor="black", alpha=0.6, pad=0.8, linewidth=0))
    return fig


def comparison_figure(
    image,
    layers: Mapping[str, np.ndarray],
    layouts: Mapping[str, str] | None = None,
    cols: int | None = None,
    normalize: str = "map",
    title: str | None = None,
    input_title: str | None = None,
) -> "Figure":
    """The input image beside each layer's grid, each titled with its name and shape.

    Args:
        image: the input, [H,W], [H,W,1] or [H,W,3]; integers are shown as 0..255 pixels.
        layers: layer name -> one sample's maps, in display order.
        layouts: layer name -> layout ("HWC" when absent).
        cols, normalize: as for viz.tiling.tile.
        title: overall title; input_title: the input panel's title (default 'input HxWxC').

    Raises:
        InputError: as tile does.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layouts = layouts or {}
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    shape = "x".join(str(d) for d in np.shape(image))
    panels = [(input_title or f"input\n{shape}", img)]
    for name, maps in layers.items():
        layout = layouts.get(name, "HWC")
        mosaic = tile(maps, layout, cols=cols, normalize=normalize)
        panels.append((f"{name}\n{maps_shape_text(maps, layout)}", mosaic if normalize != "none" else to_uint8(mosaic)))

    # Inches: every panel gets the same height, its width follows its aspect ratio.
    margin, gap, panel_h, title_band = 0.2, 0.35, 3.0, 0.6
    sup_band = 0.5 if title else 0.0
    widths = [panel_h * p.shape[1] / p.shape[0] for _, p in panels]
    fig_w = 2 * margin + sum(widths) + gap * (len(panels) - 1)
    fig_h = margin + panel_h + title_band + sup_band
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
    FigureCanvasAgg(fig)
    left = margin
    for (panel_title, pixels), width in zip(panels, widths):
        ax = fig.add_axes((left / fig_w, margin / fig_h, width / fig_w, panel_h / fig_h))
        if pixels.dtype.kind in "ui":
            _show_gray(ax, pixels, 0, 255)
        else:
            _show_gray(ax, pixels, min(0.0, float(pixels.min())), max(1.0, float(pixels.max())))
        ax.set_title(panel_title, fontsize=11)
        left += width + gap
    if title:
        fig.suptitle(title, y=1.0 - 0.1 / fig_h, va="top", fontsize=13)
    return fig


def _show_gray(ax, pixels: np.ndarray, vmin: float, vmax: float) -> None:
    # Nearest interpolation: feature-map pixels are data, smoothing them would invent values.
    ax.imshow(pixels, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()


def save_png(fig_or_array, path: str | os.PathLike, scale: int | None = None) -> Path:
    """Write a Figure, or a 2D grayscale array (a mosaic), as a PNG, atomically.

    Arrays are written as 8-bit grayscale via Pillow (see to_uint8), upscaled by `scale`
    (upscale_factor when None) with nearest-neighbour so pixels stay crisp. The parent
    folder is created if needed; a temporary file beside the target is renamed over it.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as out:
        if isinstance(fig_or_array, np.ndarray):
            _write_gray_png(fig_or_array, out, scale)
        else:
            fig_or_array.savefig(out, format="png", dpi=fig_or_array.dpi)
    return path


def _write_gray_png(array: np.ndarray, out, scale: int | None) -> None:
    from PIL import Image

    if array.ndim != 2:
        raise InputError(f"save_png draws 2D grayscale arrays; got shape {list(array.shape)}")
    img = Image.fromarray(to_uint8(array))
    scale = scale or upscale_factor(array.shape)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    img.save(out, format="PNG")


def save_grid(
    maps,
    path: str | os.PathLike,
    layout: str = "HWC",
    cols: int | None = None,
    normalize: str = "map",
    pad: int = 1,
    labels: bool = False,
    title: str | None = None,
    scale: int | None = None,
) -> Path:
    """Write one sample's feature maps as a grayscale grid PNG; returns the path.

    Without labels or title the mosaic is written directly (fast path, no matplotlib);
    with them a grid_figure is rendered.

    Raises:
        InputError: as tile does.
    """
    if labels or title:
        fig = grid_figure(maps, layout, cols=cols, normalize=normalize, pad=pad, labels=labels, title=title,
                          scale=scale)
        return save_png(fig, path)
    return save_png(tile(maps, layout, cols=cols, pad=pad, normalize=normalize), path, scale=scale)


__all__ = [
    "upscale_factor", "to_uint8", "maps_shape_text", "grid_figure", "comparison_figure", "save_png", "save_grid",
]
