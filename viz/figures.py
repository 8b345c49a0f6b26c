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

from runtime.artifacts.atomic import atomic_write
from runtime.errors import InputError

from .tiling import as_hwc, grid_shape, layout_cols, tile

if TYPE_CHECKING:  # only for annotations: importing matplotlib here would defeat the lazy import
    from matplotlib.figure import Figure

TARGET_PIXELS = 800  # grids are upscaled (nearest) until their longest side reaches about this
DPI = 100
MIN_MAP_PX = 64  # the comparison draws every map at least this large, within the two limits below
MAX_PANEL_PX = 1600  # width of the comparison's layer panels
MAX_STACK_PX = 20000  # their total height: deep models (dozens of layers) get smaller maps, not a crash


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

    x, cols = as_hwc(maps, layout), layout_cols(np.shape(maps), layout, cols)
    mosaic = tile(x, "HWC", cols=cols, pad=pad, normalize=normalize)
    scale = scale or upscale_factor(mosaic.shape)
    mh, mw = mosaic.shape
    title_in = 0.45 if title else 0.0
    width_in, height_in = mw * scale / DPI, mh * scale / DPI
    fig = Figure(figsize=(width_in, height_in + title_in), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, height_in / (height_in + title_in)))
    _draw_mosaic(ax, x, mosaic, normalize, cols, pad, scale if labels else None)
    if title:
        fig.suptitle(title, y=1.0 - 0.08 * title_in / (height_in + title_in), va="top", fontsize=11)
    return fig


# What black and white mean in a grid, per normalisation (the header of layer_figure says it).
NORMALIZATION_TEXT = {
    "map": "each map scaled to its own min..max",
    "layer": "all maps scaled together to the layer's min..max",
    "none": "raw values, unscaled",
}


def layer_figure(
    maps,
    name: str,
    layout: str = "HWC",
    cols: int | None = None,
    normalize: str = "map",
    labels: bool = True,
    layer_class: str | None = None,
    subtitle: str | None = None,
    pad: int = 1,
) -> "Figure":
    """One layer's grid under a readable header, with a gray scale bar saying what black and white mean.

    The header names the layer (and its class), the number and size of its maps, the
    normalisation and the layer's value range; `subtitle` (e.g. which image) goes beneath.
    Each map carries its channel index, small, in its top-left corner (`labels=False`: none).

    Raises:
        InputError: as tile does.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x, cols = as_hwc(maps, layout), layout_cols(np.shape(maps), layout, cols)
    mosaic = tile(x, "HWC", cols=cols, pad=pad, normalize=normalize)
    scale = upscale_factor(mosaic.shape)
    mh, mw = mosaic.shape
    grid_w, grid_h = mw * scale / DPI, mh * scale / DPI
    header_h, bar_h, side = (1.15 if subtitle else 0.85), 0.75, 0.3
    fig_w = max(grid_w + 2 * side, 6.4)
    fig_h = header_h + grid_h + bar_h
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes(((fig_w - grid_w) / 2 / fig_w, bar_h / fig_h, grid_w / fig_w, grid_h / fig_h))
    _draw_mosaic(ax, x, mosaic, normalize, cols, pad, scale if labels else None)
    lo, hi = float(x.min()), float(x.max())
    what = f"{name} ({layer_class})" if layer_class else name
    lines = [(f"{what}: {maps_shape_text(x)}", 13, "bold")]
    if subtitle:
        lines.append((subtitle, 10, "normal"))
    lines.append((f"{NORMALIZATION_TEXT[normalize]}; values in this layer {lo:.3g} .. {hi:.3g}", 10, "normal"))
    top = 1.0 - 0.12 / fig_h
    for text, size, weight in lines:
        fig.text(0.5, top, text, ha="center", va="top", fontsize=size, fontweight=weight)
        top -= (size / 72 + 0.1) / fig_h
    _scale_bar(fig, ((fig_w - min(grid_w, 4.0)) / 2 / fig_w, 0.38 / fig_h, min(grid_w, 4.0) / fig_w, 0.13 / fig_h),
               _bar_ends(normalize, lo, hi))
    return fig


def _bar_ends(normalize: str, lo: float, hi: float) -> tuple[str, str]:
    """What the black and white ends of one layer's grid stand for."""
    if normalize == "map":
        return ("each map's min", "each map's max")
    if normalize == "none" and lo >= 0.0 and hi <= 1.0:
        return ("0", "1")  # to_uint8 shows values within [0, 1] as they are
    return (f"{lo:.3g}", f"{hi:.3g}")


