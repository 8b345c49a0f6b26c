"""`python -m viz ARTIFACTS`: draw the feature maps of one image as grayscale grid PNGs.

Writes `<layer>.png` per drawn layer (a grid under a header naming the layer, its shape,
normalisation and value range, with a scale bar; the bare grid with --raw) and `comparison.png`
(the input and the model's prediction beside every grid) into --out, and prints each path written.
`python -m viz gallery STATS` builds the microscope site instead (viz/gallery.py).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.cli.args import ArgumentParser, comma_list, positive_int
from runtime.errors import BackendError, DataError, InputError
from runtime.artifacts.manifest import Manifest
from runtime.data.mnist import mnist_test_set

from .figures import comparison_figure, layer_figure, save_grid, save_png
from .tiling import NORMALIZATIONS, SPATIAL_LAYOUTS

COMPARISON = "comparison.png"


def select_layers(manifest: Manifest, requested: Sequence[str] | None = None) -> list[str]:
    """The outputs to draw: `requested` (checked), else every spatial output whose role is "feature_map".

    Raises:
        InputError: an unknown name, or an output that has no spatial maps (e.g. a dense layer).
    """
    available = manifest.output_names
    drawable = [o.name for o in manifest.outputs if o.layout in SPATIAL_LAYOUTS]
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
    labels: bool = False,
    title: str | None = None,
    raw: bool = False,
    subtitle: str | None = None,
) -> list[Path]:
    """Run one image through a loaded runtime.Model and write its grids and comparison figure.

    Args:
        model: a runtime.Model (from runtime.load).
        image: one image, raw uint8 pixels or preprocessed floats ([H,W] or [H,W,C]).
        out: folder for `<layer>.png` and `comparison.png` (created if needed).
        layers: outputs to draw (default: every feature map); cols, normalize, labels: as for save_grid.
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
    layouts = {n: manifest.output(n).layout for n in names}
    out = Path(out)
    files = file_names(names)
    written: list[Path] = []
    try:
        for n in names:
            path = out / files[n]
            if raw:
                written.append(save_grid(acts[n], path, layout=layouts[n], cols=cols, normalize=normalize,
                                         labels=labels))
            else:
                fig = layer_figure(acts[n], n, layouts[n], cols=cols, normalize=normalize, labels=labels,
                                   layer_class=manifest.output(n).layer_class, subtitle=subtitle)
                written.append(save_png(fig, path))
        ordered = {n: acts[n] for n in names}  # display order is the order asked for, whatever the backend returns
        fig = comparison_figure(image, ordered, layouts=layouts, cols=cols, normalize=normalize, title=title,
                                prediction=prediction_text(acts[probs][0], manifest.labels) if probs else None)
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


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m viz", description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", help="artifacts folder written by `python -m export`")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--index", type=int, default=0,
                        help="MNIST test digit to draw (default 0): the full test set with --data, $MNIST_NPZ "
                             "or the Keras cache, else the digits shipped with featuremaps")
    source.add_argument("--image", type=Path, help="draw this image file instead (any size, colour or grayscale)")
    parser.add_argument("--data", help="path to Keras' mnist.npz")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output folder (default figures/)")
    parser.add_argument("--layers", type=comma_list, help="comma-separated output names (default: every feature map)")
    parser.add_argument("--cols", type=positive_int, help="grid columns (default 8 from 16 maps on, else ~sqrt)")
    parser.add_argument("--backend", default="onnx", help="runtime backend: onnx (default) or tf")
    parser.add_argument("--device", default="cpu", help="cpu (default), gpu or auto")
    parser.add_argument("--normalize", choices=NORMALIZATIONS, default="map",
                        help="scale each map (default), the whole layer, or nothing")
    parser.add_argument("--invert", action="store_true", help="invert pixels (for dark digits on a light background)")
    parser.add_argument("--labels", action="store_true", help="write each map's channel index on the grids")
    parser.add_argument("--raw", action="store_true",
                        help="write each layer as its bare grid (no header or scale bar), for post-processing")
    return parser


def load_input(args: argparse.Namespace, model) -> tuple[np.ndarray, str]:
    """The image to draw and a title describing it, from --image or --index.

    Raises:
        DataError: an unreadable image or MNIST file. InputError: an index out of range.
    """
    if args.image is not None:
        from runtime.images import read_image

        return read_image(args.image, model.input_spec, invert=args.invert), args.image.name
    x, y, source = mnist_test_set(args.data)
    if not 0 <= args.index < len(x):
        hint = "" if len(x) >= 10000 else " (pass --data mnist.npz or set MNIST_NPZ for the full test set)"
        raise InputError(
            f"--index {args.index} is out of range for the {source}: valid indices are 0..{len(x) - 1}{hint}"
        )
    image = 255 - x[args.index] if args.invert else x[args.index]
    return image, f"MNIST test digit #{args.index} (label {int(y[args.index])})"


def _make_folder(out: Path) -> list[Path]:
    """Create --out and any missing parents; returns the folders created, innermost first."""
    created: list[Path] = []
    try:  # exists() itself fails on a name too long for the file system
        if out.exists() and not out.is_dir():
            raise DataError(f"--out {out} exists and is not a folder")
        created = [p for p in [out, *out.parents] if not p.exists()]
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise DataError(f"cannot create the --out folder {out}: {exc.strerror}") from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this run created, innermost first, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _check_drawing_installed() -> None:
    """matplotlib and Pillow, before anything is loaded or created: an [onnx]-only deployment lacks them."""
    try:
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as exc:
        raise BackendError(f"drawing needs matplotlib and Pillow, which are not importable here ({exc}); "
                           "install them with `pip install 'featuremaps[viz]'`") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, draw, print the files written; project errors propagate to run_cli."""
    import runtime

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gallery"]:  # `python -m viz gallery STATS`: the microscope site (viz/gallery.py)
        from .gallery import main as gallery_main

        return gallery_main(argv[1:])
    args = build_parser().parse_args(argv)
    _check_drawing_installed()
    with runtime.load(args.artifacts, backend=args.backend, device=args.device) as model:
        layers = select_layers(model.manifest, args.layers)  # before reading data: fail fast on a typo
        image, what = load_input(args, model)
        created = _make_folder(args.out)
        title = f"Feature maps of {what}"
        try:
            written = write_figures(model, image, args.out, layers, cols=args.cols, normalize=args.normalize,
                                    labels=args.labels, title=title, raw=args.raw, subtitle=f"of {what}")
        except BaseException:
            _remove_empty(created)
            raise
    for path in written:
        print(path)
    return 0
