"""One image through a loaded model into figure files: a grid PNG per layer and comparison.png.

What `python -m viz` draws (viz/cli.py parses, loads and prints around it): which outputs to draw,
the file name of each layer's grid, and the prediction written on the comparison.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.artifacts.manifest import Manifest
from runtime.errors import DataError, InputError
from runtime.preprocess import to_batch

from .figures import comparison_figure, layer_figure, save_grid, save_png
from .tiling import DRAWABLE_LAYOUTS, tile

COMPARISON = "comparison.png"


def select_layers(manifest: Manifest, requested: Sequence[str] | None = None) -> list[str]:
    """The outputs to draw: `requested` (checked), else every spatial output whose role is "feature_map".

    Raises:
        InputError: an unknown name, or an output that has no spatial maps (e.g. a dense layer).
    """
    available = manifest.output_names
    drawable = [o.name for o in manifest.outputs if o.layout in DRAWABLE_LAYOUTS]
    if not requested:
        return [o.name for o in manifest.outputs if o.role == "feature_map" and o.name in drawable]
    names = list(dict.fromkeys(requested))  # de-duplicated, order kept
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InputError(f"unknown layer(s) {unknown}; available: {available}")
    for name in names:
        if name not in drawable:
            raise InputError(
                f"output {name!r} has layout {manifest.output(name).layout} and no spatial feature maps to draw; "
                f"drawable: {drawable}"
            )
    return names


def write_figures(
    model,
    image: np.ndarray,
    out: str | os.PathLike,
    layers: Sequence[str] | None = None,
    cols: int | None = None,
    normalize: str = "map",
    labels: bool = True,
    title: str | None = None,
    raw: bool = False,
    subtitle: str | None = None,
) -> list[Path]:
    """Run one image through a loaded runtime.Model and write its grids and comparison figure.

    Args:
        model: a runtime.Model (from runtime.load).
        image: one image, raw uint8 pixels or preprocessed floats ([H,W] or [H,W,C]).
        out: folder for `<layer>.png` and `comparison.png` (created if needed).
        layers: outputs to draw (default: every feature map); cols, normalize: as for save_grid.
        labels: number each map with its channel index (never on raw grids).
        title: title of the comparison figure.
        raw: write each layer as its bare grid (one pixel block per activation, for post-processing)
            instead of a figure with a header and scale bar.
        subtitle: a line under each layer's header (e.g. which image).

    Returns:
        The paths written: one per layer, then comparison.png.

    Raises:
        InputError: unknown or non-spatial layers, or an image the model does not accept.
    """
    manifest = model.manifest
    names = select_layers(manifest, layers)
    if not names:
        raise InputError(f"the artifacts expose no feature maps to draw; outputs: {model.output_names}")
    probs = _probability_output(manifest)
    acts = model.run(image, outputs=names + ([probs] if probs and probs not in names else []))
    spec = model.input_spec
    if not spec.is_image:  # a signal, volume or clip: drawn as its maps are (heat strip, depth slices)
        image = tile(to_batch(image, spec)[0], spec.layout[1:], normalize="layer")
    layouts = {n: manifest.output(n).layout for n in names}
    out = Path(out)
    files = file_names(names)
    written: list[Path] = []
    try:
        for n in names:
            path = out / files[n]
            if raw:
                written.append(save_grid(acts[n], path, layout=layouts[n], cols=cols, normalize=normalize))
            else:
                fig = layer_figure(acts[n], n, layouts[n], cols=cols, normalize=normalize, labels=labels,
                                   layer_class=manifest.output(n).layer_class, subtitle=subtitle)
                written.append(save_png(fig, path))
        ordered = {n: acts[n] for n in names}  # display order is the order asked for, whatever the backend returns
        fig = comparison_figure(image, ordered, layouts=layouts, cols=cols, normalize=normalize, title=title,
                                prediction=prediction_text(acts[probs][0], manifest.labels) if probs else None,
                                labels=labels)
        written.append(save_png(fig, out / COMPARISON))
    except BaseException as exc:  # nothing half-written: a partial set of figures is removed
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DataError(f"cannot write figures into {str(out)!r}: {exc.strerror or exc}") from None
        raise
    return written


def _probability_output(manifest: Manifest) -> str | None:
    """The model's own class output ([N, classes]), whose argmax is the prediction; None if it has none."""
    return next((o.name for o in manifest.outputs if o.role == "model_output" and o.layout == "NC"), None)


def prediction_text(scores: np.ndarray, labels: Sequence[str] = ()) -> str:
    """'predicted 7 (p = 0.998)' from one image's class scores (the label when the manifest has labels).

    Scores that are non-negative and sum to 1 (softmax) read as probabilities; others as scores.
    """
    k = int(np.argmax(scores))
    label = labels[k] if k < len(labels) else str(k)
    total = float(np.sum(scores))
    value = float(scores[k])
    if np.all(scores >= 0) and abs(total - 1.0) < 1e-3:
        return f"predicted {label} (p {'> 0.999' if value > 0.9995 else f'= {value:.3f}'})"
    return f"predicted {label} (score = {value:.3f})"


def file_names(names: Sequence[str]) -> dict[str, str]:
    """Output name -> its grid's file name: readable, never a path, distinct from each other and from
    comparison.png even on case-insensitive file systems."""
    taken = {COMPARISON.lower()}
    files = {}
    for name in names:
        # Output names come from Keras layer names; keep them readable but never a path.
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")[:100] or "layer"
        candidate, n = f"{stem}.png", 2
        while candidate.lower() in taken:
            candidate, n = f"{stem}_{n}.png", n + 1
        taken.add(candidate.lower())
        files[name] = candidate
    return files


__all__ = ["select_layers", "write_figures", "prediction_text", "file_names", "COMPARISON"]