def _scale_bar(fig, rect, ends: tuple[str, str]) -> None:
    """A horizontal black-to-white bar labelled with the values its ends stand for."""
    cax = fig.add_axes(rect)
    cax.imshow(np.linspace(0.0, 1.0, 256)[None, :], cmap="gray", aspect="auto", extent=(0, 1, 0, 1))
    cax.set_yticks([])
    cax.set_xticks([0, 1], ends, fontsize=9)
    for label, align in zip(cax.get_xticklabels(), ("left", "right")):  # inside the bar's width, never clipped
        label.set_horizontalalignment(align)
    cax.tick_params(length=2)
    for spine in cax.spines.values():
        spine.set_linewidth(0.5)


def _draw_mosaic(ax, x: np.ndarray, mosaic: np.ndarray, normalize: str, cols, pad: int, label_scale) -> None:
    """Show a mosaic in gray on ax; with label_scale (pixels per map pixel), number each map."""
    if normalize == "none":  # raw values: shown min..max, as the PNG fast path does
        _show_gray(ax, to_uint8(mosaic), 0, 255)
    else:
        _show_gray(ax, mosaic, 0.0, 1.0)
    if label_scale:
        h, w, c = x.shape
        _, ncols = grid_shape(c, cols)
        font = max(5.0, min(7.0, 0.15 * w * label_scale * 72 / DPI))  # small: the maps stay readable
        for i in range(c):
            r, k = divmod(i, ncols)
            ax.text(k * (w + pad) - 0.3, r * (h + pad) - 0.3, str(i), ha="left", va="top", fontsize=font,
                    color="white", bbox=dict(facecolor="black", alpha=0.5, pad=0.6, linewidth=0))


MAX_COMPARISON_MAPS = 64  # the comparison draws a layer's first maps only: a 320-map layer stays readable


def comparison_figure(
    image,
    layers: Mapping[str, np.ndarray],
    layouts: Mapping[str, str] | None = None,
    cols: int | None = None,
    normalize: str = "map",
    title: str | None = None,
    input_title: str | None = None,
    prediction: str | None = None,
    labels: bool = True,
    max_maps: int = MAX_COMPARISON_MAPS,
) -> "Figure":
    """The input image with the model's prediction and a scale bar on top, each layer's grid beneath.

    Layer grids are stacked in one column, each titled with its name and shape, all as wide as
    needed for the smallest map of any layer to be at least MIN_MAP_PX pixels (within MAX_PANEL_PX
    and MAX_STACK_PX: for dozens of layers, pick some with --layers). A layer with more than
    `max_maps` maps shows its first `max_maps`, and its title says so.

    Args:
        image: the input, [H,W], [H,W,1] or [H,W,3]; integers are shown as 0..255 pixels.
        layers: layer name -> one sample's maps, in display order.
        layouts: layer name -> layout ("HWC" when absent).
        cols, normalize: as for viz.tiling.tile.
        title: overall title; input_title: the input panel's title (default 'input HxWxC').
        prediction: text under the input, e.g. "predicted 7 (p = 0.998)".
        labels: number each map with its channel index.
        max_maps: most maps drawn per layer.

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
    panels, smallest = [], []
    for name, maps in layers.items():
        x = as_hwc(maps, layouts.get(name, "HWC"))
        h, w, c = x.shape
        shown = x[..., :max_maps]
        what = maps_shape_text(x) if c <= max_maps else f"first {max_maps} of {c} maps, {h}x{w}"
        layer_cols = layout_cols(np.shape(maps), layouts.get(name, "HWC"), cols)
        mosaic = tile(shown, "HWC", cols=layer_cols, normalize=normalize)
        panels.append((f"{name}: {what}", shown, mosaic))
        smallest.append(MIN_MAP_PX * mosaic.shape[1] / min(h, w))  # panel px for maps of MIN_MAP_PX
    # Inches. On top: the input (prediction beneath) and, beside it, what black and white mean; below, one
    # width for every layer panel, each panel's height following its aspect ratio: no empty column.
    margin, gap, title_band, input_w, bar_w = 0.3, 0.25, 0.32, 2.2, 3.2
    aspect_sum = sum(m.shape[0] / m.shape[1] for _, _, m in panels)  # stacked height per unit of panel width
    panel_w = min(max(smallest, default=0.0), MAX_PANEL_PX, MAX_STACK_PX / max(aspect_sum, 1e-9)) / DPI
    panel_w = max(panel_w, 4.8 if aspect_sum * 480 <= MAX_STACK_PX else 1.0)
    heights = [panel_w * m.shape[0] / m.shape[1] for _, _, m in panels]
    sup_band = 0.45 if title else 0.0
    prediction_band = 0.38 if prediction else 0.0
    input_h = min(input_w * img.shape[0] / img.shape[1], 2.6)
    input_w = input_h * img.shape[1] / img.shape[0]
    header_h = title_band + input_h + prediction_band
    fig_w = 2 * margin + max(panel_w, input_w + gap + bar_w)
    fig_h = sup_band + header_h + sum(gap + title_band + h for h in heights) + margin
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
    FigureCanvasAgg(fig)

    def axes(left: float, top: float, width: float, height: float):
        return fig.add_axes((left / fig_w, (fig_h - top - height) / fig_h, width / fig_w, height / fig_h))

    top = sup_band + title_band
    ax = axes(margin, top, input_w, input_h)
    if img.dtype.kind in "ui":
        _show_gray(ax, img, 0, 255)
    else:
        _show_gray(ax, img, min(0.0, float(img.min())), max(1.0, float(img.max())))
    ax.set_title(input_title or f"input {shape}", fontsize=11)
    if prediction:
        ax.text(0.5, -0.05, prediction, transform=ax.transAxes, ha="center", va="top", fontsize=13,
                fontweight="bold")
    bar_left = margin + input_w + gap
    fig.text(bar_left / fig_w, 1 - (top + 0.1) / fig_h, COMPARISON_TEXT[normalize], ha="left", va="top",
             fontsize=10, wrap=True)
    per = "map" if normalize == "map" else "layer"
    _scale_bar(fig, (bar_left / fig_w, 1 - (top + 0.75) / fig_h, min(bar_w, fig_w - bar_left - 2 * margin) / fig_w,
                     0.14 / fig_h), (f"each {per}'s min", f"each {per}'s max"))
    top = sup_band + header_h
    left = margin + (fig_w - 2 * margin - panel_w) / 2
    for (panel_title, shown, mosaic), height in zip(panels, heights):
        top += gap + title_band
        ax = axes(left, top, panel_w, height)
        _draw_mosaic(ax, shown, mosaic, normalize, cols, 1, panel_w * DPI / mosaic.shape[1] if labels else None)
        ax.set_title(panel_title, fontsize=11)
        top += height
    if title:
        fig.suptitle(title, y=1.0 - 0.15 / fig_h, va="top", fontsize=13)
    return fig


# What black and white mean in the comparison, per normalisation (its layers are shown side by side).
COMPARISON_TEXT = {
    "map": "Each map scaled to its own min..max;\nsmall numbers: channel indices.",
    "layer": "All maps of a layer scaled together\nto the layer's min..max; small numbers: channel indices.",
    "none": "Raw values, each layer shown from its\nmin to its max; small numbers: channel indices.",
}


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
    "upscale_factor", "to_uint8", "maps_shape_text", "grid_figure", "layer_figure", "comparison_figure", "save_png",
    "save_grid", "NORMALIZATION_TEXT", "MAX_COMPARISON_MAPS",
]
